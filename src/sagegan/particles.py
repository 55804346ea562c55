"""Per-particle measurements from a label image.

Pure functions in the manner of :func:`skimage.measure.regionprops_table`:
arrays in, a :class:`pandas.DataFrame` or a dict out, no file I/O.

Conventions
-----------
* Pixel ``(row, col)`` has its centre at ``(x, y) = (col, row)``; ``centroid_x``
  is therefore the column coordinate and ``centroid_y`` the row coordinate,
  both in pixels (the same convention as ``skimage.measure`` centroids).
* Lengths with suffix ``_px`` are in pixels, ``_nm`` in nanometres; areas
  ``_px`` are in pixels, ``_nm2`` in square nanometres.
* Feret (caliper) diameters are measured on the same outline skimage uses for
  ``feret_diameter_max``: the 0.5 iso-contour of the particle's convex image,
  so ``feret_max_px`` equals skimage's value exactly and a single pixel has
  Feret diameters of 1 px.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours, regionprops

from .data import as_label_image

__all__ = ["MEASURE_COLUMNS", "NM_COLUMNS", "feret_diameters", "measure", "size_distribution",
           "bootstrap_ci", "poisson_ci"]

#: Columns always returned by :func:`measure`, in order.
MEASURE_COLUMNS = (
    "id",
    "area_px",
    "ecd_px",
    "feret_max_px",
    "feret_min_px",
    "aspect_ratio",
    "circularity",
    "solidity",
    "orientation_deg",
    "centroid_x",
    "centroid_y",
    "mean_intensity",
    "touches_border",
)
#: Extra columns returned by :func:`measure` when ``nm_per_px`` is given.
NM_COLUMNS = ("area_nm2", "ecd_nm", "feret_max_nm", "feret_min_nm")
#: Below this median ECD, px, a particle spans too few pixels for its size to be trusted
#: (the note of `analyze` and the warning of `segment`).
MIN_RELIABLE_ECD_PX = 8.0


# --------------------------------------------------------------------------- validation
def _check_pixel_size(nm_per_px) -> float | None:
    if nm_per_px is None:
        return None
    if isinstance(nm_per_px, bool) or not isinstance(nm_per_px, numbers.Real):
        raise ValueError(f"nm_per_px must be a positive number, got {nm_per_px!r}")
    value = float(nm_per_px)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"nm_per_px must be a finite number > 0, got {nm_per_px!r}")
    return value


# --------------------------------------------------------------------------- geometry
def feret_diameters(points) -> tuple[float, float]:
    """Maximum and minimum Feret (caliper) diameters of a 2-D point set.

    The maximum is the largest distance between two convex-hull vertices; the
    minimum is the smallest width of the hull, found by rotating calipers: for
    each hull edge, the largest distance of any hull vertex from the edge's
    line, minimised over edges.

    Parameters
    ----------
    points : (N, 2) array_like
        Point coordinates (any consistent units).

    Returns
    -------
    feret_max, feret_min : float
        ``(0.0, 0.0)`` for a single point; ``feret_min`` is 0 for collinear points.

    Example
    -------
    >>> feret_diameters([[0, 0], [4, 0], [4, 2], [0, 2]])
    (4.47213595499958, 2.0)
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    if len(pts) < 3:
        d = pts[:, None, :] - pts[None, :, :]
        return float(np.sqrt((d**2).sum(-1).max(initial=0.0))), 0.0
    try:
        hull = pts[ConvexHull(pts).vertices]
    except QhullError:  # coincident or collinear points: zero width
        d = pts[:, None, :] - pts[None, :, :]
        return float(np.sqrt((d**2).sum(-1).max())), 0.0
    d = hull[:, None, :] - hull[None, :, :]
    feret_max = float(np.sqrt((d**2).sum(-1).max()))
    edges = np.roll(hull, -1, axis=0) - hull  # edge i goes from vertex i to i+1
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / lengths[:, None]
    # distance of every vertex from every edge line (hull is convex: one sign)
    rel = hull[None, :, :] - hull[:, None, :]  # rel[e, j] = vertex j - start of edge e
    dist = np.abs(rel[..., 0] * normals[:, None, 0] + rel[..., 1] * normals[:, None, 1])
    feret_min = float(dist.max(axis=1).min())
    return feret_max, feret_min


