"""Self-contained HTML reports: the page layout, the particle analysis report and the demo report.

* :class:`Section` and :func:`render_html` lay out headings, text, tables and figures as one
  HTML page with inline CSS and every image embedded as a data URI, so the report is a single
  file that can be mailed or archived and opens offline.
* :func:`analyze_labels` is the file edge of :mod:`sagegan.analyze`: label files in
  (found and read by :mod:`sagegan.io`), ``particles.csv``, ``summary.json`` and
  ``report.html`` out.
* :func:`write_demo_report` writes the page of ``sagegan demo``.

Figures come from :mod:`sagegan.plot`; measurements from :mod:`sagegan.analyze`.

Example
-------
>>> import numpy as np
>>> from sagegan.plot import figure_to_data_uri, size_histogram_figure
>>> fig = size_histogram_figure(np.random.default_rng(0).lognormal(3, 0.1, 200), unit="nm")
>>> page = render_html("Sizes", [Section("Size distribution", text="ECD of all particles.",
...                                      figures=[("ECD histogram", figure_to_data_uri(fig))])])
>>> page.count("data:image/png;base64,")
1
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .analyze import ImageAnalysis, analyze_image, nm_key, particles_table, summarize_batch
from .io import (InputError, LabelledImage, Sample, atomic_write_bytes, find_label_files,
                 find_micrographs, json_ready, read_json, read_labelled_image, read_mask, read_segment_records,
                 unique_image_names, write_json)
from .order import ORDERED_MIN_PSI, PARTIAL_MIN_PSI, VERDICT_MIN_PARTICLES
from .plot import (bond_order_map_figure, enlarge_nearest, figure_to_data_uri, image_to_data_uri,
                   match_overlay, nn_distance_histogram_figure, pair_correlation_figure, segmentation_overlay,
                   size_histogram_figure, training_curves_figure)

if TYPE_CHECKING:
    from .demo import DemoBudget

__all__ = [
    "Section",
    "render_html",
    "format_value",
    "analyze_labels",
    "write_demo_report",
    "demo_truth_numbers",
]


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
        Images as data URIs (:func:`sagegan.plot.figure_to_data_uri`, :func:`~sagegan.plot.image_to_data_uri`).
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
    if isinstance(table, pd.DataFrame):
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


# ------------------------------------------------------------------------------ analysis report
def analyze_one(name: str, path: Path, micrographs: dict, records: dict, nm_per_px: float | str | None,
                mask_kind: str, with_section: bool, scale_bar_nm: float | None = None):
    """One label image of :func:`analyze_labels`: (its analysis, its file record, its report
    section when ``with_section``), the same on a Dask worker as in the serial loop."""
    loaded = read_labelled_image(path, name, micrographs, records, nm_per_px, mask_kind, scale_bar_nm)
    analysis = analyze_image(loaded.labels, loaded.image, loaded.nm_per_px)
    info = {"labels_file": str(loaded.labels_file),
            "micrograph_file": str(loaded.micrograph_file) if loaded.micrograph_file else None,
            "nm_per_px_source": loaded.nm_per_px_source,
            "image_height_px": analysis.shape[0], "image_width_px": analysis.shape[1]}
    return analysis, info, _image_section(name, analysis, loaded) if with_section else None


def analyze_labels(label_paths, out, images=None, nm_per_px=None,
                   title: str = "sagegan particle report", max_image_sections: int = 20,
                   mask_kind: str = "auto", workers: int | None = None, scheduler: str | None = None,
                   progress: bool = False, scale_bar_nm: float | None = None) -> dict:
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
    nm_per_px : float or str, optional
        Pixel size for every image, overriding the files; or where to look for it
        (:func:`sagegan.io.read_labelled_image`): None or ``"metadata"``, ``"auto"`` (at last
        the micrograph's data bar or scale bar), ``"auto-bar"``.
    title : str
        Title of the report.
    max_image_sections : int
        Per-image figures are drawn for the first this many images; all appear in the tables.
    mask_kind : str
        How to read the label images (:func:`sagegan.io.read_mask`): ``"auto"`` (the content
        decides; a micrograph given in place of a label image is refused), ``"binary"`` or
        ``"labels"``.
    workers, scheduler : int, str, optional
        Analyse the images on a Dask ``LocalCluster`` of ``workers`` processes, or on the
        existing cluster at ``scheduler`` (:mod:`sagegan.cluster`), one image per task.

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

    out = Path(out)
    label_files = find_label_files(label_paths)
    if not label_files:
        raise InputError(f"{label_paths}: no label images found")
    micrographs = find_micrographs(images)
    records = read_segment_records(label_files) if images is None else {}
    names = unique_image_names(label_files)

    calls = [(name, path, micrographs, records, nm_per_px, mask_kind, i < max_image_sections, scale_bar_nm)
             for i, (name, path) in enumerate(zip(names, label_files))]
    done: dict[int, tuple] = {}
    if workers is None and scheduler is None:
        for i, call in enumerate(calls):
            done[i] = analyze_one(*call)
    else:
        from .cluster import analyze_task, map_on_cluster

        for i, result in map_on_cluster(analyze_task, calls, names, workers, scheduler, progress, "analysing"):
            if isinstance(result, BaseException):
                raise result
            done[i] = result
    analyses: dict[str, ImageAnalysis] = {}
    image_info: dict[str, dict] = {}
    image_sections = []
    for i, name in enumerate(names):  # in input order, whichever finished first
        analyses[name], image_info[name], section = done[i]
        if section is not None:
            image_sections.append(section)

    batch = summarize_batch(analyses)
    atomic_write_bytes(out / "particles.csv", particles_table(analyses).to_csv(index=False).encode("utf-8"))
    summary = json_ready({
        "batch": batch,
        "images": {name: {**a.summary, **image_info[name]} for name, a in analyses.items()},
        "config": {"inputs": [str(f) for f in label_files],
                   "images": str(images) if images is not None else None,
                   "nm_per_px": nm_per_px, "scale_bar_nm": scale_bar_nm, "version": __version__},
    })
    write_json(out / "summary.json", summary)
    sections = _report_sections(analyses, batch, image_info, image_sections, max_image_sections)
    subtitle = (f"{len(analyses)} image(s), {batch['n_particles']} particles"
                + (f", {batch['nm_per_px']:.4g} nm/px" if batch["nm_per_px"] else ""))
    atomic_write_bytes(out / "report.html", render_html(title, sections, subtitle=subtitle).encode("utf-8"))
    return summary


#: (label, px key) rows of the size / distance table; the nm column shows the key's nm twin.
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
    ("Order verdict", "order_verdict"),
    ("5-fold / 7-fold coordinated particles", ("n_fivefold", "n_sevenfold")),
    ("Orientational domains (≥ 10 particles)", "n_domains"),
)


def _with_interval(value: Any, interval: Sequence[float] | None) -> Any:
    """A value with its 95 % interval in brackets, ``12.03 [11.87, 12.19]``; the value alone
    when the interval is missing or undefined."""
    if value is None or interval is None or not all(v is not None and math.isfinite(v) for v in interval):
        return value
    return f"{format_value(value)} [{format_value(interval[0])}, {format_value(interval[1])}]"


def _length_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for label, key in _LENGTH_ROWS:
        ci = f"{key}_ci95"
        rows.append({"quantity": label, "px": _with_interval(summary[key], summary.get(ci)),
                     "nm": _with_interval(summary.get(nm_key(key)), summary.get(nm_key(ci)))})
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
            table[label] = _with_interval(summary[key], summary.get(f"{key}_ci95"))
    return table


def _image_section(name: str, analysis: ImageAnalysis, loaded: LabelledImage) -> Section:
    """Figures and tables of one image (figures are drawn here, while its arrays are loaded)."""
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
            row.update({"nm/px": s["nm_per_px"], "calibration": image_info.get(name, {}).get("nm_per_px_source"),
                        "ECD mean (nm)": s["ecd_nm_mean"], "a (nm)": s["lattice_constant_nm"]})
        row.update({"ψ6 global": s["psi6_global"], "ψ4 global": s["psi4_global"],
                    "order": s["order_verdict"], "remarks": ", ".join(_remarks(s, image_info.get(name, {})))})
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
    "Order verdict: from the mean local bond order of the better-fitting lattice (⟨|ψ6|⟩ for "
    f"hexagonal, ⟨|ψ4|⟩ for square): at least {ORDERED_MIN_PSI:.2f} is ordered, at least "
    f"{PARTIAL_MIN_PSI:.2f} partially ordered, lower disordered; no verdict with fewer than "
    f"{VERDICT_MIN_PARTICLES} particles with a complete neighbour shell. "
    "On simulated lattices these thresholds correspond to a random displacement of about 7 % and "
    "9 % of the lattice constant; a dense random packing is disordered. For all images together, "
    "the verdict held by the most particles with a complete neighbour shell.",
    "Brackets [lo, hi]: 95 % confidence intervals. Mean and D50 of the ECD: percentile bootstrap "
    "over particles (1000 resamples, fixed seed); for all images together, images are resampled "
    "and then particles within each image, so that differences between images count. Particle "
    "count of one image: exact Poisson interval; of all images: the number of images times the "
    "bootstrap interval of the mean count per image.",
    "All images together: sizes and nearest-neighbour distances are pooled over all particles; "
    "the order values and lattice constants are per-image values averaged with weights equal "
    "to each image's number of particles with a complete neighbour shell.",
]


def _report_sections(analyses, batch, image_info, image_sections, max_image_sections) -> list[Section]:
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


# ------------------------------------------------------------------------------ demo report
def demo_truth_numbers(truth: pd.DataFrame | None, held: Sequence[Sample]) -> dict:
    """The simulator's true particle count, mean diameter and lattice constant of the held-out
    images, keyed like the analysis summary (``n_particles``, ``ecd_px_mean``,
    ``lattice_constant_px``); empty without a truth table (a user's data).

    ``truth`` is the simulator's truth table with an ``image`` column; the mean diameter leaves
    out particles that touch the border, as the measured one does.
    """
    if truth is None:
        return {}
    t = truth[truth["image"].isin([s.stem for s in held])]
    inner = t[~t["touches_border"]] if "touches_border" in t else t
    lattice = t["lattice_constant_px"].dropna()
    return {"ecd_px_mean": float(inner["diameter_px"].mean()),
            "lattice_constant_px": float(lattice.mean()) if len(lattice) else float("nan"),
            "n_particles": int(len(t))}


def _curve_figure(log_csv: Path, columns: list[tuple[str, str]], title: str) -> str | None:
    """Training curves of a run's log as a data URI; None when the log is missing or has none of
    the columns' values."""
    if not log_csv.exists():
        return None
    log = pd.read_csv(log_csv)
    if not any(col in log and log[col].notna().any() for col, _ in columns):
        return None
    return figure_to_data_uri(training_curves_figure(log, columns, title))


def _curves(run: Path, curves: Sequence[tuple[str, list[tuple[str, str]], str]]) -> list[tuple[str, str]]:
    """(caption, data URI) of each curve of ``run``'s ``train_log.csv`` that could be drawn."""
    figures = []
    for caption, columns, title in curves:
        uri = _curve_figure(run / "train_log.csv", columns, title)
        if uri:
            figures.append((caption, uri))
    return figures


def _run_facts(run: Path, planned_steps: int, max_minutes: float | None) -> tuple[list[str], list[str]]:
    """A line on how long ``run`` trained and which checkpoint it kept, and a note when the demo's
    time cap stopped it before its steps (its numbers then depend on the machine)."""
    if not (run / "config.json").exists():
        return [], []
    config = read_json(run / "config.json")
    steps, best = config.get("steps"), config.get("best_validation") or {}
    if steps is None:
        return [], []
    line = f"Trained {steps} steps"
    if best.get("step") is not None:
        line += (f"; kept the checkpoint of step {best['step']} (validation F1@0.5 {format_value(best.get('f1_50'))}, "
                 f"Dice {format_value(best.get('dice'))})" + (", the segmenter it started from" if best["step"] == 0 else ""))
    notes = []
    if steps < planned_steps:
        notes.append(f"Stopped by the demo's {format_value(max_minutes)}-minute safety cap after {steps} of "
                     f"{planned_steps} steps: this machine was much slower than planned, and these numbers depend on it.")
    return [line + "."], notes


#: Metric columns of the demo's held-out table: (key of the scores, header).
_DEMO_COLUMNS = (("mean_f1_50", "F1@0.5"), ("mean_precision_50", "precision@0.5"), ("mean_recall_50", "recall@0.5"),
                 ("mean_dice", "Dice"), ("mean_pq", "PQ"))
_MATCH_LEGEND = ("Outlines against the truth at IoU 0.5: blue-green = found (matched one-to-one with a true "
                 "particle), orange = missed (the true particle's outline), magenta = false detection. Small "
                 "images are enlarged by repeating pixels.")


def _match_figure(name: str, labels_file: Path, sample: Sample) -> tuple[str, str]:
    """The outlines of one model's segmentation of a held-out image, coloured by their match."""
    from .metrics import match_instances

    pred = read_mask(labels_file, kind="labels")
    m = match_instances(pred, sample.labels, 0.5)
    caption = (f"{name}, {sample.stem}: {m.tp} found (blue-green), {m.fn} missed (orange), "
               f"{m.fp} false detections (magenta)")
    return caption, image_to_data_uri(match_overlay(sample.image, pred, sample.labels, m.pred_ids, m.true_ids))


def write_demo_report(out: Path, scores: dict, analysis: dict, truth, held: Sequence[Sample], timings: dict,
                      budget: DemoBudget, best: str, bundled: str | None = None) -> Path:
    """Write ``out/report.html`` of ``sagegan demo``: every stage with its figures and numbers.

    Reads what the demo wrote under ``out`` (training logs and configs, GAN sample grids,
    synthetic pairs, segmentations). ``scores`` maps each model's row name to its held-out
    metrics with ``labels`` (one label file per ``held`` sample) and ``dir``, or to a ``note``
    that replaces its numbers; the row of the bundled general model, if it ran, has
    ``reference=True``. ``held`` are the held-out samples with their true labels; ``analysis``
    is the :func:`analyze_labels` summary of ``best``; ``truth`` the simulator's truth table
    (None for a user's data); ``bundled`` the line on the bundled general model. Returns the
    report's path.
    """
    import imageio.v3 as iio

    sections = []
    text, notes = _run_facts(out / "phase1", budget.seg_steps, budget.max_minutes)
    sections.append(Section("1. Phase 1 — Attention U-Net", text=[
        "The segmenter is trained on a few labelled images at a canonical particle scale, with a 3-class "
        "(background / interior / boundary) plus normalised-distance head; a watershed on the predicted "
        "distance separates touching particles. The checkpoint with the best validation F1 is kept.", *text],
        notes=notes, figures=_curves(out / "phase1", [
            ("phase 1: validation F1@0.5 and Dice against the training step",
             [("val_f1_50", "val F1@0.5"), ("val_dice", "val Dice")], "phase 1 validation"),
            ("phase 1: training loss (mean over the steps since the previous validation)",
             [("loss", "training loss")], "phase 1 loss")])))

    text, notes = _run_facts(out / "gan", budget.gan_steps, budget.max_minutes)
    gan_figs = _curves(out / "gan", [
        ("phase 2: validation F1@0.5 and Dice of the jointly trained segmenter",
         [("val_f1_50", "val F1@0.5"), ("val_dice", "val Dice")], "segmenter during SAGE-GAN"),
        ("phase 2: generator losses", [("paired_l1", "paired L1"), ("cycle_l1", "cycle L1"),
                                        ("adv_image", "adversarial (image)")], "SAGE-GAN losses")])
    grids = sorted((out / "gan" / "samples").glob("step_*.png"))
    if grids:
        step = int(grids[-1].stem.split("_")[-1])
        gan_figs.insert(0, (f"sample grid at step {step}: per row the mask, the real patch, the generated image",
                            image_to_data_uri(enlarge_nearest(iio.imread(grids[-1])))))
    elif (out / "gan").is_dir():
        notes.append("No sample grid: phase 2 stopped before its first sample step.")
    sections.append(Section("2. Phase 2 — SAGE-GAN", text=[
        "Generator (mask -> image, StyleUNet) and the segmenter are trained jointly against two PatchGAN "
        "discriminators. The sample grid shows, per row: the mask, the real patch, the generated image.", *text],
        notes=notes, figures=gan_figs))

    syn = sorted((out / "synthetic" / "images").glob("*.png"))[:4]
    if syn:
        tiles = []
        for p in syn:
            img = iio.imread(p).astype(np.float32) / 255.0
            lab = read_mask(out / "synthetic" / "masks" / f"{p.stem}.tif", kind="labels")
            tiles.append(np.concatenate([img, (lab > 0).astype(np.float32)], axis=0))
        grid = np.concatenate(tiles, axis=1)
        sections.append(Section("3. Synthetic pairs from new layouts", text=(
            "Layouts drawn from the model fitted to the training masks (size distribution, lattice type, "
            "spacing, coverage) and rendered by the generator: images on top, their exact masks below."),
            figures=[("synthetic images and masks", image_to_data_uri(grid))]))

    noted = any(s.get("note") for s in scores.values())
    rows = [{"model": name, **{header: s.get(key) for key, header in _DEMO_COLUMNS},
             **({"note": s.get("note")} if noted else {})} for name, s in scores.items()]
    seg_figs = [_match_figure(name, s["labels"][0], held[0]) for name, s in scores.items()
                if held and s.get("labels") and not s.get("reference")]
    for p in sorted(Path(scores[best]["dir"]).glob("*_attention.png"))[:1]:
        seg_figs.append((f"finest attention-gate map ({best})", image_to_data_uri(iio.imread(p))))
    text, notes = _run_facts(out / "finetuned", budget.finetune_steps, budget.max_minutes)
    sections.append(Section("4. Held-out images — metrics against the truth", table=rows, text=[
        "Object F1, precision and recall at IoU 0.5 with one-to-one (Hungarian) matching, pixel Dice and "
        "panoptic quality, averaged over the held-out images.",
        *(f"Fine-tuning on real + synthetic pairs (from the phase 2 segmenter): {t}" for t in text), _MATCH_LEGEND],
        notes=notes, figures=seg_figs))

    general = [(name, s) for name, s in scores.items() if s.get("reference") and s.get("labels")]
    sections.append(Section("5. Bundled general model, no training", text=[
        bundled or "The bundled general model was not run.",
        *([f"Its scores are the row '{general[0][0]}' of the table above."] if general else [])],
        figures=[_match_figure(name, s["labels"][0], held[0]) for name, s in general if held]))

    batch = analysis["batch"]
    truth_numbers = demo_truth_numbers(truth, held)
    keys = ("n_particles", "ecd_px_mean", "nn_distance_px_mean", "lattice_constant_px", "psi6_global", "psi4_global")
    sections.append(Section("6. Particle sizes and spatial order", text=(
        f"Measured on the segmentation of the best model trained here ({best}); the full per-image report is "
        "analysis/report.html."), table=[{"quantity": k, "measured": batch.get(k), "truth": truth_numbers.get(k)}
                                         for k in keys]))
    sections.append(Section("7. Run", text=(
        "Training is fixed in steps and seeded, so the numbers above do not depend on the machine's speed; "
        "the wall-clock seconds below do."), table={f"{k} (s)": round(v, 1) for k, v in timings.items()},
        preformatted=str(asdict(budget))))
    page = render_html("sagegan demo", sections, subtitle="few labels -> segmenter -> synthetic pairs -> particle report")
    return atomic_write_bytes(out / "report.html", page.encode("utf-8"))
