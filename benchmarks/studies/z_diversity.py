#!/usr/bin/env python
"""How much the latent z changes a generator's images: one number per GANRUN.

    python benchmarks/studies/z_diversity.py GANRUN [GANRUN ...] [--n-masks 16] [--n-z 8] [--size 256]

For ``--n-masks`` layouts drawn from each run's own layout model (same seed for every run), the
generator renders each layout with ``--n-z`` random latents (and one set of noise maps per layout,
so that only z differs). Printed per run (one JSON line):

* ``z_pixel_sd``: per-pixel standard deviation over z, averaged over pixels and layouts — how
  different two renderings of the *same* mask are (0: z is ignored);
* ``layout_pixel_sd``: the same over layouts for a fixed z — the variation the masks cause, for scale;
* ``z_mean_intensity_sd``: standard deviation over z of the mean image intensity — global look
  (brightness) changes, which matter most for segmenting differently imaged micrographs.

Intensities are the generator's [0, 1] output. A mode-collapsed generator has z numbers near 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def z_diversity(run: str | Path, n_masks: int = 16, n_z: int = 8, size: int = 256, seed: int = 0) -> dict:
    import torch

    from sagegan.layouts import LayoutModel, draw_layout
    from sagegan.runs import load_generator
    from sagegan.synthesize import generator_mask

    generator, config = load_generator(run)
    size -= size % generator.divisor
    rng = np.random.default_rng(seed)
    torch_rng = torch.Generator().manual_seed(seed)
    latents = torch.randn(n_z, generator.latent_dim, generator=torch_rng)
    layout = LayoutModel.from_dict(config["layout_model"])
    images = []
    with torch.inference_mode():
        for _ in range(n_masks):
            mask = generator_mask(draw_layout(layout, (size, size), rng))
            # one set of noise maps per mask, shared by all z: only z differs between the renderings
            noise = [n.expand(n_z, -1, -1, -1) for n in generator.make_noise(1, size, size, generator=torch_rng)]
            images.append(generator(mask.expand(n_z, -1, -1, -1), latents, noise=noise)[:, 0].float().numpy())
    images = np.stack(images)  # (masks, z, H, W)
    return {"run": str(run), "n_masks": n_masks, "n_z": n_z, "size": size,
            "z_pixel_sd": float(images.std(axis=1).mean()),
            "layout_pixel_sd": float(images.std(axis=0).mean()),
            "z_mean_intensity_sd": float(images.mean(axis=(2, 3)).std(axis=1).mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="GANRUN folders (train-gan outputs)")
    p.add_argument("--n-masks", type=int, default=16)
    p.add_argument("--n-z", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)
    for run in args.runs:
        print(json.dumps(z_diversity(run, args.n_masks, args.n_z, args.size)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
