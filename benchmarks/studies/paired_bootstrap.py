"""Paired bootstrap over images: is segmentation B better than A on the same images? (issue 18)

    python benchmarks/studies/paired_bootstrap.py --a work/eval/old --b work/eval/new \
        --truth ../shared/data/emps/segmaps --split ../shared/data/emps/test.csv [--subset STEMS_FILE]

A and B are `sagegan segment` output folders (``<stem>_labels.tif``) of the same images. Prints the
mean object F1@0.5 and Dice of each, and the mean per-image difference B - A with a 95 % interval
from resampling the images (2,000 draws, seed 0), how many images got better or worse, and which
changed most.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sagegan.evaluate import evaluate_folders
from sagegan.io import read_split


def per_image(pred: Path, truth: Path, stems: list[str]) -> dict[str, np.ndarray]:
    table, _ = evaluate_folders(pred, truth, stems, crop_bottom="auto")  # the data-bar rows segment dropped
    table = table.set_index("image").loc[stems]
    return {"f1_50": table["f1_50"].to_numpy(), "dice": table["dice"].to_numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True)
    parser.add_argument("--b", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--subset", type=Path, help="only these stems (a split file), e.g. the ordered images")
    args = parser.parse_args()
    stems = read_split(args.split)
    if args.subset:
        keep = set(read_split(args.subset))
        stems = [s for s in stems if s in keep]
    a, b = per_image(args.a, args.truth, stems), per_image(args.b, args.truth, stems)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(stems), size=(2000, len(stems)))
    print(f"{len(stems)} images; A = {args.a}, B = {args.b}")
    print("| metric | A | B | B - A (95 % CI over images) | better / worse / same |")
    print("| --- | --- | --- | --- | --- |")
    for metric in ("f1_50", "dice"):
        diff = b[metric] - a[metric]
        low, high = np.percentile(diff[draws].mean(1), [2.5, 97.5])
        print(f"| {metric} | {a[metric].mean():.4f} | {b[metric].mean():.4f} | {diff.mean():+.4f} "
              f"({low:+.4f} to {high:+.4f}) | {(diff > 1e-9).sum()} / {(diff < -1e-9).sum()} / "
              f"{(np.abs(diff) <= 1e-9).sum()} |")
    diff = b["f1_50"] - a["f1_50"]
    for i in np.argsort(-np.abs(diff))[:8]:
        if abs(diff[i]) > 1e-9:
            print(f"  {stems[i]}: F1 {a['f1_50'][i]:.3f} -> {b['f1_50'][i]:.3f}")


if __name__ == "__main__":
    main()
