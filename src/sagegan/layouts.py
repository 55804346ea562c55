"""The layout model: fit it to instance masks, and draw new layouts (label maps) from it.

This module owns `LayoutModel`, `fit_layout_model`, `draw_layout` / `draw_layouts`,
`layout_stats` (to compare real with drawn layouts) and `augment_real_mask` (the 'real' layouts
the GAN also sees).

The reference systems only re-render the real training masks. sagegan also draws *new*, physically
plausible layouts that are statistically like the training masks: a `LayoutModel` sums up a set of
label images (particle size distribution, particle shape, how the particles are arranged, how
densely and how orderly) in the simulator's terms, and `draw_layout` turns those numbers into
`sagegan.simulate.SimulationParams` for the placement and drawing stages of the simulator (imaging
skipped) to get a fresh instance-label map. `augment_real_mask` makes the 'real' layouts: flips,
quarter turns and crops of a training mask.

How a model is fitted (every image measured alone, then pooled):

* **sizes** -- the equivalent circular diameter (ECD, ``sqrt(4 area / pi)`` as in
  `particles.measure`) of every particle that does not touch the image border; a lognormal fitted
  to all of them (log-mean, log-sd), and each image's own mean ECD and spread.
* **shape** -- the median Feret aspect ratio (`particles.measure`) of a sample of particles: *rod*
  when clearly elongated, *cube* when squarish (a rounded square has a Feret ratio near 1.3),
  *disc* otherwise.
* **arrangement** -- from `order.summarize_order` and the foreground fraction, each image is one of
  *hex* (high local psi6, or a fairly high one whose orientation carries over several lattice
  constants), *square* (the same with psi4; where both qualify, `order.lattice_type_from_order`
  decides), *sparse* (otherwise, with a thin foreground and nearest neighbours more than 1.4
  diameters apart) or dense *random*; the layout weights are the fractions of images of each
  kind. Rod arrays are judged on their centroids, so rods standing in rows come out as *square*
  whether the rows are staggered or not.
* **spacing and defects** -- the first g(r) peak over the particle size gives ``1 + gap`` (per
  image, and the mean); in lattice images the spread of bond lengths gives the jitter, empty
  sites ringed by neighbours the vacancies, orientational domains the grains.
* **calibration** -- one full layer per layout is simulated with these numbers: it gives the
  foreground fraction of a full layer (so ``coverage`` is the covered share of the image, as the
  simulator means it) and the ratio of drawn ECD to the simulator's nominal size, so that drawn
  layouts reproduce the measured ECD. Then lattices are drawn from the model and measured like
  the training masks, and jitter, vacancies and grains are moved by the difference (one
  bias-correction step: grain boundaries and island edges would otherwise pass for vacancies).

Each drawn layout takes the size, spread, coverage and spacing of one training image of its
layout (`LayoutModel.image_profiles`), so sets that mix magnifications or samples keep their
per-image character. Pure functions, deterministic for a given seed.

Example
-------
>>> from sagegan.simulate import simulate_micrograph
>>> real = [simulate_micrograph(128, "hex", seed=s, mean_diameter_px=12, render=False).labels
...         for s in range(2)]
>>> model = fit_layout_model(real)
>>> model.shape, max(model.layout_weights, key=model.layout_weights.get)
('disc', 'hex')
>>> draw_layout(model, (96, 128), rng_or_seed=0).shape
(96, 128)
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .data import as_label_image
from .order import (bond_order, lattice_type_from_order, nearest_neighbour_distances,
                    summarize_order)
from .particles import measure
from .simulate import (_MIN_SIZE, DENSE_CUBE_SCALE, FREE_CUBE_SCALE, PARAM_RANGES, SPARSE_REACH,
                       SimulationParams, _check_seed, diameter_range, nominal_area,
                       simulate_micrograph)

__all__ = [
    "LAYOUT_KINDS",
    "LayoutModel",
    "fit_layout_model",
    "draw_layout",
    "draw_layouts",
    "augment_real_mask",
    "layout_stats",
]

#: Layouts a model can draw (the simulator's concrete layouts).
LAYOUT_KINDS = ("hex", "square", "random", "sparse")
_MODEL_SHAPES = ("disc", "cube", "rod")

# Shape classification on the median Feret aspect ratio: a digital disc of ECD d has a ratio of
# about 1 + 1.2 / d, a rounded cube about 1.31 - 0.8 / d; the threshold sits half way.
_ROD_ASPECT = 1.6
# Layout classification: a lattice has a high local bond order, or a fairly high one that stays
# aligned over several lattice constants (a jittered lattice; a random packing loses the alignment
# within a neighbour or two). A sparse layer has a thin foreground and nearest neighbours far apart
# compared with the particle size (mean ECD).
_HEX_PSI6 = (0.7, 0.6)      # local psi6 alone / together with the orientational correlation
_SQUARE_PSI4 = (0.6, 0.5)
_ALIGNED = 0.35             # orientational correlation at 2.5..4 lattice constants
_SPARSE_NN_RATIO = 1.4
_SPARSE_FOREGROUND = 0.3
# A monolayer covering at least this share of the image is drawn full (no islands).
_FULL_LAYER = 0.9
_GAP_RANGE = (0.0, 1.0)
# A drawn layout keeps at least a tenth of its lattice sites.
_VACANCY_RANGE = (0.0, 0.9)
# What the simulator draws unless told otherwise: where the masks do not tell, the model does too.
_SIMULATOR_DEFAULTS = SimulationParams()
# Particles measured per image for the shape (regionprops is the slow part of a fit).
_SHAPE_SAMPLE_TOTAL = 600


@dataclass
class LayoutModel:
    """What a set of instance masks looks like, in the simulator's terms.

    Saved as JSON in the GAN run folder (`to_dict`, `from_dict`).

    Attributes
    ----------
    diameter_mu, diameter_sigma : float
        Lognormal fit of the particle ECD in px (mean and sd of ``log(ECD)``), particles touching
        the border left out.
    shape : {"disc", "cube", "rod"}
        Particle shape, from the median Feret aspect ratio.
    aspect_ratio : float
        Median Feret aspect ratio (length / width of rods; about 1 for discs).
    layout_weights : dict
        Probability of each layout ("hex", "square", "random", "sparse"): the share of training
        images classified as that layout.
    gap_fraction : float
        ``spacing / size - 1``, the simulator's gap (spacing from the first g(r) peak of lattice and
        dense random images), clipped to [0, 1].
    coverage : float
        Mean share of the image covered by the monolayer (foreground fraction over that of a full
        simulated layer); below 0.9 drawn layouts have islands and voids.
    jitter_fraction : float
        Standard deviation of a lattice site's displacement, in lattice constants.
    vacancy_fraction : float
        Share of empty lattice sites.
    n_grains : float
        Mean number of lattice grains per training image.
    image_shape : tuple of int
        Typical (median) training image shape (h, w); grains scale with the drawn area.
    n_images : int
        Number of label images fitted (images without particles included).
    ecd_per_size : float or None
        Mean drawn ECD over the simulator's nominal size (disc diameter, cube edge, rod width),
        calibrated on a simulated layer; None: from the shape's geometry.
    size_sigma : float or None
        Lognormal sigma of the simulator's nominal size within one image (the within-image spread
        of log ECD less the spread added by drawing on pixels and by touching neighbours); None:
        `diameter_sigma`.
    image_profiles : list of dict
        One entry per training image with particles: ``layout`` (its class), ``mean_ecd_px``,
        ``size_sigma`` (as `size_sigma`, for this image), ``coverage`` and ``gap_fraction`` (None
        where the image does not tell). A set taken at several magnifications, or of several
        samples, has its own particle size, spread, density and spacing per image, and these go
        together (small particles may come in sparse layers, large ones in dense arrays): a drawn
        layout picks its layout by `layout_weights`, then a random training image of that layout,
        and takes that image's numbers. Without profiles (a hand-made model) the pooled
        lognormal, `size_sigma`, `coverage` and `gap_fraction` are used.
    foreground_fraction : float or None
        Mean foreground fraction of the training masks.
    training_stats : dict
        `layout_stats` of the training masks, to compare drawn layouts with.
    """

    diameter_mu: float
    diameter_sigma: float
    shape: str
    aspect_ratio: float
    layout_weights: dict
    gap_fraction: float
    coverage: float
    jitter_fraction: float
    vacancy_fraction: float
    n_grains: float
    image_shape: tuple
    n_images: int
    ecd_per_size: float | None = None
    size_sigma: float | None = None
    image_profiles: list = field(default_factory=list)
    foreground_fraction: float | None = None
    training_stats: dict = field(default_factory=dict)

    @property
    def mean_diameter_px(self) -> float:
        """Mean ECD of the fitted lognormal, px."""
        return float(math.exp(self.diameter_mu + 0.5 * self.diameter_sigma**2))

    def to_dict(self) -> dict:
        """Plain, JSON-serialisable dict (``image_shape`` as a list)."""
        d = asdict(self)
        d["image_shape"] = [int(v) for v in self.image_shape]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayoutModel":
        """Inverse of `to_dict`; raises ValueError on missing or unknown keys."""
        if not isinstance(d, dict):
            raise ValueError(f"a LayoutModel dict is needed, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING}
        unknown, missing = set(d) - names, required - set(d)
        if unknown or missing:
            raise ValueError(f"not a LayoutModel dict: missing {sorted(missing)}, "
                             f"unknown {sorted(unknown)}")
        d = dict(d)
        d["image_shape"] = tuple(int(v) for v in d["image_shape"])
        d["layout_weights"] = {str(k): float(v) for k, v in d["layout_weights"].items()}
        d["n_images"] = int(d["n_images"])
        d["training_stats"] = dict(d.get("training_stats") or {})
        d["image_profiles"] = [dict(p) for p in d.get("image_profiles") or []]
        model = cls(**d)
        _check_model(model)
        return model



# --------------------------------------------------------------------------------------------
# argument checks


def _as_rng(rng_or_seed: Any) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if rng_or_seed is None or isinstance(rng_or_seed, (bool, float, str)):
        raise ValueError(f"need a numpy Generator or a non-negative integer seed, "
                         f"got {rng_or_seed!r}")
    try:
        return np.random.default_rng(rng_or_seed)
    except (TypeError, ValueError) as err:
        raise ValueError(f"need a numpy Generator or a non-negative integer seed, "
                         f"got {rng_or_seed!r} ({err})") from None


def _as_shape(shape: Any) -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape, shape)
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (h, w), got {shape!r}") from None
    if h < _MIN_SIZE or w < _MIN_SIZE:
        raise ValueError(f"shape must be at least {_MIN_SIZE} x {_MIN_SIZE} px, got {(h, w)}")
    return h, w


def _check_model(model: LayoutModel) -> None:
    if not isinstance(model, LayoutModel):
        raise ValueError(f"need a LayoutModel, got {type(model).__name__}")
    if model.shape not in _MODEL_SHAPES:
        raise ValueError(f"model.shape must be one of {_MODEL_SHAPES}, got {model.shape!r}")
    weights = model.layout_weights
    bad = set(weights) - set(LAYOUT_KINDS)
    if bad:
        raise ValueError(f"unknown layouts {sorted(bad)} in layout_weights; "
                         f"use {', '.join(LAYOUT_KINDS)}")
    values = np.array([float(v) for v in weights.values()])
    if values.size == 0 or not np.all(np.isfinite(values)) or values.min() < 0 or values.sum() <= 0:
        raise ValueError(f"layout_weights must be non-negative with a positive sum, got {weights}")
    for name in ("diameter_mu", "diameter_sigma", "gap_fraction", "coverage", "jitter_fraction",
                 "vacancy_fraction", "n_grains", "aspect_ratio"):
        if not math.isfinite(float(getattr(model, name))):
            raise ValueError(f"model.{name} must be finite, got {getattr(model, name)!r}")
    for name in ("ecd_per_size", "size_sigma"):
        value = getattr(model, name)
        if value is not None and not math.isfinite(float(value)):
            raise ValueError(f"model.{name} must be finite or None, got {value!r}")
    if model.ecd_per_size is not None and model.ecd_per_size <= 0:
        raise ValueError(f"model.ecd_per_size must be positive, got {model.ecd_per_size!r}")
    for i, profile in enumerate(model.image_profiles):
        try:
            ok = (profile["layout"] in LAYOUT_KINDS and float(profile["mean_ecd_px"]) > 0
                  and 0.0 <= float(profile["coverage"]) <= 1.0
                  and all(profile.get(key) is None or math.isfinite(float(profile[key]))
                          for key in ("gap_fraction", "size_sigma")))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"model.image_profiles[{i}] must have a known layout, a positive "
                             f"mean_ecd_px, a coverage in [0, 1], and a finite gap_fraction and "
                             f"size_sigma (or None); "
                             f"got {profile!r}")


# --------------------------------------------------------------------------------------------
# measuring one label image


def _ecd_per_size(shape: str, aspect_ratio: float) -> float:
    """ECD of the simulator's particle over its nominal size (diameter, cube edge, rod width)."""
    return math.sqrt(4.0 * nominal_area(shape, 1.0, max(aspect_ratio, 1.0)) / math.pi)


