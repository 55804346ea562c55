"""How well the pixel size is read from the image itself (issue 21): simulated bars, BAM data bars.

    .venv/bin/python benchmarks/studies/scale_bar_reading.py simulated --set tune|test|test2|test3|test4 [--n N]
    .venv/bin/python benchmarks/studies/scale_bar_reading.py bam --images ../shared/data/bam_tio2_sem/images
    .venv/bin/python benchmarks/studies/scale_bar_reading.py folder --images DIR [--limit N]

``simulated`` draws micrographs with burnt-in scale bars (`sagegan.simulate.add_scale_bar`: every
style, font and size, pixel sizes log-uniform in 0.3-20 nm/px) and reads them back with
`sagegan.scalebar.calibrate_image`. The two sets were fixed before the reader was tuned: ``tune``
(seeds 0..N-1) is what the reader was adjusted on, ``test`` (seeds 1000..1000+N-1) is read once.
``test2`` (seeds 2000..) is the held-out set of the reader's second version (bars may not touch
the image's edges), after ``test`` had been read; ``test3`` (seeds 3000..) that of the third
(a label box's margin a few rows from the bar is not the bar), after a hand check on EMPS;
``test4`` (seeds 4000..) that of the fourth (Tesseract's library through tesserocr instead of
its program through pytesseract: the same readings, 15x cheaper, a newer engine).
Prints the share read within 2 % of the truth, the share with no reading, and the wrong ones.

``bam`` reads the 40 BAM TiO2 SEM images: the data bar found, the pixel size from its printed
field width, and separately from its scale bar alone, against the 7.344 nm/px of the metadata.
``folder`` lists what is read from any folder of images (e.g. EMPS, which has no pixel sizes).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from sagegan.io import expand_inputs, read_micrograph
from sagegan.scalebar import calibrate_image, find_data_bar, find_scale_bars, read_bar_label
from sagegan.simulate import add_scale_bar, simulate_micrograph

SETS = {"tune": 0, "test": 1000, "test2": 2000, "test3": 3000, "test4": 4000}


def simulated(which: str, n: int) -> None:
    first = SETS[which]
    right = none = 0
    wrong = []
    by_style: dict[str, list[int]] = {}
    start = time.perf_counter()
    for seed in range(first, first + n):
        rng = np.random.default_rng([seed, 7])
        size = int(rng.choice([384, 512, 768]))
        nm_per_px = float(np.exp(rng.uniform(math.log(0.3), math.log(20))))
        sim = simulate_micrograph(size, str(rng.choice(["hex", "random", "sparse"])),
                                  str(rng.choice(["sem", "tem"])), [seed, 1],
                                  mean_diameter_px=float(rng.uniform(10, 40)))
        sim = add_scale_bar(sim, nm_per_px, seed=[seed, 2])
        truth = sim.params["scale_bar"]
        image = np.round(sim.image * 255) / 255  # as it is stored in an 8-bit PNG
        cal = calibrate_image(image)
        ok = cal.nm_per_px is not None and abs(cal.nm_per_px / nm_per_px - 1) <= 0.02
        right += ok
        none += cal.nm_per_px is None
        by_style.setdefault(truth["style"], []).append(int(ok))
        if not ok:
            wrong.append((seed, truth["style"], truth["label"], truth["font"], truth["font_px"], truth["length_px"],
                          cal.nm_per_px and round(cal.nm_per_px / nm_per_px, 3), cal.detail or cal.problem))
    print(f"{which} set, {n} images: {right}/{n} = {right / n:.1%} within 2 %; {none} with no reading; "
          f"{n - right - none} read wrong; {time.perf_counter() - start:.1f} s")
    for style, oks in sorted(by_style.items()):
        print(f"  {style}: {sum(oks)}/{len(oks)}")
    for row in wrong:
        print("  missed:", row)


def bam(images: str) -> None:
    files = expand_inputs([images])
    found = width_ok = bar_ok = 0
    errors = []
    for f in files:
        image = read_micrograph(f).image
        bar = find_data_bar(image)
        found += bar is not None
        cal = calibrate_image(image)
        width_ok += cal.nm_per_px is not None and abs(cal.nm_per_px / 7.344 - 1) <= 0.002
        bars = find_scale_bars(image)
        read = read_bar_label(image, bars[0]) if bars else None
        if read:
            errors.append(read[0] / bars[0].length_px / 7.344 - 1)
            bar_ok += abs(errors[-1]) <= 0.02
    print(f"BAM: data bar found in {found}/{len(files)}; field width gives 7.344 nm/px (within 0.2 %) in "
          f"{width_ok}/{len(files)}; the scale bar alone within 2 % in {bar_ok}/{len(files)}"
          + (f" (error {np.mean(errors):+.2%} mean)" if errors else ""))


def folder(images: str, limit: int | None) -> None:
    files = expand_inputs([images])[:limit]
    kinds: dict[str, int] = {}
    for f in files:
        cal = calibrate_image(read_micrograph(f).image)
        kind = cal.source or "none"
        kinds[kind] = kinds.get(kind, 0) + 1
        print(f"{f.name}\t{cal.nm_per_px and round(cal.nm_per_px, 4)}\t{cal.data_bar and cal.data_bar.rows}\t"
              f"{cal.detail or cal.problem}")
    print(f"{len(files)} images: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["simulated", "bam", "folder"])
    parser.add_argument("--set", choices=sorted(SETS), default="tune")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--images")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    if args.what == "simulated":
        simulated(args.set, args.n)
    elif args.what == "bam":
        bam(args.images)
    else:
        folder(args.images, args.limit)


if __name__ == "__main__":
    main()
