"""Score a `sagegan segment` output folder the way the bundled-model issue asks (issue 18).

    python benchmarks/studies/general_model.py --pred work/eval/emps --truth ../shared/data/emps/segmaps \
        --split ../shared/data/emps/test.csv --order-labels ../shared/data/emps/order_labels.csv
    python benchmarks/studies/general_model.py --pred work/eval/bam --truth ../shared/data/bam_tio2_sem/masks \
        --split work/bam_test.txt --crop-bottom 56 --nm-per-px 7.344

Prints (and with --json writes): mean and pooled object F1@0.5, Dice, PQ with bootstrap 95 %
intervals over images; the ordered images (from order_labels.csv); the per-particle score's
calibration, ROC AUC (matched vs unmatched predictions) and F1 with and without the model's tuned
--min-score (segment with --min-score 0 so that every particle is scored); how many images got
the "unlike the training data" warning; and, with a pixel size, the size errors in nm of
non-border particles: pooled mean ECD, mean over matched particles, D10 / D50 / D90.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sagegan.io import read_json, read_mask, read_segment_records, read_split
from sagegan.metrics import evaluate_pair, match_instances, summarize

N_BOOT = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crop-bottom", type=int, help="truth rows to drop (default: what segment dropped)")
    parser.add_argument("--nm-per-px", type=float)
    parser.add_argument("--order-labels", type=Path)
    parser.add_argument("--min-score", type=float, help="threshold to apply offline (default: the model's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    stems = read_split(args.split)
    config = read_json(args.pred / "segment_config.json")
    particles = pd.read_csv(args.pred / "particles.csv", dtype={"image": str})
    threshold = args.min_score if args.min_score is not None else _model_min_score(config)
    records = read_segment_records([args.pred / f"{stem}_labels.tif" for stem in stems])
    rows, rows_thr, scored, sizes = [], [], [], []
    for stem in stems:
        pred = read_mask(args.pred / f"{stem}_labels.tif", kind="labels")
        truth = read_mask(next(args.truth.glob(f"{stem}.*")))
        drop = args.crop_bottom if args.crop_bottom is not None else records.get(stem, {}).get("crop_bottom", 0)
        if drop:  # relabelled after the crop: the data bar may have held a particle's piece
            truth = _relabel(truth[: truth.shape[0] - drop])
        table = particles[particles["image"] == stem].set_index("id")
        score = table["score"].reindex(range(1, int(pred.max()) + 1)).to_numpy()
        rows.append({"image": stem, **evaluate_pair(pred, truth)})
        kept = np.where(np.concatenate([[False], score >= threshold])[pred], pred, 0)
        rows_thr.append(evaluate_pair(kept, truth))
        match = match_instances(pred, truth)
        matched = np.zeros(int(pred.max()), bool)
        matched[match.pred_ids - 1] = True
        scored.append(pd.DataFrame({"image": stem, "score": score, "matched": matched}))
        if args.nm_per_px:
            sizes.append(_sizes(pred, truth, match, args.nm_per_px))
    result = {"n_images": len(rows), "all": _scores(rows), "min_score": threshold,
              "with_min_score": _scores(rows_thr), "score": _score_quality(pd.concat(scored)),
              "unfamiliar_warnings": sum(any("unlike the model's training data" in w for w in im.get("warnings", []))
                                         for im in config["images"])}
    if args.order_labels:
        ordered = _ordered_stems(args.order_labels)
        result["ordered"] = _scores([r for r in rows if r["image"] in ordered])
        result["ordered_with_min_score"] = _scores([r for r, im in zip(rows_thr, rows) if im["image"] in ordered])
    if sizes:
        result["sizes_nm"] = _size_errors(sizes)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=1, default=float))


def _model_min_score(config: dict) -> float:
    """The model's tuned threshold (segment with --min-score 0 to score every particle first)."""
    return float(config.get("postprocess", {}).get("min_score", 0.0))


