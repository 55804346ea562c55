"""Figures and overlays: arrays in, a matplotlib Figure or an RGB array out.

In the manner of Cellpose's ``plot.py``: every picture sagegan draws lives here, and none of
these functions shows, saves or reads anything.

* Figures (:func:`size_histogram_figure`, :func:`nn_distance_histogram_figure`,
  :func:`pair_correlation_figure`, :func:`bond_order_map_figure`,
  :func:`training_curves_figure`) return a :class:`matplotlib.figure.Figure` drawn on
  matplotlib's non-interactive Agg canvas without importing ``matplotlib.pyplot``, so no window
  opens, no display is needed, and the backend a notebook or GUI has chosen is left alone.
* Overlays (:func:`overlay_outlines`, :func:`overlay_heatmap`, :func:`segmentation_overlay`,
  :func:`match_overlay`) return RGB ``uint8`` arrays that can be written as PNG files or embedded in a report.
* :func:`figure_to_data_uri` and :func:`image_to_data_uri` turn both into
  ``data:image/png;base64,...`` strings for :mod:`sagegan.report`.

The module imports neither torch nor pyplot; matplotlib is imported when a figure is drawn.

Example
-------
>>> import numpy as np
>>> fig = size_histogram_figure(np.random.default_rng(0).lognormal(3, 0.1, 200), unit="nm")
>>> figure_to_data_uri(fig).startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import io
import math
from typing import Sequence

import numpy as np

from .data import normalise_percentile

__all__ = [
    "new_figure",
    "figure_to_png",
    "figure_to_data_uri",
    "png_to_data_uri",
    "image_to_png",
    "image_to_data_uri",
    "size_histogram_figure",
    "nn_distance_histogram_figure",
    "pair_correlation_figure",
    "bond_order_map_figure",
    "training_curves_figure",
    "overlay_outlines",
    "overlay_heatmap",
    "segmentation_overlay",
    "match_overlay",
    "MATCH_COLOURS",
    "enlarge_nearest",
]

#: Width of a figure in inches; with FIGURE_DPI this gives 700 px wide images.
FIGURE_WIDTH_IN = 5.6
FIGURE_DPI = 125
#: Longest side of an embedded micrograph overlay, px (larger images are reduced for display).
OVERLAY_MAX_SIDE_PX = 1024

_ACCENT = "#1f5f8b"
_FIT_COLOUR = "#c0392b"


# ------------------------------------------------------------------------------ encoding
def new_figure(width_in: float = FIGURE_WIDTH_IN, height_in: float = 3.6):
    """A matplotlib Figure on an Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig, dpi: float = FIGURE_DPI) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def png_to_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_to_data_uri(fig, dpi: float = FIGURE_DPI) -> str:
    """Render a matplotlib figure as a PNG data URI.

    Example
    -------
    >>> fig = new_figure(); _ = fig.add_subplot().plot([0, 1], [0, 1])
    >>> figure_to_data_uri(fig).startswith("data:image/png;base64,")
    True
    """
    return png_to_data_uri(figure_to_png(fig, dpi))


def image_to_png(image: np.ndarray) -> bytes:
    """Encode a grey or RGB(A) array as PNG bytes.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        ``uint8`` as is; floats are taken as [0, 1] and clipped; bool as 0/255.
    """
    import imageio.v3 as iio

    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f":
        arr = np.clip(np.round(np.nan_to_num(arr) * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, bool or float in [0, 1], got {arr.dtype}")
    return iio.imwrite("<bytes>", np.ascontiguousarray(arr), extension=".png")


def image_to_data_uri(image: np.ndarray) -> str:
    """Encode a grey or RGB(A) array (uint8, or float in [0, 1]) as a PNG data URI.

    Example
    -------
    >>> image_to_data_uri(np.zeros((4, 4), np.uint8)).startswith("data:image/png;base64,")
    True
    """
    return png_to_data_uri(image_to_png(image))


# ------------------------------------------------------------------------------ helpers
def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _empty_axes_message(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4",
            fontsize=10, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _style_axes(ax, integer_y: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)
    if integer_y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_above(ax) -> None:
    """Legend in a row above the axes, where it cannot hide data."""
    n_entries = len(ax.get_legend_handles_labels()[0])
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), frameon=False, fontsize=8.5,
              ncols=max(1, min(3, n_entries)), handlelength=1.6, columnspacing=1.2, borderaxespad=0.0)


def _histogram(ax, x: np.ndarray, bins: int | str, colour: str) -> np.ndarray:
    """Draw the counts of ``x`` in at most 60 bins, labelled with n; return the bin edges."""
    edges = np.histogram_bin_edges(x, bins=bins)
    if len(edges) > 61:
        edges = np.histogram_bin_edges(x, bins=60)
    ax.hist(x, bins=edges, color=colour, alpha=0.75, edgecolor="white", linewidth=0.6,
            label=f"particles (n = {x.size})")
    return edges


def _unit_label(unit: str) -> str:
    return {"nm2": "nm²", "px2": "px²"}.get(unit, unit)


def _grey_display(image: np.ndarray) -> np.ndarray:
    """Image stretched between its 0.5 and 99.5 percentiles, clipped to [0, 1]."""
    img = np.asarray(image, dtype=float)
    lo, hi = np.nanpercentile(img, (0.5, 99.5)) if img.size else (0.0, 1.0)
    if not hi > lo:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0, 1)