def _image_stats(labels: np.ndarray, n_shape: int = 0,
                 rng: np.random.Generator | None = None) -> dict | None:
    """Sizes, positions, order and (for `n_shape` sampled particles) shape of one label image.

    None when the image has no particle.
    """
    h, w = labels.shape
    if labels.size == 0:
        return None
    if labels.max() > labels.size:  # sparse ids (e.g. 32-bit hashes): renumber before counting
        labels = _relabel_sequential(labels)
    flat = labels.ravel()
    counts = np.bincount(flat)
    ids = np.flatnonzero(counts)
    ids = ids[ids > 0]
    if ids.size == 0:
        return None
    area = counts[ids].astype(float)
    rows, cols = np.divmod(np.arange(flat.size), w)
    cx = np.bincount(flat, weights=cols, minlength=counts.size)[ids] / area
    cy = np.bincount(flat, weights=rows, minlength=counts.size)[ids] / area
    on_edge = np.zeros(counts.size, bool)
    on_edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    touches = on_edge[ids]
    centroids = np.column_stack([cx, cy])
    nn = nearest_neighbour_distances(centroids, (h, w))
    nn = nn[np.isfinite(nn)]
    ecd = 2.0 * np.sqrt(area / math.pi)
    stats = {
        "shape": (h, w),
        "n": int(ids.size),
        "ecd": ecd,
        "touches": touches,
        "mean_ecd": float(ecd[~touches].mean() if (~touches).any() else ecd.mean()),
        "centroids": centroids,
        "foreground": float(np.count_nonzero(flat) / flat.size),
        "nn_median": float(np.median(nn)) if nn.size else math.nan,
        "nn_q10": float(np.quantile(nn, 0.1)) if nn.size else math.nan,
        "order": summarize_order(centroids, (h, w)),
        "aspect": np.zeros(0),
    }
    a = stats["order"]["lattice_constant_px"]
    stats["g6"] = _orientational_correlation(centroids, (h, w), 6, a)
    stats["g4"] = _orientational_correlation(centroids, (h, w), 4, a)
    if n_shape > 0:
        pool = ids[~touches] if (~touches).any() else ids
        chosen = pool if pool.size <= n_shape else np.sort(rng.choice(pool, n_shape, replace=False))
        table = measure(np.where(np.isin(labels, chosen), labels, 0))
        stats["aspect"] = table["aspect_ratio"].to_numpy()
    return stats


