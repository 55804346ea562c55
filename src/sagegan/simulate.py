"""Simulated electron micrographs of nanoparticle monolayers, with exact instance masks.

This module owns the simulator: `simulate_micrograph` and `simulate_dataset`, the
`SimulationParams` that describe what is simulated (shared with the layout model,
`sagegan.layouts`, which fits these parameters to real masks), and the simulator's geometry
constants that the layout model inverts.

The simulator is sagegan's embedded data: the demo and the unit tests run on it, and because the
particles are drawn by the simulator, every mask, size and centroid is known exactly.

A micrograph is made in three independent stages, each with its own random stream spawned from
the seed (so changing, say, the dose leaves the particles where they were):

1. *placement* — particle centres on hexagonal or square lattices split into Voronoi grains, each
   grain with its own orientation, plus vacancies, position jitter and islands/voids; or dense
   (relaxed, jammed-like) or sparse (hard-core) random packings;
2. *drawing* — lognormal sizes and the shape (disc, sphere, rounded cube, capsule rod) drawn into a
   label map, each particle only inside its bounding box. Where two footprints overlap (touching
   neighbours in a close-packed array) each pixel goes to the particle it lies deepest inside, so
   labels never overlap and neighbours meet along a clean contact line;
3. *imaging* — SEM (bright particles, bright edges, dark gaps) or TEM (dark particles, Fresnel
   fringe) contrast, defocus blur, uneven illumination, Poisson–Gaussian shot noise set by the
   dose, and scan-line offsets.

Example
-------
>>> from sagegan.simulate import simulate_micrograph
>>> sim = simulate_micrograph(256, layout="hex", modality="sem", seed=1)
>>> sim.image.shape, int(sim.labels.max()) == len(sim.truth)
((256, 256), True)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "LAYOUTS",
    "TRUTH_COLUMNS",
    "MODALITIES",
    "SHAPES",
    "SimulatedMicrograph",
    "SimulationParams",
    "simulate_micrograph",
    "simulate_dataset",
]

LAYOUTS = ("hex", "square", "random", "sparse", "mixed")
MODALITIES = ("sem", "tem")
SHAPES = ("disc", "sphere", "cube", "rod")

_LATTICES = ("hex", "square")
_CONCRETE_LAYOUTS = ("hex", "square", "random", "sparse")  # what "mixed" chooses from...
_MIXED_WEIGHTS = (0.35, 0.25, 0.25, 0.15)  # ...favouring ordered arrays, the simulator's subject
_MIN_SIZE = 16
# A scan-line offset belongs to a scanned beam (SEM); a TEM camera reads all rows at once.
_DEFAULT_SCAN_LINE_NOISE = {"sem": 0.02, "tem": 0.0}
# Detector read noise in electrons: the Gaussian half of the Poisson–Gaussian model.
_READ_NOISE_ELECTRONS = 2.0
# Particles whose drawn area is below this fraction of their nominal area (slivers at the image
# border, or particles almost hidden under neighbours) are left out of the labels.
_MIN_AREA_FRACTION = 0.15

# Geometry of the drawn particles and of their exclusion discs. The layout model
# (`sagegan.layouts`) reads these to turn measured sizes and spacings back into parameters.
#: Rounded-cube corner radius as a fraction of the half edge.
CUBE_CORNER = 0.25
#: Exclusion-disc scale of cubes on a lattice, where they turn with their grain.
LATTICE_CUBE_SCALE = 1.02
#: Exclusion-disc scale of randomly turned cubes: about the circumcircle of a rounded cube.
FREE_CUBE_SCALE = 1.3
#: Exclusion-disc scale of cubes in a dense random packing (relaxed, so a little tighter).
DENSE_CUBE_SCALE = 0.92 * FREE_CUBE_SCALE
#: Centre distance of a sparse layer, in exclusion diameters.
SPARSE_REACH = 1.5

#: Valid range of each number in `SimulationParams`, as (low, high); the ends are included except
#: where `_OPEN_ENDS` says otherwise. The mean diameter is also at most 4 times the image side.
PARAM_RANGES = {
    "mean_diameter_px": (3.0, math.inf),
    "diameter_sigma": (0.0, 0.5),
    "gap_fraction": (0.0, 2.0),
    "vacancy_fraction": (0.0, 1.0),
    "jitter_fraction": (0.0, 0.5),
    "coverage": (0.0, 1.0),
    "dose": (0.0, math.inf),
    "blur_sigma_px": (0.0, 20.0),
    "scan_line_noise": (0.0, 1.0),
    "background_gradient": (0.0, 1.0),
    "aspect_ratio": (1.0, 20.0),
}
_OPEN_ENDS = {"vacancy_fraction": (False, True), "coverage": (True, False), "dose": (True, False)}
_MAX_DIAMETER_PER_SIDE = 4.0

TRUTH_COLUMNS = ["id", "centroid_x", "centroid_y", "diameter_px", "nominal_diameter_px", "shape",
                 "grain", "lattice_constant_px", "orientation_deg", "angle_deg", "area_px",
                 "touches_border"]


@dataclass
class SimulatedMicrograph:
    """One simulated micrograph with its exact ground truth.

    Attributes
    ----------
    image : ndarray of float32, shape (H, W), or None
        The micrograph, in [0, 1]; None when made with ``render=False`` (labels only).
    labels : ndarray of int32, shape (H, W)
        Instance labels: 0 is background, particles are 1..N.
    truth : DataFrame
        One row per particle in ``labels``: ``id``; ``centroid_x``, ``centroid_y`` (px, of the drawn
        mask, x = column, y = row); ``diameter_px`` (equivalent circular diameter of the drawn mask,
        ``2 * sqrt(area / pi)``); ``nominal_diameter_px`` (the drawn size: disc/sphere diameter,
        cube edge, rod width); ``shape``; ``grain`` (0 for random layouts);
        ``lattice_constant_px`` (nominal centre-to-centre spacing, NaN for random layouts);
        ``orientation_deg`` (the grain's lattice orientation, NaN for random layouts);
        ``angle_deg`` (the particle's in-plane angle: cube edge or rod axis); ``area_px``;
        ``touches_border`` (the mask reaches the image edge, so it is a cut particle).
    params : dict
        Every parameter used, JSON-serialisable. The keys named like the arguments of
        `simulate_micrograph` reproduce the image when passed back to it; ``layout`` is the layout
        actually drawn (``requested_layout`` keeps "mixed").
    """

    image: np.ndarray
    labels: np.ndarray
    truth: pd.DataFrame
    params: dict


@dataclass(frozen=True)
class SimulationParams:
    """What is simulated, apart from the image size, layout, modality and seed.

    Every value is checked (and numbers turned into floats, names into lower case) when the
    object is made, so a bad value fails here with a clear message. `simulate_micrograph` takes
    one of these, or its fields as keyword arguments; `sagegan.layouts` fits them to real masks.

    Attributes
    ----------
    shape : {"disc", "sphere", "cube", "rod"}
        Disc and sphere share the footprint (a sphere is shaded as a dome); cube is a rounded
        square turned with its grain; rod is a capsule `aspect_ratio` times longer than wide.
    mean_diameter_px : float
        Mean particle diameter (cube edge, rod width) in px; at least 3, and at most 4 times the
        image side (checked by `simulate_micrograph`).
    diameter_sigma : float
        Sigma of the lognormal size distribution (0 = monodisperse), in [0, 0.5].
    gap_fraction : float
        Lattice constant = ``mean_diameter_px * (1 + gap_fraction)``: small values leave thin
        gaps, and the larger particles touch. In [0, 2].
    n_grains : int
        Number of lattice grains (Voronoi cells with their own orientation), at least 1.
    vacancy_fraction : float
        Fraction of lattice sites left empty (lattice layouts), in [0, 1).
    jitter_fraction : float
        Standard deviation of the centre displacement, as a fraction of the lattice constant, in
        [0, 0.5].
    coverage : float
        Fraction of the area covered by the monolayer, in (0, 1]; below 1, a smooth random field
        leaves islands and voids.
    dose : float
        Electrons per pixel at full brightness, > 0; lower dose is noisier (Poisson shot noise).
    blur_sigma_px : float
        Gaussian defocus / probe blur in px, in [0, 20].
    scan_line_noise : float or None
        Standard deviation of the per-row intensity offset, in [0, 1]; None: 0.02 for SEM, 0 for
        TEM (a scan-line offset belongs to a scanned beam).
    background_gradient : float
        Strength of the uneven illumination (linear ramp plus smooth blobs), as a fraction, in
        [0, 1].
    aspect_ratio : float
        Length / width of rods (ignored by the other shapes), in [1, 20].

    Examples
    --------
    >>> params = SimulationParams(shape="cube", mean_diameter_px=12)
    >>> params.mean_diameter_px, params.gap_fraction
    (12.0, 0.08)
    >>> SimulationParams(coverage=0)
    Traceback (most recent call last):
    ...
    ValueError: coverage must lie in (0.0, 1.0], got 0
    """

    shape: str = "disc"
    mean_diameter_px: float = 24.0
    diameter_sigma: float = 0.08
    gap_fraction: float = 0.08
    n_grains: int = 3
    vacancy_fraction: float = 0.03
    jitter_fraction: float = 0.03
    coverage: float = 1.0
    dose: float = 150.0
    blur_sigma_px: float = 0.8
    scan_line_noise: float | None = None
    background_gradient: float = 0.15
    aspect_ratio: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):  # in field order, so the first bad value is the one reported
            value = getattr(self, f.name)
            if f.name == "shape":
                value = _check_choice("shape", value, SHAPES)
            elif f.name == "n_grains":
                value = _check_count("n_grains", value)
            elif not (f.name == "scan_line_noise" and value is None):
                value = _check_param(f.name, value)
            object.__setattr__(self, f.name, value)


@dataclass
class _Placement:
    """Particle centres and geometry before drawing (internal)."""

    x: np.ndarray           # column coordinate of each centre, px
    y: np.ndarray           # row coordinate, px
    size: np.ndarray        # nominal diameter / cube edge / rod width, px
    angle: np.ndarray       # in-plane angle of the particle, radians
    grain: np.ndarray       # grain index (0 for random layouts)
    grain_angle_deg: list   # lattice orientation of each grain
    lattice_constant: float  # nan for random layouts


# --------------------------------------------------------------------------------------------
# argument checks


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value.lower()


def _check_number(name: str, value: Any, low: float, high: float = math.inf, *,
                  low_open: bool = False, high_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if not math.isfinite(number) or below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {left}{low}, {high}{right}, got {value!r}")
    return number


def _check_param(name: str, value: Any, high: float | None = None) -> float:
    """A number of `SimulationParams` in its range (`PARAM_RANGES`; `high` overrides the top)."""
    low, top = PARAM_RANGES[name]
    low_open, high_open = _OPEN_ENDS.get(name, (False, False))
    return _check_number(name, value, low, top if high is None else high,
                         low_open=low_open, high_open=high_open)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_side(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer number of pixels, got {value!r}")
    if value < _MIN_SIZE:
        raise ValueError(f"{name} must be at least {_MIN_SIZE} px, got {value}")
    return int(value)


def _check_seed(seed: Any) -> int | list[int]:
    """A seed is a non-negative int or a sequence of them (as numpy's SeedSequence takes)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    if isinstance(seed, (list, tuple, np.ndarray)) and len(seed) > 0 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in seed):
        return [int(s) for s in seed]
    raise ValueError(f"seed must be a non-negative integer or a sequence of them, got {seed!r}")


# --------------------------------------------------------------------------------------------
# smooth random fields (islands, illumination, rod alignment)


def _coarse_noise(rng: np.random.Generator, height: int, width: int, cell_px: float) -> np.ndarray:
    """Smooth zero-mean, unit-variance noise on a grid with one node every `cell_px` pixels.

    The grid has two spare nodes on every side so that padded regions can be sampled too.
    """
    rows = int(math.ceil(height / cell_px)) + 5
    cols = int(math.ceil(width / cell_px)) + 5
    grid = ndimage.gaussian_filter(rng.standard_normal((rows, cols)), 1.0, mode="wrap")
    return (grid - grid.mean()) / (grid.std() + 1e-12)


def _sample_noise(grid: np.ndarray, cell_px: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bicubic samples of a `_coarse_noise` grid at pixel coordinates (x = column, y = row)."""
    coords = np.stack([np.asarray(y, float) / cell_px + 2.0, np.asarray(x, float) / cell_px + 2.0])
    return ndimage.map_coordinates(grid, coords, order=3, mode="nearest")


def _linear_upsampling(n_out: int, step: int) -> np.ndarray:
    """Matrix that linearly interpolates samples taken every `step` px onto `n_out` pixels."""
    position = np.arange(n_out) / step
    below = np.floor(position).astype(int)
    frac = position - below
    weights = np.zeros((n_out, below[-1] + 2))
    weights[np.arange(n_out), below] = 1.0 - frac
    weights[np.arange(n_out), below + 1] = frac
    return weights


def _noise_image(rng: np.random.Generator, height: int, width: int, cell_px: float) -> np.ndarray:
    """A smooth random field over the whole image, zero mean and unit variance on the grid."""
    grid = _coarse_noise(rng, height, width, cell_px)
    # Bicubic samples every 8 px, then linear in between: the field is far smoother than 8 px,
    # and sampling all pixels bicubically would cost more than the rest of the simulation.
    step = 8
    up_rows, up_cols = _linear_upsampling(height, step), _linear_upsampling(width, step)
    rows = np.arange(up_rows.shape[1]) * step
    cols = np.arange(up_cols.shape[1]) * step
    low = _sample_noise(grid, cell_px, *np.meshgrid(cols, rows)).reshape(rows.size, cols.size)
    return (up_rows @ low @ up_cols.T).astype(np.float32)


# --------------------------------------------------------------------------------------------
# placement


def _lognormal_sizes(rng: np.random.Generator, n: int, mean: float, sigma: float) -> np.ndarray:
    """Lognormal sizes with the given mean; draws beyond 3 sigma are clipped to keep shapes sane."""
    z = np.clip(rng.standard_normal(n), -3.0, 3.0)
    return mean * np.exp(sigma * z - 0.5 * sigma**2)


def _lattice_centres(rng: np.random.Generator, height: int, width: int, lattice: str,
                     row_spacing: float, stack_spacing: float, n_grains: int, pad: float,
                     angle_period_deg: float):
    """Lattice sites in Voronoi grains, each grain with its own orientation and offset.

    In a grain's own frame, site (i, j) sits at ``u = (i + s j) * row_spacing``,
    ``v = j * stack_spacing``, with ``s = 1/2`` (rows staggered: hexagonal) or ``0`` (square).
    """
    stagger = 0.5 if lattice == "hex" else 0.0
    seeds = np.column_stack([rng.uniform(0, width, n_grains), rng.uniform(0, height, n_grains)])
    grain_angles = rng.uniform(0.0, angle_period_deg, n_grains)
    offsets = rng.uniform(0.0, 1.0, (n_grains, 2))
    seed_tree = cKDTree(seeds)

    centre = np.array([width / 2.0, height / 2.0])
    reach = 0.5 * math.hypot(width + 2 * pad, height + 2 * pad)
    n_j = int(math.ceil(reach / stack_spacing)) + 1
    n_i = int(math.ceil(reach / row_spacing + stagger * n_j)) + 1
    j, i = np.meshgrid(np.arange(-n_j, n_j + 1), np.arange(-n_i, n_i + 1), indexing="ij")
    xs, ys, grains = [], [], []
    for g in range(n_grains):
        u = (i.ravel() + stagger * j.ravel() + offsets[g, 0]) * row_spacing
        v = (j.ravel() + offsets[g, 1]) * stack_spacing
        theta = math.radians(grain_angles[g])
        x = centre[0] + u * math.cos(theta) - v * math.sin(theta)
        y = centre[1] + u * math.sin(theta) + v * math.cos(theta)
        inside = (x > -pad) & (x < width + pad) & (y > -pad) & (y < height + pad)
        x, y = x[inside], y[inside]
        own = seed_tree.query(np.column_stack([x, y]))[1] == g
        xs.append(x[own])
        ys.append(y[own])
        grains.append(np.full(int(own.sum()), g))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(grains), grain_angles


def _relax_dense(rng: np.random.Generator, height: int, width: int, pad: float,
                 radius: np.ndarray, n_iter: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Dense random packing: random centres pushed apart until (almost) no exclusion discs overlap.

    This is a cheap stand-in for a jamming protocol: overlapping pairs are separated by half their
    overlap each step. The result is an amorphous, locally close-packed arrangement.
    """
    n = radius.size
    x = rng.uniform(-pad, width + pad, n)
    y = rng.uniform(-pad, height + pad, n)
    if n < 2:
        return x, y
    reach = 2.0 * radius.max()
    for _ in range(n_iter):
        pairs = cKDTree(np.column_stack([x, y])).query_pairs(reach, output_type="ndarray")
        if pairs.size == 0:
            break
        a, b = pairs[:, 0], pairs[:, 1]
        dx, dy = x[b] - x[a], y[b] - y[a]
        dist = np.maximum(np.hypot(dx, dy), 1e-6)
        overlap = radius[a] + radius[b] - dist
        hit = overlap > 0
        if not hit.any():
            break
        # 0.55 instead of 0.5: a slight over-push converges in fewer sweeps.
        push = 0.55 * overlap[hit] / dist[hit]
        step_x, step_y = push * dx[hit], push * dy[hit]
        np.add.at(x, a[hit], -step_x)
        np.add.at(x, b[hit], step_x)
        np.add.at(y, a[hit], -step_y)
        np.add.at(y, b[hit], step_y)
        np.clip(x, -pad, width + pad, out=x)
        np.clip(y, -pad, height + pad, out=y)
    return x, y


def _exclusion_circles(placement: _Placement, shape: str, aspect_ratio: float, cube_scale: float):
    """Circles that stand in for each footprint when checking for overlaps (a rod is a chain)."""
    if shape == "rod":
        n_per = int(math.ceil(aspect_ratio)) + 1
        t = np.linspace(-1.0, 1.0, n_per)
        half_axis = 0.5 * (aspect_ratio - 1.0) * placement.size
        cx = placement.x[:, None] + np.cos(placement.angle)[:, None] * half_axis[:, None] * t
        cy = placement.y[:, None] + np.sin(placement.angle)[:, None] * half_axis[:, None] * t
        r = np.repeat(0.5 * placement.size, n_per)
        owner = np.repeat(np.arange(placement.x.size), n_per)
        return cx.ravel(), cy.ravel(), r, owner
    scale = cube_scale if shape == "cube" else 1.0
    return placement.x, placement.y, 0.5 * placement.size * scale, np.arange(placement.x.size)


def _sequential_adsorption(rng: np.random.Generator, placement: _Placement, shape: str,
                           aspect_ratio: float, cube_scale: float, reach: float) -> np.ndarray:
    """Which particles to keep: visited in random order, each is kept unless it clashes with one
    already kept. Two particles clash when their exclusion circles are closer than `reach` times
    the sum of their radii.

    On uniform random candidates this is random sequential adsorption (`reach` > 1 keeps them
    apart: a sparse layer). On lattices and relaxed packings, `reach` < 1 tolerates the slight
    overlaps of touching neighbours (the drawing settles those pixel by pixel) and only removes
    real clashes, such as sites of two grains meeting at a grain boundary.
    """
    cx, cy, r, owner = _exclusion_circles(placement, shape, aspect_ratio, cube_scale)
    n = placement.x.size
    keep = np.zeros(n, bool)
    if n == 0:
        return keep
    pairs = cKDTree(np.column_stack([cx, cy])).query_pairs(2.0 * reach * r.max(),
                                                           output_type="ndarray")
    a, b = pairs[:, 0], pairs[:, 1]
    distance = np.hypot(cx[b] - cx[a], cy[b] - cy[a])
    clash = (owner[a] != owner[b]) & (distance < reach * (r[a] + r[b]))
    src = np.concatenate([owner[a][clash], owner[b][clash]])
    dst = np.concatenate([owner[b][clash], owner[a][clash]])
    by_src = np.argsort(src, kind="stable")
    src, dst = src[by_src], dst[by_src]
    start = np.searchsorted(src, np.arange(n))
    stop = np.searchsorted(src, np.arange(n), side="right")
    blocked = np.zeros(n, bool)
    for k in rng.permutation(n):
        if not blocked[k]:
            keep[k] = True
            blocked[dst[start[k]:stop[k]]] = True
    return keep


def _subset(placement: _Placement, keep: np.ndarray) -> _Placement:
    return _Placement(placement.x[keep], placement.y[keep], placement.size[keep],
                      placement.angle[keep], placement.grain[keep], placement.grain_angle_deg,
                      placement.lattice_constant)


def _place_particles(rng: np.random.Generator, height: int, width: int, layout: str,
                     p: SimulationParams) -> _Placement:
    """Centres, sizes and angles of all particles for one micrograph (before drawing)."""
    spacing = p.mean_diameter_px * (1.0 + p.gap_fraction)  # nearest-neighbour centre distance
    length = p.mean_diameter_px * (p.aspect_ratio if p.shape == "rod" else 1.0)
    pad = 0.5 * length + 2.0  # particles cut by the image edge are part of a real micrograph
    if layout in _LATTICES:
        placement = _place_on_lattice(rng, height, width, layout, p, spacing, length, pad)
        reach, cube_scale = 0.85, LATTICE_CUBE_SCALE
    else:
        placement, reach = _place_at_random(rng, height, width, layout, p, length, pad)
        cube_scale = FREE_CUBE_SCALE
    if p.coverage < 1.0:
        placement = _subset(placement, _in_islands(rng, height, width, placement, p.coverage,
                                                   5.0 * spacing))
    placement = _subset(placement, _sequential_adsorption(rng, placement, p.shape, p.aspect_ratio,
                                                          cube_scale, reach))
    order = np.lexsort((placement.x, placement.y))  # ids run roughly in raster order
    return _subset(placement, order)


def _place_on_lattice(rng: np.random.Generator, height: int, width: int, layout: str,
                      p: SimulationParams, spacing: float, length: float,
                      pad: float) -> _Placement:
    """Jittered lattice sites in grains, with sizes and angles, less the vacancies."""
    if p.shape == "rod":  # rods stand side by side in rows, rows stacked along the rod axis
        stack = length * (1.0 + p.gap_fraction)
        period = 180.0
    else:
        stack = spacing * (math.sqrt(3.0) / 2.0 if layout == "hex" else 1.0)
        period = 60.0 if layout == "hex" else 90.0
    x, y, grain, grain_angles = _lattice_centres(rng, height, width, layout, spacing, stack,
                                                 p.n_grains, pad, period)
    x = x + rng.normal(0.0, p.jitter_fraction * spacing, x.size)
    y = y + rng.normal(0.0, p.jitter_fraction * spacing, y.size)
    angle = np.radians(grain_angles[grain])
    if p.shape == "rod":
        angle = angle + math.pi / 2.0  # rod axis across the row direction
    if p.shape in ("cube", "rod"):  # a little orientational disorder, as in real superlattices
        angle = angle + np.radians(rng.normal(0.0, 2.0, x.size))
    sizes = _lognormal_sizes(rng, x.size, p.mean_diameter_px, p.diameter_sigma)
    placement = _Placement(x, y, sizes, angle, grain, [float(a) for a in grain_angles], spacing)
    return _subset(placement, rng.random(x.size) >= p.vacancy_fraction)


def _place_at_random(rng: np.random.Generator, height: int, width: int, layout: str,
                     p: SimulationParams, length: float, pad: float) -> tuple[_Placement, float]:
    """Candidates of a dense or sparse random layer, and the `reach` that thins them out."""
    area = (width + 2 * pad) * (height + 2 * pad)
    if layout == "random" and p.shape != "rod":
        # Packing fraction of the exclusion discs: a relaxed random packing in 2-D jams near
        # 0.84, so 0.83 gives dense, mostly touching, amorphous arrays.
        scale = (1.0 + p.gap_fraction) * (DENSE_CUBE_SCALE if p.shape == "cube" else 1.0)
        n = int(round(0.83 * area / (math.pi * (0.5 * p.mean_diameter_px * scale) ** 2)))
        sizes = _lognormal_sizes(rng, n, p.mean_diameter_px, p.diameter_sigma)
        x, y = _relax_dense(rng, height, width, pad, 0.5 * sizes * scale)
        reach = 0.92
    else:
        # Uniform candidates thinned by sequential adsorption. Rods are not relaxed: adsorbing
        # locally aligned rods gives the dense nematic patches real rods form.
        inflated = p.mean_diameter_px * length * (1.0 + p.gap_fraction) ** 2
        if layout == "sparse":
            reach = SPARSE_REACH * (1.0 + p.gap_fraction)
            n = int(round(1.2 * area / (inflated * reach**2)))
        else:
            reach = 1.0 + p.gap_fraction
            n = int(round(4.0 * area / inflated))
        x = rng.uniform(-pad, width + pad, n)
        y = rng.uniform(-pad, height + pad, n)
        sizes = _lognormal_sizes(rng, n, p.mean_diameter_px, p.diameter_sigma)
    if p.shape == "rod":  # rods align locally (nematic domains) rather than point anywhere
        field = _coarse_noise(rng, height, width, 6.0 * length)
        angle = math.pi * _sample_noise(field, 6.0 * length, x, y) + rng.normal(0, 0.1, x.size)
    elif p.shape == "cube":
        angle = rng.uniform(0.0, math.pi / 2.0, x.size)
    else:
        angle = np.zeros(x.size)
    return _Placement(x, y, sizes, angle, np.zeros(x.size, int), [], math.nan), reach


def _in_islands(rng: np.random.Generator, height: int, width: int, placement: _Placement,
                coverage: float, cell: float) -> np.ndarray:
    """Which particles lie in the islands: where a smooth field is high, on `coverage` of the
    image (the rest is voids)."""
    field = _coarse_noise(rng, height, width, cell)
    rows, cols = np.mgrid[0:height:8, 0:width:8]
    over_image = _sample_noise(field, cell, cols.ravel(), rows.ravel())
    threshold = np.quantile(over_image, 1.0 - coverage)
    return _sample_noise(field, cell, placement.x, placement.y) >= threshold


# --------------------------------------------------------------------------------------------
# drawing


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, size: float, angle: float,
                     aspect_ratio: float) -> np.ndarray:
    """Signed distance (px, negative inside) from pixel offsets to a particle's outline."""
    if shape in ("disc", "sphere"):
        return np.hypot(dx, dy) - 0.5 * size
    c, s = math.cos(angle), math.sin(angle)
    u = dx * c + dy * s   # along the cube edge / rod axis
    v = dy * c - dx * s
    if shape == "cube":
        half = 0.5 * size
        corner = CUBE_CORNER * half
        qu = np.abs(u) - (half - corner)
        qv = np.abs(v) - (half - corner)
        outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
        inside = np.minimum(np.maximum(qu, qv), 0.0)
        return outside + inside - corner
    half_axis = 0.5 * (aspect_ratio - 1.0) * size  # rod: capsule around a segment
    return np.hypot(np.maximum(np.abs(u) - half_axis, 0.0), v) - 0.5 * size


def _draw_particles(placement: _Placement, height: int, width: int, shape: str,
                    aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Label map (ids 1..n in placement order) and the depth of each pixel inside its particle.

    A pixel covered by several footprints goes to the particle it is deepest inside (most negative
    signed distance), so touching neighbours split their contact zone fairly.
    """
    labels = np.zeros((height, width), np.int32)
    depth = np.zeros((height, width), np.float32)  # -signed distance of the owner; 0 outside
    if shape == "cube":
        reach = placement.size * (0.5 * math.sqrt(2.0))
    elif shape == "rod":
        reach = placement.size * (0.5 * aspect_ratio)
    else:
        reach = placement.size * 0.5
    for k in range(placement.x.size):
        x0, y0, r = placement.x[k], placement.y[k], reach[k] + 1.0
        c0, c1 = max(int(math.floor(x0 - r)), 0), min(int(math.ceil(x0 + r)) + 1, width)
        r0, r1 = max(int(math.floor(y0 - r)), 0), min(int(math.ceil(y0 + r)) + 1, height)
        if c0 >= c1 or r0 >= r1:
            continue
        dx = (np.arange(c0, c1, dtype=np.float32) - np.float32(x0))[None, :]
        dy = (np.arange(r0, r1, dtype=np.float32) - np.float32(y0))[:, None]
        inner = -_signed_distance(shape, dx, dy, placement.size[k], placement.angle[k],
                                  aspect_ratio)
        box_depth = depth[r0:r1, c0:c1]
        win = (inner > 0) & (inner > box_depth)
        box_depth[win] = inner[win]
        labels[r0:r1, c0:c1][win] = k + 1
    return labels, depth


def _clean_labels(labels: np.ndarray, nominal_area: np.ndarray) -> np.ndarray:
    """Keep one 4-connected piece per particle, drop slivers, and renumber ids 1..N.

    Returns the old id of each new id (``kept[new - 1] = old``); `labels` is changed in place.
    """
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        own = labels[box] == k
        pieces, n_pieces = ndimage.label(own)
        if n_pieces > 1:  # a neighbour cut this particle in two: keep the larger part only
            sizes = np.bincount(pieces.ravel())[1:]
            labels[box][own & (pieces != 1 + int(np.argmax(sizes)))] = 0
    area = np.bincount(labels.ravel(), minlength=nominal_area.size + 1)[1:]
    kept = np.flatnonzero((area >= _MIN_AREA_FRACTION * nominal_area) & (area >= 4)) + 1
    relabel = np.zeros(nominal_area.size + 1, np.int32)
    relabel[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    labels[...] = relabel[labels]
    return kept


def nominal_area(shape: str, size: np.ndarray | float, aspect_ratio: float) -> np.ndarray | float:
    """Area in px of the drawn outline of a particle of nominal `size` (diameter, cube edge, rod
    width), before pixels and neighbours cut it."""
    if shape == "cube":
        return size**2 * (1.0 - (4.0 - math.pi) * (CUBE_CORNER / 2.0) ** 2)
    if shape == "rod":
        return size**2 * ((aspect_ratio - 1.0) + math.pi / 4.0)
    return math.pi * (0.5 * size) ** 2


def _truth_table(labels: np.ndarray, placement: _Placement, kept: np.ndarray, shape: str,
                 layout: str) -> pd.DataFrame:
    """Per-particle ground truth measured on the drawn label map."""
    n = kept.size
    flat = labels.ravel()
    width = labels.shape[1]
    area = np.bincount(flat, minlength=n + 1)[1:].astype(float)
    rows, cols = np.divmod(np.arange(flat.size), width)
    cx = np.bincount(flat, weights=cols, minlength=n + 1)[1:] / np.maximum(area, 1)
    cy = np.bincount(flat, weights=rows, minlength=n + 1)[1:] / np.maximum(area, 1)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touches = np.zeros(n + 1, bool)
    touches[edge] = True
    old = kept - 1
    lattice = layout in _LATTICES
    orientation = (np.asarray(placement.grain_angle_deg, float)[placement.grain[old]]
                   if lattice else np.full(n, np.nan))
    angle_deg = np.degrees(placement.angle[old]) % (180.0 if shape == "rod" else 90.0)
    if shape in ("disc", "sphere"):
        angle_deg = np.zeros(n)
    return pd.DataFrame({
        "id": np.arange(1, n + 1, dtype=np.int64),
        "centroid_x": cx,
        "centroid_y": cy,
        "diameter_px": 2.0 * np.sqrt(area / math.pi),
        "nominal_diameter_px": placement.size[old],
        "shape": shape,
        "grain": placement.grain[old].astype(np.int64),
        "lattice_constant_px": placement.lattice_constant if lattice else np.nan,
        "orientation_deg": orientation,
        "angle_deg": angle_deg,
        "area_px": area.astype(np.int64),
        "touches_border": touches[1:],
    }, columns=TRUTH_COLUMNS)


# --------------------------------------------------------------------------------------------
# imaging


def _relief(labels: np.ndarray, depth: np.ndarray, half_width: np.ndarray,
            shape: str) -> np.ndarray:
    """Particle height profile in [0, 1]: a dome for spheres and rods, flat for discs and cubes."""
    if shape in ("sphere", "rod"):
        r = half_width[labels]
        rho = 1.0 - np.minimum(depth / np.maximum(r, 1e-6), 1.0)
        return np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0)) * (labels > 0)
    return np.clip(depth / 1.5, 0.0, 1.0)  # a 1.5 px bevel, otherwise flat


def _texture(rng: np.random.Generator, shape: tuple[int, int], correlation_px: float) -> np.ndarray:
    """Fine unit-variance noise, e.g. the grain of a carbon film or a substrate."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), correlation_px)
    return noise / (noise.std() + 1e-12)


def _render_sem(rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray,
                half_width: np.ndarray, shape: str, mean_diameter: float) -> np.ndarray:
    """Secondary-electron contrast: bright particles with brighter edges on a darkish substrate.

    Edges are bright because electrons escape more easily from tilted surfaces near an edge; the
    narrow gaps between particles are dark because escaping electrons are shadowed there.
    """
    n = half_width.size - 1
    mask = labels > 0
    level = np.concatenate([[0.0], 0.58 * np.exp(rng.normal(0.0, 0.06, n))])[labels]
    relief = _relief(labels, depth, half_width, shape)
    if shape in ("sphere", "rod"):
        # Yield grows roughly as 1/cos(tilt); cos(tilt) of a dome is its normalised height.
        body = level * (0.72 + 0.22 / (relief + 0.22))
    else:
        edge_width = 1.0 + 0.04 * mean_diameter
        body = level * (0.9 + 0.1 * relief + 0.45 * np.exp(-depth / edge_width))
    substrate = 0.2 * (1.0 + 0.12 * _texture(rng, labels.shape, 1.5))
    crowding = ndimage.gaussian_filter(mask.astype(np.float32), 0.08 * mean_diameter + 1.0)
    background = substrate * (1.0 - 0.7 * crowding)
    return np.where(mask, body, background).astype(np.float32)


def _render_tem(rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray,
                half_width: np.ndarray, shape: str) -> np.ndarray:
    """Bright-field TEM contrast: particles absorb/scatter and look dark on a bright carbon film.

    Each particle gets its own darkness (some crystals sit in a Bragg condition and are much
    darker), and a slight under-focus adds the bright Fresnel fringe just outside each edge.
    """
    n = half_width.size - 1
    mask = labels > 0
    thickness = np.exp(rng.normal(0.0, 0.12, n)) * np.where(rng.random(n) < 0.15, 1.6, 1.0)
    relief = _relief(labels, depth, half_width, shape)
    projected = np.concatenate([[0.0], thickness])[labels] * relief
    film = 0.82 * (1.0 + 0.03 * _texture(rng, labels.shape, 0.8))
    transmitted = film * np.exp(-1.1 * projected)
    soft = mask.astype(np.float32)
    fringe = ndimage.gaussian_filter(soft, 1.2) - soft  # > 0 just outside an edge
    return (transmitted + 0.1 * fringe).astype(np.float32)


def _acquire(rng: np.random.Generator, clean: np.ndarray, blur_sigma_px: float, dose: float,
             scan_line_noise: float, background_gradient: float) -> np.ndarray:
    """Blur, uneven illumination, shot and read noise, scan-line offsets; clipped to [0, 1]."""
    height, width = clean.shape
    image = ndimage.gaussian_filter(clean, blur_sigma_px) if blur_sigma_px > 0 else clean.copy()
    if background_gradient > 0:
        direction = rng.uniform(0.0, 2.0 * math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = ((xx / width - 0.5) * math.cos(direction)
                + (yy / height - 0.5) * math.sin(direction))
        blobs = _noise_image(rng, height, width, max(height, width) / 3.0)
        image *= 1.0 + background_gradient * (ramp + 0.25 * blobs)
    electrons = rng.poisson(np.clip(image, 0.0, None) * dose).astype(np.float32)
    electrons += rng.normal(0.0, _READ_NOISE_ELECTRONS, image.shape).astype(np.float32)
    image = electrons / np.float32(dose)
    if scan_line_noise > 0:
        image += rng.normal(0.0, scan_line_noise, (height, 1)).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# public API


def simulate_micrograph(size: int = 512, layout: str = "hex", modality: str = "sem",
                        seed: int | Sequence[int] = 0, params: SimulationParams | None = None, *,
                        height: int | None = None, render: bool = True,
                        **overrides: Any) -> SimulatedMicrograph:
    """Simulate one SEM or TEM micrograph of a nanoparticle monolayer with exact instance labels.

    Parameters
    ----------
    size : int
        Image width in px (and height, unless `height` is given); at least 16.
    layout : {"hex", "square", "random", "sparse", "mixed"}
        Hexagonal or square lattice in Voronoi grains; dense random (jammed-like) packing; sparse
        hard-core random; or "mixed", which picks one of the four from the seed (with
        probabilities 0.35, 0.25, 0.25, 0.15: ordered arrays are the common case).
    modality : {"sem", "tem"}
        SEM: bright particles, bright edges, dark gaps. TEM: dark particles on a bright film.
    seed : int or sequence of int
        Seed for `numpy.random.default_rng`; the same seed gives the same micrograph.
    params : SimulationParams or None
        Particles, arrangement and imaging; None: the defaults of `SimulationParams`.
    height : int or None
        Image height in px for non-square images; None: same as `size`.
    render : bool
        False skips the imaging stage (``image`` is then None): a fast way to draw mask layouts
        only. The labels and truth are the same either way.
    **overrides
        Fields of `SimulationParams` (``shape``, ``mean_diameter_px``, ``diameter_sigma``,
        ``gap_fraction``, ``n_grains``, ``vacancy_fraction``, ``jitter_fraction``, ``coverage``,
        ``dose``, ``blur_sigma_px``, ``scan_line_noise``, ``background_gradient``,
        ``aspect_ratio``), each replacing the value in `params`.

    Returns
    -------
    SimulatedMicrograph
        ``image`` (float32 in [0, 1], or None when ``render=False``), ``labels`` (int32),
        ``truth`` (DataFrame, one row per label) and ``params`` (the full, JSON-serialisable
        parameter set).

    Raises
    ------
    ValueError
        If an argument is out of range or names an unknown layout, modality or shape.
    TypeError
        If `params` is not a `SimulationParams`, or an override names no field of it.

    Examples
    --------
    >>> sim = simulate_micrograph(128, layout="square", modality="tem", seed=3, shape="cube")
    >>> int(sim.labels.max()) == len(sim.truth)
    True
    >>> again = simulate_micrograph(128, "square", "tem", 3, SimulationParams(shape="cube"))
    >>> bool((again.image == sim.image).all())
    True
    """
    width = _check_side("size", size)
    height = width if height is None else _check_side("height", height)
    requested_layout = _check_choice("layout", layout, LAYOUTS)
    modality = _check_choice("modality", modality, MODALITIES)
    seed = _check_seed(seed)
    p = _with_overrides(params, overrides)
    _check_param("mean_diameter_px", p.mean_diameter_px, high=diameter_range(height, width)[1])
    scan_line_noise = (_DEFAULT_SCAN_LINE_NOISE[modality] if p.scan_line_noise is None
                       else p.scan_line_noise)

    # Separate streams per stage: imaging settings never move particles, and vice versa. The
    # layout stream is always drawn, so a "mixed" image is reproduced by its concrete layout.
    layout_rng, placement_rng, imaging_rng = np.random.default_rng(seed).spawn(3)
    mixed_choice = str(layout_rng.choice(_CONCRETE_LAYOUTS, p=_MIXED_WEIGHTS))
    layout = mixed_choice if requested_layout == "mixed" else requested_layout

    placement = _place_particles(placement_rng, height, width, layout, p)
    labels, depth = _draw_particles(placement, height, width, p.shape, p.aspect_ratio)
    kept = _clean_labels(labels, nominal_area(p.shape, placement.size, p.aspect_ratio))
    depth[labels == 0] = 0.0
    truth = _truth_table(labels, placement, kept, p.shape, layout)
    image = None
    if render:
        image = _image(imaging_rng, labels, depth, placement.size[kept - 1], modality, p,
                       scan_line_noise)

    lattice = layout in _LATTICES
    record = {
        "size": width, "height": height, "layout": layout, "modality": modality, "seed": seed,
        **asdict(p), "scan_line_noise": scan_line_noise,
        # derived, for the record
        "requested_layout": requested_layout, "width": width,
        "lattice_constant_px": placement.lattice_constant if lattice else None,
        "grain_orientations_deg": placement.grain_angle_deg if lattice else [],
        "n_particles": int(kept.size),
    }
    return SimulatedMicrograph(image=image, labels=labels, truth=truth, params=record)


def diameter_range(height: int, width: int) -> tuple[float, float]:
    """Smallest and largest ``mean_diameter_px`` the simulator takes for an image of this size."""
    return PARAM_RANGES["mean_diameter_px"][0], _MAX_DIAMETER_PER_SIDE * max(height, width)


def _with_overrides(params: SimulationParams | None, overrides: dict) -> SimulationParams:
    """`params` (default: the defaults) with some fields replaced, checked again."""
    if params is None:
        params = SimulationParams()
    elif not isinstance(params, SimulationParams):
        raise TypeError(f"params must be a SimulationParams, got {type(params).__name__}")
    unknown = set(overrides) - {f.name for f in fields(SimulationParams)}
    if unknown:
        raise TypeError(f"unknown simulation parameters {sorted(unknown)}; the fields of "
                        f"SimulationParams are {[f.name for f in fields(SimulationParams)]}")
    return replace(params, **overrides) if overrides else params


def _image(rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray, sizes: np.ndarray,
           modality: str, p: SimulationParams, scan_line_noise: float) -> np.ndarray:
    """The imaging stage: contrast of the modality, then blur, illumination and noise."""
    half_width = np.concatenate([[0.0], 0.5 * sizes]).astype(np.float32)
    if modality == "sem":
        clean = _render_sem(rng, labels, depth, half_width, p.shape, p.mean_diameter_px)
    else:
        clean = _render_tem(rng, labels, depth, half_width, p.shape)
    return _acquire(rng, clean, p.blur_sigma_px, p.dose, scan_line_noise, p.background_gradient)


def simulate_dataset(out_dir: str | Path, n: int, size: int = 512, layout: str = "hex",
                     modality: str = "sem", seed: int = 0, progress: bool = True,
                     nm_per_px: float | None = None, overwrite: bool = False, scale_bar: bool = False,
                     **kwargs: Any) -> Path:
    """Write `n` simulated micrographs with their masks and ground truth to a data folder.

    Parameters
    ----------
    out_dir : str or Path
        Folder to create, or an empty one. It receives ``images/sim_0000.png`` (8-bit grey),
        ``masks/sim_0000.tif`` (uint16 label TIFF), ``truth.csv`` (every image's truth table with an
        ``image`` column holding the stem) and ``simulation.json`` (the parameters of every image).
    n : int
        Number of images, at least 1.
    size, layout, modality : see `simulate_micrograph`
        With ``layout="mixed"`` each image gets its own layout.
    seed : int
        Image ``i`` is simulated with seed ``[seed, i]``, so any one image can be regenerated alone.
    progress : bool
        Show a progress bar.
    nm_per_px : float or None
        Nominal pixel size recorded with the set; when given, truth.csv also has diameters in nm.
    overwrite : bool
        Replace the pairs that sagegan generated in a non-empty `out_dir` (all of them, so no old
        pair stays beside the new truth.csv); a folder holding other files is still refused (see
        `sagegan.io.generated_folder_files`). Without it a non-empty folder is refused.
    scale_bar : bool
        Burn a scale bar into every image (`add_scale_bar`: style, font, size and corner drawn
        from the seed), at `nm_per_px` or, when that is None, at a pixel size drawn per image
        (log-uniform in 0.3-20 nm/px). The PNGs carry no pixel size: only the bar tells it.
        simulation.json records each bar (``params["scale_bar"]``); truth.csv gets ``nm_per_px``.
    **kwargs
        Passed on to `simulate_micrograph`: ``params`` (a `SimulationParams`), ``height``, or
        fields of `SimulationParams` (shape, dose, coverage, ...).

    Returns
    -------
    Path
        `out_dir`.

    Examples
    --------
    >>> simulate_dataset("sim", n=4, size=256, layout="mixed", progress=False)  # doctest: +SKIP
    PosixPath('sim')
    """
    from .io import generated_folder_files, remove_generated, write_json, write_labels  # files belong to io

    import imageio.v3 as iio

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if nm_per_px is not None:
        nm_per_px = _check_number("nm_per_px", nm_per_px, 0.0, low_open=True)

    out = Path(out_dir)
    old = generated_folder_files(out, overwrite)
    indices: Any = range(int(n))
    if progress:
        from rich.progress import track

        indices = track(indices, description="simulating", total=int(n))
    tables, records = [], []
    for i in indices:
        stem = f"sim_{i:04d}"
        sim = simulate_micrograph(size, layout, modality, [int(seed), i], **kwargs)
        image_nm = nm_per_px
        if scale_bar:
            rng = np.random.default_rng([int(seed), i, 7])
            image_nm = nm_per_px or float(np.exp(rng.uniform(math.log(0.3), math.log(20.0))))
            sim = add_scale_bar(sim, image_nm, seed=[int(seed), i, 8])
        # Made after the first image, so that bad arguments leave no empty folders behind.
        if i == 0:
            remove_generated(out, old)
            # the record comes first, so that an interrupted run leaves a folder --overwrite may replace
            write_json(out / "simulation.json", {"n": int(n), "seed": int(seed), "nm_per_px": nm_per_px,
                                                 "complete": False,
                                                 "images": [{"image": f"sim_{j:04d}"} for j in range(int(n))]})
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        iio.imwrite(out / "images" / f"{stem}.png",
                    np.clip(np.round(sim.image * 255.0), 0, 255).astype(np.uint8))
        write_labels(out / "masks" / f"{stem}.tif", sim.labels)
        table = sim.truth.copy()
        table.insert(0, "image", stem)
        if image_nm is not None:
            table["diameter_nm"] = table["diameter_px"] * image_nm
        if scale_bar:
            table["nm_per_px"] = image_nm
        tables.append(table)
        records.append({"image": stem, "params": sim.params})
    pd.concat(tables, ignore_index=True).to_csv(out / "truth.csv", index=False)
    summary = {"n": int(n), "seed": int(seed), "nm_per_px": nm_per_px, "images": records}
    (out / "simulation.json").write_text(json.dumps(summary, indent=1))
    return out


# --------------------------------------------------------------------------------------------
# burnt-in scale bars, with known lengths and labels, for testing calibration from the image

#: Fonts the bars are labelled in: those matplotlib ships, so every install has them.
SCALE_BAR_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
                   "STIXGeneral.ttf", "STIXGeneralBol.ttf")
SCALE_BAR_STYLES = ("plain", "boxed", "ticks", "data-bar")
_NICE_LENGTHS_NM = tuple(m * 10.0 ** e for e in range(0, 5) for m in (1, 2, 5))


def _font(name: str, size: int):
    from PIL import ImageFont
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def bar_label(length_nm: float, space: bool = True) -> str:
    """The label of a scale bar ``length_nm`` long, as microscopes print it ("200 nm", "1 µm").

    >>> bar_label(2000), bar_label(50, space=False)
    ('2 µm', '50nm')
    """
    value, unit = (length_nm / 1000, "µm") if length_nm >= 1000 else (length_nm, "nm")
    return f"{value:g}{' ' if space else ''}{unit}"


def add_scale_bar(sim: SimulatedMicrograph, nm_per_px: float, seed: int | Sequence[int] = 0,
                  style: str | None = None, font: str | None = None, font_px: int | None = None,
                  corner: str | None = None) -> SimulatedMicrograph:
    """``sim`` with a scale bar and its label burnt in, as microscopes and figures draw them.

    The bar is a "nice" length (1, 2 or 5 times a power of ten nm) between 8 % and 30 % of the
    width at ``nm_per_px``. Styles: ``plain`` (a bar with its label above or below), ``boxed`` (on
    a contrasting box), ``ticks`` (a "|---|" bar) and ``data-bar`` (an SEM data bar appended under
    the image: a black band with a line of text and the bar). Particles that the bar, its label or
    its box cover are removed from the labels and the truth, as an annotator would leave them.
    Unset choices are drawn from ``seed``.

    Returns
    -------
    SimulatedMicrograph
        ``params["scale_bar"]`` holds the truth: ``nm_per_px``, ``length_nm``, ``length_px``,
        ``label``, ``style``, ``font``, ``font_px``, ``corner``, ``bright``.
    """
    from PIL import Image, ImageDraw

    if sim.image is None:
        raise ValueError("add_scale_bar needs a rendered image (render=True)")
    nm_per_px = _check_number("nm_per_px", nm_per_px, 0.0, low_open=True)
    rng = np.random.default_rng(seed)
    style = _check_choice("style", style or str(rng.choice(SCALE_BAR_STYLES)), SCALE_BAR_STYLES)
    font = font or str(rng.choice(SCALE_BAR_FONTS))
    h, w = sim.image.shape
    fits = [L for L in _NICE_LENGTHS_NM if 0.08 * w <= L / nm_per_px <= 0.3 * w]
    if not fits:
        raise ValueError(f"no scale bar of a round length fits a {w} px wide image at {nm_per_px:g} nm/px")
    length_nm = float(rng.choice(fits))
    length_px = int(round(length_nm / nm_per_px))
    font_px = int(font_px or rng.integers(max(10, w // 48), max(12, w // 18) + 1))
    corner = corner or str(rng.choice(["bottom-right", "bottom-left", "top-right", "top-left"]))
    bright = bool(rng.random() < 0.6)
    label = bar_label(length_nm, space=bool(rng.random() < 0.8))
    thickness = int(rng.integers(2, max(3, font_px // 3) + 1))
    typeface = _font(font, font_px)
    image = np.clip(np.round(sim.image * 255), 0, 255).astype(np.uint8)
    labels = sim.labels.copy()
    ink, paper = (255, 0) if bright else (0, 255)
    margin = max(4, w // 40)
    if style == "data-bar":
        band_h = max(3 * font_px, thickness + 2 * font_px + 8)
        image = np.vstack([image, np.zeros((band_h, w), np.uint8)])
        labels = np.vstack([labels, np.zeros((band_h, w), labels.dtype)])
        ink, paper, bright, corner = 255, 0, True, "data-bar"
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    text_w = int(draw.textlength(label, font=typeface))
    block_w, gap = max(length_px, text_w), max(2, font_px // 4)
    block_h = font_px + gap + thickness + (2 * font_px // 3 if style == "ticks" else 0)
    if style == "data-bar":
        x0, y0 = w - margin - block_w, h + (band_h - block_h) // 2
        info, info_px = "EHT = 5.00 kV   WD = 7.5 mm   Mag = 50.00 K X", font_px
        while info_px > 8 and draw.textlength(info, font=_font(font, info_px)) > x0 - 3 * margin:
            info_px -= 1
        draw.text((margin, h + (band_h - info_px) // 2), info, fill=ink, font=_font(font, info_px))
    else:
        x0 = margin if corner.endswith("left") else w - margin - block_w
        y0 = margin if corner.startswith("top") else h - margin - block_h
    if style == "boxed":
        pad = max(3, font_px // 3)
        box = (x0 - pad, y0 - pad, x0 + block_w + pad, y0 + block_h + pad)
        draw.rectangle(box, fill=paper)
    label_above = style != "plain" or rng.random() < 0.5
    bar_x0 = x0 + (block_w - length_px) // 2
    text_x = x0 + (block_w - text_w) // 2
    if label_above:
        text_y, bar_y = y0, y0 + font_px + gap + (font_px // 3 if style == "ticks" else 0)
    else:
        bar_y, text_y = y0, y0 + thickness + gap
    # a font's glyphs start some way below the point given to PIL: move them back up
    top_gap = typeface.getbbox(label)[1]
    draw.text((text_x, text_y - top_gap), label, fill=ink, font=typeface)
    if style == "ticks":
        # the ticks' centres mark the ends of the length
        k, half = max(0, thickness // 4), font_px // 3
        draw.rectangle((bar_x0, bar_y, bar_x0 + length_px, bar_y + thickness - 1), fill=ink)
        for x in (bar_x0, bar_x0 + length_px):
            draw.rectangle((x - k, bar_y - half, x + k, bar_y + thickness - 1 + half), fill=ink)
    else:
        draw.rectangle((bar_x0, bar_y, bar_x0 + length_px - 1, bar_y + thickness - 1), fill=ink)
    out = np.asarray(canvas, dtype=np.float32) / 255.0
    covered = np.abs(out - np.asarray(Image.fromarray(image), dtype=np.float32) / 255.0) > 0
    if style == "boxed":
        covered[max(0, box[1]):box[3] + 1, max(0, box[0]):box[2] + 1] = True
    hidden = np.unique(labels[covered])
    hidden = hidden[hidden > 0]
    truth = sim.truth
    if len(hidden):
        from skimage.segmentation import relabel_sequential

        labels[np.isin(labels, hidden)] = 0
        truth = truth[~truth["id"].isin(hidden)].copy()
        labels, forward, _ = relabel_sequential(labels)
        truth["id"] = forward[truth["id"].to_numpy().copy()]
        truth = truth.reset_index(drop=True)
    params = {**sim.params, "scale_bar": {"nm_per_px": nm_per_px, "length_nm": length_nm, "length_px": length_px,
                                          "label": label, "style": style, "font": font, "font_px": font_px,
                                          "corner": corner, "bright": bright}}
    return SimulatedMicrograph(image=out, labels=labels.astype(np.int32), truth=truth, params=params)