def _relabel(truth: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(truth)[0]


def _scores(rows: list[dict], boot: bool = True) -> dict:
    """Mean and pooled F1@0.5, Dice, PQ; bootstrap 95 % intervals over images of the means."""
    s = summarize(rows)
    out = {"n": len(rows), "f1_50": s["mean"].get("f1_50"), "dice": s["mean"].get("dice"),
           "precision_50": s["mean"].get("precision_50"), "recall_50": s["mean"].get("recall_50"),
           "pq": s["pooled"].get("pq"), "f1_50_pooled": s["pooled"].get("f1_50"), "dice_pooled": s["pooled"].get("dice")}
    if boot and len(rows) > 1:
        rng = np.random.default_rng(0)
        f1 = np.array([r["f1_50"] for r in rows])
        dice = np.array([r["dice"] for r in rows])
        idx = rng.integers(0, len(rows), (N_BOOT, len(rows)))
        out["f1_50_ci95"] = np.percentile(f1[idx].mean(1), [2.5, 97.5]).round(4).tolist()
        out["dice_ci95"] = np.percentile(dice[idx].mean(1), [2.5, 97.5]).round(4).tolist()
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _score_quality(scored: pd.DataFrame) -> dict:
    """Calibration (share matched per score bin), ROC AUC of score for matched vs unmatched."""
    from scipy.stats import mannwhitneyu

    scored = scored.dropna()
    pos, neg = scored.loc[scored.matched, "score"], scored.loc[~scored.matched, "score"]
    auc = float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))) if len(pos) and len(neg) else float("nan")
    bins = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(scored.score, bins) - 1, 0, 9)
    curve = [{"bin": f"{bins[b]:.1f}-{bins[b + 1]:.1f}", "n": int((which == b).sum()),
              "mean_score": round(float(scored.score[which == b].mean()), 3),
              "matched_share": round(float(scored.matched[which == b].mean()), 3)}
             for b in range(10) if (which == b).any()]
    ece = sum(c["n"] * abs(c["mean_score"] - c["matched_share"]) for c in curve) / max(len(scored), 1)
    return {"n_particles": len(scored), "roc_auc": round(auc, 4), "expected_calibration_error": round(ece, 4),
            "calibration": curve}


def _border_ids(labels: np.ndarray) -> set[int]:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return set(np.unique(edge[edge > 0]).tolist())


def _sizes(pred: np.ndarray, truth: np.ndarray, match, nm: float) -> dict:
    def ecd(labels):
        area = np.bincount(labels.ravel())[1:]
        inner = np.array([i + 1 not in _border_ids(labels) for i in range(area.size)], bool)
        return 2 * np.sqrt(area / np.pi) * nm, inner

    ecd_p, inner_p = ecd(pred)
    ecd_t, inner_t = ecd(truth)
    ok = inner_p[match.pred_ids - 1] & inner_t[match.true_ids - 1]
    return {"pred": ecd_p[inner_p & (ecd_p > 0)], "true": ecd_t[inner_t & (ecd_t > 0)],
            "matched_diff": ecd_p[match.pred_ids - 1][ok] - ecd_t[match.true_ids - 1][ok]}


def _size_errors(sizes: list[dict]) -> dict:
    pred = np.concatenate([s["pred"] for s in sizes])
    true = np.concatenate([s["true"] for s in sizes])
    diff = np.concatenate([s["matched_diff"] for s in sizes])
    out = {"n_pred": int(pred.size), "n_true": int(true.size), "mean_ecd_true": float(true.mean()),
           "mean_ecd_pred": float(pred.mean()), "mean_ecd_error": float(pred.mean() - true.mean()),
           "matched_mean_error": float(diff.mean()) if diff.size else float("nan"),
           "matched_mean_abs_error": float(np.abs(diff).mean()) if diff.size else float("nan"),
           "n_matched": int(diff.size)}
    for q in (10, 50, 90):
        out[f"d{q}_true"] = float(np.percentile(true, q))
        out[f"d{q}_error"] = float(np.percentile(pred, q) - np.percentile(true, q))
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def _ordered_stems(path: Path) -> set[str]:
    """Stems that order_labels.csv marks ``ordered`` (its ``file`` column names the image)."""
    table = pd.read_csv(path, dtype=str)
    return {Path(f).stem for f in table.loc[table["order_label_visual"] == "ordered", "file"]}


if __name__ == "__main__":
    main()
