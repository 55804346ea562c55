"""Do ImageJ's own ROIs cover exactly their particles? (issue 21) Debian's imagej, run headless.

    .venv/bin/python benchmarks/studies/imagej_rois.py SEGMENT_OUT_DIR

For every ``<stem>_labels.tif`` with its ``<stem>_rois.zip`` (``sagegan segment --save-rois``),
ImageJ (``/usr/share/java/ij.jar``, Debian package ``imagej``; under ``xvfb-run`` where there is
no display) opens the labels, loads the ROIs into its ROI Manager and measures each ROI on the
label image: its area (px) and the least and largest label value inside. A ROI is exact when
both are its own id and its area is the particle's pixel count; "holes filled" when it also
covers background (value 0) that the particle encloses, and nothing else.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from sagegan.io import read_mask

IJ_JAR = Path("/usr/share/java/ij.jar")
MACRO = r"""
setBatchMode(true);
args = split(getArgument(), ",");
open(args[0]);
run("Set Scale...", "distance=0 known=0 unit=pixel");
roiManager("reset");
roiManager("Open", args[1]);
n = roiManager("count");
s = "";
for (i = 0; i < n; i++) {
    roiManager("select", i);
    getStatistics(area, mean, min, max);
    s = s + Roi.getName + "\t" + area + "\t" + min + "\t" + max + "\n";
}
File.saveString(s, args[2]);
eval("script", "System.exit(0);");
"""


def imagej_measure(labels: Path, rois: Path, work: Path) -> list[tuple[int, float, float, float]]:
    """(id, area px, min, max) of every ROI, as ImageJ measures it on the label image."""
    work.mkdir(parents=True, exist_ok=True)
    macro, out = work / "check_rois.ijm", work / f"{labels.stem}.tsv"
    macro.write_text(MACRO)
    command = ["java", "-Djava.awt.headless=false", "-jar", str(IJ_JAR), "-batch", str(macro), f"{labels},{rois},{out}"]
    if not __import__("os").environ.get("DISPLAY"):
        command = ["xvfb-run", "-a", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    rows = [line.split("\t") for line in out.read_text().splitlines() if line.strip()]
    return [(int(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows]


def check(folder: Path, work: Path) -> dict[str, int]:
    counts = {"exact": 0, "holes filled": 0, "other": 0}
    for labels_file in sorted(folder.glob("*_labels.tif")):
        rois = labels_file.with_name(labels_file.name.replace("_labels.tif", "_rois.zip"))
        labels = read_mask(labels_file, kind="labels")
        areas = np.bincount(labels.ravel())
        filled = {i: int(ndi.binary_fill_holes(labels[sl] == i).sum())
                  for i, sl in enumerate(ndi.find_objects(labels), 1) if sl is not None}
        for roi_id, area, low, high in imagej_measure(labels_file, rois, work):
            if low == high == roi_id and area == areas[roi_id]:
                counts["exact"] += 1
            elif low == 0 and high == roi_id and area == filled[roi_id]:
                counts["holes filled"] += 1
            else:
                counts["other"] += 1
                print(f"{labels_file.name}: ROI {roi_id}: area {area} (particle {areas[roi_id]}), values {low}-{high}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sagegan_imagej"))
    args = parser.parse_args()
    if not IJ_JAR.is_file():
        sys.exit(f"{IJ_JAR}: not found (apt-get install imagej)")
    args.work.mkdir(parents=True, exist_ok=True)
    counts = check(args.folder, args.work)
    print(f"{sum(counts.values())} ROIs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
