"""What the napari plugin does, as plain functions: no napari, no Qt.

Layers travel as napari's "layer data" tuples ``(data, attributes, layer_type)``, which are
plain Python: the reader and the sample data return them, the writers take ``data`` and
``attributes``, and the widgets of :mod:`sagegan.napari._widgets` only move values between the
viewer and these functions.

Layer metadata the plugin writes and reads (every key optional):

``nm_per_px``
    the pixel size in nm, or None; layers are then scaled in nm.
``pixel_size_source``
    where it came from (``Micrograph.metadata["pixel_size_source"]``, e.g. "scale bar: '100 nm'
    over 67 px"), or "unknown".
``calibration``
    the kind of source (``Micrograph.metadata["calibration"]``): "metadata", "data bar",
    "scale bar", "user", or None when the pixel size is unknown.
``crop_bottom``
    rows of a microscope data bar at the bottom of the image: shown, but neither segmented,
    analysed nor saved as training data.
``path``
    the file an image layer was read from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import (EM_SUFFIXES, IMAGE_SUFFIXES, InputError, Micrograph, atomic_write, atomic_write_text,
                  guess_mask_kind, read_mask, read_micrograph, write_imagej_rois, write_labels)

LayerData = tuple  # (data, attributes, layer_type), as napari's readers, writers and samples use

#: Colour of label ids the colour map does not know (particles painted after segmenting).
NEW_PARTICLE_RGBA = (1.0, 0.0, 1.0, 1.0)
#: Colour of particles whose value is undefined (NaN), e.g. the order of edge particles.
UNDEFINED_RGBA = (0.55, 0.55, 0.55, 1.0)
#: Columns a Labels layer can be coloured by, when its particle table has them.
COLOR_COLUMNS = ("score", "ecd_px", "ecd_nm", "area_px", "circularity", "aspect_ratio", "solidity",
                 "psi6_abs", "psi4_abs")
# value ranges fixed by their definition; other columns span their values
_FIXED_RANGES = {"score": (0.0, 1.0), "psi6_abs": (0.0, 1.0), "psi4_abs": (0.0, 1.0), "circularity": (0.0, 1.0),
                 "solidity": (0.0, 1.0)}


# ------------------------------------------------------------------------------------ reading


def micrograph_layer_data(micrograph: Micrograph, name: str | None = None) -> LayerData:
    """An image layer for a micrograph: scaled in nm when its pixel size is known (1 otherwise),
    with the pixel size, its source and the reader's metadata in ``metadata``."""
    nm = micrograph.nm_per_px
    meta = dict(micrograph.metadata)
    metadata = {
        "nm_per_px": nm,
        "pixel_size_source": meta.get("pixel_size_source") or ("unknown" if nm is None else "file"),
        "calibration": meta.get("calibration") if nm else None,
        "crop_bottom": int(meta.get("crop_bottom") or 0),
        "path": str(micrograph.path) if micrograph.path is not None else None,
        "micrograph": meta,
    }
    attributes: dict[str, Any] = {
        "name": name or (micrograph.path.stem if micrograph.path is not None else "micrograph"),
        "scale": (nm, nm) if nm else (1.0, 1.0),
        "metadata": metadata,
        "colormap": "gray",
    }
    if nm:
        attributes["units"] = ("nm", "nm")
    return micrograph.image, attributes, "image"


def read_whole_micrograph(path: str | Path) -> Micrograph:
    """:func:`sagegan.io.read_micrograph` finding the pixel size (metadata, else the data bar or
    scale bar) and the data bar itself, but with every row kept.

    When the reader drops a data bar (``metadata["crop_bottom"]`` rows), the image is read again
    without dropping it, so that a viewer shows the whole micrograph; ``crop_bottom`` stays in
    the metadata and segmenting leaves those rows out. Pixel size and metadata are the first
    read's.
    """
    import dataclasses
    import warnings

    micrograph = read_micrograph(path, nm_per_px="auto", crop_bottom="auto")
    bar = int(micrograph.metadata.get("crop_bottom") or 0)
    if bar:
        with warnings.catch_warnings():  # the first read has said it all
            warnings.simplefilter("ignore")
            whole = read_micrograph(path, nm_per_px="metadata", crop_bottom=0)
        if whole.image.shape[0] == micrograph.image.shape[0] + bar:
            micrograph = dataclasses.replace(micrograph, image=whole.image)
    return micrograph