def _orientational_correlation(centroids: np.ndarray, shape: tuple[int, int], k: int,
                               a: float) -> float:
    """``Re <psi_k(i) conj psi_k(j)> / <|psi_k|^2>`` over pairs 2.5 to 4 lattice constants apart.

    Near 1 when the local lattice orientation carries over several neighbours (a crystal, even a
    jittered one), near 0 in a liquid-like packing. ``psi6``: Delaunay neighbours, ``psi4``: the 4
    nearest, as in `order.summarize_order`. NaN without such pairs.
    """
    if not (math.isfinite(a) and a > 0) or len(centroids) < 8:
        return math.nan
    psi = bond_order(centroids, k, shape, "delaunay" if k == 6 else "knn")
    ok = np.isfinite(psi)
    c, psi = centroids[ok], psi[ok]
    if len(c) < 2:
        return math.nan
    pairs = cKDTree(c).query_pairs(4.0 * a, output_type="ndarray")
    d = c[pairs[:, 1]] - c[pairs[:, 0]]
    pairs = pairs[np.hypot(d[:, 0], d[:, 1]) > 2.5 * a]
    if len(pairs) == 0:
        return math.nan
    corr = np.real(psi[pairs[:, 0]] * np.conj(psi[pairs[:, 1]])).mean()
    return float(corr / max(np.mean(np.abs(psi) ** 2), 1e-12))


def _classify_shape(aspect: float, mean_ecd: float) -> str:
    if not math.isfinite(aspect):
        return "disc"
    if aspect >= _ROD_ASPECT:
        return "rod"
    return "cube" if aspect >= 1.155 + 0.2 / max(mean_ecd, 1.0) else "disc"


