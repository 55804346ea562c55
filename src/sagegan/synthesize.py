"""``sagegan synthesize``: new image/mask pairs from a trained SAGE-GAN generator.

Layouts:
* ``real``  — the training masks re-rendered: random flips, 90° rotations and crops at the
  canonical particle scale, each with a new latent z (what the reference systems do);
* ``new``   — layouts no reference system makes: drawn from the layout model fitted to the
  training masks at train time (size distribution, shape, spacing, lattice type, coverage;
  :mod:`sagegan.layouts`), then rendered by the generator;
* ``mixed`` — half of each.

Styles (the latent z of each image):
* ``random`` — z ~ N(0, I), as the generator's prior;
* ``real``   — z encoded by the run's style encoder (``train-gan --style-encoder``) from a random
  patch of a random training image, so each synthetic image takes the look of a real one. The
  paired term trains exactly this path, while random z is shaped only by the weak adversarial
  and latent-regression terms.

The output is a data folder (``images/<id>.png``, ``masks/<id>.tif``) that ``train-seg``
accepts as it is. Images are written at the model's canonical particle scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .data import class_map, median_ecd, scale_factor_for
from .io import (InputError, generated_folder_files, load_pairs, remove_generated, resolve_data_dirs, write_image,
                 write_json, write_labels)
from .losses import foreground_boundary_channels
from .runs import has_style_encoder, load_generator, load_style_encoder

LAYOUT_CHOICES = ("real", "new", "mixed")
STYLE_CHOICES = ("random", "real")


def generator_mask(labels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """The generator's input for one instance-label map: (1, 2, H, W) foreground and boundary channels."""
    classes = torch.from_numpy(class_map(labels).astype(np.int64))[None]
    return foreground_boundary_channels(classes).to(device)


@torch.inference_mode()
def render(generator, labels: np.ndarray, z: torch.Tensor | None = None,
           generator_rng: torch.Generator | None = None) -> np.ndarray:
    """Generated image (float32, [0, 1]) for one instance-label map whose sides fit the generator.

    ``generator_rng`` draws z (unless given) and the generator's noise inputs, so a seeded
    generator gives the same image every time.
    """
    mask = generator_mask(labels, next(generator.parameters()).device)
    if z is None:
        z = torch.randn(1, generator.latent_dim, generator=generator_rng).to(mask.device)
    return generator(mask, z, generator=generator_rng)[0, 0].float().cpu().numpy()


def _fit(labels: np.ndarray, divisor: int) -> np.ndarray:
    h, w = (s - s % divisor for s in labels.shape)
    if h < divisor or w < divisor:
        raise InputError(f"mask of {labels.shape[1]}x{labels.shape[0]} px is smaller than the generator's "
                         f"{divisor}-px grid")
    return labels[:h, :w]


def real_layouts(masks: list[np.ndarray], canonical: float | None, n: int, size: int,
                 rng: np.random.Generator) -> Iterable[np.ndarray]:
    """Training masks zoomed to the canonical scale, flipped, rotated and cropped to ``size``."""
    from scipy import ndimage as ndi

    from .layouts import augment_real_mask

    zoomed = []
    for labels in masks:
        scale = scale_factor_for(median_ecd(labels), canonical) if canonical else 1.0
        zoomed.append(labels if abs(scale - 1) < 1e-3 else
                      ndi.zoom(labels, scale, order=0, grid_mode=True, mode="grid-constant"))
    for _ in range(n):
        labels = zoomed[int(rng.integers(len(zoomed)))]
        yield augment_real_mask(labels, rng, crop_shape=(size, size))


def real_style_latents(model: str | Path, config: dict, samples: list, size: int, rng: np.random.Generator,
                       latent_rng: torch.Generator) -> Iterable[torch.Tensor]:
    """Latents (1, latent_dim) encoded from random ``size`` patches of random training images."""
    from .data import prepare, sample_patch
    from .nets.style_encoder import StyleEncoder

    encoder = load_style_encoder(model, config)
    items = [prepare(s, config.get("canonical_diameter_px")) for s in samples]
    while True:
        patch = sample_patch(items[int(rng.integers(len(items)))], size, rng, None)[0]
        with torch.inference_mode():
            mu, logvar = encoder(torch.from_numpy(np.clip(patch, 0, 1))[None, None])
        yield StyleEncoder.sample(mu, logvar, latent_rng)