def read_micrograph_layers(path: str | Path | Sequence[str | Path]) -> list[LayerData]:
    """Image layers of one or more micrograph files (:func:`read_whole_micrograph`: the pixel
    size from :func:`sagegan.io.read_micrograph`, which finds it itself)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [micrograph_layer_data(read_whole_micrograph(p)) for p in paths]


def _readable(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES + EM_SUFFIXES and not Path(path).is_dir()


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """napari's reader hook: :func:`read_micrograph_layers` for micrograph files, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_readable(p) for p in paths):
        return None
    return read_micrograph_layers


# ---------------------------------------------------------------------------------- colouring


def color_by_values(ids: Sequence[int], values: Sequence[float], vmin: float | None = None,
                    vmax: float | None = None, cmap: str = "viridis") -> dict:
    """A direct label colour map: each id coloured by its value through a matplotlib colour map.

    Returns ``{id: (r, g, b, a)}`` with 0 transparent, NaN values in :data:`UNDEFINED_RGBA` and
    the key ``None`` (any id not listed: particles painted later) in :data:`NEW_PARTICLE_RGBA`;
    napari turns such a dict into a ``DirectLabelColormap``. ``vmin``/``vmax`` default to the
    range of the finite values.

    Example
    -------
    >>> cm = color_by_values([1, 2], [0.0, 1.0])
    >>> cm[0][3], cm[1][:3] != cm[2][:3]
    (0.0, True)
    """
    from matplotlib import colormaps

    ids = np.asarray(ids, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    if ids.shape != values.shape:
        raise ValueError(f"{ids.size} ids but {values.size} values")
    finite = values[np.isfinite(values)]
    lo = float(vmin if vmin is not None else finite.min() if finite.size else 0.0)
    hi = float(vmax if vmax is not None else finite.max() if finite.size else 1.0)
    span = hi - lo if hi > lo else 1.0
    rgba = colormaps[cmap](np.clip((values - lo) / span, 0.0, 1.0))
    colors: dict = {None: NEW_PARTICLE_RGBA, 0: (0.0, 0.0, 0.0, 0.0)}
    for i, v, c in zip(ids.tolist(), values, rgba):
        colors[int(i)] = UNDEFINED_RGBA if not math.isfinite(v) else tuple(float(x) for x in c)
    return colors


def color_by_column(particles: pd.DataFrame, column: str) -> dict:
    """:func:`color_by_values` of one column of a particle table (ids from its ``id`` column)."""
    if column not in particles.columns:
        have = ", ".join(c for c in COLOR_COLUMNS if c in particles.columns) or "none"
        raise ValueError(f"the particle table has no column {column!r} (columns to colour by: {have})")
    lo, hi = _FIXED_RANGES.get(column, (None, None))
    return color_by_values(particles["id"].to_numpy(), particles[column].to_numpy(dtype=float), lo, hi)


# --------------------------------------------------------------------------------- the table


def _with_index(particles: pd.DataFrame) -> pd.DataFrame:
    """The table with napari's ``index`` column (= label id) first, so the viewer finds each
    particle's row under the cursor."""
    table = particles.drop(columns="index", errors="ignore").reset_index(drop=True)
    table.insert(0, "index", table["id"].to_numpy() if "id" in table else np.zeros(0, np.int64))
    return table


def _merge_by_id(fresh: pd.DataFrame, old: pd.DataFrame | None) -> pd.DataFrame:
    """``fresh`` plus the columns of ``old`` it lacks (score, order, ...), matched by ``id``;
    ids that ``old`` does not know get NaN. A column ``fresh`` has only as NaN (e.g. the mean
    intensity, measured without an image) keeps ``old``'s values."""
    if old is None or len(old) == 0 or "id" not in old:
        return fresh
    old = old.drop(columns="index", errors="ignore").drop_duplicates("id").set_index("id")
    ids = fresh["id"]
    out = fresh.copy()
    for column in old.columns:
        if column not in out or out[column].isna().all():
            out[column] = ids.map(old[column]).to_numpy()
    return out


def particle_table(labels: np.ndarray, features: pd.DataFrame | None = None, nm_per_px: float | None = None,
                   image: np.ndarray | None = None) -> pd.DataFrame:
    """The particle table of a label image as it is now: sizes measured afresh
    (:func:`sagegan.particles.measure`), other columns of ``features`` (``score``, order) kept
    for the ids that still exist. This is what the CSV writer saves after labels were edited.
    """
    from ..particles import measure

    labels = _labels_2d(labels)
    fresh = measure(labels, image=image, nm_per_px=nm_per_px)
    return _with_index(_merge_by_id(fresh, features))


def _labels_2d(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {arr.shape}")
    if arr.dtype.kind not in "uib":
        raise ValueError(f"expected integer labels, got {arr.dtype}")
    return arr


#: Columns a Labels layer's table shows first (napari's features table): the sizes in nm, the score.
_FIRST_COLUMNS = ("id", "ecd_nm", "area_nm2", "feret_max_nm", "feret_min_nm", "score")


def labels_layer_data(labels: np.ndarray, particles: pd.DataFrame, *, name: str = "particles",
                      nm_per_px: float | None = None, color_by: str = "score",
                      metadata: Mapping[str, Any] | None = None) -> LayerData:
    """A Labels layer: ``particles`` as its ``features`` (the sizes in nm and the score first,
    for napari's features table), coloured by the column ``color_by`` (:func:`color_by_column`;
    a column the table lacks leaves napari's random colours)."""
    first = [c for c in _FIRST_COLUMNS if c in particles.columns]
    table = _with_index(particles[first + [c for c in particles.columns if c not in first]])
    attributes: dict[str, Any] = {
        "name": name,
        "features": table,
        "scale": (nm_per_px, nm_per_px) if nm_per_px else (1.0, 1.0),
        "metadata": {"nm_per_px": nm_per_px, **(metadata or {}), "color_by": color_by},
    }
    if nm_per_px:
        attributes["units"] = ("nm", "nm")
    if color_by in table.columns:
        attributes["colormap"] = color_by_column(table, color_by)
    return labels, attributes, "labels"


# ------------------------------------------------------------------------------- segmenting


def _grey(image: Any) -> np.ndarray:
    """A 2-D float32 image from a layer's data (grey, or RGB(A) by luminance)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grey or RGB image, got shape {arr.shape} "
                         "(stacks and multi-channel images are not segmented)")
    return arr.astype(np.float32)


def _check_crop(crop_bottom: int, height: int) -> int:
    crop = int(crop_bottom or 0)
    if not 0 <= crop < height:
        raise ValueError(f"cannot leave out {crop} rows of an image {height} rows high")
    return crop


def segment_layer(image: Any, *, model: str | Path | None = None, nm_per_px: float | None = None,
                  diameter_px: float | None = None, diameter_nm: float | None = None,
                  min_score: float | None = None, crop_bottom: int = 0, color_by: str = "score",
                  name: str = "particles") -> LayerData:
    """Segment an image layer's data into a Labels layer (:func:`sagegan.segment`).

    Parameters
    ----------
    image : (H, W) array, or RGB(A).
    model : None or ``"general"`` for the bundled model, or a RUN folder.
    nm_per_px : pixel size, for sizes in nm and for ``diameter_nm``.
    diameter_px, diameter_nm : a typical particle diameter, instead of the zoom search.
    min_score : drop particles scoring lower; None: the model's tuned threshold.
    crop_bottom : rows at the bottom (a data bar) left out: the labels cover the whole image,
        with no particles there.
    color_by : column of the particle table that colours the particles.

    Returns
    -------
    napari layer data ``(labels, attributes, "labels")``: ``features`` is the particle table
    (``id``, sizes in px and nm, ``score``, ...), ``metadata`` holds ``nm_per_px``, ``model``,
    ``warnings`` (the one-line notes of :func:`sagegan.segment`) and ``crop_bottom``.
    """
    import sagegan

    grey = _grey(image)
    crop = _check_crop(crop_bottom, grey.shape[0])
    if diameter_nm is not None and not nm_per_px:
        raise ValueError("a particle size in nm needs the pixel size, which this image does not record; "
                         "give the size in px")
    model = None if model in (None, "", "general") else model
    top = grey[: grey.shape[0] - crop]
    result = sagegan.segment(top, model, nm_per_px=nm_per_px, diameter_px=diameter_px, diameter_nm=diameter_nm,
                             min_score=min_score)
    labels = np.zeros(grey.shape, result.labels.dtype)
    labels[: top.shape[0]] = result.labels
    metadata = {"model": str(model or "general"), "warnings": list(result.warnings), "crop_bottom": crop}
    return labels_layer_data(labels, result.particles, name=name, nm_per_px=nm_per_px, color_by=color_by,
                             metadata=metadata)


# ------------------------------------------------------------------------------------ order


@dataclass
class OrderAnalysis:
    """The spatial order of one label image, for a viewer.

    Attributes
    ----------
    particles : per-particle table (:func:`sagegan.analyze.analyze_image`: sizes, ``psi6_abs``,
        ``psi4_abs``, ``coordination``, ``order_edge``...), with napari's ``index`` column.
    summary : the image's summary dict (``psi6_local_mean``, ``lattice_type``, ``order_verdict``...).
    verdict : :func:`sagegan.order.order_verdict`, or None with too few particles.
    column : the column the colours show (``psi6_abs`` or ``psi4_abs``).
    colormap : :func:`color_by_values` of that column over [0, 1]; edge particles (their
        neighbour shell may be cut by the border) in :data:`UNDEFINED_RGBA`.
    text : a few lines for people (:func:`order_text`), the summary's notes included.
    """

    particles: pd.DataFrame
    summary: dict
    verdict: str | None
    column: str
    colormap: dict
    text: str = ""


def analyze_order(labels: np.ndarray, nm_per_px: float | None = None, crop_bottom: int = 0,
                  symmetry: str = "auto") -> OrderAnalysis:
    """Per-particle bond order and the order verdict of a label image
    (:func:`sagegan.analyze.analyze_image`, as ``sagegan analyze`` computes them).

    ``symmetry`` picks the colours: ``"psi6"``, ``"psi4"``, or ``"auto"`` (the lattice the
    analysis finds: ψ4 for square arrays, ψ6 otherwise). Rows under ``crop_bottom`` are left out.

    Example
    -------
    >>> from sagegan.simulate import simulate_micrograph                      # doctest: +SKIP
    >>> analyze_order(simulate_micrograph(256, seed=1).labels).verdict        # doctest: +SKIP
    'ordered hexagonal'
    """
    from ..analyze import analyze_image

    if symmetry not in ("auto", "psi6", "psi4"):
        raise ValueError(f"symmetry must be 'auto', 'psi6' or 'psi4', got {symmetry!r}")
    labels = _labels_2d(labels)
    crop = _check_crop(crop_bottom, labels.shape[0])
    analysis = analyze_image(labels[: labels.shape[0] - crop], nm_per_px=nm_per_px)
    summary = analysis.summary
    if symmetry == "auto":
        symmetry = "psi4" if summary["lattice_type"] == "square" else "psi6"
    column = f"{symmetry}_abs"
    particles = _with_index(analysis.particles)
    colormap = color_by_values(particles["id"].to_numpy(), particles[column].to_numpy(dtype=float), 0.0, 1.0)
    return OrderAnalysis(particles, summary, summary["order_verdict"], column, colormap, order_text(summary, column))


def order_text(summary: Mapping[str, Any], column: str = "psi6_abs") -> str:
    """The order summary in a few lines (what the "Analyze order" widget shows)."""
    def num(key: str, digits: int = 3) -> str:
        value = summary.get(key)
        return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}g}"

    symbol = "ψ4" if column.startswith("psi4") else "ψ6"
    lines = [
        f"order: {summary.get('order_verdict') or 'no verdict (too few particles with a complete neighbour shell)'}",
        f"particles: {summary['n_particles']} ({summary['n_particles_order']} with a complete neighbour shell)",
        f"<|ψ6|> {num('psi6_local_mean')}, <|ψ4|> {num('psi4_local_mean')}; "
        f"global ψ6 {num('psi6_global')}, ψ4 {num('psi4_global')}",
        f"lattice: {summary.get('lattice_type') or 'n/a'}, constant {num('lattice_constant_px')} px"
        + (f" = {num('lattice_constant_nm')} nm" if summary.get("lattice_constant_nm") is not None else ""),
        f"defects: {summary['n_fivefold']} five-fold, {summary['n_sevenfold']} seven-fold; "
        f"{summary['n_domains']} orientation domain(s)",
        f"colour: |{symbol}| 0 (dark blue) to 1 (yellow); grey: at the border, left out",
    ]
    return "\n".join(lines + [f"note: {n}" for n in summary.get("notes", [])])


# ------------------------------------------------------------------------------------ writing


def pixel_size_text(nm_per_px: float | None, source: str | None = None) -> str:
    """One line saying the pixel size and where it came from, as the "Segment particles" widget
    shows it.

    >>> pixel_size_text(1.4925, "scale bar: '100 nm' over 67 px")
    "pixel size 1.49 nm (scale bar: '100 nm' over 67 px)"
    >>> pixel_size_text(None)
    'pixel size unknown: sizes in px (no calibration in the file, no scale bar read)'
    """
    if not nm_per_px:
        return "pixel size unknown: sizes in px (no calibration in the file, no scale bar read)"
    return f"pixel size {nm_per_px:.3g} nm" + (f" ({source})" if source and source != "unknown" else "")


def layer_nm_per_px(attributes: Mapping[str, Any]) -> float | None:
    """The pixel size of a layer: its ``metadata["nm_per_px"]``, else its scale when its units
    are nm (a layer drawn over a calibrated image), else None."""
    nm = (attributes.get("metadata") or {}).get("nm_per_px")
    if nm:
        return float(nm)
    units = [str(u) for u in attributes.get("units") or ()]
    scale = list(attributes["scale"]) if attributes.get("scale") is not None else []
    if units and all(u in ("nm", "nanometer") for u in units) and scale and float(scale[-1]) > 0:
        return float(scale[-1])
    return None


def write_labels_tiff(path: str, data: Any, attributes: Mapping[str, Any]) -> list[str]:
    """napari's writer hook for a Labels layer: a calibrated TIFF (:func:`sagegan.io.write_labels`),
    which ``sagegan analyze`` and Fiji read with its pixel size."""
    written = write_labels(path, _labels_2d(data), layer_nm_per_px(attributes))
    return [str(written)]


def write_particles_csv(path: str, data: Any, attributes: Mapping[str, Any]) -> list[str]:
    """napari's writer hook for a Labels layer's particle table as CSV: :func:`particle_table`
    of the labels as they are now (edits included)."""
    table = particle_table(data, attributes.get("features"), layer_nm_per_px(attributes))
    text = table.drop(columns="index").to_csv(index=False)
    return [str(atomic_write_text(path, text))]


def write_rois_zip(path: str, data: Any, attributes: Mapping[str, Any]) -> list[str]:
    """napari's writer hook for a Labels layer as ImageJ ROIs: a ZIP that Fiji's ROI Manager
    opens, one polygon ROI per particle named by its id (the ``id`` of the CSV), as
    ``sagegan segment --save-rois`` writes ``<stem>_rois.zip``
    (:func:`sagegan.particles.pixel_outlines`, :func:`sagegan.io.write_imagej_rois`).

    The outlines run along pixel edges in the layer's pixel coordinates, so they lie over the
    image file the layer was read from, data bar included. Filled by ImageJ, a ROI covers exactly
    its particle's pixels (holes filled; of a particle painted in pieces, the largest piece).
    Like the TIFF and CSV writers, every particle of the labels is written: segmenting leaves
    none in a data bar's rows (``crop_bottom``).
    """
    from ..particles import pixel_outlines

    outlines = pixel_outlines(_labels_2d(data))
    return [str(write_imagej_rois(path, outlines))]


# ------------------------------------------------------------------------------- sample data


def sample_micrograph(size: int = 256, layout: str = "hex", seed: int = 7) -> list[LayerData]:
    """Sample data: a simulated SEM micrograph (no pixel size) and its true labels (hidden)."""
    from ..simulate import simulate_micrograph

    sim = simulate_micrograph(size, layout=layout, modality="sem", seed=seed, mean_diameter_px=16.0)
    image = micrograph_layer_data(Micrograph(sim.image, None, {"pixel_size_source": "simulated (no pixel size)"}),
                                  name=f"simulated {layout}")
    truth = labels_layer_data(sim.labels, sim.truth[["id"]], name=f"simulated {layout} truth", color_by="")
    truth[1]["visible"] = False
    return [image, truth]


# --------------------------------------------------------------------------- saving corrections


@dataclass
class CorrectionsSaved:
    """What :func:`save_corrections` wrote."""

    folder: Path
    image_path: Path
    mask_path: Path
    n_particles: int
    mask_kind: str        # how train-seg's default --mask-kind auto reads the mask
    note: str = ""        # one line for the user, when there is something to say


def _strip_suffixes(name: str) -> str:
    while Path(name).suffix.lower() in IMAGE_SUFFIXES + EM_SUFFIXES:
        name = Path(name).stem
    return name


def _stem_of(name: str) -> str:
    """The stem an image is saved under: ``name`` without image suffixes (as find_pairs pairs them)."""
    raw = str(name).strip()
    stem = _strip_suffixes(raw)
    if not stem or stem.startswith(".") or "/" in raw or "\\" in raw:
        raise ValueError(f"{name!r} is not a usable image name (a file name without folders)")
    return stem


def _write_image_tiff(path: Path, image: np.ndarray, nm_per_px: float | None) -> Path:
    """The image as a TIFF :func:`sagegan.io.read_micrograph` reads back unchanged: 8/16-bit and
    float32 as they are, with ImageJ resolution tags in nm when calibrated."""
    import tifffile

    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16, np.float32):
        arr = arr.astype(np.float32)
    options: dict[str, Any] = {}
    if nm_per_px:
        options = {"imagej": True, "resolution": (1.0 / nm_per_px, 1.0 / nm_per_px), "metadata": {"unit": "nm"}}
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, compression="zlib", **options))


def save_corrections(folder: str | Path, name: str, image: Any, labels: Any, nm_per_px: float | None = None,
                     crop_bottom: int = 0, overwrite: bool = False) -> CorrectionsSaved:
    """Save an image and its (corrected) labels as one pair of a training data folder.

    Writes ``folder/images/<name>.tif`` (the image as it is, calibrated when ``nm_per_px`` is
    given) and ``folder/masks/<name>.tif`` (the label ids, :func:`sagegan.io.write_labels`), the
    layout that ``sagegan train-seg --data FOLDER --init general`` and ``check-data`` read. Rows
    under ``crop_bottom`` (a data bar) are left out of both. The mask is read back as training
    reads it (``--mask-kind auto``); ``note`` says when that differs from the labels as drawn
    (pass ``--mask-kind labels`` then).

    Raises
    ------
    FileExistsError
        ``<name>`` is in the folder already (as any image type) and ``overwrite`` is False;
        with ``overwrite``, the files of that name are replaced, whatever their type.
    ValueError
        Image and labels differ in size, or the name is unusable.
    """
    folder = Path(folder)
    stem = _stem_of(name)
    labels = _labels_2d(labels)
    arr = np.asarray(image)
    if arr.shape[:2] != labels.shape:
        raise ValueError(f"the image is {arr.shape[1]}x{arr.shape[0]} px but the labels are "
                         f"{labels.shape[1]}x{labels.shape[0]} px")
    crop = _check_crop(crop_bottom, labels.shape[0])
    height = labels.shape[0] - crop
    arr, labels = arr[:height], labels[:height]
    images, masks = folder / "images", folder / "masks"
    suffixes = IMAGE_SUFFIXES + EM_SUFFIXES
    existing = [p for d in (images, masks) if d.is_dir() for p in sorted(d.iterdir())
                if p.is_file() and p.suffix.lower() in suffixes and _strip_suffixes(p.name) == stem]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: {stem!r} is in {folder} already; choose another name or overwrite it")
    image_path, mask_path = images / f"{stem}.tif", masks / f"{stem}.tif"
    for p in existing:
        if p not in (image_path, mask_path):
            p.unlink()  # the same stem as another type would pair ambiguously
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    _write_image_tiff(image_path, arr, nm_per_px)
    write_labels(mask_path, labels, nm_per_px)
    n = int(np.unique(labels[labels > 0]).size)
    kind = guess_mask_kind(labels)[0] if n else "binary"
    note = ""
    if n == 0:
        note = "the labels hold no particles: training takes this image as background only"
    else:
        try:
            same = _same_partition(read_mask(mask_path), labels)
        except InputError:
            same = False
        if not same:
            note = ("train-seg's default --mask-kind auto reads this mask differently from the labels as drawn "
                    "(an id in several pieces?); pass --mask-kind labels")
    return CorrectionsSaved(folder, image_path, mask_path, n, kind, note)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images split the pixels into the same particles, whatever their ids."""
    if a.shape != b.shape or not np.array_equal(a > 0, b > 0):
        return False
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size