def _classify_layout(stats: dict) -> str:
    """hex / square / random / sparse for one image (see the module docstring)."""
    psi6 = stats["order"]["psi6_local_mean"]
    psi4 = stats["order"]["psi4_local_mean"]
    hex_like = psi6 >= _HEX_PSI6[0] or (psi6 >= _HEX_PSI6[1] and stats["g6"] >= _ALIGNED)
    square_like = psi4 >= _SQUARE_PSI4[0] or (psi4 >= _SQUARE_PSI4[1] and stats["g4"] >= _ALIGNED)
    lattice = lattice_type_from_order(psi6, psi4, hex_like=hex_like, square_like=square_like)
    if lattice is not None:
        return lattice  # a lattice, however widely spaced
    thin = stats["foreground"] < _SPARSE_FOREGROUND
    nn_ratio = stats["nn_median"] / stats["mean_ecd"]
    if thin and not nn_ratio <= _SPARSE_NN_RATIO:  # NaN (a lone particle) counts as far
        return "sparse"
    return "random"


def _lattice_defects(stats: dict, kind: str) -> tuple[float, float]:
    """Jitter and vacancy share of one lattice image (NaN where it cannot tell).

    Only the interior counts: sites at least two lattice constants ``a`` from the border.

    * jitter -- the spread (MAD) of the lengths of nearest-neighbour bonds, over ``a`` and over
      sqrt(2) (a bond is the difference of two jittered sites);
    * vacancies -- every bond turned by +-60 degrees (hex) or +-90 degrees (square) about either
      end points at a lattice site. A site with no particle within 0.7 ``a`` but at least z - 1 of
      its z neighbours present is a vacancy; an empty site with fewer neighbours is outside the
      layer (a void or the edge of an island), and one near a particle is occupied, so grain
      boundaries and islands are not taken for vacancies.
    """
    a = stats["order"]["lattice_constant_px"]
    c = stats["centroids"]
    h, w = stats["shape"]
    if not (math.isfinite(a) and a > 0) or len(c) < 8:
        return math.nan, math.nan

    def inside(p: np.ndarray) -> np.ndarray:
        return ((p[:, 0] >= 2 * a) & (p[:, 0] <= w - 1 - 2 * a)
                & (p[:, 1] >= 2 * a) & (p[:, 1] <= h - 1 - 2 * a))

    interior = inside(c)
    if interior.sum() < 10:
        return math.nan, math.nan
    z = 6 if kind == "hex" else 4
    tree = cKDTree(c)
    pairs = tree.query_pairs(1.25 * a, output_type="ndarray")
    d = c[pairs[:, 1]] - c[pairs[:, 0]]
    length = np.hypot(d[:, 0], d[:, 1])
    bond = (length > 0.75 * a) & (interior[pairs[:, 0]] | interior[pairs[:, 1]])
    pairs, d, length = pairs[bond], d[bond], length[bond]
    jitter = math.nan
    if length.size >= 10:
        mad = np.median(np.abs(length - np.median(length)))
        jitter = 1.4826 * mad / a / math.sqrt(2.0)

    turn = math.radians(360.0 / z)
    sites = []
    for origin, vec in ((c[pairs[:, 0]], d), (c[pairs[:, 1]], -d)):
        for t in (turn, -turn):
            rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
            sites.append(origin + vec @ rot.T)
    sites = np.concatenate(sites) if sites else np.zeros((0, 2))
    sites = sites[inside(sites)]
    if sites.size:
        sites = sites[tree.query(sites)[0] > 0.7 * a]
    if sites.size:
        near = tree.query_ball_point(sites, 1.2 * a, return_length=True)
        too_near = tree.query_ball_point(sites, 0.8 * a, return_length=True)
        sites = sites[(near - too_near) >= z - 1]  # a ring of neighbours at about a
    n_vacant = 0
    if sites.size:  # one vacancy is found from several bonds: count clusters of guesses
        close = cKDTree(sites).query_pairs(0.5 * a, output_type="ndarray")
        graph = sparse.coo_matrix((np.ones(len(close)), (close[:, 0], close[:, 1])),
                           shape=(len(sites), len(sites)))
        n_vacant = connected_components(graph, directed=False)[0]
    n_full = int(interior.sum())
    return jitter, n_vacant / (n_vacant + n_full)


def _spacing_gap(stats: dict, kind: str, shape: str, size: float) -> float:
    """Gap estimate of one image (NaN where the layout does not tell it)."""
    if kind in ("hex", "square") or (kind == "random" and shape != "rod"):
        scale = DENSE_CUBE_SCALE if (kind == "random" and shape == "cube") else 1.0
        return stats["order"]["lattice_constant_px"] / (size * scale) - 1.0
    if kind == "sparse" and shape != "rod":
        # Sparse layers are hard-core: the closest pairs sit near the exclusion distance.
        scale = FREE_CUBE_SCALE if shape == "cube" else 1.0
        return stats["nn_q10"] / (SPARSE_REACH * size * scale) - 1.0
    return math.nan


def _nanmean(values: Sequence[float], default: float) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    return float(v.mean()) if v.size else float(default)


def _pooled(stats: list[dict]) -> dict:
    """Set-level summary of per-image stats (see `layout_stats`)."""
    ecd = np.concatenate([s["ecd"][~s["touches"]] for s in stats])
    if ecd.size == 0:
        ecd = np.concatenate([s["ecd"] for s in stats])
    n = sum(s["n"] for s in stats)
    area = sum(s["shape"][0] * s["shape"][1] for s in stats)

    def mean_of(key: str) -> float:
        return _nanmean([s["order"][key] for s in stats], math.nan)

    return {
        "n_images": len(stats),
        "n_particles": int(n),
        "mean_ecd_px": float(ecd.mean()),
        "sd_ecd_px": float(ecd.std(ddof=1)) if ecd.size > 1 else 0.0,
        "psi6_local_mean": mean_of("psi6_local_mean"),
        "psi6_global": mean_of("psi6_global"),
        "psi4_local_mean": mean_of("psi4_local_mean"),
        "psi4_global": mean_of("psi4_global"),
        "nn_distance_px_mean": mean_of("nn_distance_px_mean"),
        "foreground_fraction": float(np.mean([s["foreground"] for s in stats])),
        "particles_per_10k_px": float(1e4 * n / area),
    }


# --------------------------------------------------------------------------------------------
# public API


