"""The classical baseline: smoothing, Otsu threshold, hole filling, distance-transform watershed.

This is what most microscopists use today (ImageJ "Analyze Particles", ParticleSpy): no
training data beyond a few images to pick four or five numbers. sagegan's benchmarks run it next
to the learned segmenters, tuned on the training split only.

Pipeline of :func:`segment_classical`:

1. optional background flattening (subtract a wide Gaussian), then Gaussian smoothing;
2. Otsu threshold; particles are the bright or the dark side (``polarity``; ``"auto"`` takes the
   side that covers less of the image, since particles rarely fill more than half of a frame);
3. holes smaller than ``max_hole_area_px`` are filled (hollow particles, noise), larger ones are
   kept (the interstitial background enclosed by a ring of touching particles);
4. the Euclidean distance to the background is computed, and each particle gets one seed: the
   h-maxima of the distance map (``seeds="h_maxima"``) or ``skimage.feature.peak_local_max``
   peaks (``seeds="peaks"``). Both spacings are relative to the image's typical particle radius
   (the median over foreground components of their largest distance to the background), so one
   parameter set works across magnifications;
5. a watershed on the negative distance splits touching particles; foreground pieces without a
   seed become particles of their own; instances under ``min_area_px`` are dropped.

Pure functions: numpy arrays in, numpy arrays out, no file I/O.

Example
-------
>>> from sagegan.simulate import simulate_micrograph
>>> sim = simulate_micrograph(192, layout="sparse", seed=0)
>>> labels = segment_classical(sim.image, ClassicalParams())
>>> labels.dtype, labels.shape
(dtype('int32'), (192, 192))
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["ClassicalParams", "DEFAULT_GRID", "QUICK_GRID", "foreground_mask", "split_instances",
           "segment_classical", "grid_scores", "tune_classical"]

POLARITIES = ("auto", "bright", "dark")
SEED_METHODS = ("h_maxima", "peaks")


@dataclass(frozen=True)
class ClassicalParams:
    """Settings of :func:`segment_classical` (all lengths in pixels of the input image).

    Attributes
    ----------
    polarity : "auto", "bright" or "dark"
        Which side of the Otsu threshold the particles are on; "auto" takes the minority side.
    sigma : float
        Gaussian smoothing before thresholding (0 = none).
    background_sigma : float or None
        When set, a Gaussian of this width is subtracted first (uneven illumination).
    max_hole_area_px : int
        Holes in the foreground smaller than this are filled.
    seeds : "h_maxima" or "peaks"
        How the watershed is seeded on the distance map.
    h : float
        h-maxima height, as a fraction of the typical particle radius (``seeds="h_maxima"``):
        a neck between two particles splits them when both centres stand ``h * r`` above it.
    min_distance : float
        Smallest distance between two peaks, as a fraction of the typical particle radius
        (``seeds="peaks"``; the footprint is a square of side ``2 * min_distance * r + 1``).
    min_area_px : int
        Instances smaller than this are dropped (specks, noise).
    """

    polarity: str = "auto"
    sigma: float = 1.0
    background_sigma: float | None = None
    max_hole_area_px: int = 32
    seeds: str = "h_maxima"
    h: float = 0.3
    min_distance: float = 0.8
    min_area_px: int = 10

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {self.polarity!r}")
        if self.seeds not in SEED_METHODS:
            raise ValueError(f"seeds must be one of {', '.join(SEED_METHODS)}, got {self.seeds!r}")
        if not (self.sigma >= 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma}")
        if self.background_sigma is not None and not self.background_sigma > 0:
            raise ValueError(f"background_sigma must be positive or None, got {self.background_sigma}")
        if self.h < 0 or self.min_distance <= 0:
            raise ValueError(f"h must be >= 0 and min_distance > 0, got h={self.h}, min_distance={self.min_distance}")
        if self.min_area_px < 0 or self.max_hole_area_px < 0:
            raise ValueError("min_area_px and max_hole_area_px must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClassicalParams":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: The grid :func:`tune_classical` searches by default: 3 x 2 x 5 x 4 = 120 settings. Per image
#: only 4 distinct foreground masks are computed ("auto" equals "bright" or "dark") and 20
#: watersheds; the minimum area is applied afterwards.
DEFAULT_GRID: dict[str, Sequence] = {
    "polarity": ("auto", "bright", "dark"),
    "sigma": (1.0, 2.0),
    "seeding": (("h_maxima", 0.3), ("h_maxima", 0.6), ("h_maxima", 1.0), ("peaks", 0.8), ("peaks", 1.5)),
    "min_area_px": (5, 20, 60, 150),
}
#: A small grid for smoke tests.
QUICK_GRID: dict[str, Sequence] = {
    "polarity": ("auto", "bright", "dark"),
    "sigma": (1.0,),
    "seeding": (("h_maxima", 0.3), ("peaks", 0.8)),
    "min_area_px": (5, 20),
}


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D grey array, got shape {image.shape}")
    if image.dtype.kind not in "uifb":
        raise ValueError(f"image must be numeric, got dtype {image.dtype}")
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or infinite values")
    return image


def foreground_mask(image, params: ClassicalParams = ClassicalParams()) -> np.ndarray:
    """Steps 1-3: the particles' binary mask (smoothing, Otsu threshold, polarity, small holes)."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    img = _check_image(image)
    if params.background_sigma:
        img = img - ndi.gaussian_filter(img, params.background_sigma)
    if params.sigma > 0:
        img = ndi.gaussian_filter(img, params.sigma)
    if float(img.max()) <= float(img.min()):
        return np.zeros(img.shape, bool)
    bright = img > threshold_otsu(img)
    if params.polarity == "bright":
        fg = bright
    elif params.polarity == "dark":
        fg = ~bright
    else:
        fg = bright if bright.mean() <= 0.5 else ~bright
    if params.max_hole_area_px > 0:
        fg = fill_small_holes(fg, params.max_hole_area_px)
    return fg