def _training_samples(model: str | Path, config: dict, data, images, masks, split,
                      mask_kind: str = "auto") -> list:
    """The pairs the GAN was trained on (as its config records them, masks read as recorded
    unless ``mask_kind`` says otherwise), or the folder given."""
    source = config.get("data", {})
    stems: Any = split
    crop: int | str = 0
    if data is None and images is None:
        images, masks = source.get("images"), source.get("masks")
        stems = source.get("train_stems") or source.get("split")
        crop = source.get("crop_bottom") or 0
        crop = crop if crop == "auto" else int(crop)
        if mask_kind == "auto":
            mask_kind = source.get("mask_kind") or "auto"
        if images is None:
            raise InputError(f"{model}: the run does not record its training data; pass --data or --images/--masks")
    images_dir, masks_dir = resolve_data_dirs(data, images, masks)
    return load_pairs(images_dir, masks_dir, stems, crop_bottom=crop, mask_kind=mask_kind)


def synthesize(model: str | Path, n: int, out: str | Path, layouts: str = "mixed", seed: int = 0,
               size: int = 256, data: str | Path | None = None, images: str | Path | None = None,
               masks: str | Path | None = None, split: str | Path | None = None, progress: bool = True,
               styles: str = "random", overwrite: bool = False, mask_kind: str = "auto") -> Path:
    """Write ``n`` synthetic pairs to ``out/images`` and ``out/masks``; returns ``out``.

    ``real`` layouts and ``real`` styles re-read the training pairs from where the GAN run
    recorded them, or from ``data`` / ``images`` + ``masks`` (+ ``split``) when given; their
    masks are read as ``mask_kind`` says (:func:`sagegan.io.read_mask`; ``"auto"`` takes the kind
    the run recorded, if any).
    ``out`` must be new or empty; ``overwrite`` replaces the pairs sagegan generated there (all
    of them; a folder holding other files is still refused, see
    :func:`sagegan.io.generated_folder_files`).
    """
    from .layouts import LayoutModel, draw_layout

    if layouts not in LAYOUT_CHOICES:
        raise ValueError(f"--layouts must be one of {', '.join(LAYOUT_CHOICES)}, got {layouts!r}")
    if styles not in STYLE_CHOICES:
        raise ValueError(f"--styles must be one of {', '.join(STYLE_CHOICES)}, got {styles!r}")
    if n < 1:
        raise ValueError("--n must be at least 1")
    old = generated_folder_files(out, overwrite)
    generator, config = load_generator(model)
    if styles == "real" and not has_style_encoder(model, config):
        raise InputError(f"{model}: no style encoder in this run (train it with `train-gan --style-encoder`), "
                         "so --styles real is not possible; use --styles random")
    divisor = generator.divisor
    size = max(divisor, size - size % divisor)
    out = Path(out)
    rng = np.random.default_rng(seed)
    latent_rng = torch.Generator().manual_seed(seed)
    n_real = {"real": n, "new": 0, "mixed": n // 2}[layouts]
    kinds = ["real"] * n_real + ["new"] * (n - n_real)
    real_iter: Iterable[np.ndarray] = iter(())
    samples = (_training_samples(model, config, data, images, masks, split, mask_kind)
               if n_real or styles == "real" else [])
    if n_real:
        real_iter = real_layouts([s.labels for s in samples], config.get("canonical_diameter_px"), n_real, size, rng)
    # a separate stream, so that --styles real draws the same layouts as --styles random
    style_iter = (real_style_latents(model, config, samples, size, np.random.default_rng(seed + 1), latent_rng)
                  if styles == "real" else None)
    layout_model = LayoutModel.from_dict(config["layout_model"])
    iterator: Any = enumerate(kinds)
    if progress:
        from rich.progress import track

        iterator = track(list(iterator), description=f"synthesising {n} pairs")
    records = []
    remove_generated(out, old)
    # the record comes first, so that an interrupted run leaves a folder --overwrite may replace
    write_json(out / "synthesis.json", {"model": str(model), "n": n, "complete": False,
                                        "pairs": [{"id": f"syn_{i:05d}"} for i in range(n)]})
    for i, kind in iterator:
        labels = next(real_iter) if kind == "real" else draw_layout(layout_model, (size, size), rng)
        labels = _fit(np.asarray(labels, np.int32), divisor)
        z = next(style_iter) if style_iter is not None else None
        image = render(generator, labels, z=z, generator_rng=latent_rng)
        stem = f"syn_{i:05d}"
        write_image(out / "images" / f"{stem}.png", image)
        write_labels(out / "masks" / f"{stem}.tif", labels)
        records.append({"id": stem, "layout": kind, "n_particles": int(len(np.unique(labels)) - 1)})
    write_json(out / "synthesis.json", {"model": str(model), "n": n, "layouts": layouts, "styles": styles,
                                        "seed": seed, "size": size,
                                        "canonical_diameter_px": config.get("canonical_diameter_px"),
                                        "pairs": records})
    return out
