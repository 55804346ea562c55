"""ImageJ itself (Debian's ``imagej``, headless) fills each ROI of ``--save-rois`` over exactly
its particle's pixels; skipped where ImageJ, Java or xvfb-run is not installed."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from benchmarks.studies.imagej_rois import IJ_JAR, check
from sagegan.io import write_imagej_rois, write_labels
from sagegan.particles import pixel_outlines
from sagegan.simulate import simulate_micrograph

pytestmark = pytest.mark.skipif(
    not (IJ_JAR.is_file() and shutil.which("java") and (os.environ.get("DISPLAY") or shutil.which("xvfb-run"))),
    reason="needs Debian's imagej (apt-get install imagej) and xvfb-run")


def test_imagej_fills_each_roi_over_its_particle(tmp_path):
    labels = simulate_micrograph(128, "random", "sem", 4, mean_diameter_px=14, render=False).labels
    labels[np.isin(labels, labels[98:122, 98:122])] = 0  # room for a particle with a hole
    labels[100:120, 100:120] = labels.max() + 1
    labels[106:114, 106:114] = 0
    out = tmp_path / "seg"
    out.mkdir()
    write_labels(out / "a_labels.tif", labels)
    write_imagej_rois(out / "a_rois.zip", pixel_outlines(labels))
    counts = check(out, tmp_path / "work")
    assert counts["other"] == 0 and counts["holes filled"] >= 1
    assert counts["exact"] + counts["holes filled"] == len(np.unique(labels)) - 1
