"""Figures and self-contained HTML reports.

Figure functions take arrays and return a :class:`matplotlib.figure.Figure`; they never show
or save anything. :func:`figure_to_data_uri` and :func:`image_to_data_uri` turn figures and
arrays into ``data:image/png;base64,...`` strings, and :func:`render_html` lays out
:class:`Section` objects as one HTML page with inline CSS and every image embedded, so the
report is a single file that can be mailed or archived and opens offline.

Figures are drawn on matplotlib's non-interactive Agg canvas without importing
``matplotlib.pyplot``, so no window opens, no display is needed, and the backend a notebook or
GUI has chosen is left alone.

Example
-------
>>> import numpy as np
>>> fig = size_histogram_figure(np.random.default_rng(0).lognormal(3, 0.1, 200), unit="nm")
>>> page = render_html("Sizes", [Section("Size distribution", text="ECD of all particles.",
...                                      figures=[("ECD histogram", figure_to_data_uri(fig))])])
>>> page.count("data:image/png;base64,")
1
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Section",
    "render_html",
    "figure_to_png",
    "figure_to_data_uri",
    "png_to_data_uri",
    "image_to_png",
    "image_to_data_uri",
    "new_figure",
    "size_histogram_figure",
    "nn_distance_histogram_figure",
    "pair_correlation_figure",
    "bond_order_map_figure",
    "segmentation_overlay",
    "format_value",
]

#: Width of a figure in inches; with FIGURE_DPI this gives ~700 px images.
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
    edges = np.histogram_bin_edges(x, bins=bins)
    if len(edges) > 61:
        edges = np.histogram_bin_edges(x, bins=60)
    ax.hist(x, bins=edges, color=_ACCENT, alpha=0.75, edgecolor="white", linewidth=0.6,
            label=f"particles (n = {x.size})")
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
    edges = np.histogram_bin_edges(x, bins="auto")
    if len(edges) > 61:
        edges = np.histogram_bin_edges(x, bins=60)
    ax.hist(x, bins=edges, color="#2e8b57", alpha=0.75, edgecolor="white", linewidth=0.6,
            label=f"particles (n = {x.size})")
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
    from .infer import overlay_outlines  # imports torch: keep it out of module import

    return overlay_outlines(base, labels)


# ------------------------------------------------------------------------------ HTML
@dataclass
class Section:
    """One section of a report page.

    Attributes
    ----------
    title : str
        Heading.
    text : str or list of str, optional
        Paragraphs (plain text, escaped; blank lines in a string also separate paragraphs).
    notes : list of str
        Short warnings shown in a highlighted box (e.g. "only one particle: no order measures").
    table : dict, list of dicts or pandas.DataFrame, optional
        A dict gives a two-column quantity/value table; a list of dicts or a DataFrame one row
        per entry. Floats are shown with 4 significant digits, NaN and None as "–".
    figures : list of (caption, data_uri)
        Images as data URIs (:func:`figure_to_data_uri`, :func:`image_to_data_uri`).
    preformatted : str, optional
        Text shown verbatim in a monospace block (a configuration, a command line, a log).
    subsections : list of Section
        Nested sections, one heading level down.
    """

    title: str
    text: str | Sequence[str] | None = None
    table: Any = None
    figures: Sequence[tuple[str, str]] = field(default_factory=list)
    notes: Sequence[str] = field(default_factory=list)
    preformatted: str | None = None
    subsections: Sequence["Section"] = field(default_factory=list)


def format_value(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, NaN/None as an en dash.

    Example
    -------
    >>> format_value(3.14159), format_value(float("nan")), format_value(True), format_value(12345.6)
    ('3.142', '–', 'yes', '12346')
    """
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            return "–"
        if v == 0:
            return "0"
        if abs(v) >= 10 ** digits:
            return f"{v:.0f}"
        if abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    if isinstance(value, complex):
        return "–" if not np.isfinite(value) else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, digits) for v in value)
    return str(value)


_CSS = """
:root { --ink:#1d2329; --muted:#5b6670; --rule:#dde3e8; --accent:#1f5f8b; --bg:#ffffff;
        --panel:#f6f8fa; --warn-bg:#fff6e0; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 60px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 8px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header .meta { color: var(--muted); font-size: 13px; }
nav { background: var(--panel); border: 1px solid var(--rule); border-radius: 6px;
      padding: 10px 16px; margin: 0 0 24px; font-size: 14px; }
nav ol { margin: 4px 0 0; padding-left: 22px; columns: 2; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { margin: 0 0 34px; }
h2 { font-size: 21px; border-bottom: 1px solid var(--rule); padding-bottom: 4px; margin: 26px 0 12px; }
h3 { font-size: 17px; margin: 22px 0 8px; color: var(--accent); }
h4 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0 10px; max-width: 80ch; }
.notes { background: var(--warn-bg); border-left: 4px solid #e0a800; color: var(--warn);
         padding: 8px 14px; margin: 8px 0 14px; border-radius: 3px; font-size: 14px; }
.notes ul { margin: 0; padding-left: 18px; }
.table-wrap { overflow-x: auto; margin: 8px 0 16px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; border-bottom: 1px solid var(--rule); text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: var(--panel); border-bottom: 2px solid var(--rule); font-weight: 600; }
tbody tr:hover { background: #f0f5fa; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 18px;
           margin: 10px 0 8px; }
figure { margin: 0; background: var(--panel); border: 1px solid var(--rule); border-radius: 6px;
         padding: 8px; }
figure img { display: block; width: 100%; height: auto; image-rendering: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
pre { background: var(--panel); border: 1px solid var(--rule); border-radius: 4px; padding: 8px 12px;
      font-size: 12.5px; overflow-x: auto; }
footer { color: var(--muted); font-size: 12px; border-top: 1px solid var(--rule); margin-top: 40px;
         padding-top: 8px; }
@media print { nav { display: none; } figure { break-inside: avoid; } }
"""