# ------------------------------------------------------------------------------ figures
def size_histogram_figure(values, unit: str = "px", lognormal_mu: float | None = None,
                          lognormal_sigma: float | None = None, quantity: str = "ECD",
                          bins: int | str = "auto"):
    """Histogram of particle sizes with the fitted log-normal density overlaid.

    Parameters
    ----------
    values : array_like
        Sizes (NaN ignored), e.g. ``ecd_nm`` of the particles not touching the border.
    unit : str
        Unit of ``values`` for the axis label.
    lognormal_mu, lognormal_sigma : float, optional
        Log-normal parameters (``mu`` of ``log(size)``); the curve is scaled to counts.
    quantity : str
        Name of the size measure for the axis label.
    bins : int or str
        Passed to :func:`numpy.histogram_bin_edges`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    x = _finite(values)
    fig = new_figure()
    ax = fig.add_subplot()
    unit = _unit_label(unit)
    if x.size == 0:
        _empty_axes_message(ax, "no particles to measure")
        return fig
    edges = _histogram(ax, x, bins, _ACCENT)
    if (lognormal_mu is not None and lognormal_sigma is not None and np.isfinite(lognormal_mu)
            and np.isfinite(lognormal_sigma) and lognormal_sigma > 0):
        from scipy import stats

        lo, hi = edges[0], edges[-1]
        pad = 0.15 * (hi - lo) if hi > lo else 0.5 * hi
        grid = np.linspace(max(lo - pad, 1e-9), hi + pad, 400)
        pdf = stats.lognorm.pdf(grid, s=lognormal_sigma, scale=math.exp(lognormal_mu))
        width = np.diff(edges).mean() if len(edges) > 1 else 1.0
        ax.plot(grid, pdf * x.size * width, color=_FIT_COLOUR, linewidth=1.8,
                label=f"log-normal fit (median {math.exp(lognormal_mu):.3g} {unit}, "
                      f"σ = {lognormal_sigma:.3f})")
    ax.set_xlabel(f"{quantity} ({unit})")
    ax.set_ylabel("particles")
    _legend_above(ax)
    _style_axes(ax, integer_y=True)
    return fig


def nn_distance_histogram_figure(distances, unit: str = "px", lattice_constant: float | None = None):
    """Histogram of nearest-neighbour (centre-to-centre) distances.

    Parameters
    ----------
    distances : array_like
        Distances (NaN ignored: border-corrected values are NaN near the border).
    unit : str
        Unit of ``distances``.
    lattice_constant : float, optional
        Marked as a dashed line (e.g. the first g(r) peak).

    Returns
    -------
    matplotlib.figure.Figure
    """
    x = _finite(distances)
    fig = new_figure()
    ax = fig.add_subplot()
    if x.size == 0:
        _empty_axes_message(ax, "no nearest-neighbour distances\n(fewer than 2 particles, "
                                "or all near the border)")
        return fig
    _histogram(ax, x, "auto", "#2e8b57")
    if lattice_constant is not None and np.isfinite(lattice_constant):
        ax.axvline(lattice_constant, color=_FIT_COLOUR, linestyle="--", linewidth=1.4,
                   label=f"lattice constant {lattice_constant:.3g} {unit}")
    ax.set_xlabel(f"nearest-neighbour distance ({unit})")
    ax.set_ylabel("particles")
    _legend_above(ax)
    _style_axes(ax, integer_y=True)
    return fig


def pair_correlation_figure(r, g, unit: str = "px", lattice_constant: float | None = None):
    """The radial pair-correlation function g(r), with the lattice constant marked.

    Parameters
    ----------
    r, g : array_like
        Bin centres and g(r), e.g. from :func:`sagegan.order.pair_correlation`.
    unit : str
        Unit of ``r``.
    lattice_constant : float, optional
        Marked as a dashed line and labelled.

    Returns
    -------
    matplotlib.figure.Figure
    """
    r = np.asarray(r, dtype=float).ravel()
    g = np.asarray(g, dtype=float).ravel()
    fig = new_figure()
    ax = fig.add_subplot()
    if r.size == 0 or not np.any(np.isfinite(g)):
        _empty_axes_message(ax, "g(r) undefined (fewer than 2 particles)")
        return fig
    ax.plot(r, g, color=_ACCENT, linewidth=1.4, label="g(r)")
    ax.axhline(1.0, color="0.6", linewidth=0.8, linestyle=":", label="random (g = 1)")
    if lattice_constant is not None and np.isfinite(lattice_constant):
        ax.axvline(lattice_constant, color=_FIT_COLOUR, linestyle="--", linewidth=1.4,
                   label=f"lattice constant a = {lattice_constant:.3g} {unit}")
    ax.set_xlim(0, r[-1] + (r[1] - r[0] if r.size > 1 else 0) / 2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"r ({unit})")
    ax.set_ylabel("g(r)")
    _legend_above(ax)
    _style_axes(ax)
    return fig


def bond_order_map_figure(labels: np.ndarray, particle_ids, psi, k: int = 6,
                          image: np.ndarray | None = None):
    """Particles coloured by local lattice orientation, opacity = local order ``|psi_k|``.

    Each particle's pixels take the colour of ``arg(psi_k) / k`` (degrees, a cyclic colour map
    over one period of ``360 / k`` degrees) with opacity ``|psi_k|``, over the grey micrograph.
    Grains show as areas of one colour, grain boundaries and defects as faint particles.
    Particles with undefined ``psi_k`` (near the border) are left uncoloured. Images larger
    than :data:`OVERLAY_MAX_SIDE_PX` are reduced for drawing.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Instance labels.
    particle_ids : (N,) array_like of int
        Label id of each entry of ``psi``.
    psi : (N,) complex array_like
        Local bond order (NaN = undefined), e.g. from :func:`sagegan.order.bond_order`.
    k : int
        Symmetry of ``psi`` (6 hexagonal, 4 square).
    image : (H, W) ndarray, optional
        Micrograph shown underneath; without it, the particle mask is shown in grey.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    labels = np.asarray(labels)
    ids = np.asarray(particle_ids, dtype=np.int64).ravel()
    psi = np.asarray(psi, dtype=complex).ravel()
    if ids.shape != psi.shape:
        raise ValueError(f"particle_ids ({ids.shape}) and psi ({psi.shape}) must have the same length")
    factor = max(1, math.ceil(max(labels.shape) / OVERLAY_MAX_SIDE_PX))
    if factor > 1:  # the figure is ~700 px wide: draw from a reduced copy (memory, speed)
        from skimage.transform import downscale_local_mean

        labels = labels[::factor, ::factor]
        if image is not None:
            image = downscale_local_mean(np.asarray(image, dtype=np.float32), (factor, factor))
            image = image[: labels.shape[0], : labels.shape[1]]
    h, w = labels.shape
    period = 360.0 / k
    ok = np.isfinite(psi)
    orientation = np.full(len(psi), np.nan)
    orientation[ok] = ((np.degrees(np.angle(psi[ok])) / k) + period / 2) % period - period / 2
    magnitude = np.where(ok, np.abs(np.nan_to_num(psi)), 0.0)

    top = int(max(labels.max(initial=0), ids.max(initial=0)))
    lut_orientation = np.full(top + 1, np.nan)
    lut_alpha = np.zeros(top + 1)
    lut_orientation[ids] = orientation
    lut_alpha[ids] = np.clip(magnitude, 0, 1)
    cmap = colormaps["hsv"]  # cyclic and saturated: every orientation stands out from grey
    norm = Normalize(-period / 2, period / 2)
    ori_map = lut_orientation[labels]
    rgba = cmap(norm(np.nan_to_num(ori_map)))
    rgba[..., 3] = np.where(np.isfinite(ori_map), 0.15 + 0.8 * lut_alpha[labels], 0.0)

    # dimmed so that the colours stand out from bright (SEM) particles
    background = 0.75 * (_grey_display(image) if image is not None else (labels > 0) * 0.6 + 0.2)
    fig = new_figure(FIGURE_WIDTH_IN, FIGURE_WIDTH_IN * h / w * 0.86 + 0.3)
    ax = fig.add_subplot()
    ax.imshow(background, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
    ax.imshow(rgba, interpolation="antialiased")
    ax.set_axis_off()
    sm = ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, shrink=0.8, pad=0.02)
    bar.set_label(f"orientation arg(ψ{k})/{k} (°); opacity = |ψ{k}|", fontsize=8.5)
    bar.ax.tick_params(labelsize=8)
    if not ok.any():
        ax.set_title(f"ψ{k} undefined for every particle", fontsize=9, color="0.4")
    return fig


