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
allowed, as in real packings; a share of them can be placed touching another, in clusters),
each flipped or rotated by a multiple of 90 degrees.
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
                 rng: np.random.Generator, attempts_per_particle: int = 4,
                 cluster: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Paste about ``n_particles`` random particles of ``pool`` without overlap; returns the image
    and its instance labels. Particles from images of another scale are zoomed to
    ``diameter_px``. Each particle lands at random, or with probability ``cluster`` beside an
    already pasted one (touching it, as in agglomerates, which scattered particles never show)."""
    image = background.copy()
    labels = np.zeros(image.shape, np.int32)
    h, w = image.shape
    centres: list[tuple[float, float, float]] = []  # (y, x, radius) of each pasted particle
    for _ in range(max(1, n_particles) * attempts_per_particle):
        if len(centres) >= n_particles:
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
        radius = float(np.sqrt(mask.sum() / np.pi))
        if cluster > 0 and centres and rng.random() < cluster:
            # centre at the sum of the radii from a pasted particle's centre: the two touch
            cy, cx, r = centres[int(rng.integers(len(centres)))]
            angle = rng.uniform(0.0, 2.0 * np.pi)
            y = int(round(cy + (r + radius) * np.sin(angle) - ph / 2))
            x = int(round(cx + (r + radius) * np.cos(angle) - pw / 2))
            if not (0 <= y <= h - ph and 0 <= x <= w - pw):
                continue
        else:
            y, x = int(rng.integers(h - ph + 1)), int(rng.integers(w - pw + 1))
        window = labels[y:y + ph, x:x + pw]
        if (window[mask] > 0).any():
            continue
        centres.append((y + ph / 2, x + pw / 2, radius))
        window[mask] = len(centres)
        image[y:y + ph, x:x + pw][mask] = patch[mask]
    return image, labels


def copy_paste_pairs(samples: list[Sample], n: int, rng: np.random.Generator,
                     all_particles: list[np.ndarray] | None = None, cluster: float = 0.0) -> list[Sample]:
    """``n`` pasted image/mask pairs from the particles and backgrounds of ``samples``; a share
    ``cluster`` of the particles is pasted touching another (:func:`paste_layout`).

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
        image, pasted = paste_layout(background, pool, count, diameter, rng, cluster=cluster)
        pairs.append(Sample(f"paste_{k:04d}_{s.stem}", np.clip(image, 0.0, 1.0), pasted, s.nm_per_px))
    return pairs
