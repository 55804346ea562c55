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
from skimage.measure import find_contours, grid_points_in_poly

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
    return _hull_ferets(hull)


def _hull_ferets(hull: np.ndarray) -> tuple[float, float]:
    """Feret diameters of a convex polygon given by its vertices in order."""
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


def _pixel_hull(mask: np.ndarray) -> np.ndarray:
    """Vertices (row, col), in order, of the convex hull of the mask's pixels taken as diamonds.

    The hull of the midpoints of every pixel's edges, as :func:`skimage.morphology.convex_hull_image`
    builds it. Only the outer midpoints can be vertices: the left edge of each row's first pixel and
    the right edge of its last, the top edge of each column's first pixel and the bottom edge of
    its last (every other midpoint lies between two of these), and no two of them coincide.
    """
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    first_col = mask[rows].argmax(axis=1)
    last_col = w - 1 - mask[rows, ::-1].argmax(axis=1)
    first_row = mask[:, cols].argmax(axis=0)
    last_row = h - 1 - mask[::-1, cols].argmax(axis=0)
    points = np.concatenate([np.column_stack([rows, first_col - 0.5]), np.column_stack([rows, last_col + 0.5]),
                             np.column_stack([first_row - 0.5, cols]), np.column_stack([last_row + 0.5, cols])])
    return points[ConvexHull(points).vertices]


def _convex_area_and_ferets(mask: np.ndarray) -> tuple[int, float, float]:
    """Pixel count of the particle's convex image, and its Feret diameters.

    The convex image is skimage's ``image_convex`` (pixels whose centres lie in the hull of
    :func:`_pixel_hull`); the Feret diameters are those of the 0.5 iso-contour of the convex image,
    whose vertices are the midpoints of its pixels' outer edges, so they are the diameters of the
    convex image's own :func:`_pixel_hull`.
    """
    convex = grid_points_in_poly(mask.shape, _pixel_hull(mask), binarize=False) >= 1
    return int(convex.sum()), *_hull_ferets(_pixel_hull(convex))


# skimage.measure.perimeter's weights for the codes of a border pixel (1 + 2 x its 4-connected
# and 10 x its diagonal border neighbours of the same particle): straight runs count 1, diagonal
# steps sqrt(2), corners between them (1 + sqrt(2)) / 2; other codes 0.
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + np.sqrt(2.0)) / 2.0


def _perimeters(labels: np.ndarray, n: int, block_rows: int = 1024) -> np.ndarray:
    """skimage's ``perimeter(particle, 4)`` for every particle 1..n at once (entry 0 unused).

    A particle's border pixels are those with a 4-neighbour outside it; each gets its code from
    the border pixels of the same particle around it. Rows are taken ``block_rows`` at a time with
    two rows of context, so that a huge image needs no full-size temporaries beyond a block.
    """
    h, w = labels.shape
    total = np.zeros(n + 1)
    for r0 in range(0, h, block_rows):
        r1 = min(h, r0 + block_rows)
        a, b = max(0, r0 - 2), min(h, r1 + 2)
        padded = np.pad(labels[a:b], 1)  # outside the image is background
        centre = padded[1:-1, 1:-1]
        same = {(dy, dx): padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx] == centre
                for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)}
        border = np.pad((centre > 0) & ~(same[-1, 0] & same[1, 0] & same[0, -1] & same[0, 1]), 1)
        code = np.ones(centre.shape, np.int64)
        for (dy, dx), equal in same.items():
            near = border[1 + dy:border.shape[0] - 1 + dy, 1 + dx:border.shape[1] - 1 + dx] & equal
            code += (10 if dy and dx else 2) * near
        rows = slice(r0 - a, r1 - a)  # only the block's own rows: the context rows lack neighbours
        mine = border[1:-1, 1:-1][rows]
        total += np.bincount(centre[rows][mine], weights=_PERIMETER_WEIGHTS[code[rows][mine]], minlength=n + 1)
    return total


