"""The plugin's widgets: thin magicgui forms over :mod:`sagegan.napari._core`.

Each widget is a ``magic_factory`` whose function takes the viewer and layers, calls one plain
function, puts the result into the viewer and returns a few lines of text, which the widget
shows in a text box under its button. Expected errors (a bad size hint, a name already saved, an unreadable
model folder) are shown there and as a napari notification, not as a traceback.

This is the only module of sagegan that imports napari and magicgui.
"""

from pathlib import Path
from typing import Any, Callable

import napari
from magicgui import magic_factory
from magicgui.widgets import FunctionGui, TextEdit
from napari.layers import Image, Labels
from napari.utils.notifications import show_error

from ..io import InputError
from ._core import (COLOR_COLUMNS, _merge_by_id, _with_index, analyze_order, color_by_column, layer_nm_per_px,
                    pixel_size_text, save_corrections, segment_layer)

_EXPECTED = (ValueError, InputError, FileExistsError, FileNotFoundError)


def _result_label(gui: FunctionGui) -> None:
    """Add a read-only text box under the button that shows what the function returned."""
    box = TextEdit(name="result", label=" ", value="", gui_only=True)
    box.read_only = True
    box.native.setMinimumHeight(150)
    gui.append(box)
    gui.called.connect(lambda text: setattr(box, "value", text or ""))


def _reporting(run: Callable[[], str]) -> str:
    try:
        return run()
    except _EXPECTED as exc:
        message = f"error: {exc}"
        show_error(message)
        return message


def _nm_per_px(layer: Any) -> float | None:
    return layer_nm_per_px({"metadata": layer.metadata, "units": layer.units, "scale": layer.scale})


def _put_labels(viewer: "napari.viewer.ViewerModel", layer_data: tuple, like: Any = None) -> Labels:
    """Add a Labels layer, or replace the data, table and colours of the one of that name."""
    data, attributes, _ = layer_data
    attributes = dict(attributes)
    if like is not None:  # lie exactly over the image it came from
        attributes.update(scale=tuple(like.scale), translate=tuple(like.translate), units=like.units)
    name = attributes["name"]
    layer = viewer.layers[name] if name in viewer.layers else None
    if not isinstance(layer, Labels):
        return viewer.add_labels(data, **attributes)
    layer.data = data
    for key in ("scale", "translate", "units", "features", "metadata", "colormap"):
        if key in attributes:
            setattr(layer, key, attributes[key])
    return layer


@magic_factory(
    call_button="Segment",
    widget_init=_result_label,
    model={"tooltip": "'general' (the bundled model) or a RUN folder written by sagegan train-seg"},
    size_hint={"min": 0.0, "max": 10000.0, "step": 1.0,
               "tooltip": "typical particle diameter; 0: the model finds the size itself"},
    size_unit={"choices": ["px", "nm"]},
    tuned_min_score={"label": "model's min score", "tooltip": "drop particles under the model's tuned score"},
    min_score={"min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "used when the box above is unticked"},
    color_by={"choices": [c for c in COLOR_COLUMNS if not c.startswith("psi")]},
)
def segment_widget(viewer: "napari.viewer.Viewer", image: Image, model: str = "general", size_hint: float = 0.0,
                   size_unit: str = "px", tuned_min_score: bool = True, min_score: float = 0.5,
                   color_by: str = "score") -> str:
    """Segment particles: a Labels layer ``<image> particles`` with the particle table as features."""
    def run() -> str:
        if image is None:
            raise ValueError("open a micrograph first")
        nm = _nm_per_px(image)
        crop = int(image.metadata.get("crop_bottom") or 0)
        hint = {} if not size_hint else {f"diameter_{size_unit}": float(size_hint)}
        layer_data = segment_layer(image.data, model=model.strip() or None, nm_per_px=nm, crop_bottom=crop,
                                   min_score=None if tuned_min_score else float(min_score),
                                   color_by=color_by, name=f"{image.name} particles", **hint)
        layer_data[1]["metadata"]["pixel_size_source"] = image.metadata.get("pixel_size_source")
        layer = _put_labels(viewer, layer_data, like=image)
        table = layer.features
        source = image.metadata.get("pixel_size_source") or ("the layer's scale" if nm else None)
        lines = [f"{len(table)} particles" + (f" (the data bar's {crop} rows left out)" if crop else ""),
                 pixel_size_text(nm, source)]
        if len(table):
            size = "ecd_nm" if "ecd_nm" in table else "ecd_px"
            lines.append(f"median diameter {table[size].median():.3g} {size[4:]}, "
                         f"median score {table['score'].median():.2f}")
        if color_by not in table:
            lines.append(f"no {color_by} column to colour by (is the pixel size known?)")
        lines += [f"warning: {w}" for w in layer.metadata.get("warnings", [])]
        return "\n".join(lines)

    return _reporting(run)


@magic_factory(call_button="Analyze order", widget_init=_result_label,
               symmetry={"choices": ["auto", "psi6", "psi4"], "tooltip": "which |ψ| colours the particles"})
def order_widget(viewer: "napari.viewer.Viewer", particles: Labels, symmetry: str = "auto") -> str:
    """Analyze order: per-particle |ψ6| (or |ψ4|) as colours, the verdict and summary as text."""
    def run() -> str:
        if particles is None:
            raise ValueError("segment an image, or open a label image, first")
        crop = int(particles.metadata.get("crop_bottom") or 0)
        result = analyze_order(particles.data, _nm_per_px(particles), crop, symmetry)
        particles.features = _with_index(_merge_by_id(result.particles, particles.features))
        particles.colormap = result.colormap
        particles.metadata = {**particles.metadata, "order_summary": result.summary,
                              "order_verdict": result.verdict, "color_by": result.column}
        return result.text

    return _reporting(run)


@magic_factory(call_button="Colour", widget_init=_result_label, column={"choices": list(COLOR_COLUMNS)})
def color_widget(particles: Labels, column: str = "score") -> str:
    """Colour particles by a column of the layer's particle table."""
    def run() -> str:
        if particles is None:
            raise ValueError("choose a Labels layer")
        particles.colormap = color_by_column(particles.features, column)
        particles.metadata = {**particles.metadata, "color_by": column}
        values = particles.features[column]
        return f"{column}: {values.min():.3g} to {values.max():.3g} (dark blue to yellow); magenta: painted since"

    return _reporting(run)


@magic_factory(call_button="Save corrections", widget_init=_result_label,
               folder={"mode": "d", "tooltip": "a data folder: images/ and masks/ are made in it"},
               file_name={"tooltip": "name of the pair (no extension); empty: the image layer's name"})
def corrections_widget(image: Image, particles: Labels, folder: Path = Path("corrections"), file_name: str = "",
                       overwrite: bool = False) -> str:
    """Save corrections: the image and its edited labels as a training pair for train-seg."""
    def run() -> str:
        if image is None or particles is None:
            raise ValueError("choose the image and its Labels layer")
        crop = int(particles.metadata.get("crop_bottom", image.metadata.get("crop_bottom")) or 0)
        saved = save_corrections(folder, file_name.strip() or image.name, image.data, particles.data,
                                 nm_per_px=_nm_per_px(image), crop_bottom=crop, overwrite=overwrite)
        lines = [f"saved {saved.n_particles} particles: {saved.image_path} + {saved.mask_path}",
                 f"fine-tune: sagegan train-seg --data {saved.folder} --init general --out runs/mine"]
        return "\n".join(lines + ([f"note: {saved.note}"] if saved.note else []))

    return _reporting(run)
