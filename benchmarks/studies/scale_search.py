"""How well does ``--scale auto`` find the particle size? Measured on labelled images the model never saw.

    python benchmarks/studies/scale_search.py --model runs/emps_attn [--data ../shared/data/emps] [--stems FILE]

By default the images are the EMPS training-split images that ``train-seg`` held out and never
trained on (train.csv minus the run's ``train_stems``), so the settings of the search can be chosen
without looking at the test split. For each image the true zoom is canonical diameter / ground-truth
median particle diameter; the table gives the median |log(zoom / true zoom)|, the share of images
within 1.25x, 1.5x and 2x of it, and the mean seconds per image, for the autocorrelation estimate
and for the model's own zoom search with a few settings.

``--oracle-out DIR`` also segments every image at its true zoom and writes ``DIR/<stem>_labels.tif``
(score it with ``sagegan evaluate``): the quality the segmenter would reach with a perfect size estimate.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from sagegan.data import median_ecd
from sagegan.infer import estimate_diameter_autocorr, search_zoom, segment_image, zoom_for
from sagegan.io import read_mask, read_micrograph, read_split, write_labels
from sagegan.runs import load_segmenter

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from benchmarks.harness.datasets import data_root  # noqa: E402

VARIANTS = {  # name -> search_zoom keyword arguments (the first is the default)
    "search (default: 7 zooms, crop 384, size 0.1, prior 0.1)": {},
    "search without the autocorrelation prior": dict(prior_weight=0.0),
    "search with 13 zooms sqrt(2) apart": dict(zooms=tuple(2 ** (k / 2) for k in range(-8, 5))),
    "search with crop 256": dict(crop_px=256),
    "search with size weight 0 (confidence only)": dict(size_weight=0.0),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=data_root(None) / "emps",
                        help="EMPS folder (default: $SAGEGAN_DATA_ROOT/emps or ../shared/data/emps)")
    parser.add_argument("--stems", type=Path, help="File listing the stems to use (default: held-out training images).")
    parser.add_argument("--oracle-out", type=Path, help="Also write labels segmented at the true zoom here.")
    parser.add_argument("--only-oracle", action="store_true", help="Skip the size estimates.")
    args = parser.parse_args(argv)
    if not (args.data / "images").is_dir():
        print(f"{args.data}: EMPS data not found; nothing measured", file=sys.stderr)
        return 0
    seg = load_segmenter(args.model)
    config = seg.config
    if args.stems:
        stems = read_split(args.stems)
    else:
        seen = set(config["data"]["train_stems"])
        stems = [s for s in read_split(args.data / "train.csv") if s not in seen]
    canonical = seg.canonical_diameter_px
    if args.oracle_out:
        args.oracle_out.mkdir(parents=True, exist_ok=True)
    errors: dict[str, list[float]] = {"autocorrelation (calibrated)": []} | {name: [] for name in VARIANTS}
    seconds: dict[str, list[float]] = {name: [] for name in errors}
    for stem in stems:
        image = read_micrograph(args.data / "images" / f"{stem}.png").image
        true_zoom = canonical / median_ecd(read_mask(args.data / "segmaps" / f"{stem}.png"))
        if args.oracle_out:
            write_labels(args.oracle_out / f"{stem}_labels.tif", segment_image(seg, image, scale=true_zoom).labels)
        if args.only_oracle:
            continue
        start = time.perf_counter()
        zoom = zoom_for(estimate_diameter_autocorr(image) * config.get("autocorr_factor", 1.0), canonical)
        seconds["autocorrelation (calibrated)"].append(time.perf_counter() - start)
        errors["autocorrelation (calibrated)"].append(abs(math.log(zoom / true_zoom)))
        for name, kwargs in VARIANTS.items():
            start = time.perf_counter()
            zoom = search_zoom(seg, image, **kwargs)[0]
            seconds[name].append(time.perf_counter() - start)
            errors[name].append(abs(math.log(zoom / true_zoom)))
    if args.only_oracle:
        return 0
    print(f"{len(stems)} images, model {args.model}")
    print("| method | median abs log error | within 1.25x | within 1.5x | within 2x | s/image |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, errs in errors.items():
        e = np.asarray(errs)
        print(f"| {name} | {np.median(e):.3f} | {np.mean(e < math.log(1.25)):.2f} | {np.mean(e < math.log(1.5)):.2f} "
              f"| {np.mean(e < math.log(2)):.2f} | {np.mean(seconds[name]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