def fill_small_holes(mask: np.ndarray, max_area_px: int) -> np.ndarray:
    """Fill background pieces (4-connected) smaller than ``max_area_px`` that do not touch the border."""
    from scipy import ndimage as ndi

    holes, n = ndi.label(~mask)
    if n == 0:
        return mask
    areas = np.bincount(holes.ravel(), minlength=n + 1)
    small = areas < max_area_px
    small[0] = False
    edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    small[edge] = False
    return mask | small[holes]


def typical_radius(foreground: np.ndarray, distance: np.ndarray | None = None) -> float:
    """Median over connected foreground pieces of their largest distance to the background (px)."""
    from scipy import ndimage as ndi

    if distance is None:
        distance = ndi.distance_transform_edt(foreground)
    comps, n = ndi.label(foreground)
    if n == 0:
        return 1.0
    peaks = [float(distance[box][comps[box] == i].max()) for i, box in enumerate(ndi.find_objects(comps), 1)]
    return float(max(1.0, np.median(peaks)))


def split_instances(foreground: np.ndarray, params: ClassicalParams = ClassicalParams()) -> np.ndarray:
    """Steps 4-5: instances of a binary mask by a seeded distance-transform watershed."""
    from scipy import ndimage as ndi

    fg = np.asarray(foreground, bool)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    distance = ndi.distance_transform_edt(fg)
    return _split(fg, distance, typical_radius(fg, distance), params)


