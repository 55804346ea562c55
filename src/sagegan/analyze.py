"""Particle sizes and spatial order of label images: pure measurement, no files.

:func:`analyze_image` and :func:`summarize_batch` take a label image (and optionally the
micrograph and its pixel size) and return tables and flat summary dicts, in the manner of
:func:`skimage.measure.regionprops_table`. They combine :func:`sagegan.particles.measure` /
:func:`~sagegan.particles.size_distribution` (sizes) with :mod:`sagegan.order` (nearest
neighbours, bond order, g(r), lattice constant). Reading label files lives in :mod:`sagegan.io`;
writing ``particles.csv``, ``summary.json`` and ``report.html`` in
:func:`sagegan.report.analyze_labels`.

Conventions
-----------
* Keys and columns ending in ``_px`` are in pixels, ``_nm`` in nanometres. Without a pixel size
  the ``_nm`` summary values are ``None`` (``null`` in JSON); undefined values (e.g. a mean
  over no particles) are NaN in Python and ``null`` in JSON.
* Size statistics leave out particles that touch the image border (their size is truncated);
  order statistics leave out particles whose neighbour shell may be cut by the border
  (:func:`sagegan.order.edge_mask`), and nearest-neighbour distances use the border method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from . import order as _order
from .particles import (MEASURE_COLUMNS, MIN_RELIABLE_ECD_PX, NM_COLUMNS, bootstrap_ci, measure, poisson_ci,
                        size_distribution)

__all__ = [
    "ImageAnalysis",
    "analyze_image",
    "summarize_batch",
    "particles_table",
    "nm_key",
    "SUMMARY_KEYS",
]

#: Keys every summary dict (per image and pooled) has, in order.
SUMMARY_KEYS = (
    "n_particles", "n_particles_ci95",
    "n_particles_sized",
    "size_stats_exclude_border",
    "nm_per_px",
    "ecd_px_mean", "ecd_px_sd", "ecd_px_d10", "ecd_px_d50", "ecd_px_d90",
    "ecd_px_lognormal_mu", "ecd_px_lognormal_sigma", "ecd_px_lognormal_median",
    "ecd_px_mean_ci95", "ecd_px_d50_ci95",
    "ecd_nm_mean", "ecd_nm_sd", "ecd_nm_d10", "ecd_nm_d50", "ecd_nm_d90",
    "ecd_nm_lognormal_mu", "ecd_nm_lognormal_sigma", "ecd_nm_lognormal_median",
    "ecd_nm_mean_ci95", "ecd_nm_d50_ci95",
    "aspect_ratio_mean", "circularity_mean",
    "n_particles_order",
    "nn_distance_px_mean", "nn_distance_px_sd", "nn_distance_nm_mean", "nn_distance_nm_sd",
    "coordination_mean",
    "psi4_global", "psi6_global", "psi4_local_mean", "psi6_local_mean",
    "lattice_type", "order_verdict",
    "lattice_constant_px", "lattice_constant_nm",
    "lattice_constant_fft_px", "lattice_constant_fft_nm",
    "n_fivefold", "n_sevenfold", "n_domains",
    "notes",
)

_SIZE_STATS = ("mean", "sd", "d10", "d50", "d90")
#: Summary values that are lengths in px, each with its nm twin (``_px`` -> ``_nm``).
_LENGTH_KEYS = tuple(f"ecd_px_{s}" for s in _SIZE_STATS) + (
    "ecd_px_lognormal_median", "nn_distance_px_mean", "nn_distance_px_sd",
    "lattice_constant_px", "lattice_constant_fft_px",
)
#: Summary values that are 95 % intervals ``[lo, hi]`` of px lengths, each with its nm twin.
_CI_KEYS = ("ecd_px_mean_ci95", "ecd_px_d50_ci95")
_NAN = float("nan")


def nm_key(px_key: str) -> str:
    """The summary key of a length in nm for its key in px.

    Example
    -------
    >>> nm_key("ecd_px_mean")
    'ecd_nm_mean'
    """
    return px_key.replace("_px", "_nm")


# ------------------------------------------------------------------------------ one image
@dataclass
class ImageAnalysis:
    """Everything measured on one label image.

    Attributes
    ----------
    particles : pandas.DataFrame
        :func:`sagegan.particles.measure` columns plus per-particle order columns:
        ``nn_distance_px`` (and ``nn_distance_nm`` when calibrated; NaN near the border: by
        the border method, and where the particle or its nearest neighbour touches the border,
        since a cut particle's centroid is displaced), ``coordination`` (Delaunay neighbours), ``psi6_abs``,
        ``psi6_orientation_deg`` (``arg(psi6) / 6``, in [-30, 30)), ``psi4_abs`` and
        ``order_edge`` (True where the neighbour shell may be cut by the border; the order
        columns are NaN there).
    order : dict
        :func:`sagegan.order.summarize_order` of the particle centroids.
    summary : dict
        Flat summary with the keys of :data:`SUMMARY_KEYS` (see :func:`analyze_image`).
    size_stats : dict
        :func:`sagegan.particles.size_distribution` of ``ecd_px`` (border particles excluded).
    psi6, psi4 : (N,) complex ndarray
        Local bond order per particle (``psi6``: Delaunay neighbours, ``psi4``: 4 nearest);
        NaN for edge particles.
    pair_correlation : (r_px, g) tuple of ndarrays
        g(r) with the default binning of :func:`sagegan.order.pair_correlation`; empty
        arrays for fewer than 2 particles.
    shape : (H, W)
        Image shape.
    nm_per_px : float or None
        Pixel size used.
    """

    particles: pd.DataFrame
    order: dict
    summary: dict
    size_stats: dict = field(default_factory=dict)
    psi6: np.ndarray = field(default_factory=lambda: np.zeros(0, complex))
    psi4: np.ndarray = field(default_factory=lambda: np.zeros(0, complex))
    pair_correlation: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0), np.zeros(0)))
    shape: tuple[int, int] = (0, 0)
    nm_per_px: float | None = None


def _pair_correlation_curve(centroids: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """g(r) up to min(H, W) / 4 or 10 spacings, 20 bins per spacing; empty below 2 particles."""
    if len(centroids) < 2:
        return np.zeros(0), np.zeros(0)
    nn = _order.nearest_neighbour_distances(centroids)
    nn = nn[np.isfinite(nn) & (nn > 0)]
    r_max = min(shape) / 4.0
    if nn.size:
        r_max = min(r_max, 10.0 * float(np.median(nn)))
    dr = min(float(np.median(nn)) / 20.0, r_max / 20.0) if nn.size else r_max / 100.0
    return _order.pair_correlation(centroids, shape, r_max=r_max, dr=dr)


def _exclude_cut_neighbours(nn: np.ndarray, centroids: np.ndarray, touches_border: np.ndarray) -> np.ndarray:
    """NaN for distances from or to a particle cut by the image border.

    A cut particle's centroid lies inside its true centre, so distances involving it are
    too short (by up to ~0.4 radii). The particle still counts as a neighbour: it keeps the
    other particles from being paired with a farther one.
    """
    nn = np.array(nn, dtype=float)
    if len(centroids) < 2:
        return nn
    _, idx = cKDTree(centroids).query(centroids, k=2)
    nn[touches_border | touches_border[idx[:, 1]]] = np.nan
    return nn


def _mean_or_nan(values) -> float:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else _NAN


def _size_summary(stats: Mapping[str, Any], prefix: str) -> dict:
    out = {f"{prefix}_{s}": float(stats[s]) for s in _SIZE_STATS}
    mu, sigma = float(stats["lognormal_mu"]), float(stats["lognormal_sigma"])
    out[f"{prefix}_lognormal_mu"] = mu
    out[f"{prefix}_lognormal_sigma"] = sigma
    out[f"{prefix}_lognormal_median"] = math.exp(mu) if math.isfinite(mu) else _NAN
    return out


def _size_intervals(ecd, groups=None, prefix: str = "ecd_px") -> dict:
    """Bootstrap 95 % intervals of the mean and the median (D50) of ``ecd`` (see
    :func:`sagegan.particles.bootstrap_ci`; two-stage over ``groups`` when given)."""
    return {f"{prefix}_mean_ci95": list(bootstrap_ci(ecd, "mean", groups)),
            f"{prefix}_d50_ci95": list(bootstrap_ci(ecd, "median", groups))}


def _with_nm_values(summary: dict, nm_per_px: float | None) -> dict:
    """Fill the ``_nm`` twins of the px lengths: scaled, or None without a pixel size."""
    for key in _LENGTH_KEYS:
        summary[nm_key(key)] = None if nm_per_px is None else summary[key] * nm_per_px
    for key in _CI_KEYS:
        summary[nm_key(key)] = None if nm_per_px is None else [v * nm_per_px for v in summary[key]]
    mu = summary["ecd_px_lognormal_mu"]
    if nm_per_px is None:
        summary["ecd_nm_lognormal_mu"] = summary["ecd_nm_lognormal_sigma"] = None
    else:  # the ML fit with loc = 0 is scale-equivariant: mu shifts by log(scale)
        summary["ecd_nm_lognormal_mu"] = mu + math.log(nm_per_px)
        summary["ecd_nm_lognormal_sigma"] = summary["ecd_px_lognormal_sigma"]
    return summary


def _small_particles_note(d50_px: float) -> list[str]:
    """The warning for particles too small in the image to be sized (none when they are not)."""
    if not d50_px < MIN_RELIABLE_ECD_PX:  # also no note for NaN (no sized particles)
        return []
    return [f"The median particle spans only {d50_px:.1f} px (ECD D50, under {MIN_RELIABLE_ECD_PX:g} "
            "px): sizes are unreliable, since pixelation and outline errors dominate; use a higher "
            "magnification to size them."]


def _notes(n: int, n_sized: int, n_order: int, nm_per_px: float | None,
           d50_px: float = _NAN) -> list[str]:
    notes = []
    if n == 0:
        notes.append("No particles: nothing to measure.")
    elif n == 1:
        notes.append("Only one particle: no nearest-neighbour distance, bond order or lattice "
                     "constant.")
    elif n_order == 0:
        notes.append(f"Only {n} particles and none with a complete neighbour shell away from the "
                     "image border: bond order and lattice constant are undefined.")
    if 0 < n and n_sized == 0:
        notes.append("Every particle touches the image border: size statistics are undefined.")
    elif 0 < n_sized < 5:
        notes.append(f"Only {n_sized} particle(s) away from the border: size statistics are "
                     "rough.")
    notes += _small_particles_note(d50_px)
    if nm_per_px is None and n > 0:
        notes.append("Pixel size unknown: lengths in px only (give the pixel size, e.g. "
                     "--nm-per-px, for nm).")
    return notes


def analyze_image(labels, image=None, nm_per_px=None) -> ImageAnalysis:
    """Sizes and spatial order of the particles of one label image.

    Parameters
    ----------
    labels : (H, W) int or bool ndarray
        Instance labels (0 = background), or a binary mask (split into 4-connected particles).
    image : (H, W) ndarray, optional
        Micrograph, for the particles' ``mean_intensity``.
    nm_per_px : float, optional
        Pixel size; without it the ``_nm`` summary values are None.

    Returns
    -------
    ImageAnalysis
        ``summary`` has the keys of :data:`SUMMARY_KEYS`:

        ``n_particles``; ``n_particles_sized`` (not touching the border: the particles the size
        statistics use, ``size_stats_exclude_border`` is True); ``nm_per_px``;
        ``ecd_{px,nm}_{mean,sd,d10,d50,d90}`` (equivalent circular diameter; D10/D50/D90 are
        number-weighted percentiles); ``ecd_{px,nm}_lognormal_{mu,sigma,median}`` (maximum-
        likelihood log-normal fit; ``mu`` and ``sigma`` of ``ln(ECD)``, median ``exp(mu)``);
        ``ecd_{px,nm}_{mean,d50}_ci95`` (``[lo, hi]``, 95 % percentile-bootstrap interval over
        the sized particles, 1000 resamples with a fixed seed, so reruns agree);
        ``n_particles_ci95`` (exact Poisson 95 % interval of the count: the expected number of
        particles in a field of view of this size);
        ``aspect_ratio_mean``, ``circularity_mean`` (same particles); ``n_particles_order``
        (particles with a complete neighbour shell); ``nn_distance_{px,nm}_{mean,sd}`` (over the
        defined ``nn_distance_px`` values of ``particles``);
        ``coordination_mean``; ``psi4_global``, ``psi6_global``, ``psi4_local_mean``,
        ``psi6_local_mean``; ``lattice_type`` (``"hex"`` or ``"square"``, whichever local
        order is higher; None without order statistics; meaningful only when that order is
        high); ``order_verdict`` (:func:`sagegan.order.order_verdict`: ``"ordered hexagonal"``,
        ``"ordered square"``, ``"partially ordered"`` or ``"disordered"``; None with too few
        particles with a complete neighbour shell); ``lattice_constant_{px,nm}`` (first g(r) peak),
        ``lattice_constant_fft_{px,nm}``; ``n_fivefold``, ``n_sevenfold``, ``n_domains``;
        ``notes`` (plain-language warnings: no particles, one particle, uncalibrated,
        particles too small to size, ...).

    Example
    -------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> lab = np.zeros((64, 64), np.int32)
    >>> for i, (cy, cx) in enumerate([(16, 16), (16, 48), (48, 16), (48, 48)], 1):
    ...     lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = i
    >>> s = analyze_image(lab, nm_per_px=2.0).summary
    >>> s["n_particles"], round(s["ecd_px_mean"], 2), round(s["ecd_nm_mean"], 2)
    (4, 11.99, 23.99)
    """
    particles = measure(labels, image=image, nm_per_px=nm_per_px)
    labels = np.asarray(labels)
    shape = (int(labels.shape[0]), int(labels.shape[1]))
    scale = None if nm_per_px is None else float(nm_per_px)
    centroids = particles[["centroid_x", "centroid_y"]].to_numpy(dtype=float).reshape(-1, 2)
    order_summary = _order.summarize_order(centroids, shape)
    psi6, psi4 = _add_order_columns(particles, centroids, shape, scale)
    size_stats = size_distribution(particles, column="ecd_px", exclude_border=True)
    return ImageAnalysis(
        particles=particles, order=order_summary,
        summary=_image_summary(particles, order_summary, size_stats, scale), size_stats=size_stats,
        psi6=psi6, psi4=psi4, pair_correlation=_pair_correlation_curve(centroids, shape),
        shape=shape, nm_per_px=scale,
    )


def _add_order_columns(particles: pd.DataFrame, centroids: np.ndarray, shape: tuple[int, int],
                       scale: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Add the per-particle order columns of :class:`ImageAnalysis` in place; return psi6, psi4."""
    n = len(centroids)
    nn = _order.nearest_neighbour_distances(centroids, shape)
    edge = _order.edge_mask(centroids, shape) if n else np.zeros(0, dtype=bool)
    psi6 = _order.bond_order(centroids, 6, shape, "delaunay")
    psi4 = _order.bond_order(centroids, 4, shape, "knn")
    coordination = _order.coordination_numbers(centroids, shape)
    orientation = np.full(n, np.nan)
    ok = np.isfinite(psi6)
    orientation[ok] = (np.degrees(np.angle(psi6[ok])) / 6.0 + 30.0) % 60.0 - 30.0

    nn = _exclude_cut_neighbours(nn, centroids, particles["touches_border"].to_numpy(bool))
    particles["nn_distance_px"] = nn
    if scale is not None:
        particles["nn_distance_nm"] = nn * scale
    particles["coordination"] = coordination
    particles["psi6_abs"] = np.abs(psi6)
    particles["psi6_orientation_deg"] = orientation
    particles["psi4_abs"] = np.abs(psi4)
    particles["order_edge"] = edge.astype(bool)
    return psi6, psi4


def _lattice_type(order_summary: Mapping[str, Any]) -> str | None:
    """``"square"`` or ``"hex"``, whichever local order is higher; None without order statistics."""
    if not int(order_summary["n_valid"]):
        return None
    return _order.lattice_type_from_order(order_summary["psi6_local_mean"], order_summary["psi4_local_mean"])


def _image_summary(particles: pd.DataFrame, order_summary: Mapping[str, Any],
                   size_stats: Mapping[str, Any], scale: float | None) -> dict:
    """The flat summary of one image, keys in the order of :data:`SUMMARY_KEYS`."""
    n = len(particles)
    nn = particles["nn_distance_px"].to_numpy(dtype=float)
    sized = particles[~particles["touches_border"].astype(bool)]
    n_order = int(order_summary["n_valid"])
    summary: dict[str, Any] = {
        "n_particles": n,
        "n_particles_ci95": list(poisson_ci(n)),
        "n_particles_sized": int(size_stats["n"]),
        "size_stats_exclude_border": True,
        "nm_per_px": scale,
        **_size_summary(size_stats, "ecd_px"),
        **_size_intervals(sized["ecd_px"].to_numpy(dtype=float)),
        "aspect_ratio_mean": _mean_or_nan(sized["aspect_ratio"]),
        "circularity_mean": _mean_or_nan(sized["circularity"]),
        "n_particles_order": n_order,
        "nn_distance_px_mean": _mean_or_nan(nn),
        "nn_distance_px_sd": float(np.nanstd(nn, ddof=1)) if np.isfinite(nn).sum() > 1 else _NAN,
        "coordination_mean": float(order_summary["coordination_mean"]),
        "psi4_global": float(order_summary["psi4_global"]),
        "psi6_global": float(order_summary["psi6_global"]),
        "psi4_local_mean": float(order_summary["psi4_local_mean"]),
        "psi6_local_mean": float(order_summary["psi6_local_mean"]),
        "lattice_type": _lattice_type(order_summary),
        "order_verdict": _order.order_verdict(order_summary),
        "lattice_constant_px": float(order_summary["lattice_constant_px"]),
        "lattice_constant_fft_px": float(order_summary["lattice_constant_fft_px"]),
        "n_fivefold": int(order_summary["n_fivefold"]),
        "n_sevenfold": int(order_summary["n_sevenfold"]),
        "n_domains": int(order_summary["n_domains"]),
        "notes": _notes(n, int(size_stats["n"]), n_order, scale, float(size_stats["d50"])),
    }
    _with_nm_values(summary, scale)
    return {key: summary[key] for key in SUMMARY_KEYS}


# ------------------------------------------------------------------------------ many images
def _weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    ok = np.isfinite(v) & (w > 0)
    return float(np.average(v[ok], weights=w[ok])) if ok.any() else _NAN


def summarize_batch(analyses: Mapping[str, ImageAnalysis]) -> dict:
    """Pool the results of several images into one summary with the same keys.

    Sizes are pooled over all particles (nm values over the calibrated images only), and
    nearest-neighbour distances over all valid particles. Order descriptors cannot be pooled
    particle by particle (each image has its own lattice orientation), so ``psi*``,
    ``coordination_mean`` and the lattice constants are per-image values averaged with weights
    ``n_particles_order``; counts are summed. ``order_verdict`` is the per-image verdict held by
    the most particles with a complete neighbour shell (images without a verdict left out; a tie
    goes to the less ordered verdict).

    The 95 % intervals treat the images as a sample of fields of view: the size intervals
    (``ecd_*_{mean,d50}_ci95``) come from a two-stage bootstrap (images resampled, then particles
    within each drawn image), so that differences between images widen them; the count interval
    ``n_particles_ci95`` is ``n_images`` times the bootstrap interval over images of the mean
    count per image (``n_particles_per_image_ci95``), or the Poisson interval for one image.

    Parameters
    ----------
    analyses : mapping of name -> ImageAnalysis

    Returns
    -------
    dict
        The keys of :data:`SUMMARY_KEYS` plus ``n_images``, ``n_images_calibrated``,
        ``n_particles_per_image_mean``, ``n_particles_per_image_ci95`` and ``order_pooling``.
        ``nm_per_px`` is the common pixel size, or None when the images differ or none is
        calibrated; nm values are None when no image is calibrated.

    Example
    -------
    >>> lab = np.zeros((32, 32), np.int32); lab[4:10, 4:10] = 1; lab[20:26, 20:26] = 2
    >>> summarize_batch({"a": analyze_image(lab), "b": analyze_image(lab)})["n_particles"]
    4
    """
    items = list(analyses.values())
    frames = [a.particles for a in items]
    calibrated = [a for a in items if a.nm_per_px is not None]
    all_particles = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"ecd_px": [], "touches_border": []})
    px_stats = size_distribution(all_particles, column="ecd_px", exclude_border=True)
    image_index = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    border = all_particles["touches_border"].to_numpy(bool)
    sized = all_particles[~border]
    counts = np.array([a.summary["n_particles"] for a in items], dtype=float)
    per_image_ci = list(bootstrap_ci(counts, "mean")) if len(items) > 1 else [_NAN, _NAN]
    nn_px = np.concatenate([a.particles["nn_distance_px"].to_numpy(float) for a in items] or [np.zeros(0)])
    nn_px = nn_px[np.isfinite(nn_px)]
    n_order = int(sum(a.summary["n_particles_order"] for a in items))
    types = {a.summary["lattice_type"] for a in items if a.summary["lattice_type"]}
    scales = {a.nm_per_px for a in items}
    summary: dict[str, Any] = {
        "n_particles": int(sum(a.summary["n_particles"] for a in items)),
        "n_particles_ci95": _batch_count_interval(counts, per_image_ci),
        "n_particles_sized": int(px_stats["n"]),
        "size_stats_exclude_border": True,
        "nm_per_px": scales.pop() if len(scales) == 1 else None,
        **_size_summary(px_stats, "ecd_px"),
        **_size_intervals(sized["ecd_px"].to_numpy(dtype=float), image_index[~border]),
        "aspect_ratio_mean": _mean_or_nan(sized["aspect_ratio"]) if len(sized) else _NAN,
        "circularity_mean": _mean_or_nan(sized["circularity"]) if len(sized) else _NAN,
        "n_particles_order": n_order,
        "nn_distance_px_mean": float(nn_px.mean()) if nn_px.size else _NAN,
        "nn_distance_px_sd": float(nn_px.std(ddof=1)) if nn_px.size > 1 else _NAN,
        "coordination_mean": _pooled(items, "coordination_mean"),
        "psi4_global": _pooled(items, "psi4_global"),
        "psi6_global": _pooled(items, "psi6_global"),
        "psi4_local_mean": _pooled(items, "psi4_local_mean"),
        "psi6_local_mean": _pooled(items, "psi6_local_mean"),
        "lattice_type": types.pop() if len(types) == 1 else ("mixed" if types else None),
        "order_verdict": _batch_verdict(items),
        "lattice_constant_px": _pooled(items, "lattice_constant_px"),
        "lattice_constant_fft_px": _pooled(items, "lattice_constant_fft_px"),
        "n_fivefold": int(sum(a.summary["n_fivefold"] for a in items)),
        "n_sevenfold": int(sum(a.summary["n_sevenfold"] for a in items)),
        "n_domains": int(sum(a.summary["n_domains"] for a in items)),
    }
    summary.update(_pooled_nm_values(calibrated))
    summary["notes"] = _batch_notes(items, calibrated, summary)
    summary = {key: summary[key] for key in SUMMARY_KEYS}
    summary.update(n_images=len(items), n_images_calibrated=len(calibrated),
                   n_particles_per_image_mean=float(counts.mean()) if len(items) else _NAN,
                   n_particles_per_image_ci95=per_image_ci,
                   order_pooling="per-image values averaged, weighted by n_particles_order")
    return summary