def layout_stats(label_images: Sequence[np.ndarray]) -> dict:
    """Summary statistics of a set of instance masks, to compare real with drawn layouts.

    Parameters
    ----------
    label_images : sequence of (H, W) int arrays
        Label images (0 = background); bool masks are split 4-connected.

    Returns
    -------
    dict
        ``n_images`` (with particles), ``n_particles``, ``mean_ecd_px`` and ``sd_ecd_px`` (pooled,
        particles touching the border left out), ``psi6_local_mean``, ``psi6_global``,
        ``psi4_local_mean``, ``psi4_global``, ``nn_distance_px_mean`` (each the mean over images
        of `order.summarize_order`'s value), ``foreground_fraction`` (mean over images) and
        ``particles_per_10k_px`` (particles per 10^4 px^2).

    Raises
    ------
    ValueError
        If no image holds a particle.

    Example
    -------
    >>> lab = np.zeros((32, 32), int); lab[4:8, 4:8] = 1; lab[20:24, 10:14] = 2
    >>> bool(layout_stats([lab])["mean_ecd_px"] == 2 * np.sqrt(16 / np.pi))
    True
    """
    images = _as_image_list(label_images)
    stats = [s for s in (_image_stats(lab) for lab in images) if s is not None]
    if not stats:
        raise ValueError(f"no particles in any of the {len(images)} label images")
    return _pooled(stats)


def _as_image_list(label_images: Any) -> list[np.ndarray]:
    if isinstance(label_images, np.ndarray) and label_images.ndim == 2:
        raise ValueError("label_images must be a sequence of 2-D label images; "
                         "wrap a single image in a list")
    images = list(label_images)
    if not images:
        raise ValueError("label_images is empty: need at least one label image")
    return [as_label_image(lab, f"label_images[{i}]") for i, lab in enumerate(images)]


