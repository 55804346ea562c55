"""Training targets, canonical particle scale, random patches and augmentation.

Targets are computed once per image at native resolution and cropped/rescaled per patch:

* a 3-class map (0 background, 1 particle interior, 2 particle boundary), where the boundary is
  recomputed *after* rescaling so it stays 1-2 px thick whatever the particle size;
* the distance to the particle's own boundary, normalised to 1 at each particle's centre. It is
  scale invariant, drops to its lowest value (as at a particle's outer edge) on the contact line
  of touching particles, and so gives one seed per particle for the watershed that splits
  close-packed arrays;
* a weight map that stresses the thin gaps and contact lines between touching particles (the
  idea of the original U-Net paper, computed with two rank filters instead of distance sums).

Canonical scale (Cellpose's "diameter" idea): each image is seen at a zoom that brings its median
particle diameter to ``canonical_diameter_px``, so 6 px and 300 px particles both fall inside the
receptive field. Patches are cut from the native image and zoomed on the fly: whole images are
never resized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .io import Sample

PERCENTILES = (0.5, 99.5)
# The segmenter's classes, in the order of its output channels; one distance channel follows them.
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
N_CLASSES = 3


def normalise_percentile(image: np.ndarray, low: float = PERCENTILES[0],
                         high: float = PERCENTILES[1]) -> np.ndarray:
    """Map the ``low``..``high`` percentiles of an image to 0..1 (not clipped), as float32."""
    lo, hi = np.percentile(image, (low, high))
    if hi - lo < 1e-6:
        return np.zeros_like(image, dtype=np.float32)
    return ((image - lo) / (hi - lo)).astype(np.float32)


def as_label_image(labels, name: str = "labels", ndim: int | None = 2) -> np.ndarray:
    """Check an instance-label image and return it as an array: non-negative integers, 0 the
    background. A bool mask is split into particles by 4-connectivity. ``ndim=None`` accepts any
    number of dimensions.
    """
    a = np.asarray(labels)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D label image, got shape {a.shape}")
    if a.dtype == bool:
        return ndi.label(a)[0].astype(np.int32)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label image or a bool mask, got dtype {a.dtype}; "
                         "threshold probabilities and label them first")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be non-negative (0 = background)")
    return a


def median_ecd(labels: np.ndarray, min_count: int = 1) -> float:
    """Median equivalent circular diameter (px) of the labelled particles; NaN when fewer than
    ``min_count`` particles."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    if areas.size < max(min_count, 1):
        return float("nan")
    return float(np.median(2.0 * np.sqrt(areas / np.pi)))



def scale_factor_for(diameter_px: float, canonical_diameter_px: float,
                     limits: tuple[float, float] = (0.1, 4.0)) -> float:
    """Zoom that brings ``diameter_px`` to the canonical diameter, clipped to ``limits``."""
    if not np.isfinite(diameter_px) or diameter_px <= 0:
        return 1.0
    return float(np.clip(canonical_diameter_px / diameter_px, *limits))


def normalised_distance(labels: np.ndarray) -> np.ndarray:
    """Distance to each particle's own boundary divided by that particle's maximum (float32).

    Touching particles are kept apart: pixels next to another label count as boundary.
    """
    labels = np.asarray(labels)
    if not labels.any():
        return np.zeros(labels.shape, np.float32)
    # Pixels whose 4-neighbourhood holds another label are the contact line; drop them first.
    grown = ndi.grey_dilation(labels, size=(3, 3))
    shrunk = -ndi.grey_dilation(-np.where(labels > 0, labels, labels.max() + 1), size=(3, 3))
    contact = (labels > 0) & ((grown != labels) | (shrunk != labels))
    inside = (labels > 0) & ~contact
    dist = ndi.distance_transform_edt(np.pad(inside, 1)).astype(np.float32)[1:-1, 1:-1]
    dist[contact] = 0.5
    peak = ndi.maximum(dist, labels, index=np.arange(labels.max() + 1))
    peak = np.asarray(peak, np.float32)
    peak[peak <= 0] = 1.0
    return np.where(labels > 0, dist / peak[labels], 0.0).astype(np.float32)


def class_map(labels: np.ndarray) -> np.ndarray:
    """BACKGROUND, INTERIOR or BOUNDARY per pixel (inner boundary, towards background or a neighbour)."""
    from skimage.segmentation import find_boundaries

    classes = np.where(labels > 0, INTERIOR, BACKGROUND).astype(np.uint8)
    classes[find_boundaries(labels, mode="inner") & (labels > 0)] = BOUNDARY
    return classes


def gap_weights(labels: np.ndarray, weight: float = 5.0, reach_px: int = 2) -> np.ndarray:
    """Weight ``weight`` where two different particles lie within ``reach_px``, else 1."""
    size = 2 * reach_px + 1
    big = np.iinfo(np.int32).max
    highest = ndi.maximum_filter(labels, size=size)
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, big), size=size)
    between = (highest > 0) & (lowest < big) & (highest != lowest)
    return np.where(between, weight, 1.0).astype(np.float32)


@dataclass
class PreparedImage:
    """A training image with its native-resolution targets and its zoom to canonical scale."""

    stem: str
    image: np.ndarray        # float32, percentile-normalised
    labels: np.ndarray       # int32 instance ids
    distance: np.ndarray     # float32 normalised distance
    scale: float             # zoom to canonical particle size
    median_diameter_px: float
    ignore: np.ndarray | None = None   # bool: pixels left out of the loss (weight 0)