def training_curves_figure(log, columns: Sequence[tuple[str, str]], title: str):
    """Columns of a training log against ``step``, one line each.

    Parameters
    ----------
    log : pandas.DataFrame
        A training log with a ``step`` column (``train_log.csv`` of a run folder).
    columns : list of (column, label)
        The columns to draw and their legend labels; absent columns are skipped.
    title : str
        Title of the axes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = new_figure(height_in=3.0)
    ax = fig.add_subplot()
    for col, label in columns:
        if col in log:
            ax.plot(log["step"], log[col], marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_title(title)
    if ax.get_lines():
        ax.legend(frameon=False)
    return fig


# ------------------------------------------------------------------------------ overlays
#: Particle ids are not drawn on overlays with more particles than this (unreadable).
MAX_ID_LABELS = 2000
#: ... nor when the median particle is narrower than this, px (the digits are 7 px tall).
MIN_ID_PARTICLE_PX = 8.0
# 5 x 7 bitmap digits: ids are integers, and a bitmap needs no font files or figure canvas.
_DIGIT_ROWS = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
}
_DIGITS = {d: np.array([[c == "1" for c in row] for row in rows]) for d, rows in _DIGIT_ROWS.items()}


def _text_mask(text: str, scale: int) -> np.ndarray:
    """Bool bitmap of a string of digits, one blank column between digits, enlarged ``scale``x."""
    gap = np.zeros((7, 1), bool)
    parts = [p for d in text for p in (_DIGITS[d], gap)][:-1]
    return np.kron(np.hstack(parts), np.ones((scale, scale), bool)).astype(bool)


def _draw_ids(rgb: np.ndarray, labels: np.ndarray) -> None:
    """Write each label's id at its centroid, white with a black halo, in place."""
    from scipy import ndimage

    flat = labels.ravel().astype(np.int64)
    ids = np.flatnonzero(np.bincount(flat)[1:]) + 1 if flat.size and flat.max() > 0 else np.zeros(0, np.int64)
    if ids.size == 0 or ids.size > MAX_ID_LABELS:
        return
    area = np.bincount(flat, minlength=int(ids.max()) + 1).astype(float)
    if np.median(2.0 * np.sqrt(area[ids] / np.pi)) < MIN_ID_PARTICLE_PX:
        return
    rows, cols = np.indices(labels.shape)
    cy = np.bincount(flat, weights=rows.ravel(), minlength=area.size)[ids] / area[ids]
    cx = np.bincount(flat, weights=cols.ravel(), minlength=area.size)[ids] / area[ids]
    # larger particles get larger digits, up to 4x
    scale = int(np.clip(np.median(np.sqrt(area[ids])) // 20, 1, 4))
    h, w = labels.shape
    for value, y, x in zip(ids, cy, cx):
        glyph = _text_mask(str(int(value)), scale)
        halo = ndimage.binary_dilation(np.pad(glyph, 1), np.ones((3, 3), bool))
        top = int(round(y)) - halo.shape[0] // 2
        left = int(round(x)) - halo.shape[1] // 2
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + halo.shape[0], h), min(left + halo.shape[1], w)
        if r1 <= r0 or c1 <= c0:
            continue
        window = rgb[r0:r1, c0:c1]
        sub = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
        window[halo[sub]] = 0
        window[np.pad(glyph, 1)[sub]] = 255


def overlay_outlines(image: np.ndarray, labels: np.ndarray, colour=(255, 60, 40),
                     ids: bool = False) -> np.ndarray:
    """RGB uint8 image with the particles' outlines drawn over the grey micrograph.

    Parameters
    ----------
    image : (H, W) ndarray
        Micrograph, any range (stretched between its percentiles for display).
    labels : (H, W) int ndarray
        Instance labels, 0 = background.
    colour : (r, g, b)
        Outline colour.
    ids : bool
        Also write each particle's label value, the ``id`` of ``particles.csv``, at its
        centroid (white digits with a black halo, 7 px tall, larger for particles above ~40 px).
        Ids are left out altogether when there are more than :data:`MAX_ID_LABELS` particles
        or the median particle is narrower than :data:`MIN_ID_PARTICLE_PX` (ECD), where they
        could not be read; ids of particles cut by the image border may be cut too.

    Returns
    -------
    (H, W, 3) uint8 ndarray

    Example
    -------
    >>> lab = np.zeros((40, 40), np.int32); lab[5:35, 5:35] = 7
    >>> plain, named = overlay_outlines(lab * 1.0, lab), overlay_outlines(lab * 1.0, lab, ids=True)
    >>> plain.shape == named.shape, bool((plain[16:24, 16:24] != named[16:24, 16:24]).any())
    (True, True)
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    grey = np.clip(normalise_percentile(image), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb[find_boundaries(labels, mode="inner")] = colour
    if ids:
        _draw_ids(rgb, labels)
    return rgb


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image: a [0, 1] map (e.g. an attention gate) in a colour map over the micrograph."""
    from matplotlib import colormaps

    grey = np.clip(normalise_percentile(image), 0, 1)[..., None]
    colour = colormaps["inferno"](np.clip(heat, 0, 1))[..., :3]
    return (255 * ((1 - alpha) * grey + alpha * colour)).astype(np.uint8)


def segmentation_overlay(image: np.ndarray | None, labels: np.ndarray,
                         max_side: int = OVERLAY_MAX_SIDE_PX) -> np.ndarray:
    """RGB uint8 micrograph with particle outlines, resized for display.

    Images larger than ``max_side`` px are reduced by an integer factor before the outlines
    are drawn (image by block mean, labels by sampling), and images smaller than
    ``max_side / 2`` enlarged by an integer factor (nearest neighbour), so that the outlines
    stay one display pixel wide. Without ``image`` each particle is filled with its own colour.
    """
    from skimage.transform import downscale_local_mean

    labels = np.asarray(labels)
    base = np.asarray(image, dtype=np.float32) if image is not None else np.zeros(labels.shape, np.float32)
    factor = max(1, math.ceil(max(labels.shape) / max_side))
    if factor > 1:
        base = downscale_local_mean(base, (factor, factor)).astype(np.float32)
        labels = labels[::factor, ::factor]
        base = base[: labels.shape[0], : labels.shape[1]]
    zoom = max(1, max_side // 2 // max(labels.shape))
    if zoom > 1:  # small images: enlarge (nearest) so that outlines stay thin when displayed
        base = np.kron(base, np.ones((zoom, zoom), np.float32))
        labels = np.kron(labels, np.ones((zoom, zoom), labels.dtype))
    if image is None:  # no micrograph: each particle in its own colour on a dark background
        from skimage.color import label2rgb

        rgb = label2rgb(labels, bg_label=0, bg_color=(0.12, 0.12, 0.12), alpha=1.0)
        return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return overlay_outlines(base, labels)


#: Outline colours of :func:`match_overlay` (RGB), chosen to stay apart for red-green colour
#: blindness and to show on bright and dark particles: matched in blue-green, missed in orange,
#: false detections in magenta.
MATCH_COLOURS = {"matched": (0, 200, 140), "missed": (255, 150, 0), "false": (230, 40, 160)}
#: :func:`match_overlay` enlarges smaller images to at least this side, px.
MATCH_MIN_SIDE_PX = 512


def match_overlay(image: np.ndarray | None, pred_labels: np.ndarray, true_labels: np.ndarray,
                  matched_pred, matched_true, min_side: int = MATCH_MIN_SIDE_PX,
                  max_side: int = OVERLAY_MAX_SIDE_PX) -> np.ndarray:
    """RGB uint8 micrograph with particles outlined by how they compare with the truth.

    Matched predictions are outlined in ``MATCH_COLOURS["matched"]``, predictions without a
    match (false detections) in ``["false"]``, and true particles no prediction matched
    (missed, false negatives) with the truth's outline in ``["missed"]``.

    Parameters
    ----------
    image : (H, W) ndarray or None
        Micrograph (stretched between its percentiles); None draws on black.
    pred_labels, true_labels : (H, W) int ndarray
        Predicted and true instance labels, 0 = background.
    matched_pred, matched_true : array_like of int
        Label ids of the matched pairs, e.g. ``pred_ids`` and ``true_ids`` of
        :func:`sagegan.metrics.match_instances`.
    min_side, max_side : int
        Images whose longer side is under ``min_side`` are enlarged by an integer factor
        (nearest neighbour), over ``max_side`` reduced by one. Outlines are found before
        enlarging, so they are as wide as the factor and stay visible when the page scales the
        picture down.

    Returns
    -------
    (H', W', 3) uint8 ndarray

    Example
    -------
    >>> true = np.zeros((32, 32), np.int32); true[4:12, 4:12] = 1; true[20:28, 20:28] = 2
    >>> pred = np.zeros_like(true); pred[4:12, 4:12] = 5; pred[20:28, 4:12] = 6
    >>> rgb = match_overlay(None, pred, true, [5], [1])
    >>> rgb.shape, rgb[4 * 16, 6 * 16].tolist(), rgb[20 * 16, 6 * 16].tolist(), rgb[20 * 16, 22 * 16].tolist()
    ((512, 512, 3), [0, 200, 140], [230, 40, 160], [255, 150, 0])
    """
    from skimage.segmentation import find_boundaries
    from skimage.transform import downscale_local_mean

    pred, true = np.asarray(pred_labels), np.asarray(true_labels)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"predicted {pred.shape} and true {true.shape} labels must be 2-D and of one shape")
    base = np.zeros(pred.shape, np.float32) if image is None else np.asarray(image, dtype=np.float32)
    if base.shape != pred.shape:
        raise ValueError(f"image {base.shape} and labels {pred.shape} differ in shape")
    fp = (pred > 0) & ~np.isin(pred, np.asarray(matched_pred, dtype=np.int64))
    fn = (true > 0) & ~np.isin(true, np.asarray(matched_true, dtype=np.int64))
    edges_pred = find_boundaries(pred, mode="inner")
    layers = [(edges_pred & (pred > 0) & ~fp, MATCH_COLOURS["matched"]),
              (find_boundaries(true, mode="inner") & fn, MATCH_COLOURS["missed"]),
              (edges_pred & fp, MATCH_COLOURS["false"])]  # last drawn wins where outlines cross
    factor = max(1, math.ceil(max(pred.shape) / max_side))
    if factor > 1:
        base = downscale_local_mean(base, (factor, factor)).astype(np.float32)
        layers = [(mask[::factor, ::factor][: base.shape[0], : base.shape[1]], c) for mask, c in layers]
    grey = np.clip(normalise_percentile(base), 0, 1) if image is not None else base
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    for mask, colour in layers:
        rgb[mask] = colour
    return enlarge_nearest(rgb, min_side)


def enlarge_nearest(image: np.ndarray, min_side: int = MATCH_MIN_SIDE_PX) -> np.ndarray:
    """``image`` (H, W[, C]) enlarged by the smallest integer factor that brings its longer side
    to at least ``min_side`` px, by repeating pixels (no smoothing, so outlines stay crisp).

    >>> enlarge_nearest(np.zeros((100, 50), np.uint8)).shape
    (600, 300)
    """
    arr = np.asarray(image)
    zoom = max(1, math.ceil(min_side / max(arr.shape[:2])))
    return np.repeat(np.repeat(arr, zoom, axis=0), zoom, axis=1) if zoom > 1 else arr
