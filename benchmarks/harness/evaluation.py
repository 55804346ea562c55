"""Testing a trained method on a data set's test images, and the segmentation rows it gives."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .cache import key_of, timed
from .context import Context
from .datasets import Group
from .methods import REGISTRY, Trained

# The metrics copied into every segmentation row (mean over test images; "pooled_" prefix: from
# counts and areas summed over the test images).
ROW_METRICS = ("f1_50", "precision_50", "recall_50", "f1_75", "f1_50_95", "pq", "mean_matched_iou", "dice", "iou",
               "count_error", "count_rel_error", "mean_diameter_rel_error", "ecd_wasserstein_px")
POOLED_METRICS = ("f1_50", "precision_50", "recall_50", "f1_75", "f1_50_95", "pq", "mean_matched_iou", "dice",
                  "iou", "count_rel_error")


def _sizes_nm(labels: np.ndarray, nm_per_px: float) -> tuple[float, int]:
    """Sum and count of the ECDs (nm) of the particles that do not touch the border."""
    from sagegan.particles import measure

    if not labels.any():
        return 0.0, 0
    df = measure(labels, nm_per_px=nm_per_px)
    inner = df[~df["touches_border"].astype(bool)]
    return float(inner["ecd_nm"].sum()), int(len(inner))


def evaluate(ctx: Context, predict: Callable, test: Sequence, cache_dir: Path,
             label: str) -> tuple[list[dict], float, float]:
    """Per-image metrics of ``predict`` on ``test`` (cached in ``cache_dir``), wall and CPU seconds."""
    from sagegan.io import read_json, write_json
    from sagegan.metrics import evaluate_pair

    stems = [s.stem for s in test]
    cache = cache_dir / f"eval_{key_of([stems, [s.nm_per_px for s in test]])}.json"
    if cache.exists():
        saved = read_json(cache)
        return saved["records"], saved["wall_s"], saved["cpu_s"]

    def run() -> list[dict]:
        records = []
        items: Iterable = test
        if ctx.progress:
            from rich.progress import track

            items = track(test, description=f"testing {label}", console=ctx.console)
        for s in items:
            pred = predict(s.image)
            rec = {"stem": s.stem, "metrics": evaluate_pair(pred, s.labels)}
            if s.nm_per_px:
                rec["pred_ecd_sum_nm"], rec["pred_ecd_n"] = _sizes_nm(pred, s.nm_per_px)
                rec["true_ecd_sum_nm"], rec["true_ecd_n"] = _sizes_nm(s.labels, s.nm_per_px)
            records.append(rec)
        return records

    records, wall, cpu = timed(run)
    write_json(cache, {"stems": stems, "records": records, "wall_s": wall, "cpu_s": cpu}, indent=None)
    return records, wall, cpu


def metric_fields(records: list[dict]) -> dict:
    """Row fields from per-image records: means, pooled values, mean particle diameter errors."""
    from sagegan.metrics import summarize

    summary = summarize([r["metrics"] for r in records])
    out = {k: summary["mean"].get(k) for k in ROW_METRICS}
    out.update({f"pooled_{k}": summary["pooled"].get(k) for k in POOLED_METRICS})
    if records and "pred_ecd_sum_nm" in records[0]:
        pn, tn = sum(r["pred_ecd_n"] for r in records), sum(r["true_ecd_n"] for r in records)
        pred_mean = sum(r["pred_ecd_sum_nm"] for r in records) / pn if pn else float("nan")
        true_mean = sum(r["true_ecd_sum_nm"] for r in records) / tn if tn else float("nan")
        out.update(pred_mean_ecd_nm=pred_mean, true_mean_ecd_nm=true_mean,
                   mean_diameter_error_nm=pred_mean - true_mean,
                   mean_diameter_error_rel=(pred_mean - true_mean) / true_mean if tn else float("nan"),
                   n_pred_particles_sized=pn, n_true_particles_sized=tn,
                   diameter_note="mean ECD over all test particles not touching the image border, predicted minus true")
    return out


def segmentation_rows(ctx: Context, benchmark: str, g: Group, method: str, trained: Trained, records: list[dict],
                      test_wall: float, test_cpu: float, extra: dict | None = None) -> list[dict]:
    """One row per test subset of ``g``'s data set."""
    rows = []
    for subset, stems in g.ds.subsets().items():
        recs = [r for r in records if r["stem"] in stems]
        if not recs:
            continue
        row = ctx.base_row("segmentation", benchmark, g.ds.name, method, g.k, g.seed, subset)
        row.update(metric_fields(recs))
        row.update({
            "n_test_images": len(recs), "n_train_images": len(g.train_stems), "n_val_images": len(g.val_stems),
            "n_labelled_images": g.n_labelled,
            "train_seconds": trained.wall_s, "train_cpu_seconds": trained.cpu_s,
            "test_seconds": test_wall, "test_cpu_seconds": test_cpu, "cpu_seconds": trained.cpu_s + test_cpu,
            "budget_minutes": None if trained.classical_params is not None else g.budget_minutes,
            "budget_note": trained.budget_note,
            "metric_averaging": "mean over test images; pooled_*: counts and areas summed over the test images",
            "test_stems": sorted(stems) if len(stems) <= 12 else f"{len(stems)} images ({subset})",
            "inference": ({"kind": "classical"} if trained.classical_params is not None else
                          {"function": "sagegan.infer.segment_image", "scale": "auto", "tta": False}),
            "run_dir": str(trained.run_dir), "run_key": trained.key,
            "config": {**trained.config, "group": g.describe(), "settings": asdict(ctx.settings),
                       "argv": sys.argv[1:]},
            **trained.extra, **(extra or {}),
        })
        rows.append(row)
    return rows


def score_trained(ctx: Context, benchmark: str, g: Group, method: str, trained: Trained,
                 extra: dict | None = None) -> list[dict]:
    """Test ``trained`` on the group's test images; the rows (not yet added)."""
    predict = trained.predictor(ctx.settings.device)
    records, wall, cpu = evaluate(ctx, predict, g.ds.test, trained.run_dir, f"{method} ({g.ds.name})")
    return segmentation_rows(ctx, benchmark, g, method, trained, records, wall, cpu, extra)


def run_segmentation(ctx: Context, benchmark: str, g: Group, methods: Sequence[str]) -> dict[str, Trained]:
    """Train (or find) and test each method of one group; adds the rows not already present."""
    subsets = list(g.ds.subsets())
    done = {}
    for method in methods:
        if all(ctx.store.has(benchmark=benchmark, dataset=g.ds.name, method=method, k=g.k, seed=g.seed, subset=s)
               for s in subsets):
            ctx.console.log(f"[dim]skip {benchmark} / {g.ds.name} / {method} k={g.k} seed={g.seed}: in results.json")
            continue
        try:
            trained = REGISTRY[method](ctx, g)
            for row in score_trained(ctx, benchmark, g, method, trained):
                ctx.add(row)
            done[method] = trained
        except Exception as exc:  # keep going: the other rows can still be computed
            ctx.fail(f"{benchmark}/{g.ds.name}/{method}/k={g.k}/seed={g.seed}", exc)
    return done