def _batch_count_interval(counts: np.ndarray, per_image_ci: Sequence[float]) -> list[float]:
    """95 % interval of the total count: images times the per-image interval; Poisson for one."""
    if len(counts) > 1:
        return [v * len(counts) for v in per_image_ci]
    return list(poisson_ci(int(counts.sum()))) if len(counts) else [_NAN, _NAN]


def _batch_verdict(items: Sequence[ImageAnalysis]) -> str | None:
    """The per-image order verdict held by the most particles with a complete neighbour shell."""
    weight: dict[str, int] = {}
    for a in items:
        verdict = a.summary["order_verdict"]
        if verdict is not None:
            weight[verdict] = weight.get(verdict, 0) + int(a.summary["n_particles_order"])
    if not weight:
        return None
    # ties go to the less ordered verdict: the later one in ORDER_VERDICTS
    return max(weight, key=lambda v: (weight[v], _order.ORDER_VERDICTS.index(v)))


def _pooled(among: Sequence[ImageAnalysis], key: str) -> float:
    """Per-image values of ``key`` averaged with weights ``n_particles_order``."""
    return _weighted_mean([a.summary[key] for a in among],
                          [a.summary["n_particles_order"] for a in among])


def _pooled_nm_values(calibrated: Sequence[ImageAnalysis]) -> dict:
    """The pooled ``_nm`` values over the calibrated images; None for all without any."""
    if not calibrated:
        values: dict[str, Any] = {nm_key(key): None for key in _LENGTH_KEYS + _CI_KEYS}
        values["ecd_nm_lognormal_mu"] = values["ecd_nm_lognormal_sigma"] = None
        return values
    nm_particles = pd.concat([a.particles for a in calibrated], ignore_index=True)
    values = _size_summary(size_distribution(nm_particles, column="ecd_nm", exclude_border=True), "ecd_nm")
    inner = ~nm_particles["touches_border"].to_numpy(bool)
    image_index = np.repeat(np.arange(len(calibrated)), [len(a.particles) for a in calibrated])
    values.update(_size_intervals(nm_particles["ecd_nm"].to_numpy(dtype=float)[inner], image_index[inner],
                                  prefix="ecd_nm"))
    nn_nm = np.concatenate([a.particles["nn_distance_nm"].to_numpy(float) for a in calibrated])
    nn_nm = nn_nm[np.isfinite(nn_nm)]
    values["nn_distance_nm_mean"] = float(nn_nm.mean()) if nn_nm.size else _NAN
    values["nn_distance_nm_sd"] = float(nn_nm.std(ddof=1)) if nn_nm.size > 1 else _NAN
    values["lattice_constant_nm"] = _pooled(calibrated, "lattice_constant_nm")
    values["lattice_constant_fft_nm"] = _pooled(calibrated, "lattice_constant_fft_nm")
    return values