def _split(fg: np.ndarray, distance: np.ndarray, radius: float, params: ClassicalParams) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.segmentation import relabel_sequential, watershed

    if params.seeds == "h_maxima":
        from skimage.morphology import h_maxima

        h = params.h * radius
        peaks = h_maxima(distance, h) > 0 if h > 0 else _local_max(distance)
        markers, n = ndi.label(peaks & fg)
    else:
        from skimage.feature import peak_local_max

        spacing = max(1, int(round(params.min_distance * radius)))
        comps, _ = ndi.label(fg)
        coords = peak_local_max(distance, min_distance=spacing, labels=comps, exclude_border=False)
        markers = np.zeros(fg.shape, np.int32)
        markers[tuple(coords.T)] = np.arange(1, len(coords) + 1)
        n = len(coords)
    labels = watershed(-distance, markers, mask=fg) if n else np.zeros(fg.shape, np.int32)
    orphans, n_orphans = ndi.label(fg & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    labels = _drop_small(labels, params.min_area_px)
    return relabel_sequential(labels.astype(np.int32))[0].astype(np.int32)


def _local_max(distance: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return (distance == ndi.maximum_filter(distance, size=3)) & (distance > 0)


def _drop_small(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    if min_area_px <= 0 or not labels.any():
        return labels
    areas = np.bincount(labels.ravel())
    small = areas < min_area_px
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def segment_classical(image, params: ClassicalParams | Mapping[str, Any] | None = None) -> np.ndarray:
    """Segment particles with the classical threshold + watershed pipeline.

    Parameters
    ----------
    image : ndarray (H, W)
        Grey micrograph (any numeric type; scaling does not matter to Otsu's threshold).
    params : ClassicalParams or dict, optional
        Settings (see :class:`ClassicalParams`); defaults when omitted.

    Returns
    -------
    ndarray of int32 (H, W)
        Instance labels, 0 = background, 1..N particles.

    Example
    -------
    >>> img = np.zeros((40, 40), np.float32); img[5:15, 5:15] = 1; img[20:32, 22:34] = 1
    >>> int(segment_classical(img).max())
    2
    """
    if params is None:
        params = ClassicalParams()
    elif isinstance(params, Mapping):
        params = ClassicalParams.from_dict(params)
    return split_instances(foreground_mask(image, params), params)


# ------------------------------------------------------------------------------- tuning


def _pairs(samples: Iterable) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for s in samples:
        if hasattr(s, "image") and hasattr(s, "labels"):
            out.append((np.asarray(s.image), np.asarray(s.labels)))
        else:
            image, labels = s
            out.append((np.asarray(image), np.asarray(labels)))
    return out


def _expand_grid(grid: Mapping[str, Sequence]) -> tuple[list[tuple], list[tuple], list[int], dict]:
    grid = dict(grid)
    fg_keys = [("polarity", grid.pop("polarity", ("auto",))), ("sigma", grid.pop("sigma", (1.0,)))]
    seeding = list(grid.pop("seeding", (("h_maxima", 0.3),)))
    areas = [int(a) for a in grid.pop("min_area_px", (10,))]
    fixed = {k: (v[0] if isinstance(v, (list, tuple)) else v) for k, v in grid.items()}
    for k, v in grid.items():
        if isinstance(v, (list, tuple)) and len(v) > 1:
            raise ValueError(f"grid key {k!r} can take one value only (the grid searches polarity, sigma, "
                             "seeding and min_area_px)")
    fg_settings = list(itertools.product(*[v for _, v in fg_keys]))
    return fg_settings, seeding, areas, fixed


def grid_scores(samples: Sequence, grid: Mapping[str, Sequence] | None = None) -> list[tuple[ClassicalParams, float]]:
    """Mean object F1 at IoU 0.5 of every setting of ``grid`` over ``samples``.

    ``samples`` are :class:`sagegan.io.Sample` objects or ``(image, labels)`` pairs. The grid
    maps ``polarity``, ``sigma``, ``seeding`` (pairs ``(seeds, value)``: ``("h_maxima", h)``
    or ``("peaks", min_distance)``) and ``min_area_px`` to the values to try; any other
    :class:`ClassicalParams` field may be fixed with a one-element list. Thresholding is done
    once per (polarity, sigma) and the watershed once per seeding, so the cost grows with
    those, not with the full product.
    """
    from scipy import ndimage as ndi

    from .metrics import match_instances

    pairs = _pairs(samples)
    if not pairs:
        raise ValueError("no samples to tune on")
    fg_settings, seeding, areas, fixed = _expand_grid(grid or DEFAULT_GRID)
    totals: dict[ClassicalParams, float] = {}
    for image, truth in pairs:
        done: dict[bytes, dict] = {}  # foreground mask -> F1 by (seeding, area): "auto" repeats a side
        for polarity, sigma in fg_settings:
            base = ClassicalParams(**{**fixed, "polarity": polarity, "sigma": float(sigma)})
            fg = foreground_mask(image, base)
            key = np.packbits(fg).tobytes()
            if key not in done:
                scores = {}
                distance = ndi.distance_transform_edt(fg)
                radius = typical_radius(fg, distance)
                for seeds, value in seeding:
                    spec = {"seeds": seeds, ("h" if seeds == "h_maxima" else "min_distance"): float(value)}
                    params0 = replace(base, **spec, min_area_px=0)
                    labels = _split(fg, distance, radius, params0) if fg.any() else np.zeros(fg.shape, np.int32)
                    for area in areas:
                        m = match_instances(_drop_small(labels, area), truth, 0.5)
                        denom = 2 * m.tp + m.fp + m.fn
                        scores[(seeds, float(value), area)] = 1.0 if denom == 0 else 2 * m.tp / denom
                done[key] = scores
            for (seeds, value, area), f1 in done[key].items():
                spec = {"seeds": seeds, ("h" if seeds == "h_maxima" else "min_distance"): value}
                params = replace(base, **spec, min_area_px=area)
                totals[params] = totals.get(params, 0.0) + f1
    return [(p, t / len(pairs)) for p, t in totals.items()]


def tune_classical(samples: Sequence, grid: Mapping[str, Sequence] | None = None, max_images: int = 24,
                   seed: int = 0) -> ClassicalParams:
    """The grid setting with the highest mean F1@0.5 on (a random subset of) ``samples``.

    Parameters
    ----------
    samples : sequence of Sample or (image, labels)
        Training images only: the test split must not be used.
    grid : dict, optional
        See :func:`grid_scores`; :data:`DEFAULT_GRID` when omitted.
    max_images : int
        At most this many samples are used (drawn at random with ``seed``), so tuning stays fast.

    Returns
    -------
    ClassicalParams
        Ties go to the setting found first in the grid's order.
    """
    pairs = _pairs(samples)
    if not pairs:
        raise ValueError("no samples to tune on")
    if max_images and len(pairs) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(pairs), max_images, replace=False))
        pairs = [pairs[i] for i in idx]
    scores = grid_scores(pairs, grid)
    best = max(scores, key=lambda ps: ps[1])  # max keeps the first of equal scores
    return best[0]
