"""BPartIS (imagedataextractor 2.0.4) single pass over a list of images, for segment_end_to_end.py.

    .venv/bin/python benchmarks/studies/bpartis_pass.py FILES.txt [OUT_DIR]

A benchmark-only peer, never a sagegan dependency: `pip install --no-deps imagedataextractor==2.0.4`
(its weights are in the wheel). Only its segmenter is loaded, without the package's __init__,
which needs OpenCV and OCR for the scale-bar reader that this benchmark does not use. Each image
is read, segmented (`bayesian=False`: one pass) and its labels written as a TIFF, as `sagegan
segment` writes its own.
"""

import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image


def particle_segmenter():
    spec = importlib.util.find_spec("imagedataextractor")
    package = types.ModuleType("imagedataextractor")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["imagedataextractor"] = package
    from imagedataextractor.segment import ParticleSegmenter

    return ParticleSegmenter(bayesian=False, device="cpu")


def main() -> None:
    files = [line for line in Path(sys.argv[1]).read_text().splitlines() if line]
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="bpartis_"))
    out.mkdir(parents=True, exist_ok=True)
    segmenter = particle_segmenter()
    with torch.inference_mode():
        for f in files:
            image = np.asarray(Image.open(f).convert("RGB"))
            labels, _, _ = segmenter.segment(image)
            tifffile.imwrite(out / f"{Path(f).stem}_labels.tif", labels.astype(np.int32), compression="zlib")


if __name__ == "__main__":
    main()