def _region_ferets(convex_image: np.ndarray) -> tuple[float, float]:
    padded = np.pad(convex_image, 2, mode="constant", constant_values=0)
    contour = np.vstack(find_contours(padded.astype(np.uint8), 0.5, fully_connected="high"))
    return feret_diameters(contour)


# --------------------------------------------------------------------------- outlines
def pixel_outlines(labels) -> dict[int, np.ndarray]:
    """Each particle's outer outline along its pixels' edges: ``{id: (n, 2) int array of x, y}``.

    Vertices sit on pixel corners (pixel ``(x, y)`` spans ``[x, x + 1) x [y, y + 1)``), so a
    polygon filled by the pixel-centre rule of ImageJ and QuPath covers exactly the particle's
    pixels. Only the outer outline is kept: holes (background that no 8-connected path joins
    to the outside) are filled, and of a particle in several pieces the largest outline is kept.
    """
    from scipy import ndimage as ndi

    labels = as_label_image(labels)
    outlines: dict[int, np.ndarray] = {}
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        mask = np.pad(labels[box] == i, 1)
        # On the mask upsampled 2x, the level-0.5 contour runs along the original pixel edges,
        # with corners cut by a quarter pixel; rounding restores the corners.
        fine = np.kron(mask, np.ones((2, 2), np.uint8))
        contour = max(find_contours(fine, 0.5), key=len)
        rows = np.rint((contour[:, 0] + 0.5) / 2 - 1 + box[0].start).astype(np.int64)
        cols = np.rint((contour[:, 1] + 0.5) / 2 - 1 + box[1].start).astype(np.int64)
        points = np.column_stack([cols, rows])
        points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]  # repeated vertices
        before, after = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
        turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        outlines[i] = points[turn != 0]  # only the corners: straight runs need no vertices
    return outlines


# --------------------------------------------------------------------------- measure
def measure(labels, image=None, nm_per_px=None) -> pd.DataFrame:
    """Measure every particle of a label image.

    Parameters
    ----------
    labels : (H, W) ndarray of int or bool
        Label image, 0 = background, one positive id per particle. A bool mask
        is first split into particles with ``skimage.measure.label``
        (4-connectivity). Float arrays are rejected.
    image : (H, W) ndarray, optional
        Intensity image for ``mean_intensity``; NaN when omitted.
    nm_per_px : float, optional
        Pixel size. When given, ``area_nm2, ecd_nm, feret_max_nm, feret_min_nm``
        are appended.

    Returns
    -------
    pandas.DataFrame
        One row per particle, ordered by id, with columns

        ``id``
            label id.
        ``area_px``
            pixel count.
        ``ecd_px``
            equivalent circular diameter ``sqrt(4 * area / pi)``.
        ``feret_max_px``, ``feret_min_px``
            largest and smallest caliper diameters of the particle's convex
            outline (``feret_max_px`` equals skimage's ``feret_diameter_max``).
        ``aspect_ratio``
            ``feret_max_px / feret_min_px`` (Feret-based, not ellipse axes).
        ``circularity``
            ``4 * pi * area / perimeter**2`` with skimage's ``perimeter``,
            clipped to at most 1 (small particles can exceed 1 because of the
            digital perimeter); NaN for particles of zero perimeter (one pixel).
        ``solidity``
            area / convex area.
        ``orientation_deg``
            angle of the major axis of the inertia ellipse, degrees in
            [-90, 90), measured from the +x (column) axis counter-clockwise as
            displayed (row 0 at the top).
        ``centroid_x``, ``centroid_y``
            centroid column and row, px.
        ``mean_intensity``
            mean of ``image`` over the particle (NaN without image).
        ``touches_border``
            True if any pixel lies on the first/last row or column.

        An image without particles gives an empty frame with the same columns.

    Example
    -------
    >>> lab = np.zeros((8, 8), int); lab[2:5, 2:6] = 1
    >>> df = measure(lab, nm_per_px=0.5)
    >>> int(df.area_px[0]), float(df.feret_min_px[0]), float(df.area_nm2[0])
    (12, 3.0, 3.0)
    """
    labels = as_label_image(labels)
    scale = _check_pixel_size(nm_per_px)
    if image is not None:
        image = np.asarray(image)
        if image.shape != labels.shape:
            raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
        if image.dtype == bool or not np.issubdtype(image.dtype, np.number):
            raise ValueError(f"image must be numeric, got dtype {image.dtype}")
        if np.iscomplexobj(image):
            raise ValueError("image must be real-valued")
        image = image.astype(np.float64, copy=False)

    h, w = labels.shape
    rows = []
    for reg in regionprops(labels, intensity_image=image):
        minr, minc, maxr, maxc = reg.bbox
        fmax, fmin = _region_ferets(reg.image_convex)
        perim = reg.perimeter
        circ = min(4.0 * np.pi * reg.area / perim**2, 1.0) if perim > 0 else np.nan
        # skimage: angle between the row axis and the major axis; convert to
        # angle from +x, counter-clockwise on screen, in [-90, 90)
        orient = (np.rad2deg(reg.orientation) + 180.0) % 180.0 - 90.0
        cy, cx = reg.centroid
        rows.append(
            (
                reg.label,
                float(reg.area),
                float(np.sqrt(4.0 * reg.area / np.pi)),
                fmax,
                fmin,
                fmax / fmin if fmin > 0 else np.nan,
                circ,
                float(reg.solidity),
                float(orient),
                float(cx),
                float(cy),
                float(reg.intensity_mean) if image is not None else np.nan,
                bool(minr == 0 or minc == 0 or maxr == h or maxc == w),
            )
        )

    df = pd.DataFrame(rows, columns=list(MEASURE_COLUMNS))
    df = df.astype({"id": np.int64, "touches_border": bool})
    for col in MEASURE_COLUMNS[1:-1]:
        df[col] = df[col].astype(np.float64)
    if scale is not None:
        df["area_nm2"] = df["area_px"] * scale**2
        df["ecd_nm"] = df["ecd_px"] * scale
        df["feret_max_nm"] = df["feret_max_px"] * scale
        df["feret_min_nm"] = df["feret_min_px"] * scale
    return df


