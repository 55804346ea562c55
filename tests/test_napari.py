"""The napari plugin: manifest, reader, segmenting, order, writers, sample data, saved corrections.

Three layers, each skipping with its reason where its pieces are missing:

- the plain functions of ``sagegan.napari._core``, with neither napari nor Qt;
- the widgets, on Qt's offscreen platform with a napari ``ViewerModel`` (no OpenGL canvas);
- the whole plugin in a ``napari.Viewer`` found through its manifest, which needs OpenGL: an X
  display, for which the module starts Xvfb when none is set and Xvfb is installed.

Segmenting uses the bundled general model with a size hint (about 0.3 s per 256 px image).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import sagegan.napari
from sagegan.io import EM_SUFFIXES, IMAGE_SUFFIXES, load_pairs, read_mask, read_pixel_size, resolve_data_dirs
from sagegan.napari import (analyze_order, color_by_values, labels_layer_data, read_micrograph_layers,
                            sample_micrograph, save_corrections, segment_layer)
from sagegan.napari._core import (NEW_PARTICLE_RGBA, UNDEFINED_RGBA, _same_partition, get_reader, pixel_size_text,
                                  write_labels_tiff, write_particles_csv, write_rois_zip)
from sagegan.scalebar import ocr_problem
from sagegan.simulate import add_scale_bar, simulate_micrograph

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # npe2 and napari on pydantic 2
    pytest.mark.filterwarnings("ignore:System theme detection:UserWarning"),  # napari on Qt 5
]

MANIFEST = Path(sagegan.napari.__file__).with_name("napari.yaml")  # package data, beside the package
DIAMETER = 16.0


@pytest.fixture(scope="module")
def sim():
    return simulate_micrograph(256, layout="hex", modality="sem", seed=3, mean_diameter_px=DIAMETER)


@pytest.fixture(scope="module")
def segmented(sim):
    """The simulated image segmented with the bundled model, as Labels layer data."""
    return segment_layer(sim.image, diameter_px=DIAMETER, nm_per_px=2.0)


def _calibrated_tiff(path: Path, image: np.ndarray, nm_per_px: float) -> Path:
    tifffile.imwrite(path, (image * 65535).astype(np.uint16), imagej=True,
                     resolution=(1 / nm_per_px, 1 / nm_per_px), metadata={"unit": "nm"})
    return path


def _png(path: Path, image: np.ndarray) -> Path:
    import imageio.v3 as iio

    iio.imwrite(path, np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return path


def _assert_rois_fill_their_particles(zip_path, labels: np.ndarray) -> list:
    """The ROIs of ``zip_path``: one polygon per particle of ``labels``, named by its id, which
    ImageJ fills (pixel centres inside, even-odd rule) to exactly the particle's pixels, holes
    filled (as tests/test_infer.py checks ``segment --save-rois``). Returns the ROIs."""
    from matplotlib.path import Path as Polygon
    from roifile import ROI_TYPE, roiread
    from scipy import ndimage as ndi

    rois = roiread(zip_path)
    ids = np.unique(labels[labels > 0])
    assert [r.name for r in rois] == [str(i) for i in ids]
    boxes = ndi.find_objects(labels)
    for roi in rois:
        assert roi.roitype == ROI_TYPE.POLYGON
        rows, cols = boxes[int(roi.name) - 1]  # the particle's box: the polygon must fill it alone
        yy, xx = np.mgrid[rows, cols]
        centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
        filled = Polygon(roi.coordinates()).contains_points(centres).reshape(yy.shape)
        particle = ndi.binary_fill_holes(labels[rows, cols] == int(roi.name), structure=np.ones((3, 3)))
        np.testing.assert_array_equal(filled, particle, err_msg=f"ROI {roi.name}")
        x, y = roi.coordinates().T
        assert (x.min(), y.min(), x.max(), y.max()) == (cols.start, rows.start, cols.stop, rows.stop)
    return rois


# ------------------------------------------------------------------------------ no napari, no Qt


def test_manifest_is_valid_and_registered():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "sagegan"
    assert {w.display_name for w in manifest.contributions.widgets} >= {
        "Segment particles", "Analyze order", "Save corrections"}
    writers = {w.display_name: w for w in manifest.contributions.writers}
    assert writers["ImageJ ROIs (sagegan)"].filename_extensions == [".zip"]
    assert {str(t) for t in writers["ImageJ ROIs (sagegan)"].layer_types} == {"labels"}
    patterns = set(manifest.contributions.readers[0].filename_patterns)
    assert {f"*{s}" for s in IMAGE_SUFFIXES + EM_SUFFIXES} <= patterns
    pytest.importorskip("napari")
    pytest.importorskip("magicgui")
    manifest.validate_imports()  # every python_name resolves, the widgets' module included
    from importlib.metadata import entry_points

    assert "sagegan.napari:napari.yaml" in {e.value for e in entry_points(group="napari.manifest")}, \
        "the napari.manifest entry point is missing: reinstall sagegan (pip install -e .)"


def test_sagegan_imports_without_napari():
    """Blocking napari, magicgui and Qt: sagegan and the plugin's plain functions still work."""
    code = (
        "import sys\n"
        "for m in ('napari', 'magicgui', 'qtpy', 'PyQt5', 'npe2'): sys.modules[m] = None\n"
        "import sagegan, sagegan.napari, sagegan.io, sagegan.cli\n"
        "from sagegan.napari import sample_micrograph\n"
        "layers = sample_micrograph(64)\n"
        "assert layers[0][2] == 'image' and layers[0][0].shape == (64, 64)\n"
        "try:\n"
        "    import sagegan.napari._widgets\n"
        "except ImportError:\n"
        "    print('widgets need napari')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "widgets need napari" in out.stdout


def test_reader_scales_the_layer_by_the_pixel_size(tmp_path, sim):
    path = _calibrated_tiff(tmp_path / "cal.tif", sim.image, 2.5)
    reader = get_reader(str(path))
    assert reader is not None
    [(data, attributes, kind)] = reader(str(path))
    assert kind == "image" and data.shape == sim.image.shape
    assert attributes["scale"] == (2.5, 2.5) and attributes["units"] == ("nm", "nm")
    meta = attributes["metadata"]
    assert meta["nm_per_px"] == pytest.approx(2.5)
    assert meta["pixel_size_source"] == "ImageJ resolution"
    assert meta["path"] == str(path) and meta["crop_bottom"] == 0

    import imageio.v3 as iio

    iio.imwrite(tmp_path / "plain.png", (sim.image * 255).astype(np.uint8))
    [(_, attributes, _)] = read_micrograph_layers(tmp_path / "plain.png")
    assert attributes["scale"] == (1.0, 1.0) and "units" not in attributes
    assert attributes["metadata"]["nm_per_px"] is None
    assert attributes["metadata"]["pixel_size_source"]  # "unknown", or what read_micrograph found
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None


def test_reader_keeps_a_data_bar_visible_and_segmenting_leaves_it_out(tmp_path, sim):
    """A PNG with an SEM data bar: the layer shows every row, knows the bar's rows, and
    segmenting leaves them out."""
    import imageio.v3 as iio

    from sagegan.simulate import add_scale_bar

    barred = add_scale_bar(sim, nm_per_px=2.0, seed=0, style="data-bar", font_px=14)
    rows = barred.image.shape[0] - sim.image.shape[0]
    iio.imwrite(tmp_path / "bar.png", np.round(barred.image * 255).astype(np.uint8))
    [(data, attributes, _)] = read_micrograph_layers(tmp_path / "bar.png")
    assert data.shape == barred.image.shape and attributes["metadata"]["crop_bottom"] == rows
    labels, _, _ = segment_layer(data, diameter_px=DIAMETER, crop_bottom=rows)
    assert labels.shape == barred.image.shape and not labels[-rows:].any() and labels[:-rows].any()


@pytest.mark.skipif(ocr_problem() is not None, reason=f"{ocr_problem()}")
def test_reader_calibrates_a_png_from_its_scale_bar(tmp_path, sim):
    """A PNG export without metadata: the pixel size is read off its burnt-in scale bar."""
    barred = add_scale_bar(sim, nm_per_px=1.5, seed=5, style="boxed", font="DejaVuSans.ttf", font_px=14)
    [(data, attributes, _)] = read_micrograph_layers(_png(tmp_path / "export.png", barred.image))
    meta = attributes["metadata"]
    assert meta["calibration"] == "scale bar" and meta["nm_per_px"] == pytest.approx(1.5, rel=0.02)
    assert meta["pixel_size_source"].startswith("scale bar: '") and attributes["units"] == ("nm", "nm")
    assert data.shape == barred.image.shape and meta["crop_bottom"] == 0
    assert pixel_size_text(meta["nm_per_px"], meta["pixel_size_source"]).startswith("pixel size 1.")


def test_color_by_values():
    colors = color_by_values([1, 2, 5], [0.0, 1.0, np.nan], vmin=0.0, vmax=1.0)
    from matplotlib import colormaps

    np.testing.assert_allclose(colors[1], colormaps["viridis"](0.0))
    np.testing.assert_allclose(colors[2], colormaps["viridis"](1.0))
    assert colors[5] == UNDEFINED_RGBA and colors[0][3] == 0.0 and colors[None] == NEW_PARTICLE_RGBA
    with pytest.raises(ValueError, match="2 ids but 1 values"):
        color_by_values([1, 2], [0.5])


def test_segment_layer_gives_labels_with_their_particle_table(sim, segmented):
    labels, attributes, kind = segmented
    assert kind == "labels" and labels.shape == sim.image.shape
    table = attributes["features"]
    ids = np.unique(labels[labels > 0])
    assert list(table["id"]) == list(ids) and list(table["index"]) == list(ids)
    assert {"score", "ecd_px", "ecd_nm", "area_px"} <= set(table.columns)
    assert table["ecd_nm"].to_numpy() == pytest.approx(2.0 * table["ecd_px"].to_numpy())
    assert 0.8 * sim.labels.max() <= len(table) <= 1.2 * sim.labels.max()
    assert attributes["scale"] == (2.0, 2.0)
    assert attributes["metadata"]["model"] == "general" and attributes["metadata"]["color_by"] == "score"
    colors = attributes["colormap"]
    assert set(ids) <= set(colors) and colors[None] == NEW_PARTICLE_RGBA


def test_segment_layer_without_a_pixel_size(sim):
    labels, attributes, _ = segment_layer(sim.image, diameter_px=DIAMETER, crop_bottom=40, color_by="ecd_px")
    assert attributes["metadata"]["crop_bottom"] == 40 and attributes["scale"] == (1.0, 1.0)
    assert "ecd_nm" not in attributes["features"] and attributes["metadata"]["color_by"] == "ecd_px"
    with pytest.raises(ValueError, match="needs the pixel size"):
        segment_layer(sim.image, diameter_nm=30.0)


def test_analyze_order_colours_by_bond_order():
    hexagonal = simulate_micrograph(256, layout="hex", seed=1, mean_diameter_px=DIAMETER, render=False)
    result = analyze_order(hexagonal.labels, nm_per_px=2.0)
    assert result.verdict == "ordered hexagonal" and result.column == "psi6_abs"
    table = result.particles
    assert {"index", "id", "psi6_abs", "psi4_abs", "order_edge"} <= set(table.columns)
    from matplotlib import colormaps

    inner = table[~table["order_edge"]].iloc[0]
    np.testing.assert_allclose(result.colormap[int(inner["id"])], colormaps["viridis"](inner["psi6_abs"]))
    edge = table[table["order_edge"]].iloc[0]
    assert result.colormap[int(edge["id"])] == UNDEFINED_RGBA
    assert "ordered hexagonal" in result.text and "nm" in result.text
    assert result.summary["psi6_local_mean"] > 0.7

    square = simulate_micrograph(256, layout="square", seed=1, mean_diameter_px=DIAMETER, render=False)
    assert analyze_order(square.labels).column == "psi4_abs"
    assert analyze_order(square.labels, symmetry="psi6").column == "psi6_abs"


def test_writers_save_labels_and_the_table_as_edited(tmp_path, segmented):
    labels, attributes, _ = segmented
    labels = labels.copy()
    gone = int(attributes["features"]["id"].iloc[0])
    labels[labels == gone] = 0          # erased in napari
    labels[:6, :6] = 9999               # painted
    [tif] = write_labels_tiff(str(tmp_path / "l.tif"), labels, attributes)
    assert read_pixel_size(tif) == pytest.approx(2.0)
    np.testing.assert_array_equal(read_mask(tif, kind="labels"), labels)
    [csv] = write_particles_csv(str(tmp_path / "p.csv"), labels, attributes)
    table = pd.read_csv(csv)
    assert gone not in set(table["id"]) and 9999 in set(table["id"]) and "index" not in table
    assert np.isnan(table.loc[table["id"] == 9999, "score"]).all()
    kept = table[table["id"] != 9999].set_index("id")["score"]
    before = attributes["features"].set_index("id")["score"]
    np.testing.assert_allclose(kept, before.loc[kept.index])
    assert "ecd_nm" in table


def test_rois_writer_gives_one_imagej_polygon_per_particle(tmp_path, segmented):
    """The ".zip" writer: the labels as edited, one ROI per particle named by its id, each
    covering exactly its particle's pixels when ImageJ fills it."""
    labels, attributes, _ = segmented
    labels = labels.copy()
    gone = int(attributes["features"]["id"].iloc[0])
    labels[labels == gone] = 0                # erased in napari
    labels[100:112, 0:9] = 9999               # painted at the border
    labels[100:112, 3:6][4:7, 1] = 0          # with a hole
    [path] = write_rois_zip(str(tmp_path / "grid_rois.zip"), labels, attributes)
    assert path == str(tmp_path / "grid_rois.zip")
    rois = _assert_rois_fill_their_particles(path, labels)
    names = {r.name for r in rois}
    assert gone > 0 and str(gone) not in names and "9999" in names
    [csv] = write_particles_csv(str(tmp_path / "p.csv"), labels, attributes)
    assert [r.name for r in rois] == [str(i) for i in pd.read_csv(csv)["id"]]  # the CSV's rows, in order

    [empty] = write_rois_zip(str(tmp_path / "none.zip"), np.zeros((8, 8), np.int32), {})
    import zipfile

    assert zipfile.ZipFile(empty).namelist() == []


def test_sample_data_is_a_simulated_micrograph():
    image, truth = sample_micrograph(128)
    assert image[2] == "image" and image[0].shape == (128, 128)
    assert truth[2] == "labels" and truth[0].max() > 5 and truth[1]["visible"] is False


def test_saved_corrections_read_back_as_training_data(tmp_path, sim):
    labels = sim.labels.copy()
    labels[labels == 3] = 0
    saved = save_corrections(tmp_path / "data", "grid.png", sim.image, labels, nm_per_px=2.0, crop_bottom=16)
    assert saved.image_path == tmp_path / "data" / "images" / "grid.tif"
    assert saved.mask_path == tmp_path / "data" / "masks" / "grid.tif"
    assert saved.mask_kind == "labels" and saved.note == ""
    [sample] = load_pairs(*resolve_data_dirs(tmp_path / "data"))   # as train-seg --data reads it
    assert sample.stem == "grid" and sample.nm_per_px == pytest.approx(2.0)
    np.testing.assert_array_equal(sample.image, sim.image[:-16])
    assert _same_partition(sample.labels, labels[:-16])

    with pytest.raises(FileExistsError, match="already"):
        save_corrections(tmp_path / "data", "grid", sim.image, labels)
    pieces = np.zeros_like(labels)
    pieces[10:20, 10:20] = pieces[40:50, 40:50] = 5  # one id in two pieces reads as two particles by default
    saved = save_corrections(tmp_path / "data", "grid", sim.image, pieces, overwrite=True)
    assert "--mask-kind labels" in saved.note
    [sample] = load_pairs(tmp_path / "data" / "images", tmp_path / "data" / "masks", mask_kind="labels")
    np.testing.assert_array_equal(sample.labels, pieces)
    with pytest.raises(ValueError, match="px but the labels"):
        save_corrections(tmp_path / "other", "x", sim.image[:100], labels)


# ------------------------------------------------------------------- widgets, Qt offscreen


@pytest.fixture(scope="module")
def qt_app():
    """A QApplication on Qt's offscreen platform, or a skip saying why there is none."""
    pytest.importorskip("napari", reason="napari is not installed (pip install 'sagegan[napari]')")
    pytest.importorskip("magicgui")
    pytest.importorskip("qtpy")
    # a Qt platform that cannot start aborts its process: try it in a child first
    probe = subprocess.run([sys.executable, "-c", "from qtpy.QtWidgets import QApplication; QApplication([])"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        lines = (probe.stderr or "no message").strip().splitlines()
        pytest.skip(f"a Qt application cannot start here ({lines[-1]}); install the system libraries "
                    "that .ci/run installs")
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.fixture
def viewer_model(qt_app):
    from napari.components import ViewerModel

    return ViewerModel()


def _add(viewer, layer_data):
    from napari.layers import Layer

    layer = Layer.create(*layer_data)
    viewer.layers.append(layer)
    return layer


def test_segment_widget_adds_a_coloured_labels_layer(tmp_path, sim, viewer_model):
    from napari.layers import Labels

    from sagegan.napari._widgets import color_widget, segment_widget

    [image_data] = read_micrograph_layers(_calibrated_tiff(tmp_path / "cal.tif", sim.image, 2.0))
    image = _add(viewer_model, image_data)
    widget = segment_widget()
    text = widget(viewer=viewer_model, image=image, size_hint=DIAMETER)
    layer = viewer_model.layers["cal particles"]
    assert isinstance(layer, Labels) and widget.result.value == text
    assert text.startswith(f"{len(layer.features)} particles") and "nm" in text
    assert "pixel size 2 nm (ImageJ resolution)" in text.splitlines()
    assert {"score", "ecd_nm"} <= set(layer.features.columns)
    assert tuple(layer.scale) == tuple(image.scale) == (2.0, 2.0)
    assert layer.metadata["pixel_size_source"] == "ImageJ resolution"
    row = layer.features.iloc[0]
    from matplotlib import colormaps

    np.testing.assert_allclose(layer.colormap.color_dict[int(row["id"])], colormaps["viridis"](row["score"]),
                               atol=1e-6)

    widget(viewer=viewer_model, image=image, size_hint=32.0, size_unit="nm", color_by="ecd_nm")
    assert [lay.name for lay in viewer_model.layers] == ["cal", "cal particles"]  # replaced, not added
    assert layer.metadata["color_by"] == "ecd_nm"

    colour = color_widget()
    assert colour(particles=layer, column="circularity").startswith("circularity")
    assert colour(particles=layer, column="psi6_abs").startswith("error: the particle table has no column")


def test_order_widget_shows_the_verdict(viewer_model):
    from sagegan.napari._widgets import order_widget

    hexagonal = simulate_micrograph(256, layout="hex", seed=1, mean_diameter_px=DIAMETER, render=False)
    layer = _add(viewer_model, labels_layer_data(hexagonal.labels, hexagonal.truth[["id", "diameter_px"]],
                                                 name="truth", color_by=""))
    widget = order_widget()
    text = widget(viewer=viewer_model, particles=layer)
    assert text.startswith("order: ordered hexagonal") and widget.result.value == text
    assert layer.metadata["order_verdict"] == "ordered hexagonal"
    assert layer.metadata["order_summary"]["lattice_type"] == "hex"
    assert {"psi6_abs", "diameter_px"} <= set(layer.features.columns)  # the old columns are kept
    inner = layer.features[~layer.features["order_edge"].astype(bool)].iloc[0]
    from matplotlib import colormaps

    np.testing.assert_allclose(layer.colormap.color_dict[int(inner["id"])], colormaps["viridis"](inner["psi6_abs"]),
                               atol=1e-6)


def test_corrections_widget_saves_a_training_pair(tmp_path, sim, viewer_model):
    from sagegan.napari._widgets import corrections_widget

    image = _add(viewer_model, sample_micrograph(128)[0])
    labels = _add(viewer_model, labels_layer_data(simulate_micrograph(128, seed=7, mean_diameter_px=16.0,
                                                                      render=False).labels, pd.DataFrame({"id": []})))
    labels.data[labels.data == 1] = 0   # an erased particle
    widget = corrections_widget()
    text = widget(image=image, particles=labels, folder=tmp_path / "fixes")
    assert text.startswith("saved") and "train-seg --data" in text
    [sample] = load_pairs(tmp_path / "fixes" / "images", tmp_path / "fixes" / "masks")
    assert sample.stem == "simulated hex" and _same_partition(sample.labels, labels.data)
    again = widget(image=image, particles=labels, folder=tmp_path / "fixes")
    assert again.startswith("error:") and "already" in again


# ------------------------------------------------------------------ the plugin in a viewer


def _virtual_display() -> str | None:
    """Start Xvfb for OpenGL when no X display is set; the display name, or None.

    A shell waits for this process to end and then ends Xvfb: ending it earlier would make Xlib
    end this process (its connection is open until the process exits).
    """
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    if not shutil.which("Xvfb"):
        return None
    import select

    read, write = os.pipe()
    script = ('Xvfb -displayfd "$1" -screen 0 1280x1024x24 -nolisten tcp >/dev/null 2>&1 & x=$!; '
              'while kill -0 "$2" 2>/dev/null; do sleep 1; done; kill "$x"')
    subprocess.Popen(["sh", "-c", script, "sh", str(write), str(os.getpid())], pass_fds=(write,),
                     start_new_session=True)
    os.close(write)
    number = b""
    while not number.endswith(b"\n") and select.select([read], [], [], 20)[0]:
        chunk = os.read(read, 16)
        if not chunk:
            break
        number += chunk
    os.close(read)
    return f":{number.decode().strip()}" if number.strip() else None


@pytest.fixture(scope="module")
def gl_viewer(qt_app):
    display = _virtual_display()
    if display is None:
        pytest.skip("no X display for OpenGL (napari's canvas): install Xvfb, as .ci/run does")
    had_display = "DISPLAY" in os.environ
    os.environ["DISPLAY"] = display
    import napari
    import npe2

    manager = npe2.PluginManager.instance()
    if "sagegan" not in manager._manifests:  # an install older than the entry point
        manager.register(npe2.PluginManifest.from_file(MANIFEST))
    try:
        viewer = napari.Viewer(show=False)
        viewer.add_image(np.zeros((16, 16), np.float32), name="probe")
    except Exception as exc:  # no OpenGL context on this display
        pytest.skip(f"napari's canvas cannot start on {display} ({type(exc).__name__}: {exc})")
    viewer.layers.clear()
    yield viewer
    viewer.close()
    if not had_display:
        del os.environ["DISPLAY"]


def test_plugin_opens_segments_and_saves_in_a_viewer(tmp_path, sim, gl_viewer):
    viewer = gl_viewer
    path = _calibrated_tiff(tmp_path / "grid.tif", sim.image, 2.0)
    [image] = viewer.open(str(path), plugin="sagegan")
    assert tuple(image.scale) == (2.0, 2.0) and image.metadata["nm_per_px"] == pytest.approx(2.0)
    _, segment = viewer.window.add_plugin_dock_widget("sagegan", "Segment particles")
    segment.image.value = image
    segment.size_hint.value = DIAMETER
    segment()
    labels = viewer.layers["grid particles"]
    assert len(labels.features) > 100
    _, order = viewer.window.add_plugin_dock_widget("sagegan", "Analyze order")
    order.particles.value = labels
    assert order().startswith("order: ordered hexagonal")
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=False, flash=False)  # the window: canvas (OpenGL) and widgets
    assert shot.ndim == 3 and shot.shape[-1] == 4
    [csv] = labels.save(str(tmp_path / "particles.csv"), plugin="sagegan")
    assert len(pd.read_csv(csv)) == len(labels.features)
    [tif] = labels.save(str(tmp_path / "particles.tif"), plugin="sagegan")
    assert read_pixel_size(tif) == pytest.approx(2.0)
    np.testing.assert_array_equal(read_mask(tif, kind="labels"), labels.data)
    [rois] = labels.save(str(tmp_path / "grid_rois.zip"), plugin="sagegan")  # "ImageJ ROIs (sagegan)"
    assert len(_assert_rois_fill_their_particles(rois, labels.data)) == len(labels.features)