def _pixel_sums(labels: np.ndarray, n: int, origin: np.ndarray, image: np.ndarray | None,
                block_rows: int = 1024) -> dict[str, np.ndarray]:
    """Per particle 0..n: pixel count, sums of rows, columns, their squares and products (relative
    to the particle's bounding box ``origin``, so exact in float64), and of the image's values."""
    names = ("count", "r", "c", "rr", "cc", "rc", "intensity")
    sums = {k: np.zeros(n + 1) for k in names}
    for r0 in range(0, labels.shape[0], block_rows):
        block = labels[r0:r0 + block_rows]
        rows, cols = np.nonzero(block)
        if not rows.size:
            continue
        ids = block[rows, cols]
        r = (rows + r0 - origin[ids, 0]).astype(np.float64)
        c = (cols - origin[ids, 1]).astype(np.float64)
        for key, weights in (("count", None), ("r", r), ("c", c), ("rr", r * r), ("cc", c * c), ("rc", r * c)):
            sums[key] += np.bincount(ids, weights=weights, minlength=n + 1)
        if image is not None:
            sums["intensity"] += np.bincount(ids, weights=image[r0:r0 + block_rows][rows, cols], minlength=n + 1)
    return sums


def _orientations(sums: dict[str, np.ndarray]) -> np.ndarray:
    """skimage's regionprops ``orientation`` (radians) from the pixel sums of :func:`_pixel_sums`.

    The central second moments times the pixel count are exact integers, computed as Python
    integers, so that a particle symmetric in rows and columns gets skimage's tie value (+-pi/4)
    instead of an angle decided by rounding.
    """
    out = np.empty(len(sums["count"]))
    for i, (n, r, c, rr, cc, rc) in enumerate(zip(*(sums[k].astype(np.int64).tolist()
                                                    for k in ("count", "r", "c", "rr", "cc", "rc")))):
        if n == 0:
            out[i] = np.nan
            continue
        mu_rr, mu_cc, mu_rc = n * rr - r * r, n * cc - c * c, n * rc - r * c
        # skimage: inertia tensor [[a, b], [b, c]] = [[mu_cc, -mu_rc], [-mu_rc, mu_rr]] / n^2
        if mu_cc == mu_rr:
            out[i] = np.pi / 4 if -mu_rc < 0 else -np.pi / 4
        else:
            out[i] = 0.5 * np.arctan2(2.0 * mu_rc, float(mu_rr - mu_cc))
    return out


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

    # skimage's regionprops measures, computed for all particles at once where they are sums
    # over pixels, and per particle only for the convex hull (regionprops is several times slower).
    from scipy import ndimage as ndi

    h, w = labels.shape
    boxes = ndi.find_objects(labels)
    ids = np.array([i for i, box in enumerate(boxes, start=1) if box is not None], dtype=np.int64)
    n = len(boxes)
    bbox = np.zeros((n + 1, 4), np.int64)  # min row, min col, max row + 1, max col + 1
    for i in ids:
        box_rows, box_cols = boxes[i - 1]
        bbox[i] = box_rows.start, box_cols.start, box_rows.stop, box_cols.stop
    sums = _pixel_sums(labels, n, bbox[:, :2], image)
    perimeter = _perimeters(labels, n)
    orientation = _orientations(sums)
    rows = []
    for i in ids:
        area = sums["count"][i]
        convex_area, fmax, fmin = _convex_area_and_ferets(labels[boxes[i - 1]] == i)
        perim = perimeter[i]
        circ = min(4.0 * np.pi * area / perim**2, 1.0) if perim > 0 else np.nan
        # skimage: angle between the row axis and the major axis; convert to
        # angle from +x, counter-clockwise on screen, in [-90, 90)
        orient = (np.rad2deg(orientation[i]) + 180.0) % 180.0 - 90.0
        minr, minc, maxr, maxc = bbox[i]
        rows.append(
            (
                int(i),
                float(area),
                float(np.sqrt(4.0 * area / np.pi)),
                fmax,
                fmin,
                fmax / fmin if fmin > 0 else np.nan,
                circ,
                float(area / convex_area),
                float(orient),
                float(minc + sums["c"][i] / area),
                float(minr + sums["r"][i] / area),
                float(sums["intensity"][i] / area) if image is not None else np.nan,
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
