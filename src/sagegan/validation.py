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
from .infer import (calibrated_scores, default_min_area, instances_from_maps, particle_scores,
                    predict_maps)
from .io import Sample
from .metrics import evaluate_pair, match_instances
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


# Score thresholds tried for ``postprocess.min_score``.
MIN_SCORE_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def calibrate_scores(seg: Segmenter, val: Sequence[PreparedImage]) -> tuple[dict, dict]:
    """Calibration curve of the particle score and the score threshold, from validation images.

    Each validation image is segmented at its true zoom with the model's post-processing; every
    predicted particle gets its raw score (:func:`sagegan.infer.particle_scores`) and a label:
    matched to a true particle at IoU >= 0.5 or not. An isotonic (monotone) regression of the label
    on the raw score is the calibration: of the particles scoring about s, a share of about s match.
    The threshold is the grid value (``MIN_SCORE_GRID``) that maximises the mean F1@0.5.

    Returns the ``postprocess`` additions (``score_calibration``, ``min_score``) and a record of
    the fit (particles, F1 with and without the threshold).
    """
    from scipy.optimize import isotonic_regression

    seg.net.eval()
    post = seg.postprocess
    per_image = []
    for item in val:
        maps = predict_maps(seg, item.image, item.scale)
        labels = instances_from_maps(maps["probs"], maps["distance"], post["fg_threshold"], post["seed_threshold"],
                                     default_min_area(seg.canonical_diameter_px, item.scale, post["min_area_fraction"]))
        raw = particle_scores(labels, maps["probs"], maps["distance"])
        matched = np.zeros(raw.size, bool)
        matched[match_instances(labels, item.labels).pred_ids - 1] = True
        per_image.append((raw, matched, int(np.count_nonzero(np.unique(item.labels)))))
    raw_all = np.concatenate([r for r, _, _ in per_image]) if per_image else np.zeros(0)
    matched_all = np.concatenate([m for _, m, _ in per_image]) if per_image else np.zeros(0, bool)
    if raw_all.size < 20 or matched_all.all() or not matched_all.any():
        return {}, {"n_particles": int(raw_all.size), "note": "too few or one-sided particles to calibrate"}
    order = np.argsort(raw_all, kind="stable")
    fitted = isotonic_regression(matched_all[order].astype(float), increasing=True).x
    # A compact curve: the fitted value at 21 raw-score quantiles (np.interp between them).
    knots = np.unique(np.quantile(raw_all, np.linspace(0, 1, 21)))
    curve = {"raw": [round(float(k), 4) for k in knots],
             "calibrated": [round(float(np.interp(k, raw_all[order], fitted)), 4) for k in knots]}

    def mean_f1(threshold: float) -> float:
        f1s = []
        for raw, matched, n_true in per_image:
            keep = calibrated_scores(raw, {"score_calibration": curve}) >= threshold
            tp, n_pred = int((matched & keep).sum()), int(keep.sum())
            f1s.append(2 * tp / (n_pred + n_true) if n_pred + n_true else 1.0)
        return float(np.mean(f1s))

    f1_by_threshold = {t: mean_f1(t) for t in MIN_SCORE_GRID}
    best = max(f1_by_threshold, key=lambda t: (f1_by_threshold[t], -t))  # ties: the lower threshold
    return ({"score_calibration": curve, "min_score": best},
            {"n_particles": int(raw_all.size), "matched_share": round(float(matched_all.mean()), 4),
             "f1_50_without_threshold": round(f1_by_threshold[0.0], 4),
             "f1_50_with_threshold": round(f1_by_threshold[best], 4)})
