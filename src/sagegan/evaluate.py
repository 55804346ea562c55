"""``sagegan evaluate``: score predicted label images against ground-truth masks, file by file.

The maths is in :mod:`sagegan.metrics`; this module pairs files and writes the tables. Ground
truth is read exactly as given: no erosion, no small-object removal, no resizing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .io import (IMAGE_SUFFIXES, InputError, _listing, _stem, check_mask_kind, read_mask, read_segment_records,
                 read_split)
from .metrics import evaluate_pair, summarize

PRED_SUFFIX = "_labels"


def _prediction_stem(path: Path) -> str:
    stem = _stem(path.name)
    return stem[: -len(PRED_SUFFIX)] if stem.endswith(PRED_SUFFIX) else stem


def pair_predictions(pred_dir: str | Path, truth_dir: str | Path,
                     split: str | Path | Sequence[str] | None = None,
                     allow_missing: bool = False) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(stem, prediction, truth) for every truth mask (of the split, when given), and the stems
    the prediction folder lacks.

    Raises
    ------
    InputError
        The prediction folder lacks any of them (unless ``allow_missing``: then they are left
        out and returned), or it matches none.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for folder in (pred_dir, truth_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: folder not found")
    preds: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(("_mask", "_overlay", "_attention")):
            stem = _prediction_stem(p)
            # a <stem>_labels.tif beats any other file of the same stem
            if stem not in preds or _stem(p.name).endswith(PRED_SUFFIX):
                preds[stem] = p
    truths = {_stem(p.name): p for p in sorted(truth_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if split is not None:
        stems = read_split(split) if isinstance(split, (str, Path)) else list(split)
        missing = [s for s in stems if s not in truths]
        if missing:
            raise InputError(f"{truth_dir}: no ground truth for {len(missing)} image(s) of the split: {_listing(missing)}")
    else:
        stems = sorted(truths)
    no_pred = [s for s in stems if s not in preds]
    if len(no_pred) == len(stems):
        raise InputError(f"{pred_dir}: no predictions match the ground truth in {truth_dir}")
    if no_pred and not allow_missing:
        raise InputError(f"{pred_dir}: no prediction for {len(no_pred)} image(s) of the {len(stems)} with ground "
                         f"truth: {_listing(no_pred)}; --allow-missing scores the other {len(stems) - len(no_pred)}")
    return [(s, preds[s], truths[s]) for s in stems if s in preds], no_pred


def evaluate_folders(pred_dir: str | Path, truth_dir: str | Path,
                     split: str | Path | Sequence[str] | None = None, crop_bottom: int | str = 0,
                     progress: bool = False, allow_missing: bool = False,
                     mask_kind: str = "auto") -> tuple[pd.DataFrame, dict]:
    """Per-image metrics (DataFrame) and their summary (mean over images and pooled).

    Every ground-truth mask (of the split, when given) needs a prediction; ``allow_missing``
    scores the images that have one, and lists the others in the summary's
    ``missing_predictions``. ``mask_kind`` says how to read the truth masks and the
    predictions (:func:`sagegan.io.read_mask`); ``"auto"`` refuses micrographs given in their place.
    """
    check_mask_kind(mask_kind)
    rows = []
    pairs, missing = pair_predictions(pred_dir, truth_dir, split, allow_missing)
    iterator = pairs
    if progress:
        from rich.progress import track

        iterator = track(pairs, description="evaluating")
    records = read_segment_records([p for _, p, _ in pairs]) if crop_bottom == "auto" else {}
    for stem, pred_path, truth_path in iterator:
        drop = crop_bottom if crop_bottom != "auto" else records.get(stem, {}).get("crop_bottom", 0)
        truth = read_mask(truth_path, crop_bottom=drop, kind=mask_kind)
        pred = read_mask(pred_path, kind=mask_kind)
        if pred.shape != truth.shape:
            raise InputError(f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} px but the truth "
                             f"{truth_path.name} is {truth.shape[1]}x{truth.shape[0]} px")
        rows.append({"image": stem, **evaluate_pair(pred, truth)})
    table = pd.DataFrame(rows)
    return table, {**summarize(rows), "missing_predictions": missing}


def headline(summary: dict) -> dict:
    """The few numbers a person looks at first."""
    mean, pooled = summary["mean"], summary["pooled"]
    keys = ("f1_50", "precision_50", "recall_50", "f1_50_95", "pq", "dice", "mean_matched_iou")
    out = {f"mean_{k}": mean.get(k) for k in keys}
    out.update({f"pooled_{k}": pooled.get(k) for k in ("f1_50", "dice", "pq") if k in pooled})
    out["n_images"] = summary["n_images"]
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}
