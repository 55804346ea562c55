"""Validation of a segmenter during training: scores, checkpoint choice and post-processing.

Both phases validate the same way: every ``val_every`` steps the segmenter predicts whole
validation images at their ground-truth zoom, a grid of watershed settings turns the maps into
instances, and object F1 at IoU 0.5 (Hungarian matching) with pixel Dice decide. After training,
:func:`tune_postprocess` picks the watershed thresholds and the minimum particle area that
``segment`` will use.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .data import PreparedImage
from .infer import default_min_area, instances_from_maps, predict_maps
from .io import Sample
from .metrics import evaluate_pair
from .runs import MIN_AREA_FRACTION, Segmenter


def split_validation(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the samples (at least one when there are two or more)."""
    if len(samples) < 2:
        return list(samples), []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    n_val = max(1, int(round(fraction * len(samples))))
    val = {int(i) for i in order[:n_val]}
    return [s for i, s in enumerate(samples) if i not in val], [s for i, s in enumerate(samples) if i in val]


def validate(seg: Segmenter, val: Sequence[PreparedImage],
             thresholds: Sequence[tuple[float, ...]] = ((0.5, 0.5),)) -> dict[tuple[float, ...], tuple[float, float]]:
    """Mean F1@0.5 and Dice over validation images for each post-processing setting.

    A setting is (fg threshold, seed threshold) or (fg, seed, min area fraction); the fraction
    defaults to the model's. Images are predicted at their ground-truth scale (the oracle zoom),
    once; the settings only change the cheap watershed step.
    """
    seg.net.eval()
    scores: dict[tuple[float, ...], list] = {t: [] for t in thresholds}
    model_fraction = seg.postprocess["min_area_fraction"]
    for item in val:
        maps = predict_maps(seg, item.image, item.scale)
        for setting in thresholds:
            fg, seed, fraction = (*setting, model_fraction)[:3]
            labels = instances_from_maps(maps["probs"], maps["distance"], fg, seed,
                                         default_min_area(seg.canonical_diameter_px, item.scale, fraction))
            r = evaluate_pair(labels, item.labels)
            scores[setting].append((r["f1_50"], r["dice"]))
    return {t: tuple(float(np.mean(v)) for v in zip(*rows)) if rows else (float("nan"), float("nan"))
            for t, rows in scores.items()}


# Checkpoints are chosen by validation F1 at the best of a few watershed settings rather than at
# one fixed setting: models early and late in training, and models trained on a handful of images,
# prefer different thresholds, and at a fixed one a good model can score 0. Ties go to Dice, then
# to the later checkpoint (an uninformative validation set then keeps the latest weights).
SELECTION_GRID = ((0.4, 0.3), (0.4, 0.5), (0.5, 0.4), (0.5, 0.6))
DICE_TIEBREAK = 1e-3


def selection_score(seg: Segmenter, val: Sequence[PreparedImage]) -> tuple[float, float, float]:
    """(score, F1@0.5, Dice) for choosing checkpoints: see ``SELECTION_GRID``; compare with ``>=``."""
    f1, dice = max(validate(seg, val, SELECTION_GRID).values())  # by F1, then Dice
    return f1 + DICE_TIEBREAK * dice, f1, dice


def tune_postprocess(seg: Segmenter, val: Sequence[PreparedImage]) -> tuple[dict[str, float], tuple[float, float]]:
    """Watershed thresholds, then the minimum particle area, that maximise validation F1@0.5.

    Returns the ``postprocess`` settings (as stored in config.json) and their (F1@0.5, Dice).
    """
    # The thresholds are tuned at the default minimum area, whatever the model's config holds, so
    # that re-tuning a tuned model gives the same result.
    grid = [(fg, sd, MIN_AREA_FRACTION) for fg in (0.4, 0.5, 0.6) for sd in (0.3, 0.4, 0.5, 0.6, 0.7)]
    scores = validate(seg, val, grid)
    fg, sd, _ = max(scores, key=lambda t: scores[t][0])
    # A larger minimum area removes fragments and debris (labels, scale bars) at some cost in
    # small particles.
    scores = validate(seg, val, [(fg, sd, fraction) for fraction in (0.05, 0.1, 0.2, 0.3, 0.5)])
    (fg, sd, fraction), best = max(scores.items(), key=lambda kv: kv[1][0])
    return {"fg_threshold": fg, "seed_threshold": sd, "min_area_fraction": fraction}, best
