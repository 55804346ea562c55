"""Cheaper zoom searches against the default: seconds and object F1 on labelled images (issue 20).

    .venv/bin/python benchmarks/studies/search_speed.py --images ../shared/data/emps/images \
        --masks ../shared/data/emps/segmaps --split work/emps_val41.txt [--crop-bottom N]

Choose on validation images (e.g. EMPS training ids), never on a test split. Every variant
segments the same images in one process with the bundled model (`--model`), the zoom search
patched to the variant's settings (`sagegan.infer.search_zoom` keywords) and the network in the
variant's precision; prints per variant the seconds in the search and in all, the mean object
F1@0.5 and Dice, and how many images got another zoom than the default.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

import sagegan.infer as infer
from sagegan.io import read_mask, read_micrograph, read_split
from sagegan.metrics import evaluate_pair
from sagegan.runs import load_segmenter, resolve_model

VARIANTS = {  # name -> (search_zoom keywords, precision); the first is the default
    "default (crop 384, fp32)": ({}, "fp32"),
    "bf16": ({}, "bf16"),
    "crop 256": ({"crop_px": 256}, "fp32"),
    "crop 192": ({"crop_px": 192}, "fp32"),
    "crop 256, bf16": ({"crop_px": 256}, "bf16"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--masks", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--model", default="general")
    parser.add_argument("--crop-bottom", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = parser.parse_args()
    from pathlib import Path

    stems = read_split(args.split)
    images = {s: read_micrograph(next(Path(args.images).glob(f"{s}.*")), crop_bottom=args.crop_bottom).image
              for s in stems}
    truths = {s: read_mask(next(Path(args.masks).glob(f"{s}.*")), crop_bottom=args.crop_bottom) for s in stems}
    base = load_segmenter(resolve_model(args.model))
    default_search = infer.search_zoom
    zooms: dict[str, dict[str, float]] = {}
    print("| variant | search s | total s | mean F1@0.5 | mean Dice | images with another zoom |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (options, precision) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        seg = base.with_precision(precision)
        infer.search_zoom = functools.partial(default_search, **options)
        infer.segment_image(seg, images[stems[0]])  # warm-up
        f1, dice, search_s, total_s, zooms[name] = [], [], 0.0, 0.0, {}
        for s in stems:
            start = time.perf_counter()
            result = infer.segment_image(seg, images[s])
            total_s += time.perf_counter() - start
            search_s += result.seconds.get("zoom_search", 0.0)
            scores = evaluate_pair(result.labels, truths[s])
            f1.append(scores["f1_50"])
            dice.append(scores["dice"])
            zooms[name][s] = result.scale
        first = next(iter(zooms))
        moved = sum(abs(np.log(zooms[name][s] / zooms[first][s])) > 1e-6 for s in stems)
        print(f"| {name} | {search_s:.1f} | {total_s:.1f} | {np.mean(f1):.4f} | {np.mean(dice):.4f} | {moved} |",
              flush=True)
    infer.search_zoom = default_search


if __name__ == "__main__":
    main()
