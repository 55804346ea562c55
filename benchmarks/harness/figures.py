"""Figures of a results file: ``<benchmark>.png`` beside it. They read the rows only.

    python -m benchmarks.harness.figures OUT/results.json [--only emps few_labels]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .cases import METHODS
from .datasets import ORDER_SUBSETS
from .results import read_rows

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)


def figure_segmentation(rows: list[dict], benchmark: str, path: Path) -> bool:
    """Bars of F1@0.5, Dice (and the diameter error) per method and test subset."""
    rows = [r for r in rows if r["benchmark"] == benchmark and r.get("f1_50") is not None]
    if not rows:
        return False
    plt = _plt()
    subsets = [s for s in ORDER_SUBSETS if any(r["subset"] == s for r in rows)]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    sized = any(r.get("mean_diameter_error_rel") is not None for r in rows)
    metrics = ["f1_50", "dice"] + (["mean_diameter_error_rel"] if sized else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / max(len(subsets), 1)
    for ax, metric in zip(axes[0], metrics):
        for j, subset in enumerate(subsets):
            vals = []
            for m in methods:
                hit = [r.get(metric) for r in rows if r["method"] == m and r["subset"] == subset]
                vals.append(hit[-1] if hit and hit[-1] is not None else np.nan)
            ax.bar(np.arange(len(methods)) + j * width, vals, width, label=subset)
        ax.set_xticks(np.arange(len(methods)) + width * (len(subsets) - 1) / 2)
        ax.set_xticklabels(methods, rotation=25, ha="right", fontsize=8)
        ax.set_title(metric)
        if metric != "mean_diameter_error_rel":
            ax.set_ylim(0, 1)
        else:
            ax.axhline(0, color="k", lw=0.5)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{benchmark} ({', '.join(sorted({r['dataset'] for r in rows}))})", fontsize=10)
    _save(fig, path)
    return True


def figure_few_labels(rows: list[dict], path: Path) -> bool:
    """F1@0.5 against k, mean ± sd over seeds, one line per method."""
    rows = [r for r in rows if r["benchmark"] == "few_labels" and r.get("f1_50") is not None and r["subset"] == "all"]
    if not rows:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHODS:
        by_k: dict[Any, list] = {}
        for r in rows:
            if r["method"] == m:
                by_k.setdefault(r.get("n_labelled_images") or r["k"], []).append(r["f1_50"])
        if not by_k:
            continue
        ks = sorted(by_k)
        mean = [float(np.mean(by_k[k])) for k in ks]
        sd = [float(np.std(by_k[k], ddof=1)) if len(by_k[k]) > 1 else 0.0 for k in ks]
        ax.errorbar(ks, mean, yerr=sd, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images k (incl. 10 % validation)")
    ax.set_ylabel("F1@0.5 on the test images (mean ± sd over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"few labels ({', '.join(sorted({r['dataset'] for r in rows}))})", fontsize=10)
    _save(fig, path)
    return True


def figure_generator(rows: list[dict], path: Path) -> bool:
    """Fréchet distances, and F1@0.5 of TSTR next to TRTR."""
    rows = [r for r in rows if r["benchmark"] == "generator"]
    if not rows:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    fd = [r for r in rows if r.get("frechet_distance") is not None]
    labels = [f"{r['dataset']}\n{r['method'].replace('generator_', '').replace('_layouts', '')}" for r in fd]
    axes[0].bar(range(len(fd)), [r["frechet_distance"] for r in fd])
    axes[0].set_xticks(range(len(fd)))
    axes[0].set_xticklabels(labels, fontsize=7)
    axes[0].set_title("Fréchet distance to real test patches (phase 1 encoder)")
    seg_rows = [r for r in rows if r.get("f1_50") is not None]
    keys = sorted({(r["dataset"], r["subset"]) for r in seg_rows})
    methods = ["trtr"] + sorted({r["method"] for r in seg_rows if r["method"].startswith("tstr")})
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        vals = []
        for key in keys:
            hit = [r["f1_50"] for r in seg_rows if (r["dataset"], r["subset"]) == key and r["method"] == method]
            vals.append(hit[-1] if hit else np.nan)
        label = ("trained on real" if method == "trtr" else "trained on synthetic"
                 + (f" ({method[len('tstr_'):].replace('_', ' ')})" if method != "tstr" else ""))
        axes[1].bar(np.arange(len(keys)) + width * j, vals, width, label=label)
    axes[1].set_xticks(np.arange(len(keys)) + 0.4 - width / 2)
    axes[1].set_xticklabels([f"{d}\n{s}" for d, s in keys], fontsize=7)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("F1@0.5 on real test images")
    axes[1].legend(fontsize=7)
    _save(fig, path)
    return True


def figure_speed(rows: list[dict], path: Path) -> bool:
    """Inference MPix/s of sagegan and MONAI (the latest speed row)."""
    rows = [r for r in rows if r["benchmark"] == "speed"]
    if not rows:
        return False
    r = rows[-1]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.bar(["sagegan", "MONAI"], [r["inference_mpix_per_s"], r["monai_inference_mpix_per_s"]])
    ax.set_ylabel("inference MPix/s")
    ax.set_title(f"{r['image_size']}² image, tile {r['tile']}, {r['device']}", fontsize=9)
    _save(fig, path)
    return True


def write_figures(results: Path, benchmarks: Sequence[str], out_dir: Path | None = None) -> list[Path]:
    """Draw the figures of ``benchmarks`` from the results file; returns the files written."""
    rows = read_rows(results)
    out_dir = Path(out_dir or Path(results).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for benchmark in benchmarks:
        path = out_dir / f"{benchmark}.png"
        if benchmark in ("emps", "bam_tio2"):
            drawn = figure_segmentation(rows, benchmark, path)
        else:
            drawn = {"few_labels": figure_few_labels, "generator": figure_generator,
                     "speed": figure_speed}[benchmark](rows, path)
        if drawn:
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from .cases import BENCHMARKS

    p = argparse.ArgumentParser(description="Figures of a benchmark results file.")
    p.add_argument("results", type=Path)
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: the results file's)")
    args = p.parse_args(argv)
    for path in write_figures(args.results, args.only, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