def _anchor(index: Sequence[int]) -> str:
    return "s" + "-".join(str(i) for i in index)


def _paragraphs(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        out += [p.strip() for p in str(item).split("\n\n") if p.strip()]
    return out


def _table_rows(table: Any) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of a dict, list of dicts, or DataFrame."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(table, pd.DataFrame):
        header = [str(c) for c in table.columns]
        rows = table.astype(object).to_numpy().tolist()
        if not isinstance(table.index, pd.RangeIndex):
            header = [str(table.index.name or "")] + header
            rows = [[idx] + row for idx, row in zip(table.index, rows)]
        return header, rows
    if isinstance(table, Mapping):
        return ["quantity", "value"], [[k, v] for k, v in table.items()]
    if isinstance(table, Iterable):
        records = list(table)
        if not all(isinstance(r, Mapping) for r in records):
            raise ValueError("a table must be a dict, a list of dicts or a DataFrame")
        header = list(dict.fromkeys(k for r in records for k in r))
        return [str(h) for h in header], [[r.get(h) for h in header] for r in records]
    raise ValueError(f"a table must be a dict, a list of dicts or a DataFrame, got {type(table).__name__}")


def _render_table(table: Any) -> str:
    header, rows = _table_rows(table)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{esc(format_value(v))}</td>" for v in row) + "</tr>"
                     for row in rows)
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div>")


def _render_section(section: Section, index: Sequence[int]) -> str:
    esc = html.escape
    level = min(len(index) + 1, 4)
    parts = [f'<section id="{_anchor(index)}">', f"<h{level}>{esc(section.title)}</h{level}>"]
    if section.notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in section.notes)
        parts.append(f'<div class="notes"><ul>{items}</ul></div>')
    parts += [f"<p>{esc(p)}</p>" for p in _paragraphs(section.text)]
    if section.table is not None:
        parts.append(_render_table(section.table))
    if section.preformatted is not None:
        parts.append(f"<pre>{esc(section.preformatted)}</pre>")
    if section.figures:
        figs = []
        for caption, uri in section.figures:
            if not str(uri).startswith("data:image/"):
                raise ValueError(f"figure {caption!r}: expected a data:image/... URI so that the "
                                 "page stays self-contained")
            figs.append(f'<figure><img src="{uri}" alt="{esc(caption)}" loading="lazy">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>")
        parts.append('<div class="figures">' + "\n".join(figs) + "</div>")
    for i, sub in enumerate(section.subsections, 1):
        parts.append(_render_section(sub, [*index, i]))
    parts.append("</section>")
    return "\n".join(parts)


def render_html(title: str, sections: Sequence[Section], subtitle: str | None = None,
                footer: str | None = None, contents: bool = True) -> str:
    """A self-contained HTML page: inline CSS, images as data URIs, no scripts or links out.

    Parameters
    ----------
    title : str
        Page title and top heading.
    sections : list of Section
        Content, in order; top-level sections are listed in a table of contents.
    subtitle : str, optional
        A line under the title (e.g. what was analysed).
    footer : str, optional
        Small print at the bottom; default names sagegan, its version and the date.
    contents : bool
        Show the table of contents (when there are at least 3 sections).

    Returns
    -------
    str
        The HTML document.

    Example
    -------
    >>> page = render_html("Demo", [Section("Summary", table={"particles": 12})])
    >>> "<h2>Summary</h2>" in page and "http" not in page.split("<body>")[1]
    True
    """
    from . import __version__

    esc = html.escape
    if footer is None:
        footer = f"sagegan {__version__} · {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    head = [f"<h1>{esc(title)}</h1>"]
    if subtitle:
        head.append(f'<div class="meta">{esc(subtitle)}</div>')
    toc = ""
    if contents and len(sections) >= 3:
        items = "".join(f'<li><a href="#{_anchor([i])}">{esc(s.title)}</a></li>'
                        for i, s in enumerate(sections, 1))
        toc = f"<nav><strong>Contents</strong><ol>{items}</ol></nav>"
    body = "\n".join(_render_section(s, [i]) for i, s in enumerate(sections, 1))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header>{''.join(head)}</header>\n{toc}\n{body}\n"
        f"<footer>{esc(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )
