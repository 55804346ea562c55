"""Spatial order of particle arrays (superlattices, close-packed monolayers).

This module owns the order measurements (neighbours, bond order psi4 / psi6, g(r), lattice
constants, orientational domains, defects), the one hex-or-square decision,
:func:`lattice_type_from_order`, that every other module uses, and the plain-language verdict
:func:`order_verdict` ("ordered hexagonal", ..., "disordered"). Pure functions on particle
centroids; no file I/O, no plotting.

Conventions
-----------
* ``centroids`` is an ``(N, 2)`` array of ``(x, y)`` in pixels: ``x`` is the
  column and ``y`` the row coordinate, as ``particles.measure`` reports them
  (``centroid_x``, ``centroid_y``). Pixel ``(row, col)`` has its centre at
  ``(x, y) = (col, row)``.
* ``shape`` is the image shape ``(H, W)`` (rows, columns). The observation
  window is the image area ``x in [-0.5, W - 0.5]``, ``y in [-0.5, H - 0.5]``.
* Bond angles are ``atan2(dy, dx)`` in image coordinates (y pointing down),
  so phases are mirrored relative to a y-up plot; magnitudes are unaffected.
* Edge handling: a particle is an *edge* particle when its neighbour shell
  may be cut by the image border (see :func:`edge_mask`). Per-particle
  quantities of edge particles are NaN whenever ``shape`` is given, and
  statistics are taken over the remaining *valid* particles.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.fft import next_fast_len, rfft2
from scipy.spatial import Delaunay, QhullError, Voronoi, cKDTree

__all__ = [
    "nearest_neighbour_distances",
    "delaunay_neighbours",
    "edge_mask",
    "coordination_numbers",
    "bond_order",
    "global_bond_order",
    "mean_local_bond_order",
    "pair_correlation",
    "lattice_constant_gr",
    "lattice_type_from_order",
    "detect_lattice",
    "lattice_constant_fft",
    "orientation_domains",
    "psi6_phase_map",
    "defect_counts",
    "summarize_order",
    "ORDER_VERDICTS",
    "ORDERED_MIN_PSI",
    "PARTIAL_MIN_PSI",
    "VERDICT_MIN_PARTICLES",
    "order_verdict",
]

#: The answers of :func:`order_verdict`, from most to least ordered.
ORDER_VERDICTS = ("ordered hexagonal", "ordered square", "partially ordered", "disordered")
# Thresholds of order_verdict on <|psi|> of the better-fitting lattice, chosen on simulated
# lattices with growing jitter and on the EMPS training images by
# benchmarks/studies/order_verdict.py (numbers in BENCHMARKS.md): ordered up to about 7 %
# jitter of the lattice constant, partially ordered up to about 9 % and above every simulated
# dense random packing (whose local psi6 is high too).
ORDERED_MIN_PSI = 0.70
PARTIAL_MIN_PSI = 0.62
# Below this many particles with a complete neighbour shell a random packing can reach the
# thresholds by chance (same study).
VERDICT_MIN_PARTICLES = 5


# --------------------------------------------------------------------------- validation
def _as_centroids(centroids) -> np.ndarray:
    c = np.asarray(centroids, dtype=float)
    if c.size == 0:
        return np.zeros((0, 2))
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"centroids must have shape (N, 2) as (x, y), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("centroids contain NaN or inf")
    return c


def _as_shape(shape) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be the image shape (H, W), got {shape!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"shape must be positive (H, W), got {shape!r}")
    return h, w


def _border_distance(c: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    x, y = c[:, 0], c[:, 1]
    return np.minimum.reduce([x + 0.5, (w - 0.5) - x, y + 0.5, (h - 0.5) - y])


def _delaunay(c: np.ndarray):
    """Delaunay triangulation, or None for fewer than 3 / collinear points."""
    if len(c) < 3:
        return None
    try:
        return Delaunay(c)
    except QhullError:
        return None


def _edges(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed Delaunay edges (i -> j, both directions present)."""
    nb = delaunay_neighbours(c)
    counts = np.array([len(a) for a in nb], dtype=np.int64)
    i = np.repeat(np.arange(len(c)), counts)
    j = np.concatenate(nb) if len(nb) else np.zeros(0, dtype=np.int64)
    return i, j.astype(np.int64)


# --------------------------------------------------------------------------- neighbours
def nearest_neighbour_distances(centroids, shape=None) -> np.ndarray:
    """Distance from each particle to its nearest neighbour.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    shape : (H, W), optional
        Image shape. When given, the border method is applied: a distance is
        NaN when the particle is closer to the image border than to its
        nearest neighbour (an unseen particle could be nearer).

    Returns
    -------
    (N,) ndarray of float
        All NaN when ``N < 2``.

    Example
    -------
    >>> nearest_neighbour_distances([[0, 0], [3, 4], [10, 0]]).round(3).tolist()
    [5.0, 5.0, 8.062]
    """
    c = _as_centroids(centroids)
    n = len(c)
    if n < 2:
        return np.full(n, np.nan)
    d, _ = cKDTree(c).query(c, k=2)
    d = d[:, 1].astype(float)
    if shape is not None:
        d[d > _border_distance(c, _as_shape(shape))] = np.nan
    return d


def delaunay_neighbours(centroids) -> list[np.ndarray]:
    """Neighbours of each particle in the Delaunay triangulation.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)``.

    Returns
    -------
    list of N int ndarrays
        Indices of the neighbours of each particle. Two particles are each
        other's neighbour; collinear particles are linked to their neighbours
        along the line; a duplicated position gets no neighbours.

    Example
    -------
    >>> [a.tolist() for a in delaunay_neighbours([[0, 0], [1, 0], [0, 1]])]
    [[1, 2], [0, 2], [0, 1]]
    """
    c = _as_centroids(centroids)
    n = len(c)
    if n == 0:
        return []
    tri = _delaunay(c)
    if tri is None:  # 1-2 points, or collinear: chain along the principal direction
        if n == 1:
            return [np.zeros(0, dtype=np.int64)]
        _, _, vt = np.linalg.svd(c - c.mean(0), full_matrices=False)
        order = np.argsort(c @ vt[0], kind="stable")
        nb = [[] for _ in range(n)]
        for a, b in zip(order[:-1], order[1:]):
            nb[a].append(b)
            nb[b].append(a)
        return [np.sort(np.array(x, dtype=np.int64)) for x in nb]
    indptr, indices = tri.vertex_neighbor_vertices
    return [np.sort(indices[indptr[i]:indptr[i + 1]]).astype(np.int64) for i in range(n)]


def edge_mask(centroids, shape, margin=None) -> np.ndarray:
    """Mark particles whose neighbour shell may be cut by the image border.

    A particle is *interior* when it is not on the convex hull of the point
    set and every Delaunay triangle it belongs to has its circumcircle fully
    inside the image. By the empty-circle property, no particle outside the
    image could then change its Delaunay neighbours or its Voronoi cell.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    shape : (H, W)
        Image shape.
    margin : float, optional
        Additionally mark particles closer than ``margin`` px to the border
        (e.g. ``1.5 * nearest-neighbour distance`` for a stricter cut).

    Returns
    -------
    (N,) ndarray of bool
        True for edge particles. All True when ``N < 3`` or the points are
        collinear (no neighbour shell is complete).

    Example
    -------
    >>> xy = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2) * 10 + 5
    >>> int((~edge_mask(xy, (50, 50))).sum())
    9
    """
    c = _as_centroids(centroids)
    shape = _as_shape(shape)
    n = len(c)
    bad = np.ones(n, dtype=bool)
    tri = _delaunay(c)
    if tri is None:
        return bad
    bad[:] = False
    simp = tri.simplices
    p = c[simp]  # (M, 3, 2)
    # circumcentres
    a, b, cc = p[:, 0], p[:, 1], p[:, 2]
    d = 2.0 * (a[:, 0] * (b[:, 1] - cc[:, 1]) + b[:, 0] * (cc[:, 1] - a[:, 1]) + cc[:, 0] * (a[:, 1] - b[:, 1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        a2, b2, c2 = (a**2).sum(1), (b**2).sum(1), (cc**2).sum(1)
        ux = (a2 * (b[:, 1] - cc[:, 1]) + b2 * (cc[:, 1] - a[:, 1]) + c2 * (a[:, 1] - b[:, 1])) / d
        uy = (a2 * (cc[:, 0] - b[:, 0]) + b2 * (a[:, 0] - cc[:, 0]) + c2 * (b[:, 0] - a[:, 0])) / d
        centre = np.stack([ux, uy], axis=1)
        radius = np.hypot(ux - a[:, 0], uy - a[:, 1])
        unsafe = ~(_border_distance(centre, shape) >= radius)  # NaN (flat triangle) -> unsafe
    bad[simp[unsafe].ravel()] = True
    bad[np.unique(tri.convex_hull)] = True
    if len(tri.coplanar):
        bad[tri.coplanar[:, 0]] = True  # duplicated points left out of the triangulation
    bd = _border_distance(c, shape)
    bad |= bd < 0
    if margin is not None:
        margin = float(margin)
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0 px, got {margin}")
        bad |= bd < margin
    return bad


def coordination_numbers(centroids, shape=None) -> np.ndarray:
    """Number of Delaunay neighbours of each particle.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    shape : (H, W), optional
        Image shape; when given, edge particles (:func:`edge_mask`) get NaN.

    Returns
    -------
    (N,) ndarray of float

    Example
    -------
    >>> coordination_numbers([[0, 0], [2, 0], [1, 2], [1, 0.7]]).tolist()
    [3.0, 3.0, 3.0, 3.0]
    """
    c = _as_centroids(centroids)
    z = np.array([len(a) for a in delaunay_neighbours(c)], dtype=float)
    if shape is not None and len(c):
        z[edge_mask(c, shape)] = np.nan
    return z


# --------------------------------------------------------------------------- bond order
def bond_order(centroids, k=6, shape=None, neighbours="delaunay", n_neighbours=None) -> np.ndarray:
    """Local bond-orientational order ``psi_k`` of each particle.

    ``psi_k(j) = sum_l w_jl exp(i k theta_jl) / sum_l w_jl`` over the
    neighbours ``l`` of particle ``j``, with ``theta_jl`` the bond angle.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    k : int
        Symmetry: 6 for hexagonal, 4 for square order.
    shape : (H, W), optional
        Image shape; when given, edge particles (:func:`edge_mask`) get NaN.
    neighbours : {"delaunay", "knn", "voronoi"}
        ``"delaunay"``: Delaunay neighbours, equal weights (the usual choice
        for ``psi6``). ``"knn"``: the ``n_neighbours`` nearest particles
        (default ``k``; the usual choice for ``psi4``, since the Delaunay
        triangulation of a square lattice is degenerate). ``"voronoi"``:
        Voronoi neighbours weighted by the length of the shared cell facet
        (Mickel et al. 2013), robust to both; unbounded cells give NaN.
    n_neighbours : int, optional
        Number of neighbours for ``"knn"``.

    Returns
    -------
    (N,) ndarray of complex
        NaN for particles without neighbours (N < 2) and for edge particles.
        ``abs(psi)`` is the local order (1 = perfect), ``angle(psi) / k`` the
        local lattice orientation.

    Example
    -------
    >>> ang = np.arange(6) * np.pi / 3
    >>> xy = np.vstack([[0, 0], np.c_[np.cos(ang), np.sin(ang)]])
    >>> round(float(abs(bond_order(xy, k=6)[0])), 6)
    1.0
    """
    c = _as_centroids(centroids)
    n = len(c)
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    psi = np.full(n, np.nan + 0j, dtype=complex)
    if n < 2:
        return psi

    if neighbours == "delaunay":
        i, j = _edges(c)
        w = np.ones(len(i))
    elif neighbours == "knn":
        m = k if n_neighbours is None else int(n_neighbours)
        if m < 1:
            raise ValueError(f"n_neighbours must be >= 1, got {m}")
        m = min(m, n - 1)
        _, idx = cKDTree(c).query(c, k=m + 1)
        idx = idx[:, 1:]  # drop the particle itself
        i = np.repeat(np.arange(n), m)
        j = idx.ravel()
        w = np.ones(len(i))
    elif neighbours == "voronoi":
        if _delaunay(c) is None:
            return psi
        try:
            vor = Voronoi(c)
        except QhullError:
            return psi
        rv = np.array(vor.ridge_vertices, dtype=np.int64).reshape(-1, 2)
        rp = vor.ridge_points
        finite = (rv >= 0).all(axis=1)
        length = np.where(finite, np.linalg.norm(vor.vertices[rv[:, 0]] - vor.vertices[rv[:, 1]], axis=1), np.nan)
        i = np.concatenate([rp[:, 0], rp[:, 1]])
        j = np.concatenate([rp[:, 1], rp[:, 0]])
        w = np.concatenate([length, length])
    else:
        raise ValueError(f"neighbours must be 'delaunay', 'knn' or 'voronoi', got {neighbours!r}")

    d = c[j] - c[i]
    theta = np.arctan2(d[:, 1], d[:, 0])
    wsum = np.bincount(i, weights=w, minlength=n)
    re = np.bincount(i, weights=w * np.cos(k * theta), minlength=n)
    im = np.bincount(i, weights=w * np.sin(k * theta), minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        psi = (re + 1j * im) / wsum
    psi[~(wsum > 0)] = np.nan
    if shape is not None:
        psi[edge_mask(c, shape)] = np.nan
    return psi


def _valid_psi(psi, valid=None) -> np.ndarray:
    psi = np.asarray(psi, dtype=complex).ravel()
    ok = np.isfinite(psi)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool).ravel()
        if valid.shape != psi.shape:
            raise ValueError(f"valid has shape {valid.shape}, psi has {psi.shape}")
        ok &= valid
    return psi[ok]


def global_bond_order(psi, valid=None) -> float:
    """Global order ``|mean(psi)|`` over valid particles.

    Parameters
    ----------
    psi : (N,) complex array_like
        Local bond order from :func:`bond_order`; NaN entries are ignored.
    valid : (N,) bool array_like, optional
        Further restrict to these particles.

    Returns
    -------
    float
        1 for a single-crystal perfect lattice, ~0 for a liquid or a
        polycrystal; NaN without valid particles.

    Example
    -------
    >>> global_bond_order([1, 1j, np.nan])
    0.7071067811865476
    """
    p = _valid_psi(psi, valid)
    return float(np.abs(p.mean())) if p.size else float("nan")


def mean_local_bond_order(psi, valid=None) -> float:
    """Mean local order ``mean(|psi|)`` over valid particles (NaN if none).

    Example
    -------
    >>> mean_local_bond_order([1, 1j, np.nan])
    1.0
    """
    p = _valid_psi(psi, valid)
    return float(np.abs(p).mean()) if p.size else float("nan")


# --------------------------------------------------------------------------- g(r)
def _median_nn(c: np.ndarray) -> float:
    if len(c) < 2:
        return float("nan")
    d = nearest_neighbour_distances(c)
    d = d[d > 0]
    return float(np.median(d)) if d.size else float("nan")


def pair_correlation(centroids, shape, r_max=None, dr=None) -> tuple[np.ndarray, np.ndarray]:
    """Radial pair-correlation function g(r) with translation edge correction.

    Each ordered pair at displacement ``(dx, dy)`` is weighted by
    ``1 / ((W - |dx|) (H - |dy|))``, the area of the window intersected with
    its translate (Ohser-Stoyan estimator); the intensity is estimated by
    ``N (N - 1) / A^2``. A Poisson process gives ``g = 1`` at all r.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    shape : (H, W)
        Image shape (the observation window).
    r_max : float, optional
        Largest distance, px, below ``min(H, W)``. Default
        ``min(min(H, W) / 4, 10 * median NN distance)``.
    dr : float, optional
        Bin width, px. Default ``median NN distance / 20`` (``r_max / 100``
        when that is undefined).

    Returns
    -------
    r : ndarray
        Bin centres, px.
    g : ndarray
        g(r); all NaN when ``N < 2``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> r, g = pair_correlation(rng.uniform(0, 200, (2000, 2)), (200, 200), r_max=40, dr=4)
    >>> bool(np.all(np.abs(g[2:] - 1) < 0.1))
    True
    """
    c = _as_centroids(centroids)
    h, w = _as_shape(shape)
    n = len(c)
    nn = _median_nn(c)
    if r_max is None:
        r_max = min(h, w) / 4.0
        if np.isfinite(nn):
            r_max = min(r_max, 10.0 * nn)
    r_max = float(r_max)
    if not 0 < r_max < min(h, w):
        raise ValueError(f"r_max must be in (0, min(H, W) = {min(h, w)}), got {r_max}")
    if dr is None:
        dr = nn / 20.0 if np.isfinite(nn) else r_max / 100.0
    dr = float(dr)
    if not 0 < dr <= r_max:
        raise ValueError(f"dr must be in (0, r_max], got {dr}")
    nbins = int(np.ceil(r_max / dr - 1e-9))
    edges = np.arange(nbins + 1) * dr
    r = 0.5 * (edges[:-1] + edges[1:])
    if n < 2:
        return r, np.full(nbins, np.nan)
    pairs = cKDTree(c).query_pairs(edges[-1], output_type="ndarray")
    d = c[pairs[:, 1]] - c[pairs[:, 0]]
    dist = np.hypot(d[:, 0], d[:, 1])
    keep = dist < edges[-1]
    d, dist = d[keep], dist[keep]
    weight = 1.0 / ((w - np.abs(d[:, 0])) * (h - np.abs(d[:, 1])))
    hist = 2.0 * np.bincount((dist / dr).astype(np.int64), weights=weight, minlength=nbins)[:nbins]
    area = float(h * w)
    shell = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    g = area**2 / (n * (n - 1)) * hist / shell
    return r, g


def _parabolic_peak(y: np.ndarray, i: int) -> float:
    """Sub-sample position of a maximum at index i (vertex of a 3-point parabola)."""
    if i <= 0 or i >= len(y) - 1:
        return float(i)
    ym, y0, yp = y[i - 1], y[i], y[i + 1]
    den = ym - 2 * y0 + yp
    if den >= 0:
        return float(i)
    return float(i + 0.5 * (ym - yp) / den)


def lattice_constant_gr(centroids, shape) -> float:
    """Centre-to-centre spacing from the first peak of g(r).

    g(r) is computed with bins of 1/200 of the median nearest-neighbour
    distance, smoothed with a Gaussian of 6 bins (3 % of the spacing), and its maximum within
    0.6-1.4 times the median NN distance is refined by a 3-point parabola.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    shape : (H, W)
        Image shape.

    Returns
    -------
    float
        Spacing in px; NaN for fewer than 3 particles.

    Example
    -------
    >>> xy = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2) * 10 + 5
    >>> abs(lattice_constant_gr(xy, (200, 200)) - 10.0) < 0.05
    True
    """
    c = _as_centroids(centroids)
    shape = _as_shape(shape)
    nn = _median_nn(c)
    if len(c) < 3 or not np.isfinite(nn):
        return float("nan")
    dr = nn / 200.0
    r_max = min(1.6 * nn, 0.99 * min(shape))
    r, g = pair_correlation(c, shape, r_max=r_max, dr=dr)
    gs = ndimage.gaussian_filter1d(g, 6.0, mode="nearest")
    lo, hi = np.searchsorted(r, [0.6 * nn, 1.4 * nn])
    if hi - lo < 3 or not np.any(gs[lo:hi] > 0):
        return float("nan")
    i = lo + int(np.argmax(gs[lo:hi]))
    pos = _parabolic_peak(gs, i)
    return float(np.interp(pos, np.arange(len(r)), r))


# --------------------------------------------------------------------------- lattice type
def lattice_type_from_order(psi6, psi4, *, hex_like=True, square_like=True):
    """The hex-or-square decision: the lattice whose local bond order is higher.

    Parameters
    ----------
    psi6, psi4 : float
        Mean local bond orders ``<|psi6|>`` (Delaunay neighbours) and
        ``<|psi4|>`` (4 nearest neighbours), as :func:`mean_local_bond_order`
        and :func:`summarize_order` (``psi6_local_mean``,
        ``psi4_local_mean``) give them.
    hex_like, square_like : bool
        Whether the caller's own test admits each lattice (e.g. a minimum
        bond order). By default both are admitted, so the answer is always
        ``"hex"`` or ``"square"``.

    Returns
    -------
    str or None
        ``"square"`` when a square lattice is admitted and either the hex one
        is not or ``psi4 > psi6``; otherwise ``"hex"`` when a hex lattice is
        admitted; None when neither is. Ties and NaN go to ``"hex"``.

    Example
    -------
    >>> lattice_type_from_order(0.4, 0.9), lattice_type_from_order(0.8, 0.8)
    ('square', 'hex')
    >>> lattice_type_from_order(0.8, 0.9, square_like=False), lattice_type_from_order(
    ...     0.2, 0.3, hex_like=False, square_like=False)
    ('hex', None)
    """
    if square_like and (not hex_like or psi4 > psi6):
        return "square"
    return "hex" if hex_like else None


def detect_lattice(centroids, shape=None) -> str:
    """Guess the lattice symmetry: ``"square"`` if mean |psi4| > mean |psi6|.

    ``psi6`` uses Delaunay neighbours, ``psi4`` the 4 nearest neighbours; the
    decision is :func:`lattice_type_from_order`.
    Returns ``"hex"`` when undecidable (fewer than 3 particles).

    Example
    -------
    >>> xy = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)
    >>> detect_lattice(xy)
    'square'
    """
    c = _as_centroids(centroids)
    if len(c) < 3:
        return "hex"
    p6 = mean_local_bond_order(bond_order(c, 6, shape, "delaunay"))
    p4 = mean_local_bond_order(bond_order(c, 4, shape, "knn"))
    return lattice_type_from_order(p6, p4)


# --------------------------------------------------------------------------- FFT
def _delta_image(c: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinearly splatted unit masses at the centroids."""
    h, w = shape
    img = np.zeros(h * w)
    x = np.clip(c[:, 0], 0, w - 1)
    y = np.clip(c[:, 1], 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    fx, fy = x - x0, y - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = np.minimum(y0 + dy, h - 1), np.minimum(x0 + dx, w - 1)
            img += np.bincount(yy * w + xx, weights=wy * wx, minlength=h * w)
    return img.reshape(h, w)


def lattice_constant_fft(centroids=None, shape=None, lattice="auto", image=None,
                         spacing_range=None) -> float:
    """Centre-to-centre spacing from the first strong ring of the power spectrum.

    The input (a centroid delta image, or ``image``) is mean-subtracted,
    Hann-windowed and zero-padded to at least 1024 px per side; the radially
    averaged power spectrum is searched for its maximum, whose radius ``k``
    (cycles/px) is refined as the power-weighted mean ``|k|`` in an annulus
    around it. The spacing is then

    * triangular (hex) lattice: ``d = 2 / (sqrt(3) * k)`` (the first ring is
      the {10} family, ``k = 2 / (sqrt(3) d)``);
    * square lattice: ``d = 1 / k``.

    Parameters
    ----------
    centroids : (N, 2) array_like, optional
        Particle positions ``(x, y)`` in px; used to build the delta image and,
        with ``lattice="auto"``, to pick the lattice type.
    shape : (H, W), optional
        Image shape; defaults to ``image.shape``. Required with centroids only.
    lattice : {"auto", "hex", "square"}
        ``"auto"`` uses :func:`detect_lattice` (needs centroids).
    image : (H, W) ndarray, optional
        Use this image's spectrum instead of the centroid delta image.
    spacing_range : (d_min, d_max), optional
        Only look for the ring at spacings in this range (px). Default with
        centroids: 0.7-1.45 times the median NN distance (covers hex and
        square); with an image only: from 2 px to ``min(H, W) / 4``.

    Returns
    -------
    float
        Spacing in px; NaN for fewer than 3 centroids.

    Example
    -------
    >>> xy = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2) * 10 + 5
    >>> round(lattice_constant_fft(xy, (200, 200), lattice="square"), 1)
    10.0
    """
    if lattice not in ("auto", "hex", "square"):
        raise ValueError(f"lattice must be 'auto', 'hex' or 'square', got {lattice!r}")
    c = None if centroids is None else _as_centroids(centroids)
    if image is not None:
        image = np.asarray(image, dtype=float)
        if image.ndim != 2:
            raise ValueError(f"image must be 2-D, got shape {image.shape}")
        if shape is not None and tuple(_as_shape(shape)) != image.shape:
            raise ValueError(f"shape {tuple(shape)} differs from image shape {image.shape}")
        shape = image.shape
    if shape is None:
        raise ValueError("give shape (H, W) with centroids, or an image")
    h, w = _as_shape(shape)
    if c is None and image is None:
        raise ValueError("give centroids or an image")
    if lattice == "auto":
        if c is None:
            raise ValueError("lattice='auto' needs centroids; pass lattice='hex' or 'square' with an image only")
        lattice = detect_lattice(c, (h, w))
    if c is not None and len(c) < 3 and image is None:
        return float("nan")

    if spacing_range is None:
        nn = _median_nn(c) if c is not None else np.nan
        spacing_range = (0.7 * nn, 1.45 * nn) if np.isfinite(nn) else (2.0, min(h, w) / 4.0)
    d_min, d_max = (float(v) for v in spacing_range)
    if not 0 < d_min < d_max:
        raise ValueError(f"spacing_range must be (d_min, d_max) with 0 < d_min < d_max, got {spacing_range}")
    conv = 2.0 / np.sqrt(3.0) if lattice == "hex" else 1.0  # k * d for the first ring
    k_lo = max(conv / d_max, 3.0 / min(h, w))
    k_hi = min(conv / d_min, 0.5)
    if not k_lo < k_hi:
        return float("nan")

    src = image if image is not None else _delta_image(c, (h, w))
    src = (src - src.mean()) * np.outer(np.hanning(h) if h > 2 else np.ones(h), np.hanning(w) if w > 2 else np.ones(w))
    ny, nx = next_fast_len(max(h, 1024), real=True), next_fast_len(max(w, 1024), real=True)
    power = np.abs(rfft2(src.astype(np.float32), s=(ny, nx))) ** 2
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    kr = np.hypot(ky, kx)
    step = 1.0 / max(ny, nx)
    inside = kr <= 0.5  # complete rings only
    idx = (kr[inside] / step).astype(np.int64)
    prof = np.bincount(idx, weights=power[inside].astype(float)) / np.maximum(np.bincount(idx), 1)
    centres = (np.arange(len(prof)) + 0.5) * step
    cand = np.flatnonzero((centres >= k_lo) & (centres <= k_hi))
    if cand.size == 0 or not np.any(prof[cand] > 0):
        return float("nan")
    k = centres[cand[np.argmax(prof[cand])]]
    # refine: power-weighted mean |k| in an annulus around the ring
    band = kr <= min(k_hi * 1.2, 0.5)
    kb, pb = kr[band], power[band].astype(float)
    for _ in range(3):
        half = max(2.5 / min(h, w), 0.06 * k)
        m = np.abs(kb - k) <= half
        if pb[m].sum() <= 0:
            break
        k = float((kb[m] * pb[m]).sum() / pb[m].sum())
    return float(conv / k)


# --------------------------------------------------------------------------- domains
def _orientation_deg(psi: np.ndarray, k: int = 6) -> np.ndarray:
    """Lattice orientation arg(psi_k) / k in degrees, in [-180/k, 180/k)."""
    period = 360.0 / k
    ang = np.degrees(np.angle(psi)) / k
    return (ang + period / 2) % period - period / 2


def orientation_domains(centroids, psi6, shape=None, tol_deg=5.0, min_order=0.7, min_size=10,
                        k=6) -> np.ndarray:
    """Group particles into orientational domains (grains).

    Particles with ``|psi6| >= min_order`` are linked along Delaunay bonds
    whose lattice orientations ``arg(psi6) / 6`` differ by less than
    ``tol_deg`` (modulo 60 degrees); connected components with at least
    ``min_size`` particles are domains. For square arrays pass ``psi4`` and
    ``k=4`` (orientation ``arg(psi4) / 4``, modulo 90 degrees).

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    psi6 : (N,) complex array_like
        Local ``psi6`` from :func:`bond_order` (NaN = edge / invalid).
    shape : (H, W), optional
        Image shape; when given, edge particles are also left out.
    tol_deg : float
        Largest orientation difference between bonded particles, degrees.
    min_order : float
        Smallest ``|psi6|`` of a particle that can join a domain (grain
        boundaries and defects have low ``|psi6|``).
    min_size : int
        Smallest domain, in particles.
    k : int
        Symmetry of ``psi6`` (6, or 4 for a ``psi4`` array).

    Returns
    -------
    (N,) ndarray of int
        Domain label per particle: 1..n_domains ordered by decreasing size,
        0 for particles in no domain. ``labels.max()`` is the domain count.

    Example
    -------
    >>> xy = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)
    >>> xy[:, 0] += 0.5 * (xy[:, 1] % 2); xy[:, 1] *= np.sqrt(3) / 2
    >>> int(orientation_domains(xy, bond_order(xy, 6, (10, 11))).max())
    1
    """
    c = _as_centroids(centroids)
    psi6 = np.asarray(psi6, dtype=complex).ravel()
    n = len(c)
    if psi6.shape != (n,):
        raise ValueError(f"psi6 must have one value per centroid ({n}), got shape {psi6.shape}")
    if tol_deg <= 0 or min_size < 1:
        raise ValueError("tol_deg must be > 0 and min_size >= 1")
    labels = np.zeros(n, dtype=np.int64)
    if n == 0:
        return labels
    ok = np.isfinite(psi6) & (np.abs(np.nan_to_num(psi6)) >= min_order)
    if shape is not None:
        ok &= ~edge_mask(c, shape)
    if not ok.any():
        return labels
    period = 360.0 / int(k)
    ang = _orientation_deg(np.where(ok, psi6, 0), int(k))
    i, j = _edges(c)
    diff = np.abs((ang[i] - ang[j] + period / 2) % period - period / 2)
    keep = ok[i] & ok[j] & (diff < tol_deg)
    graph = sparse.coo_matrix((np.ones(int(keep.sum())), (i[keep], j[keep])), shape=(n, n))
    _, comp = csgraph.connected_components(graph, directed=False)
    comp = np.where(ok, comp, -1)
    ids, counts = np.unique(comp[comp >= 0], return_counts=True)
    big = counts >= min_size
    ids, counts = ids[big], counts[big]
    order = np.argsort(-counts, kind="stable")
    lut = np.zeros(comp.max() + 2, dtype=np.int64)
    lut[ids[order] + 1] = np.arange(1, len(ids) + 1)
    return lut[comp + 1]


def psi6_phase_map(centroids, psi6, shape, max_distance=None) -> np.ndarray:
    """Raster of the local lattice orientation (Voronoi / nearest-particle map).

    Each pixel takes the orientation ``arg(psi6) / 6`` (degrees, in
    [-30, 30)) of its nearest particle.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    psi6 : (N,) complex array_like
        Local ``psi6`` (NaN for edge / invalid particles).
    shape : (H, W)
        Output shape.
    max_distance : float, optional
        Pixels farther than this from every particle are NaN; default the
        median nearest-neighbour distance.

    Returns
    -------
    (H, W) ndarray of float
        Orientation in degrees; NaN where the nearest particle has no valid
        ``psi6``, beyond ``max_distance``, or everywhere when N = 0.

    Example
    -------
    >>> m = psi6_phase_map([[2, 2], [7, 2]], [np.exp(6j * np.pi / 36), np.nan], (5, 10), max_distance=5)
    >>> round(float(m[2, 1]), 6), bool(np.isnan(m[2, 8]))
    (5.0, True)
    """
    c = _as_centroids(centroids)
    h, w = _as_shape(shape)
    psi6 = np.asarray(psi6, dtype=complex).ravel()
    if psi6.shape != (len(c),):
        raise ValueError(f"psi6 must have one value per centroid ({len(c)}), got shape {psi6.shape}")
    out = np.full((h, w), np.nan)
    if len(c) == 0:
        return out
    if max_distance is None:
        max_distance = _median_nn(c)
        if not np.isfinite(max_distance):
            max_distance = np.inf
    rows = np.clip(np.rint(c[:, 1]).astype(np.int64), 0, h - 1)
    cols = np.clip(np.rint(c[:, 0]).astype(np.int64), 0, w - 1)
    seeds = np.zeros((h, w), dtype=np.int64)
    seeds[rows, cols] = np.arange(1, len(c) + 1)
    dist, (ir, ic) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    owner = seeds[ir, ic] - 1
    ang = _orientation_deg(psi6)  # NaN stays NaN
    out = ang[owner]
    out[dist > max_distance] = np.nan
    return out


# --------------------------------------------------------------------------- defects
def defect_counts(coordination, valid=None) -> dict:
    """Count coordination defects (relative to a triangular lattice).

    Parameters
    ----------
    coordination : (N,) array_like
        Coordination numbers (:func:`coordination_numbers`); NaN = excluded.
    valid : (N,) bool array_like, optional
        Only count these particles.

    Returns
    -------
    dict
        ``n_valid``, ``n_fivefold``, ``n_sixfold``, ``n_sevenfold``,
        ``n_other`` (neither 5, 6 nor 7), ``defect_fraction``
        (non-6-fold / valid; NaN when no valid particle).

    Example
    -------
    >>> defect_counts([6, 6, 5, 7, 4, np.nan])["n_other"]
    1
    """
    z = np.asarray(coordination, dtype=float).ravel()
    ok = np.isfinite(z)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool).ravel()
        if valid.shape != z.shape:
            raise ValueError(f"valid has shape {valid.shape}, coordination has {z.shape}")
        ok &= valid
    z = np.rint(z[ok]).astype(np.int64)
    n = int(z.size)
    n5, n6, n7 = (int((z == v).sum()) for v in (5, 6, 7))
    return {
        "n_valid": n,
        "n_fivefold": n5,
        "n_sixfold": n6,
        "n_sevenfold": n7,
        "n_other": n - n5 - n6 - n7,
        "defect_fraction": (n - n6) / n if n else float("nan"),
    }


# --------------------------------------------------------------------------- summary
def summarize_order(centroids, shape) -> dict:
    """All order descriptors of one image in a flat dict.

    Parameters
    ----------
    centroids : (N, 2) array_like
        Particle positions ``(x, y)`` in px.
    shape : (H, W)
        Image shape.

    Returns
    -------
    dict
        ``n`` (particles), ``n_valid`` (non-edge particles),
        ``nn_distance_px_mean``, ``nn_distance_px_sd`` (border-method
        corrected, :func:`nearest_neighbour_distances`), ``coordination_mean``
        (Delaunay, valid particles), ``psi4_global``, ``psi6_global``,
        ``psi4_local_mean``, ``psi6_local_mean`` (``psi6``: Delaunay
        neighbours; ``psi4``: 4 nearest neighbours; valid particles),
        ``lattice_constant_px`` (first g(r) peak), ``lattice_constant_fft_px``
        (lattice type from :func:`detect_lattice`), ``n_fivefold``,
        ``n_sevenfold`` (Delaunay coordination 5 / 7 among valid particles;
        meaningful for triangular arrays) and ``n_domains``
        (:func:`orientation_domains` with default settings, on ``psi6`` or,
        for a square array, ``psi4``). Undefined values are NaN (counts are
        0): with no valid particle (e.g. N <= 3) all order values are NaN.

    Example
    -------
    >>> summarize_order(np.zeros((0, 2)), (100, 100))["n"]
    0
    """
    c = _as_centroids(centroids)
    shape = _as_shape(shape)
    n = len(c)
    nn = nearest_neighbour_distances(c, shape)
    nn = nn[np.isfinite(nn)]
    edge = edge_mask(c, shape) if n else np.zeros(0, dtype=bool)
    valid = ~edge
    z = coordination_numbers(c, shape)
    psi6 = bond_order(c, 6, shape, "delaunay")
    psi4 = bond_order(c, 4, shape, "knn")
    defects = defect_counts(z, valid)
    has_lattice = bool(valid.any())
    if has_lattice:
        lattice = lattice_type_from_order(mean_local_bond_order(psi6), mean_local_bond_order(psi4))
        square = lattice == "square"
        domains = orientation_domains(c, psi4 if square else psi6, shape, k=4 if square else 6)
    return {
        "n": n,
        "n_valid": int(valid.sum()),
        "nn_distance_px_mean": float(nn.mean()) if nn.size else float("nan"),
        "nn_distance_px_sd": float(nn.std(ddof=1)) if nn.size > 1 else float("nan"),
        "coordination_mean": float(np.nanmean(z[valid])) if valid.any() else float("nan"),
        "psi4_global": global_bond_order(psi4),
        "psi6_global": global_bond_order(psi6),
        "psi4_local_mean": mean_local_bond_order(psi4),
        "psi6_local_mean": mean_local_bond_order(psi6),
        "lattice_constant_px": lattice_constant_gr(c, shape) if has_lattice else float("nan"),
        "lattice_constant_fft_px": lattice_constant_fft(c, shape, lattice) if has_lattice else float("nan"),
        "n_fivefold": defects["n_fivefold"],
        "n_sevenfold": defects["n_sevenfold"],
        "n_domains": int(domains.max()) if has_lattice else 0,
    }


# --------------------------------------------------------------------------- verdict
def order_verdict(order_summary, ordered_min=ORDERED_MIN_PSI, partial_min=PARTIAL_MIN_PSI,
                  min_particles=VERDICT_MIN_PARTICLES) -> str | None:
    """A plain-language verdict on the spatial order of one image.

    The lattice is the one :func:`lattice_type_from_order` picks, and its mean local bond order
    ``q`` (``<|psi6|>`` for hex, ``<|psi4|>`` for square) decides: ``q >= ordered_min`` is
    ordered, ``q >= partial_min`` partially ordered, anything lower disordered. Local (not
    global) order is used, so a polycrystalline array of well-ordered grains counts as ordered.
    On simulated lattices the default thresholds sit at a positional jitter of about 7 % and
    9 % of the lattice constant; a dense random (jammed) packing, whose ``<|psi6|>`` is about
    0.57, is disordered.

    Parameters
    ----------
    order_summary : mapping
        :func:`summarize_order` output, or an analysis summary (``sagegan.analyze``): needs
        ``psi6_local_mean``, ``psi4_local_mean`` and ``n_valid`` (or ``n_particles_order``),
        the number of particles with a complete neighbour shell.
    ordered_min, partial_min : float
        Thresholds on ``q``, ``0 <= partial_min <= ordered_min <= 1``.
    min_particles : int
        Fewer particles with a complete neighbour shell than this give no verdict.

    Returns
    -------
    str or None
        One of :data:`ORDER_VERDICTS`; None when there are too few particles (or the order
        values are undefined).

    Example
    -------
    >>> order_verdict({"psi6_local_mean": 0.95, "psi4_local_mean": 0.3, "n_valid": 50})
    'ordered hexagonal'
    >>> order_verdict({"psi6_local_mean": 0.4, "psi4_local_mean": 0.45, "n_valid": 50})
    'disordered'
    """
    if not 0.0 <= partial_min <= ordered_min <= 1.0:
        raise ValueError(f"need 0 <= partial_min <= ordered_min <= 1, got {partial_min}, {ordered_min}")
    n = order_summary.get("n_valid", order_summary.get("n_particles_order"))
    if n is None:
        raise ValueError("order_summary needs 'n_valid' (or 'n_particles_order')")
    psi6, psi4 = (float(order_summary[k]) for k in ("psi6_local_mean", "psi4_local_mean"))
    if int(n) < max(int(min_particles), 1) or not (np.isfinite(psi6) and np.isfinite(psi4)):
        return None
    lattice = lattice_type_from_order(psi6, psi4)
    q = psi4 if lattice == "square" else psi6
    if q >= ordered_min:
        return "ordered square" if lattice == "square" else "ordered hexagonal"
    return "partially ordered" if q >= partial_min else "disordered"
