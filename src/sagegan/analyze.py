"""Particle sizes and spatial order of segmented micrographs, and the analysis report.

Two layers, in the manner of the rest of sagegan:

* :func:`analyze_image` and :func:`summarize_batch` are pure: label image (and optionally the
  micrograph and its pixel size) in, tables and flat summary dicts out. They combine
  :func:`sagegan.particles.measure` / :func:`~sagegan.particles.size_distribution` (sizes) with
  :mod:`sagegan.order` (nearest neighbours, bond order, g(r), lattice constant).
* :func:`analyze_labels` is the file edge: it reads label images as ``sagegan segment`` writes
  them (or any masks), pairs them with their micrographs, and writes ``particles.csv``,
  ``summary.json`` and a self-contained ``report.html``.

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

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from . import order as _order
from .particles import MEASURE_COLUMNS, NM_COLUMNS, measure, size_distribution

__all__ = [
    "ImageAnalysis",
    "analyze_image",
    "summarize_batch",
    "analyze_labels",
    "json_ready",
    "SUMMARY_KEYS",
]

#: Keys every summary dict (per image and pooled) has, in order.
SUMMARY_KEYS = (
    "n_particles",
    "n_particles_sized",
    "size_stats_exclude_border",
    "nm_per_px",
    "ecd_px_mean", "ecd_px_sd", "ecd_px_d10", "ecd_px_d50", "ecd_px_d90",
    "ecd_px_lognormal_mu", "ecd_px_lognormal_sigma", "ecd_px_lognormal_median",
    "ecd_nm_mean", "ecd_nm_sd", "ecd_nm_d10", "ecd_nm_d50", "ecd_nm_d90",
    "ecd_nm_lognormal_mu", "ecd_nm_lognormal_sigma", "ecd_nm_lognormal_median",
    "aspect_ratio_mean", "circularity_mean",
    "n_particles_order",
    "nn_distance_px_mean", "nn_distance_px_sd", "nn_distance_nm_mean", "nn_distance_nm_sd",
    "coordination_mean",
    "psi4_global", "psi6_global", "psi4_local_mean", "psi6_local_mean",
    "lattice_type",
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
_NAN = float("nan")


def _nm_key(px_key: str) -> str:
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


def _with_nm_values(summary: dict, nm_per_px: float | None) -> dict:
    """Fill the ``_nm`` twins of the px lengths: scaled, or None without a pixel size."""
    for key in _LENGTH_KEYS:
        summary[_nm_key(key)] = None if nm_per_px is None else summary[key] * nm_per_px
    mu = summary["ecd_px_lognormal_mu"]
    if nm_per_px is None:
        summary["ecd_nm_lognormal_mu"] = summary["ecd_nm_lognormal_sigma"] = None
    else:  # the ML fit with loc = 0 is scale-equivariant: mu shifts by log(scale)
        summary["ecd_nm_lognormal_mu"] = mu + math.log(nm_per_px)
        summary["ecd_nm_lognormal_sigma"] = summary["ecd_px_lognormal_sigma"]
    return summary


def _notes(n: int, n_sized: int, n_order: int, nm_per_px: float | None) -> list[str]:
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
        ``aspect_ratio_mean``, ``circularity_mean`` (same particles); ``n_particles_order``
        (particles with a complete neighbour shell); ``nn_distance_{px,nm}_{mean,sd}`` (over the
        defined ``nn_distance_px`` values of ``particles``);
        ``coordination_mean``; ``psi4_global``, ``psi6_global``, ``psi4_local_mean``,
        ``psi6_local_mean``; ``lattice_type`` (``"hex"`` or ``"square"``, whichever local
        order is higher; None without order statistics; meaningful only when that order is
        high); ``lattice_constant_{px,nm}`` (first g(r) peak),
        ``lattice_constant_fft_{px,nm}``; ``n_fivefold``, ``n_sevenfold``, ``n_domains``;
        ``notes`` (plain-language warnings: no particles, one particle, uncalibrated, ...).

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
    n = len(centroids)

    order_summary = _order.summarize_order(centroids, shape)
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

    size_stats = size_distribution(particles, column="ecd_px", exclude_border=True)
    sized = particles[~particles["touches_border"].astype(bool)]
    n_order = int(order_summary["n_valid"])
    if n_order:
        square = order_summary["psi4_local_mean"] > order_summary["psi6_local_mean"]
        lattice_type = "square" if square else "hex"
    else:
        lattice_type = None

    summary: dict[str, Any] = {
        "n_particles": n,
        "n_particles_sized": int(size_stats["n"]),
        "size_stats_exclude_border": True,
        "nm_per_px": scale,
        **_size_summary(size_stats, "ecd_px"),
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
        "lattice_type": lattice_type,
        "lattice_constant_px": float(order_summary["lattice_constant_px"]),
        "lattice_constant_fft_px": float(order_summary["lattice_constant_fft_px"]),
        "n_fivefold": int(order_summary["n_fivefold"]),
        "n_sevenfold": int(order_summary["n_sevenfold"]),
        "n_domains": int(order_summary["n_domains"]),
        "notes": _notes(n, int(size_stats["n"]), n_order, scale),
    }
    _with_nm_values(summary, scale)
    summary = {key: summary[key] for key in SUMMARY_KEYS}
    return ImageAnalysis(
        particles=particles, order=order_summary, summary=summary, size_stats=size_stats,
        psi6=psi6, psi4=psi4, pair_correlation=_pair_correlation_curve(centroids, shape),
        shape=shape, nm_per_px=scale,
    )


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
    ``n_particles_order``; counts are summed.

    Parameters
    ----------
    analyses : mapping of name -> ImageAnalysis

    Returns
    -------
    dict
        The keys of :data:`SUMMARY_KEYS` plus ``n_images``, ``n_images_calibrated`` and
        ``order_pooling``. ``nm_per_px`` is the common pixel size, or None when the images
        differ or none is calibrated; nm values are None when no image is calibrated.

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
    sized = all_particles[~all_particles["touches_border"].astype(bool)]
    nn_px = np.concatenate([a.particles["nn_distance_px"].to_numpy(float) for a in items] or [np.zeros(0)])
    nn_px = nn_px[np.isfinite(nn_px)]
    weights = [a.summary["n_particles_order"] for a in items]

    def pooled(key: str, among: Sequence[ImageAnalysis] = items) -> float:
        return _weighted_mean([a.summary[key] for a in among],
                              [a.summary["n_particles_order"] for a in among])

    n_order = int(sum(weights))
    types = {a.summary["lattice_type"] for a in items if a.summary["lattice_type"]}
    scales = {a.nm_per_px for a in items}
    summary: dict[str, Any] = {
        "n_particles": int(sum(a.summary["n_particles"] for a in items)),
        "n_particles_sized": int(px_stats["n"]),
        "size_stats_exclude_border": True,
        "nm_per_px": scales.pop() if len(scales) == 1 else None,
        **_size_summary(px_stats, "ecd_px"),
        "aspect_ratio_mean": _mean_or_nan(sized["aspect_ratio"]) if len(sized) else _NAN,
        "circularity_mean": _mean_or_nan(sized["circularity"]) if len(sized) else _NAN,
        "n_particles_order": n_order,
        "nn_distance_px_mean": float(nn_px.mean()) if nn_px.size else _NAN,
        "nn_distance_px_sd": float(nn_px.std(ddof=1)) if nn_px.size > 1 else _NAN,
        "coordination_mean": pooled("coordination_mean"),
        "psi4_global": pooled("psi4_global"),
        "psi6_global": pooled("psi6_global"),
        "psi4_local_mean": pooled("psi4_local_mean"),
        "psi6_local_mean": pooled("psi6_local_mean"),
        "lattice_type": types.pop() if len(types) == 1 else ("mixed" if types else None),
        "lattice_constant_px": pooled("lattice_constant_px"),
        "lattice_constant_fft_px": pooled("lattice_constant_fft_px"),
        "n_fivefold": int(sum(a.summary["n_fivefold"] for a in items)),
        "n_sevenfold": int(sum(a.summary["n_sevenfold"] for a in items)),
        "n_domains": int(sum(a.summary["n_domains"] for a in items)),
    }
    if calibrated:
        nm_particles = pd.concat([a.particles for a in calibrated], ignore_index=True)
        nm_stats = size_distribution(nm_particles, column="ecd_nm", exclude_border=True)
        summary.update(_size_summary(nm_stats, "ecd_nm"))
        nn_nm = np.concatenate([a.particles["nn_distance_nm"].to_numpy(float) for a in calibrated])
        nn_nm = nn_nm[np.isfinite(nn_nm)]
        summary["nn_distance_nm_mean"] = float(nn_nm.mean()) if nn_nm.size else _NAN
        summary["nn_distance_nm_sd"] = float(nn_nm.std(ddof=1)) if nn_nm.size > 1 else _NAN
        summary["lattice_constant_nm"] = pooled("lattice_constant_nm", calibrated)
        summary["lattice_constant_fft_nm"] = pooled("lattice_constant_fft_nm", calibrated)
    else:
        for key in _LENGTH_KEYS:
            summary[_nm_key(key)] = None
        summary["ecd_nm_lognormal_mu"] = summary["ecd_nm_lognormal_sigma"] = None
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
    summary["notes"] = notes
    summary = {key: summary[key] for key in SUMMARY_KEYS}
    summary.update(n_images=len(items), n_images_calibrated=len(calibrated),
                   order_pooling="per-image values averaged, weighted by n_particles_order")
    return summary


def json_ready(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON.

    NaN and infinities become None (``null``), numpy scalars and arrays Python numbers and
    lists, paths strings; dicts, lists and tuples are converted recursively.

    Example
    -------
    >>> json_ready({"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2), None]})
    {'a': None, 'b': 1.5, 'c': [2, None]}
    """
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ------------------------------------------------------------------------------ files
def _strip_suffix(stem: str) -> str:
    for suffix in ("_labels", "_mask"):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _label_files(label_paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Expand files, folders and globs; in a folder with ``*_labels.*`` files, take only those."""
    from .io import expand_inputs

    if isinstance(label_paths, (str, Path)):
        label_paths = [label_paths]
    files: list[Path] = []
    for item in label_paths:
        found = expand_inputs([item])
        if Path(item).is_dir():
            labelled = [f for f in found if f.stem.endswith("_labels")]
            found = labelled or [f for f in found if not f.stem.endswith(("_overlay", "_attention"))]
        files += found
    return list(dict.fromkeys(files))


def _segment_records(label_files: Sequence[Path]) -> dict[str, dict]:
    """Micrograph path, pixel size and crop per stem from ``segment_config.json`` files.

    ``sagegan segment`` writes that file next to the label images; it is only a fallback for
    finding the micrographs and pixel sizes, so an unreadable file is ignored.
    """
    records: dict[str, dict] = {}
    for folder in dict.fromkeys(f.parent for f in label_files):
        config = folder / "segment_config.json"
        if not config.is_file():
            continue
        try:
            data = json.loads(config.read_text())
            for run in data.get("images", []):
                image = Path(run["image"])
                records.setdefault(image.stem, {"image": image, "nm_per_px": run.get("nm_per_px"),
                                                "crop_bottom": int(data.get("crop_bottom") or 0)})
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return records


def _micrographs_by_stem(images: str | Path | None) -> dict[str, Path]:
    from .io import EM_SUFFIXES, IMAGE_SUFFIXES, InputError

    if images is None:
        return {}
    folder = Path(images)
    if not folder.is_dir():
        raise InputError(f"{folder}: images folder not found (expected a folder of micrographs)")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + EM_SUFFIXES and not p.name.startswith("."):
            found.setdefault(p.stem, p)
    return found


@dataclass
class _Loaded:
    name: str
    labels_file: Path
    labels: np.ndarray
    image: np.ndarray | None
    micrograph_file: Path | None
    nm_per_px: float | None
    nm_per_px_source: str | None


def _load_one(path: Path, name: str, micrographs: Mapping[str, Path], records: Mapping[str, dict],
              nm_per_px: float | None) -> _Loaded:
    from .io import InputError, read_mask, read_micrograph

    labels = read_mask(path)
    key = _strip_suffix(path.stem)
    record = records.get(key, {})
    micrograph_file = micrographs.get(key) or micrographs.get(path.stem)
    crop = 0
    if micrograph_file is None and record.get("image") is not None and Path(record["image"]).is_file():
        micrograph_file, crop = Path(record["image"]), record.get("crop_bottom", 0)
    if micrograph_file is not None and micrograph_file.resolve() == path.resolve():
        micrograph_file = None
    image, scale, source = None, None, None
    if micrograph_file is not None:
        micrograph = read_micrograph(micrograph_file, nm_per_px=nm_per_px, crop_bottom=crop)
        if micrograph.image.shape != labels.shape:
            raise InputError(f"{path}: labels are {labels.shape[1]}x{labels.shape[0]} px but the "
                             f"micrograph {micrograph_file} is {micrograph.image.shape[1]}x"
                             f"{micrograph.image.shape[0]} px")
        image, scale = micrograph.image, micrograph.nm_per_px
        source = micrograph.metadata.get("pixel_size_source", "micrograph file") if scale else None
    if nm_per_px is not None:
        if not (nm_per_px > 0 and math.isfinite(nm_per_px)):
            raise InputError(f"--nm-per-px must be a positive number, got {nm_per_px}")
        scale, source = float(nm_per_px), "given by the user"
    elif scale is None and record.get("nm_per_px"):
        scale, source = float(record["nm_per_px"]), "segment_config.json"
    return _Loaded(name, path, labels, image, micrograph_file, scale, source)


def _unique_names(files: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for f in files:
        name = _strip_suffix(f.stem)
        if name in names:
            name = f.stem if f.stem not in names else f"{f.parent.name}/{f.stem}"
        names.append(name)
    return names


def analyze_labels(label_paths, out, images=None, nm_per_px=None,
                   title: str = "sagegan particle report", max_image_sections: int = 20) -> dict:
    """Analyse label images and write ``particles.csv``, ``summary.json`` and ``report.html``.

    Parameters
    ----------
    label_paths : file, folder or glob, or a list of them
        Label images as ``sagegan segment`` writes them (``<stem>_labels.tif``), or any masks
        (binary masks are split into 4-connected particles). In a folder that holds
        ``*_labels.*`` files only those are read.
    out : folder
        Output folder (created).
    images : folder, optional
        Micrographs, matched by stem after stripping a ``_labels`` (or ``_mask``) suffix.
        When found, the micrograph gives the particles' mean intensity, the background of the
        overlays and its pixel size. Without it, micrographs and pixel sizes recorded by
        ``sagegan segment`` in ``segment_config.json`` next to the labels are used, when the
        files still exist.
    nm_per_px : float, optional
        Pixel size for every image, overriding the files.
    title : str
        Title of the report.
    max_image_sections : int
        Per-image figures are drawn for the first this many images; all appear in the tables.

    Returns
    -------
    dict
        The content of ``summary.json``: ``{"batch": {...}, "images": {name: {...}},
        "config": {...}}``, NaN written as None. Each image's entry also has
        ``labels_file``, ``micrograph_file`` and ``nm_per_px_source``.

    Raises
    ------
    sagegan.io.InputError
        Unreadable inputs, or a micrograph whose size differs from its labels.
    """
    from . import __version__
    from .checkpoint import write_json
    from .io import InputError

    out = Path(out)
    label_files = _label_files(label_paths)
    if not label_files:
        raise InputError(f"{label_paths}: no label images found")
    micrographs = _micrographs_by_stem(images)
    records = _segment_records(label_files) if images is None else {}
    names = _unique_names(label_files)

    analyses: dict[str, ImageAnalysis] = {}
    image_info: dict[str, dict] = {}
    image_sections = []
    for name, path in zip(names, label_files):
        loaded = _load_one(path, name, micrographs, records, nm_per_px)
        analysis = analyze_image(loaded.labels, loaded.image, loaded.nm_per_px)
        analyses[name] = analysis
        image_info[name] = {"labels_file": str(loaded.labels_file),
                            "micrograph_file": str(loaded.micrograph_file) if loaded.micrograph_file else None,
                            "nm_per_px_source": loaded.nm_per_px_source,
                            "image_height_px": analysis.shape[0], "image_width_px": analysis.shape[1]}
        if len(image_sections) < max_image_sections:
            image_sections.append(_image_section(name, analysis, loaded))

    batch = summarize_batch(analyses)
    particles = _particles_table(analyses)
    out.mkdir(parents=True, exist_ok=True)
    particles.to_csv(out / "particles.csv", index=False)
    summary = json_ready({
        "batch": batch,
        "images": {name: {**a.summary, **image_info[name]} for name, a in analyses.items()},
        "config": {"inputs": [str(f) for f in label_files],
                   "images": str(images) if images is not None else None,
                   "nm_per_px": nm_per_px, "version": __version__},
    })
    write_json(out / "summary.json", summary)
    from .report import render_html

    sections = _report_sections(analyses, batch, image_info, image_sections, max_image_sections)
    subtitle = (f"{len(analyses)} image(s), {batch['n_particles']} particles"
                + (f", {batch['nm_per_px']:.4g} nm/px" if batch["nm_per_px"] else ""))
    page = render_html(title, sections, subtitle=subtitle)
    tmp = out / "report.html.part"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out / "report.html")
    return summary


def _particles_table(analyses: Mapping[str, ImageAnalysis]) -> pd.DataFrame:
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


# ------------------------------------------------------------------------------ report
#: (label, px key or None, nm key or None) rows of the size / distance table.
_LENGTH_ROWS = (
    ("Mean ECD", "ecd_px_mean"),
    ("ECD standard deviation", "ecd_px_sd"),
    ("D10", "ecd_px_d10"),
    ("D50 (median)", "ecd_px_d50"),
    ("D90", "ecd_px_d90"),
    ("Log-normal fit: median exp(μ)", "ecd_px_lognormal_median"),
    ("Mean nearest-neighbour distance", "nn_distance_px_mean"),
    ("Nearest-neighbour distance SD", "nn_distance_px_sd"),
    ("Lattice constant (g(r) first peak)", "lattice_constant_px"),
    ("Lattice constant (FFT)", "lattice_constant_fft_px"),
)
_VALUE_ROWS = (
    ("Particles", "n_particles"),
    ("Particles sized (not touching the border)", "n_particles_sized"),
    ("Log-normal fit: σ of ln(ECD)", "ecd_px_lognormal_sigma"),
    ("Mean aspect ratio (Feret max / min)", "aspect_ratio_mean"),
    ("Mean circularity", "circularity_mean"),
    ("Particles with a complete neighbour shell", "n_particles_order"),
    ("Mean coordination (Delaunay)", "coordination_mean"),
    ("ψ6 global |⟨ψ6⟩|", "psi6_global"),
    ("ψ6 local ⟨|ψ6|⟩", "psi6_local_mean"),
    ("ψ4 global |⟨ψ4⟩|", "psi4_global"),
    ("ψ4 local ⟨|ψ4|⟩", "psi4_local_mean"),
    ("Lattice type (higher local order)", "lattice_type"),
    ("5-fold / 7-fold coordinated particles", ("n_fivefold", "n_sevenfold")),
    ("Orientational domains (≥ 10 particles)", "n_domains"),
)


def _length_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for label, key in _LENGTH_ROWS:
        rows.append({"quantity": label, "px": summary[key], "nm": summary.get(_nm_key(key))})
    table = pd.DataFrame(rows)
    if all(v is None for v in table["nm"]):
        table = table.drop(columns="nm")
    return table


def _value_table(summary: Mapping[str, Any]) -> dict:
    table = {}
    for label, key in _VALUE_ROWS:
        if isinstance(key, tuple):
            table[label] = " / ".join(str(summary[k]) for k in key)
        else:
            table[label] = summary[key]
    return table


def _image_section(name: str, analysis: ImageAnalysis, loaded: _Loaded):
    """Figures and tables of one image (figures are drawn here, while its arrays are loaded)."""
    from .report import (Section, bond_order_map_figure, figure_to_data_uri, image_to_data_uri,
                         nn_distance_histogram_figure, pair_correlation_figure,
                         segmentation_overlay, size_histogram_figure)

    s = analysis.summary
    scale = analysis.nm_per_px
    unit = "nm" if scale else "px"
    factor = scale or 1.0
    particles = analysis.particles
    sized = particles[~particles["touches_border"].astype(bool)]
    n, n_sized = s["n_particles"], s["n_particles_sized"]
    figures = [(f"Segmentation: {_plural(n, 'particle')}"
                + (" outlined on the micrograph" if loaded.image is not None
                   else ", one colour each (no micrograph found)"),
                image_to_data_uri(segmentation_overlay(loaded.image, loaded.labels)))]
    k = 4 if s["lattice_type"] == "square" else 6
    psi = analysis.psi4 if k == 4 else analysis.psi6
    if np.isfinite(psi).any():
        figures.append((f"Local bond order ψ{k}: colour = lattice orientation, opacity = |ψ{k}|; "
                        "grey particles are too close to the border",
                        figure_to_data_uri(bond_order_map_figure(
                            loaded.labels, particles["id"].to_numpy(), psi, k=k, image=loaded.image))))
    if n_sized > 1:
        figures.append((f"ECD of the {n_sized} particles not touching the border, with the "
                        "log-normal fit",
                        figure_to_data_uri(size_histogram_figure(
                            sized["ecd_px"].to_numpy() * factor, unit=unit,
                            lognormal_mu=s[f"ecd_{unit}_lognormal_mu"],
                            lognormal_sigma=s[f"ecd_{unit}_lognormal_sigma"]))))
    lattice = s[f"lattice_constant_{unit}"]
    r, g = analysis.pair_correlation
    if np.isfinite(g).any():
        figures.append(("Pair-correlation function g(r), edge-corrected; dashed: lattice constant",
                        figure_to_data_uri(pair_correlation_figure(r * factor, g, unit=unit,
                                                                   lattice_constant=lattice))))
    nn = particles["nn_distance_px"].to_numpy(dtype=float)
    if np.isfinite(nn).any():
        figures.append(("Nearest-neighbour distances (particles away from the border)",
                        figure_to_data_uri(nn_distance_histogram_figure(
                            nn * factor, unit=unit, lattice_constant=lattice))))
    source = []
    source.append(f"Labels: {loaded.labels_file.name}; micrograph: "
                  + (loaded.micrograph_file.name if loaded.micrograph_file else "not found")
                  + f"; {analysis.shape[1]} x {analysis.shape[0]} px; pixel size: "
                  + (f"{scale:.4g} nm ({loaded.nm_per_px_source})" if scale else "unknown") + ".")
    return Section(
        title=f"Image {name}", text=source, notes=list(s["notes"]),
        subsections=[Section("Sizes and distances", table=_length_table(s)),
                     Section("Counts and order", table=_value_table(s)),
                     Section("Figures", figures=figures)],
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _remarks(summary: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    """Short tags for the per-image table (the full notes are in each image's section)."""
    n = summary["n_particles"]
    tags = []
    if n == 0:
        tags.append("no particles")
    elif n == 1:
        tags.append("one particle")
    elif summary["n_particles_order"] == 0:
        tags.append("too few for order")
    if summary["nm_per_px"] is None:
        tags.append("px only")
    if not info.get("micrograph_file"):
        tags.append("no micrograph")
    return tags


def _images_table(analyses: Mapping[str, ImageAnalysis], image_info: Mapping[str, dict]) -> pd.DataFrame:
    rows = []
    any_nm = any(a.nm_per_px is not None for a in analyses.values())
    for name, a in analyses.items():
        s = a.summary
        row = {"image": name, "particles": s["n_particles"], "sized": s["n_particles_sized"],
               "ECD mean (px)": s["ecd_px_mean"], "NN dist. (px)": s["nn_distance_px_mean"],
               "a (px)": s["lattice_constant_px"]}
        if any_nm:
            row.update({"nm/px": s["nm_per_px"], "ECD mean (nm)": s["ecd_nm_mean"],
                        "a (nm)": s["lattice_constant_nm"]})
        row.update({"ψ6 global": s["psi6_global"], "ψ4 global": s["psi4_global"],
                    "remarks": ", ".join(_remarks(s, image_info.get(name, {})))})
        rows.append(row)
    return pd.DataFrame(rows)


_DEFINITIONS = [
    "ECD (equivalent circular diameter): the diameter of the disc with the particle's area. "
    "Size statistics leave out particles that touch the image border, because their size is "
    "cut. D10, D50 and D90 are number-weighted percentiles. The log-normal fit is a maximum-"
    "likelihood fit; its median is exp(μ) and σ is the standard deviation of ln(ECD) (σ ≈ "
    "relative size spread).",
    "Nearest-neighbour distance: centre-to-centre distance to the closest particle. A particle "
    "closer to the border than to its nearest neighbour is left out (an unseen particle could be "
    "nearer), and so are distances from or to a particle cut by the border (its centre is "
    "unknown).",
    "Bond order: for each particle, ψk = mean over its neighbours of exp(i k θ), θ the bond "
    "angle; ψ6 uses Delaunay neighbours (hexagonal order), ψ4 the 4 nearest (square order). "
    "|ψk| is the local order (1 = perfect); the global value |⟨ψk⟩| is near 1 for a single "
    "crystal and near 0 for a disordered or polycrystalline array. Only particles whose "
    "neighbour shell lies fully inside the image count. The orientation arg(ψ6)/6 is measured "
    "in image coordinates (y pointing down).",
    "Lattice constant: the first peak of the edge-corrected pair-correlation function g(r); "
    "the FFT value comes from the strongest ring of the power spectrum of the particle "
    "centres. Both describe the centre-to-centre spacing of the array.",
    "All images together: sizes and nearest-neighbour distances are pooled over all particles; "
    "the order values and lattice constants are per-image values averaged with weights equal "
    "to each image's number of particles with a complete neighbour shell.",
]


def _report_sections(analyses, batch, image_info, image_sections, max_image_sections):
    from .report import Section, figure_to_data_uri, nn_distance_histogram_figure, size_histogram_figure

    unit = "nm" if batch["ecd_nm_mean"] is not None else "px"
    calibrated = [a for a in analyses.values() if a.nm_per_px is not None] if unit == "nm" else list(analyses.values())
    sizes = np.concatenate([
        a.particles.loc[~a.particles["touches_border"].astype(bool), "ecd_px"].to_numpy(float) * (a.nm_per_px or 1.0)
        for a in calibrated] or [np.zeros(0)])
    nn = np.concatenate([a.particles["nn_distance_px"].to_numpy(float) * (a.nm_per_px or 1.0)
                         for a in calibrated] or [np.zeros(0)])
    lattice = batch[f"lattice_constant_{unit}"]
    figures = [
        (f"ECD of all {_plural(batch['n_particles_sized'], 'particle')} not touching the border"
         + (" (calibrated images)" if unit == "nm" and len(calibrated) < len(analyses) else "")
         + ", with the log-normal fit",
         figure_to_data_uri(size_histogram_figure(sizes, unit=unit,
                                                  lognormal_mu=batch[f"ecd_{unit}_lognormal_mu"],
                                                  lognormal_sigma=batch[f"ecd_{unit}_lognormal_sigma"]))),
        ("Nearest-neighbour distances of all images; dashed: mean lattice constant",
         figure_to_data_uri(nn_distance_histogram_figure(nn, unit=unit, lattice_constant=lattice))),
    ]
    overview_text = [
        f"{len(analyses)} image(s) analysed; {batch['n_particles']} particles in all, "
        f"{batch['n_particles_sized']} away from the border (used for sizes) and "
        f"{batch['n_particles_order']} with a complete neighbour shell (used for order).",
        "Files next to this report: particles.csv (one row per particle, with an 'image' "
        "column) and summary.json (these numbers, per image and pooled).",
    ]
    sections = [
        Section("All images", text=overview_text, notes=list(batch["notes"]),
                subsections=[Section("Sizes and distances", table=_length_table(batch)),
                             Section("Counts and order", table=_value_table(batch)),
                             Section("Distributions", figures=figures)]),
        Section("Per-image summary", table=_images_table(analyses, image_info),
                text=None if len(analyses) <= max_image_sections else
                f"Figures are shown for the first {max_image_sections} of {len(analyses)} images; "
                "summary.json has every image."),
        *image_sections,
        Section("Definitions", text=_DEFINITIONS),
    ]
    return sections