# --------------------------------------------------------------------------- distribution
def size_distribution(df: pd.DataFrame, column: str | None = None, exclude_border: bool = True,
                      bins="auto") -> dict:
    """Summary statistics and a histogram of one size column.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`measure` (any frame with the column works).
    column : str, optional
        Column to summarise; default ``"ecd_nm"`` when present, else ``"ecd_px"``.
    exclude_border : bool
        Drop particles with ``touches_border`` (their size is truncated).
        Requires a ``touches_border`` column.
    bins : int, sequence or str
        Passed to :func:`numpy.histogram`.

    Returns
    -------
    dict
        ``n`` (particles used; NaN values are dropped), ``mean``, ``sd``
        (sample, ``ddof=1``), ``d10``, ``d50``, ``d90`` (number-weighted
        percentiles), ``lognormal_mu``, ``lognormal_sigma`` (maximum-likelihood
        log-normal fit, ``scipy.stats.lognorm.fit(x, floc=0)``:
        ``mu = log(scale)``, ``sigma = s``; needs at least 2 positive values),
        ``histogram_counts``, ``histogram_edges``, ``column`` and ``unit``
        (``"nm"``, ``"nm2"`` or ``"px"``: the column's suffix). With no particles
        ``n`` is 0, the statistics are NaN and the histogram arrays are empty;
        ``sd`` is NaN for a single particle.

    Example
    -------
    >>> df = pd.DataFrame({"ecd_px": [10.0, 12.0, 14.0], "touches_border": [False] * 3})
    >>> size_distribution(df)["mean"]
    12.0
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if column is None:
        column = "ecd_nm" if "ecd_nm" in df.columns else "ecd_px"
    if column not in df.columns:
        raise ValueError(f"column {column!r} not in DataFrame (columns: {list(df.columns)})")
    if exclude_border:
        if "touches_border" not in df.columns:
            raise ValueError("exclude_border=True needs a 'touches_border' column")
        df = df[~df["touches_border"].astype(bool)]
    x = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    unit = column.rsplit("_", 1)[-1] if "_" in column else ""

    out = {"n": n, "column": column, "unit": unit}
    if n == 0:
        out.update(mean=np.nan, sd=np.nan, d10=np.nan, d50=np.nan, d90=np.nan,
                   lognormal_mu=np.nan, lognormal_sigma=np.nan,
                   histogram_counts=np.zeros(0, dtype=np.int64), histogram_edges=np.zeros(0))
        return out
    d10, d50, d90 = np.percentile(x, [10, 50, 90])
    counts, edges = np.histogram(x, bins=bins)
    pos = x[x > 0]
    if pos.size >= 2:
        s, _, scale = stats.lognorm.fit(pos, floc=0)
        mu, sigma = float(np.log(scale)), float(s)
    else:
        mu = sigma = np.nan
    out.update(
        mean=float(x.mean()),
        sd=float(x.std(ddof=1)) if n > 1 else np.nan,
        d10=float(d10), d50=float(d50), d90=float(d90),
        lognormal_mu=mu, lognormal_sigma=sigma,
        histogram_counts=counts, histogram_edges=edges,
    )
    return out


# --------------------------------------------------------------------------- uncertainty
_STATISTICS = {"mean": np.mean, "median": np.median}


def bootstrap_ci(values, statistic="mean", groups=None, n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of a statistic of particle values.

    Without ``groups`` the particles are resampled with replacement. With ``groups`` (e.g. the
    image each particle comes from) the bootstrap is two-stage: the groups are resampled with
    replacement, then the particles within each drawn group. This keeps the variation between
    images in the interval, which resampling pooled particles would hide when images differ.

    Parameters
    ----------
    values : (N,) array_like
        One value per particle (e.g. ECD); NaN values are dropped.
    statistic : {"mean", "median"} or callable
        A callable takes a 1-D array and returns a float.
    groups : (N,) array_like, optional
        Group label of each value.
    n_resamples : int
        Number of bootstrap resamples.
    level : float
        Confidence level, in (0, 1).
    seed : int
        Seed of the :class:`numpy.random.Generator`: the same inputs give the same interval.

    Returns
    -------
    (lo, hi) : tuple of float
        NaN for fewer than 2 values.

    Example
    -------
    >>> x = np.random.default_rng(1).normal(10, 1, 400)
    >>> lo, hi = bootstrap_ci(x)
    >>> bool(lo < x.mean() < hi), round(hi - lo, 1)
    (True, 0.2)
    """
    fn = _STATISTICS.get(statistic, statistic) if isinstance(statistic, str) else statistic
    if not callable(fn):
        raise ValueError(f"statistic must be 'mean', 'median' or a callable, got {statistic!r}")
    if not 0 < level < 1 or int(n_resamples) < 1:
        raise ValueError(f"need 0 < level < 1 and n_resamples >= 1, got {level}, {n_resamples}")
    x = np.asarray(values, dtype=float).ravel()
    g = np.zeros(x.size, dtype=np.int64) if groups is None else np.asarray(groups).ravel()
    if g.shape != x.shape:
        raise ValueError(f"groups has shape {g.shape}, values has {x.shape}")
    ok = np.isfinite(x)
    x, g = x[ok], g[ok]
    if x.size < 2:
        return float("nan"), float("nan")
    _, g = np.unique(g, return_inverse=True)
    order = np.argsort(g, kind="stable")
    x, g = x[order], g[order]
    sizes = np.bincount(g)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    k = len(sizes)
    rng = np.random.default_rng(seed)
    stats_ = np.empty(int(n_resamples))
    for b in range(int(n_resamples)):
        if k == 1:
            idx = rng.integers(0, x.size, x.size)
        else:
            drawn = rng.integers(0, k, k)
            drawn = np.repeat(drawn, sizes[drawn])  # one entry per particle slot of a drawn group
            idx = offsets[drawn] + (rng.random(drawn.size) * sizes[drawn]).astype(np.int64)
        stats_[b] = fn(x[idx])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats_, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def poisson_ci(count, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) confidence interval of a Poisson mean from one observed count.

    For the particle count of one image: the expected number of particles in a field of view of
    this size.

    Example
    -------
    >>> tuple(round(v, 2) for v in poisson_ci(10))
    (4.8, 18.39)
    """
    n = int(count)
    if n < 0 or not 0 < level < 1:
        raise ValueError(f"need count >= 0 and 0 < level < 1, got {count}, {level}")
    alpha = (1.0 - level) / 2.0
    lo = 0.0 if n == 0 else float(stats.chi2.ppf(alpha, 2 * n) / 2.0)
    return lo, float(stats.chi2.ppf(1.0 - alpha, 2 * n + 2) / 2.0)