def _batch_notes(items: Sequence[ImageAnalysis], calibrated: Sequence[ImageAnalysis],
                 summary: Mapping[str, Any]) -> list[str]:
    notes = []
    if not items:
        notes.append("No images.")
    elif summary["n_particles"] == 0:
        notes.append("No particles in any image.")
    if calibrated and len(calibrated) < len(items):
        notes.append(f"Pixel size known for {len(calibrated)} of {len(items)} images: nm values "
                     "use those images only.")
    elif not calibrated and items:
        notes.append("No pixel size for any image: lengths in px only.")
    if summary["nm_per_px"] is None and len({a.nm_per_px for a in calibrated}) > 1:
        notes.append("Images have different pixel sizes: pooled px values mix magnifications; "
                     "compare nm values.")
    return notes + _small_particles_note(summary["ecd_px_d50"])


def particles_table(analyses: Mapping[str, ImageAnalysis]) -> pd.DataFrame:
    """The particles of several images in one table, with the image name as first column.

    Columns: ``image``, the :data:`~sagegan.particles.MEASURE_COLUMNS`, the nm columns present,
    then the order columns of :class:`ImageAnalysis`.

    Example
    -------
    >>> lab = np.zeros((32, 32), np.int32); lab[4:10, 4:10] = 1
    >>> particles_table({"a": analyze_image(lab), "b": analyze_image(lab)})["image"].tolist()
    ['a', 'b']
    """
    frames = []
    for name, analysis in analyses.items():
        table = analysis.particles.copy()
        table.insert(0, "image", name)
        frames.append(table)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if table.empty and "image" not in table.columns:
        table = pd.DataFrame(columns=["image", *MEASURE_COLUMNS])
    first = ["image", *MEASURE_COLUMNS, *(c for c in NM_COLUMNS if c in table.columns)]
    return table[first + [c for c in table.columns if c not in first]]
