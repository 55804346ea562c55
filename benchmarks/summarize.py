#!/usr/bin/env python
"""Markdown tables from a benchmark ``results.json``, for BENCHMARKS.md.

    python benchmarks/summarize.py bench_out/results.json [more results.json ...] [--benchmark few_labels] [--subset all]

(or ``python -m benchmarks.summarize ...``). Several files (sittings written to different
``--out`` folders) are read as one table; a row found in more than one of them (same benchmark,
dataset, method, k, seed and subset) is an error, since the tables could not say which one they
show. Segmentation rows are grouped by (benchmark, dataset, k, subset, method): the table gives
the number of seeds, the mean and (with several seeds) the sample standard deviation of F1@0.5,
Dice and PQ, and the mean training wall-clock and CPU seconds. A second table pairs each SAGE-GAN
method with ``attention_unet`` of the same (k, seed), since the seeds share their labelled images
and their phase 1: the mean and range of the per-seed differences say more than the spreads.
Results files of the earlier row format are converted once by ``benchmarks/migrate_results.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.harness.cases import METHODS  # noqa: E402
from benchmarks.harness.results import read_rows, row_key  # noqa: E402  (the runner's own row identity)

METRICS = ("f1_50", "dice", "pq")


def _k_rank(k: str) -> float:
    # k = 4, 8, 16, 32, all read in that order (as strings "16" < "4")
    try:
        return float(k)
    except ValueError:
        return float("inf")


def load_rows(*paths: Path) -> pd.DataFrame:
    frames, seen = [], {}
    for path in paths:
        try:
            rows = read_rows(path)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: cannot read benchmark results ({exc})")
        frame = pd.DataFrame(rows)
        if frame.empty or "f1_50" not in frame:
            raise SystemExit(f"{path}: no segmentation rows")
        frame = frame[frame["f1_50"].notna()].copy()
        frame["k"] = frame["k"].astype(str)
        # in file order (not a set's hash order), so the error names the same row every run
        for key in dict.fromkeys(row_key(row) for row in rows if row.get("f1_50") is not None):
            if key in seen:
                raise SystemExit(f"{path}: the row {'/'.join(key)} is also in {seen[key]}")
            seen[key] = path
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["k_rank"] = frame["k"].map(_k_rank)
    frame["method_rank"] = frame["method"].map({m: i for i, m in enumerate(METHODS)}).fillna(99)
    return frame


def _fmt(mean: float, sd: float | None) -> str:
    return f"{mean:.3f}" if sd is None or pd.isna(sd) else f"{mean:.3f} ± {sd:.3f}"


def summary_table(frame: pd.DataFrame) -> str:
    lines = ["| benchmark | dataset | k | subset | method | seeds | F1@0.5 | Dice | PQ | train wall s | train CPU s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    keys = ["benchmark", "dataset", "k_rank", "k", "subset", "method_rank", "method"]
    for key, group in frame.sort_values(keys).groupby(keys, sort=False):
        benchmark, dataset, _, k, subset, _, method = key
        cells = [_fmt(group[m].mean(), group[m].std(ddof=1) if len(group) > 1 else None) for m in METRICS]
        wall = group["train_seconds"].mean() if "train_seconds" in group else float("nan")
        cpu = group["train_cpu_seconds"].mean() if "train_cpu_seconds" in group else float("nan")
        lines.append(f"| {benchmark} | {dataset} | {k} | {subset} | {method} | {len(group)} | "
                     + " | ".join(cells) + f" | {wall:.0f} | {cpu:.0f} |")
    return "\n".join(lines)


def paired_table(frame: pd.DataFrame, baseline: str = "attention_unet") -> str:
    lines = ["| benchmark | k | subset | method − attention_unet | seeds | ΔF1@0.5 mean (min .. max) | ΔDice mean | ΔPQ mean |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    index = ["benchmark", "dataset", "k_rank", "k", "seed", "subset"]
    base = frame[frame["method"] == baseline].set_index(index)[list(METRICS)]
    for method in METHODS:
        if method == baseline:
            continue
        mine = frame[frame["method"] == method].set_index(index)[list(METRICS)]
        diff = (mine - base).dropna()
        if diff.empty:
            continue
        for (benchmark, _, _, k, subset), group in diff.groupby(level=["benchmark", "dataset", "k_rank", "k", "subset"]):
            f1 = group["f1_50"]
            lines.append(f"| {benchmark} | {k} | {subset} | {method} | {len(group)} | {f1.mean():+.3f} "
                         f"({f1.min():+.3f} .. {f1.max():+.3f}) | {group['dice'].mean():+.3f} | "
                         f"{group['pq'].mean():+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, nargs="+", help="results.json written by benchmarks/run.py (one or more)")
    p.add_argument("--benchmark", default=None, help="only this benchmark (e.g. few_labels)")
    p.add_argument("--subset", default=None, help="only this test subset (all, ordered, ordered_or_partial)")
    args = p.parse_args(argv)
    frame = load_rows(*args.results)
    if args.benchmark:
        frame = frame[frame["benchmark"] == args.benchmark]
    if args.subset:
        frame = frame[frame["subset"] == args.subset]
    if frame.empty:
        raise SystemExit("no rows match")
    print(summary_table(frame))
    print()
    print(paired_table(frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