def fit_layout_model(label_images: Sequence[np.ndarray]) -> LayoutModel:
    """Fit a `LayoutModel` to a set of instance masks (e.g. the GAN's training masks).

    Parameters
    ----------
    label_images : sequence of (H, W) int arrays
        Instance-label images, 0 = background, one id per particle; bool masks are split into
        4-connected particles. Images may differ in size.

    Returns
    -------
    LayoutModel
        See the module docstring for how each number is measured.

    Raises
    ------
    ValueError
        If the sequence is empty, an image is not a 2-D integer label image, or no image holds a
        particle.

    Example
    -------
    >>> from sagegan.simulate import simulate_micrograph
    >>> masks = [simulate_micrograph(128, "square", seed=s, mean_diameter_px=12,
    ...                              render=False).labels for s in range(2)]
    >>> fit_layout_model(masks).layout_weights["square"]
    1.0
    """
    images = _as_image_list(label_images)
    n_shape = max(8, _SHAPE_SAMPLE_TOTAL // len(images))
    sample_rng = np.random.default_rng(0)  # which particles get their shape measured
    stats = [s for s in (_image_stats(lab, n_shape, sample_rng) for lab in images)
             if s is not None]
    if not stats:
        raise ValueError(f"no particles in any of the {len(images)} label images")

    mu, sigma, within_var, within_vars = _fit_sizes(stats)
    shape, aspect = _fit_shape(stats, math.exp(mu + 0.5 * sigma**2))

    # Arrangement of each image, then the lattice geometry.
    kinds = [_classify_layout(s) for s in stats]
    weights = {k: kinds.count(k) / len(kinds) for k in LAYOUT_KINDS}
    geometric = _ecd_per_size(shape, aspect)  # drawn ECD per nominal size; calibrated below
    gaps = [_spacing_gap(s, k, shape, s["mean_ecd"] / geometric) for s, k in zip(stats, kinds)]
    gap = _pooled_gap(gaps, kinds)

    measured = _measure_lattices(stats, kinds, weights, shape)
    lattice_kinds = list(measured)
    jitter = _weighted(measured, weights, "jitter", _SIMULATOR_DEFAULTS.jitter_fraction, (0.0, 0.3))
    vacancy = _weighted(measured, weights, "vacancy", _SIMULATOR_DEFAULTS.vacancy_fraction,
                        (0.0, 0.5))
    n_grains = _weighted(measured, weights, "grains", 1.0, (1.0, math.inf))

    # Calibration 1: a full simulated layer of each layout in use gives the foreground of a full
    # layer and the drawn ECD per nominal size.
    typical_size = float(np.median([s["mean_ecd"] for s in stats])) / geometric
    full = {k: _calibrate(k, shape, typical_size, math.sqrt(within_var), gap, aspect, vacancy,
                          jitter, n_grains)
            for k in LAYOUT_KINDS if weights[k] > 0}
    calibrated = sum(weights[k] * c["ecd_per_size"] for k, c in full.items())
    render_var = sum(weights[k] * c["log_ratio_var"] for k, c in full.items())
    per_image = _PerImage(
        stats, kinds, within_vars, full, gap, render_var, n_empty=len(images) - len(stats),
        gaps=[_keep_spacing(g, calibrated, geometric) if math.isfinite(g) else None for g in gaps])

    model = LayoutModel(
        diameter_mu=mu,
        diameter_sigma=sigma,
        shape=shape,
        aspect_ratio=float(aspect),
        layout_weights={k: float(v) for k, v in weights.items()},
        gap_fraction=(_keep_spacing(gap, calibrated, geometric)
                      if any(math.isfinite(g) for g in gaps) else gap),
        coverage=per_image.coverage(),
        jitter_fraction=jitter,
        vacancy_fraction=vacancy,
        n_grains=n_grains,
        image_shape=(int(np.median([lab.shape[0] for lab in images])),
                     int(np.median([lab.shape[1] for lab in images]))),
        n_images=len(images),
        ecd_per_size=float(calibrated),
        size_sigma=float(math.sqrt(max(within_var - render_var, 0.0))),
        image_profiles=per_image.profiles(),
        foreground_fraction=float(np.mean([s["foreground"] for s in stats]
                                          + [0.0] * per_image.n_empty)),
        training_stats=_pooled(stats),
    )

    # Calibration 2: the defect estimates are biased (grain boundaries and island edges look like
    # vacancies, small grains go uncounted), so measure the same way on layouts drawn from the
    # model and move each number by the difference between what was seen and what came back.
    if lattice_kinds:
        _correct_lattice_defects(model, measured, lattice_kinds)
        for k in lattice_kinds:  # a full layer thins out with the vacancies
            full[k]["foreground"] *= (1.0 - model.vacancy_fraction) / (1.0 - vacancy)
        model.coverage = per_image.coverage()
        model.image_profiles = per_image.profiles()
    return model


def _fit_sizes(stats: list[dict]) -> tuple[float, float, float, list[float]]:
    """Lognormal fit (mu, sigma) of the ECD of whole (not border-cut) particles, pooled; and the
    variance of log ECD within one image: the particle-weighted mean, and each image's own.

    The within-image spread is kept apart because a set may mix magnifications: the image means
    go to the profiles.
    """
    ecd = np.concatenate([s["ecd"][~s["touches"]] for s in stats])
    if ecd.size == 0:
        ecd = np.concatenate([s["ecd"] for s in stats])
    log_ecd = np.log(ecd)
    mu = float(log_ecd.mean())
    sigma = float(log_ecd.std()) if log_ecd.size > 1 else 0.0
    within_vars, counts = [], []
    for s in stats:
        whole = s["ecd"][~s["touches"]] if (~s["touches"]).any() else s["ecd"]
        within_vars.append(float(np.log(whole).var()) if whole.size > 1 else math.nan)
        counts.append(whole.size)
    known = np.isfinite(within_vars)
    within_var = (float(np.average(np.asarray(within_vars)[known],
                                   weights=np.asarray(counts)[known])) if known.any() else 0.0)
    within_vars = [v if math.isfinite(v) else within_var for v in within_vars]
    return mu, sigma, within_var, within_vars


def _fit_shape(stats: list[dict], mean_ecd: float) -> tuple[str, float]:
    """Particle shape and aspect ratio (at least 1) from the median Feret aspect ratio."""
    aspect_all = np.concatenate([s["aspect"] for s in stats])
    aspect_all = aspect_all[np.isfinite(aspect_all)]
    aspect = float(np.median(aspect_all)) if aspect_all.size else 1.0
    return _classify_shape(aspect, mean_ecd), max(aspect, 1.0)


def _measure_lattices(stats: list[dict], kinds: list[str], weights: dict,
                      shape: str) -> dict[str, dict]:
    """`_lattice_estimates` of each lattice kind in use, on its images.

    Rods stand in rows: their bonds are not those of a point lattice, so rod layouts are not
    measured and keep the simulator's defaults.
    """
    lattice_kinds = [k for k in ("hex", "square") if weights[k] > 0 and shape != "rod"]
    return {k: _lattice_estimates([s for s, kk in zip(stats, kinds) if kk == k], k)
            for k in lattice_kinds}


def _pooled_gap(gaps: list[float], kinds: list[str]) -> float:
    """The set's gap: mean over dense images, else over all, else the simulator's default."""
    gap = _nanmean([g for g, k in zip(gaps, kinds) if k != "sparse"], math.nan)
    if not math.isfinite(gap):
        gap = _nanmean(gaps, _SIMULATOR_DEFAULTS.gap_fraction)
    return float(np.clip(gap, *_GAP_RANGE))


def _keep_spacing(gap: float, calibrated: float, geometric: float) -> float:
    """The gap that keeps the seen spacing, ``(1 + gap) * size``, once the ECD per nominal size
    changes from its `geometric` value to the `calibrated` one."""
    return float(np.clip((1.0 + gap) * calibrated / geometric - 1.0, *_GAP_RANGE))


@dataclass
class _PerImage:
    """What the fit knows of each training image with particles, for coverages and profiles."""

    stats: list            # `_image_stats` of each image
    kinds: list            # its layout class
    within_vars: list      # its variance of log ECD
    full: dict             # `_calibrate` of each layout in use (foreground of a full layer)
    gap: float             # the pooled gap before calibration
    render_var: float      # variance of log ECD that drawing on pixels adds
    n_empty: int           # images without particles (they cover nothing)
    gaps: list             # its calibrated gap, or None

    def coverages(self) -> list[float]:
        shares = []
        for s, k, g in zip(self.stats, self.kinds, self.gaps):
            full_layer = self.full[k]["foreground"]
            if g is not None and k != "sparse":  # a wider spacing makes a thinner full layer
                full_layer *= ((1.0 + self.gap) / (1.0 + g)) ** 2
            shares.append(min(s["foreground"] / max(full_layer, 1e-9), 1.0))
        return shares

    def coverage(self) -> float:
        """Mean covered share over all images, the empty ones included."""
        return float(np.mean(self.coverages() + [0.0] * self.n_empty))

    def profiles(self) -> list[dict]:
        return [{"layout": k, "mean_ecd_px": s["mean_ecd"], "coverage": c, "gap_fraction": g,
                 "size_sigma": math.sqrt(max(v - self.render_var, 0.0))}
                for s, k, c, g, v in zip(self.stats, self.kinds, self.coverages(), self.gaps,
                                         self.within_vars)]


def _lattice_estimates(stats: list[dict], kind: str) -> dict:
    """Jitter, vacancy share and grain count measured on lattice images of one kind (NaN: none).
    """
    jitters, vacancies, grains = [], [], []
    for s in stats:
        jitter, vacancy = _lattice_defects(s, kind)
        jitters.append(jitter)
        vacancies.append(vacancy)
        grains.append(max(int(s["order"]["n_domains"]), 1))
    return {"jitter": _nanmean(jitters, math.nan), "vacancy": _nanmean(vacancies, math.nan),
            "grains": _nanmean(grains, math.nan)}


def _weighted(per_kind: dict, weights: dict, key: str, default: float,
              bounds: tuple[float, float]) -> float:
    """Layout-weighted mean of one estimate over the lattice kinds that have it."""
    pairs = [(weights[k], e[key]) for k, e in per_kind.items() if math.isfinite(e[key])]
    if not pairs:
        return float(default)
    value = sum(w * v for w, v in pairs) / sum(w for w, _ in pairs)
    return float(np.clip(value, *bounds))


def _correct_lattice_defects(model: LayoutModel, measured: dict, lattice_kinds: list) -> None:
    """One bias-correction step for jitter, vacancies and grains, in place (see the caller)."""
    h, w = (int(np.clip(v, 64, 1024)) for v in model.image_shape)
    n_sims = int(np.clip(math.ceil(4 * 256**2 / (h * w)), 1, 4))  # enough sites to beat the noise
    area_scale = model.image_shape[0] * model.image_shape[1] / (h * w)
    drawn = {}
    for kind in lattice_kinds:
        sims = []
        for j in range(n_sims):
            _, seed, params = _draw_settings(model, (h, w), np.random.default_rng([7, j]))
            sim_stats = _image_stats(_simulated_labels((h, w), kind, seed, params))
            if sim_stats is not None:
                sims.append(sim_stats)
        drawn[kind] = _lattice_estimates(sims, kind)
        drawn[kind]["grains"] *= area_scale
    weights = model.layout_weights

    def shift(key: str, value: float, bounds: tuple[float, float], ratio: bool = False) -> float:
        steps = [(weights[k], measured[k][key], drawn[k][key]) for k in lattice_kinds
                 if math.isfinite(measured[k][key]) and math.isfinite(drawn[k][key])]
        if not steps:
            return value
        total = sum(wk for wk, _, _ in steps)
        if ratio:  # half a step (in log): domain counts of a few images are noisy
            value *= math.sqrt(sum(wk * m / max(d, 1e-9) for wk, m, d in steps) / total)
        else:
            value += sum(wk * (m - d) for wk, m, d in steps) / total
        return float(np.clip(value, *bounds))

    model.jitter_fraction = shift("jitter", model.jitter_fraction, (0.0, 0.3))
    model.vacancy_fraction = shift("vacancy", model.vacancy_fraction, (0.0, 0.5))
    model.n_grains = shift("grains", model.n_grains, (1.0, 100.0), ratio=True)


def _draw_settings(model: LayoutModel, shape: tuple[int, int],
                   rng: np.random.Generator) -> tuple[str, int, SimulationParams]:
    """Layout, seed and simulation parameters of one layout drawn from `model`."""
    h, w = shape
    names = [k for k in LAYOUT_KINDS if float(model.layout_weights.get(k, 0.0)) > 0]
    p = np.array([float(model.layout_weights[k]) for k in names])
    layout = names[int(rng.choice(len(names), p=p / p.sum()))]
    # Grains keep their density: a larger image gets proportionally more of them.
    train_area = float(model.image_shape[0] * model.image_shape[1]) or float(h * w)
    grains = max(model.n_grains, 1.0) * (h * w) / train_area
    n_grains = max(1, int(math.floor(grains)) + int(rng.random() < grains - math.floor(grains)))
    # Size, coverage and spacing of a training image of this layout (see LayoutModel).
    profiles = [p for p in model.image_profiles if p["layout"] == layout]
    pick = int(rng.integers(max(len(profiles), 1)))
    mean_ecd, coverage, gap = model.mean_diameter_px, model.coverage, model.gap_fraction
    sigma = model.diameter_sigma if model.size_sigma is None else model.size_sigma
    if profiles:
        profile = profiles[pick]
        mean_ecd, coverage = float(profile["mean_ecd_px"]), float(profile["coverage"])
        if profile["gap_fraction"] is not None:
            gap = float(profile["gap_fraction"])
        if profile.get("size_sigma") is not None:
            sigma = float(profile["size_sigma"])
    ecd_per_size = model.ecd_per_size or _ecd_per_size(model.shape, model.aspect_ratio)
    size = mean_ecd / ecd_per_size
    coverage = 1.0 if coverage >= _FULL_LAYER else float(np.clip(coverage, 0.02, 1.0))
    seed = int(rng.integers(2**63 - 1))
    params = SimulationParams(
        shape=model.shape,
        mean_diameter_px=_clip(size, diameter_range(h, w)),
        diameter_sigma=_clip(sigma, PARAM_RANGES["diameter_sigma"]),
        gap_fraction=_clip(gap, PARAM_RANGES["gap_fraction"]),
        n_grains=n_grains,
        vacancy_fraction=_clip(model.vacancy_fraction, _VACANCY_RANGE),
        jitter_fraction=_clip(model.jitter_fraction, PARAM_RANGES["jitter_fraction"]),
        coverage=coverage,
        aspect_ratio=_clip(model.aspect_ratio, PARAM_RANGES["aspect_ratio"]),
    )
    return layout, seed, params


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return float(np.clip(value, *bounds))


def _simulated_labels(shape: tuple[int, int], layout: str, seed: int | Sequence[int],
                      params: SimulationParams) -> np.ndarray:
    """The simulator's label map (placement and drawing only) of one layout."""
    h, w = shape
    return simulate_micrograph(w, layout, "sem", seed, params, height=h, render=False).labels


def _calibrate(layout: str, shape: str, size: float, sigma: float, gap: float, aspect: float,
               vacancy: float, jitter: float, n_grains: float) -> dict:
    """Foreground fraction of a full simulated layer, and drawn ECD over nominal size."""
    length = size * (aspect if shape == "rod" else 1.0)
    side = int(np.clip(12.0 * length, 192, 768))
    params = SimulationParams(shape=shape, mean_diameter_px=_clip(size, diameter_range(side, side)),
                              diameter_sigma=_clip(sigma, PARAM_RANGES["diameter_sigma"]),
                              gap_fraction=gap, n_grains=max(1, int(round(n_grains))),
                              vacancy_fraction=vacancy, jitter_fraction=jitter, coverage=1.0,
                              aspect_ratio=_clip(aspect, PARAM_RANGES["aspect_ratio"]))
    sim = simulate_micrograph(side, layout, "sem", 0, params, render=False)
    truth = sim.truth[~sim.truth["touches_border"]]
    if len(truth) == 0:
        truth = sim.truth
    foreground = float(np.count_nonzero(sim.labels) / sim.labels.size)
    if len(truth) == 0:  # nothing fits: fall back on the geometry
        return {"foreground": foreground or 1.0, "ecd_per_size": _ecd_per_size(shape, aspect),
                "log_ratio_var": 0.0}
    ratio = truth["diameter_px"].to_numpy() / truth["nominal_diameter_px"].to_numpy()
    return {
        "foreground": foreground,
        "ecd_per_size": float(truth["diameter_px"].mean() / truth["nominal_diameter_px"].mean()),
        "log_ratio_var": float(np.log(ratio).var()),
    }


def draw_layout(model: LayoutModel, shape: tuple[int, int] | int,
                rng_or_seed: np.random.Generator | int | Sequence[int]) -> np.ndarray:
    """Draw one new instance-label map from a layout model.

    The layout is picked by ``model.layout_weights``; sizes come from the fitted lognormal, and
    spacing, jitter, vacancies, grains (scaled with the area), islands and shape from the model.
    Placement and drawing are the simulator's (`simulate_micrograph` with ``render=False``).

    Parameters
    ----------
    model : LayoutModel
        From `fit_layout_model` (or `LayoutModel.from_dict`).
    shape : (h, w) or int
        Size of the map in px, at least 16 x 16.
    rng_or_seed : numpy Generator or int or sequence of int
        Randomness; the same seed gives the same map.

    Returns
    -------
    ndarray of int32, shape (h, w)
        Labels 0 (background) and 1..N.

    Example
    -------
    >>> model = LayoutModel(diameter_mu=np.log(12), diameter_sigma=0.08, shape="disc",
    ...                     aspect_ratio=1.0, layout_weights={"hex": 1.0}, gap_fraction=0.1,
    ...                     coverage=1.0, jitter_fraction=0.03, vacancy_fraction=0.02,
    ...                     n_grains=2, image_shape=(128, 128), n_images=1)
    >>> labels = draw_layout(model, (64, 96), 5)
    >>> labels.dtype, labels.shape, bool(labels.max() > 10)
    (dtype('int32'), (64, 96), True)
    """
    _check_model(model)
    shape = _as_shape(shape)
    rng = _as_rng(rng_or_seed)
    layout, seed, params = _draw_settings(model, shape, rng)
    return _simulated_labels(shape, layout, seed, params)


def draw_layouts(model: LayoutModel, n: int, shape: tuple[int, int] | int,
                 seed: int | Sequence[int]) -> list[np.ndarray]:
    """Draw `n` new label maps; map ``i`` comes from its own stream, so it does not depend on `n`.

    Example
    -------
    >>> model = LayoutModel(np.log(12), 0.08, "cube", 1.3, {"square": 1.0}, 0.1, 1.0, 0.03, 0.02,
    ...                     1, (128, 128), 1)
    >>> [m.shape for m in draw_layouts(model, 2, 64, seed=1)]
    [(64, 64), (64, 64)]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    _check_model(model)
    shape = _as_shape(shape)
    streams = np.random.SeedSequence(_check_seed(seed)).spawn(int(n))
    return [draw_layout(model, shape, np.random.default_rng(s)) for s in streams]


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    out = np.zeros(labels.shape, np.int32)
    fg = labels > 0
    if fg.any():
        values = labels[fg]
        ids = np.unique(values)
        out[fg] = np.searchsorted(ids, values).astype(np.int32) + 1
    return out


def augment_real_mask(labels: np.ndarray, rng: np.random.Generator | int,
                      crop_shape: tuple[int, int] | None = None) -> np.ndarray:
    """A 'real' layout: a training mask flipped, turned by a multiple of 90° and cropped.

    Parameters
    ----------
    labels : (H, W) int array
        Instance labels (a bool mask is split 4-connected).
    rng : numpy Generator or int
        Randomness; the same seed gives the same result.
    crop_shape : (h, w), optional
        Random crop of this size. A side not smaller than the image's is kept whole; quarter turns
        that would make the crop not fit are avoided (unless none fits).

    Returns
    -------
    ndarray of int32
        Labels renumbered 1..N (0 stays background). Without a crop every particle is kept.

    Example
    -------
    >>> lab = np.zeros((20, 30), int); lab[2:6, 3:9] = 7; lab[10:15, 20:25] = 3
    >>> out = augment_real_mask(lab, 0, crop_shape=(16, 16))
    >>> out.shape, int(out.max()) <= 2
    ((16, 16), True)
    """
    lab = as_label_image(labels)
    rng = _as_rng(rng)
    flip_lr, flip_ud = rng.random() < 0.5, rng.random() < 0.5
    h, w = lab.shape
    turns = [0, 1, 2, 3]
    if crop_shape is not None:
        try:
            ch, cw = (int(v) for v in crop_shape)
        except (TypeError, ValueError):
            raise ValueError(f"crop_shape must be (h, w), got {crop_shape!r}") from None
        if ch < 1 or cw < 1:
            raise ValueError(f"crop_shape must be positive, got {crop_shape!r}")
        fits = [k for k in turns if ch <= (h, w)[k % 2] and cw <= (w, h)[k % 2]]
        turns = fits or turns
    k = int(rng.choice(turns))
    if flip_lr:
        lab = lab[:, ::-1]
    if flip_ud:
        lab = lab[::-1]
    lab = np.rot90(lab, k)
    if crop_shape is not None:
        h, w = lab.shape
        ch, cw = min(ch, h), min(cw, w)
        r0 = int(rng.integers(h - ch + 1))
        c0 = int(rng.integers(w - cw + 1))
        lab = lab[r0:r0 + ch, c0:c0 + cw]
    return _relabel_sequential(lab)