def prepare(sample: Sample, canonical_diameter_px: float | None) -> PreparedImage:
    """Normalise one sample and compute its scale-free targets."""
    diameter = median_ecd(sample.labels)
    scale = 1.0 if canonical_diameter_px is None else scale_factor_for(diameter, canonical_diameter_px)
    ignore = getattr(sample, "ignore", None)
    return PreparedImage(sample.stem, normalise_percentile(sample.image), sample.labels.astype(np.int32),
                         normalised_distance(sample.labels), scale, diameter,
                         None if ignore is None or not ignore.any() else np.asarray(ignore, bool))


def _zoom_crop(arr: np.ndarray, y0: float, x0: float, src: float, size: int, order: int) -> np.ndarray:
    """Resample the ``src``-pixel square at (y0, x0) of ``arr`` onto a ``size`` grid (reflect-padded)."""
    step = src / size
    coords = np.arange(size, dtype=np.float32) * step + (step - 1) / 2
    yy, xx = np.meshgrid(y0 + coords, x0 + coords, indexing="ij")
    return ndi.map_coordinates(arr, [yy, xx], order=order, mode="mirror", prefilter=False)


@dataclass
class Augment:
    """Photometric and geometric augmentation strengths (all drawn per patch)."""

    flips_rot90: bool = True
    scale_jitter: float = 0.2        # zoom factor in [1/(1+j), 1+j] around canonical
    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.3
    blur_prob: float = 0.2
    blur_sigma_max: float = 1.2
    noise_prob: float = 0.3
    noise_sd_max: float = 0.08
    invert_prob: float = 0.0         # SEM <-> TEM contrast; off by default
    gradient: float = 0.0            # strength of a random linear illumination ramp; off by default


def sample_patch(item: PreparedImage, size: int, rng: np.random.Generator,
                 augment: Augment | None = None, foreground_bias: float = 0.7):
    """One training patch: (image, classes, distance, weights), each (size, size).

    With probability ``foreground_bias`` the patch is centred on a random particle pixel, so
    sparse images still teach the particles. Pixels of ``item.ignore`` get weight 0.
    """
    aug = augment or Augment(flips_rot90=False, scale_jitter=0.0, brightness=0, contrast=0, gamma=0,
                             blur_prob=0, noise_prob=0)
    zoom = item.scale
    if aug.scale_jitter:
        zoom *= float(np.exp(rng.uniform(-1, 1) * np.log1p(aug.scale_jitter)))
    src = size / zoom
    h, w = item.image.shape
    if rng.random() < foreground_bias and item.labels.any():
        ys, xs = np.nonzero(item.labels)
        k = rng.integers(ys.size)
        cy, cx = ys[k] + rng.uniform(-src / 4, src / 4), xs[k] + rng.uniform(-src / 4, src / 4)
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    # Keep the window inside the image where it fits; images smaller than it are mirrored.
    y0 = float(np.clip(cy - src / 2, 0, max(h - src, 0))) - 0.5
    x0 = float(np.clip(cx - src / 2, 0, max(w - src, 0))) - 0.5
    image = _zoom_crop(item.image, y0, x0, src, size, order=1)
    labels = _zoom_crop(item.labels, y0, x0, src, size, order=0).astype(np.int32)
    distance = _zoom_crop(item.distance, y0, x0, src, size, order=1)
    arrays = [image, labels, distance]
    if item.ignore is not None:
        arrays.append(_zoom_crop(item.ignore.view(np.uint8), y0, x0, src, size, order=0) > 0)
    if aug.flips_rot90:
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        arrays = [np.rot90(a, k) for a in arrays]
        if flip:
            arrays = [a[:, ::-1] for a in arrays]
    image, labels, distance = arrays[:3]
    image = _photometric(np.ascontiguousarray(image), rng, aug)
    labels = np.ascontiguousarray(labels)
    weights = gap_weights(labels)
    if item.ignore is not None:
        weights[arrays[3]] = 0.0
    return (image.astype(np.float32), class_map(labels), np.ascontiguousarray(distance, np.float32), weights)


def _photometric(image: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    if aug.invert_prob and rng.random() < aug.invert_prob:
        image = 1.0 - image
    if aug.gradient:
        # uneven illumination, as the simulator's acquisition draws it: a ramp in a random direction
        angle = rng.uniform(0.0, 2.0 * np.pi)
        h, w = image.shape
        ramp = (np.linspace(-0.5, 0.5, w)[None, :] * np.cos(angle)
                + np.linspace(-0.5, 0.5, h)[:, None] * np.sin(angle))
        image = image * (1.0 + rng.uniform(0.0, aug.gradient) * ramp)
    if aug.gamma:
        g = float(np.exp(rng.uniform(-aug.gamma, aug.gamma)))
        image = np.clip(image, 0, None) ** g
    if aug.contrast:
        image = (image - 0.5) * float(np.exp(rng.uniform(-aug.contrast, aug.contrast))) + 0.5
    if aug.brightness:
        image = image + rng.uniform(-aug.brightness, aug.brightness)
    if aug.blur_prob and rng.random() < aug.blur_prob:
        image = ndi.gaussian_filter(image, rng.uniform(0.3, aug.blur_sigma_max))
    if aug.noise_prob and rng.random() < aug.noise_prob:
        image = image + rng.normal(0, rng.uniform(0, aug.noise_sd_max), image.shape)
    return image


def make_batch(items: list[PreparedImage], batch_size: int, size: int, rng: np.random.Generator,
               augment: Augment | None = None):
    """Stack ``batch_size`` random patches from random images: numpy arrays (B, ...)."""
    picks = rng.integers(len(items), size=batch_size)
    parts = [sample_patch(items[i], size, rng, augment) for i in picks]
    return tuple(np.stack(p) for p in zip(*parts))
