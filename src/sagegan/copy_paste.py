"""Copy-paste synthesis (Ghiasi et al., CVPR 2021): particles cut from real micrographs and pasted
into new random layouts on the same micrographs' backgrounds, with exact masks.

Used two ways:

* ``train-seg --augment copy-paste``: the labelled particles of the training pairs;
* ``sagegan adapt --method copy-paste``: the confident particles of a source model's predictions
  on unlabelled images (label-free).

A background is the micrograph with every known particle (and every pixel whose label is
unknown) painted over by the local background level, a wide Gaussian average of the free
pixels, plus noise as strong as the free pixels' own fine texture. Each pasted image holds about
as many particles as its background image had, placed at random without overlap (touching is
allowed, as in real packings), each flipped or rotated by a multiple of 90 degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .data import median_ecd
from .io import Sample

MIN_PARTICLE_AREA_PX = 9     # smaller pieces are too few pixels to carry a particle's look
MAX_POOL = 4000              # particles kept to paste from (a random subset of larger pools)


@dataclass
class _Particle:
    image: np.ndarray        # the bounding box's pixels
    mask: np.ndarray         # bool, the particle within the box
    diameter_px: float       # median particle diameter of the image it came from


def particle_pool(samples: list[Sample], rng: np.random.Generator, max_pool: int = MAX_POOL) -> list[_Particle]:
    """Every whole particle of ``samples`` (not cut by the image border), as box + mask."""
    pool = []
    for s in samples:
        labels = np.asarray(s.labels)
        diameter = median_ecd(labels)
        h, w = labels.shape
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            if box is None:
                continue
            ys, xs = box
            if ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w:
                continue
            mask = labels[box] == i
            if mask.sum() < MIN_PARTICLE_AREA_PX:
                continue
            pool.append(_Particle(np.asarray(s.image[box], np.float32), mask, diameter))
    if len(pool) > max_pool:
        keep = rng.choice(len(pool), max_pool, replace=False)
        pool = [pool[i] for i in sorted(keep)]
    return pool


def empty_background(image: np.ndarray, occupied: np.ndarray, diameter_px: float,
                     rng: np.random.Generator) -> np.ndarray:
    """``image`` with the ``occupied`` pixels painted over by the local background and its noise."""
    image = np.asarray(image, np.float32)
    free = ~occupied
    if not free.any():
        return np.full_like(image, float(np.median(image)))
    sigma = max(2.0, 1.5 * (diameter_px if np.isfinite(diameter_px) else 8.0))
    weight = ndi.gaussian_filter(free.astype(np.float32), sigma)
    level = ndi.gaussian_filter(np.where(free, image, 0.0).astype(np.float32), sigma)
    level = np.where(weight > 1e-3, level / np.maximum(weight, 1e-3), float(np.median(image[free])))
    fine = image - ndi.gaussian_filter(image, 2.0)
    noise_sd = float(np.std(fine[free])) if free.sum() > 16 else 0.0
    out = image.copy()
    n = int(occupied.sum())
    out[occupied] = level[occupied] + rng.normal(0.0, noise_sd, n).astype(np.float32)
    return out


def paste_layout(background: np.ndarray, pool: list[_Particle], n_particles: int, diameter_px: float,
                 rng: np.random.Generator, attempts_per_particle: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Paste about ``n_particles`` random particles of ``pool`` at random, without overlap; returns
    the image and its instance labels. Particles from images of another scale are zoomed to
    ``diameter_px``."""
    image = background.copy()
    labels = np.zeros(image.shape, np.int32)
    h, w = image.shape
    n = 0
    for _ in range(max(1, n_particles) * attempts_per_particle):
        if n >= n_particles:
            break
        p = pool[int(rng.integers(len(pool)))]
        patch, mask = p.image, p.mask
        zoom = diameter_px / p.diameter_px if np.isfinite(diameter_px) and np.isfinite(p.diameter_px) else 1.0
        if abs(zoom - 1.0) > 0.1:
            patch = ndi.zoom(patch, zoom, order=1)
            mask = ndi.zoom(mask.astype(np.uint8), zoom, order=0) > 0
            if mask.sum() < MIN_PARTICLE_AREA_PX:
                continue
        k = int(rng.integers(4))
        patch, mask = np.rot90(patch, k), np.rot90(mask, k)
        if rng.integers(2):
            patch, mask = patch[:, ::-1], mask[:, ::-1]
        ph, pw = mask.shape
        if ph >= h or pw >= w:
            continue
        y, x = int(rng.integers(h - ph + 1)), int(rng.integers(w - pw + 1))
        window = labels[y:y + ph, x:x + pw]
        if (window[mask] > 0).any():
            continue
        n += 1
        window[mask] = n
        image[y:y + ph, x:x + pw][mask] = patch[mask]
    return image, labels


def copy_paste_pairs(samples: list[Sample], n: int, rng: np.random.Generator,
                     all_particles: list[np.ndarray] | None = None) -> list[Sample]:
    """``n`` pasted image/mask pairs from the particles and backgrounds of ``samples``.

    ``all_particles`` (instance labels per sample) marks every particle of each image, also
    those not in its labels (e.g. those a source model was unsure of): they are painted over
    and counted. By default, a sample's labels and its ``ignore`` pixels are.
    """
    pool = particle_pool(samples, rng)
    if not pool:
        raise ValueError("no whole particles to paste (every particle touches the image border or is under "
                         f"{MIN_PARTICLE_AREA_PX} px)")
    pairs = []
    for k in range(n):
        i = k % len(samples)
        s = samples[i]
        labels = np.asarray(s.labels) if all_particles is None else np.asarray(all_particles[i])
        taken = labels > 0
        if s.ignore is not None:
            taken |= s.ignore
        taken = ndi.binary_dilation(taken, iterations=2)
        diameter = median_ecd(labels)
        background = empty_background(s.image, taken, diameter, rng)
        count = len(np.unique(labels)) - 1
        image, pasted = paste_layout(background, pool, count, diameter, rng)
        pairs.append(Sample(f"paste_{k:04d}_{s.stem}", np.clip(image, 0.0, 1.0), pasted, s.nm_per_px))
    return pairs
