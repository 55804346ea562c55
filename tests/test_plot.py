"""sagegan.plot: figures and overlays from arrays, never shown or saved."""

import base64
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps

from sagegan.plot import (FIGURE_DPI, FIGURE_WIDTH_IN, bond_order_map_figure, figure_to_data_uri,
                          figure_to_png, image_to_data_uri, image_to_png, new_figure,
                          nn_distance_histogram_figure, overlay_heatmap, overlay_outlines,
                          pair_correlation_figure, segmentation_overlay, size_histogram_figure,
                          training_curves_figure)


def square_labels(shape=(40, 40)):
    """Two 10 x 10 squares."""
    labels = np.zeros(shape, np.int32)
    labels[5:15, 5:15] = 1
    labels[20:30, 20:30] = 2
    return labels


def ramp(shape=(40, 40)):
    return np.tile(np.linspace(0, 1, shape[1], dtype=np.float32), (shape[0], 1))


def decode(uri):
    assert uri.startswith("data:image/png;base64,")
    return iio.imread(base64.b64decode(uri.split(",", 1)[1]), extension=".png")


def test_import_needs_neither_torch_nor_pyplot():
    code = "import sys, sagegan.plot; print('torch' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------------------- encoding
def test_figures_render_at_the_figure_size_and_dpi():
    fig = new_figure(height_in=2.0)
    fig.add_subplot().plot([0, 1], [0, 1])
    png = iio.imread(figure_to_png(fig), extension=".png")
    assert png.shape[:2] == (round(2.0 * FIGURE_DPI), round(FIGURE_WIDTH_IN * FIGURE_DPI))
    assert decode(figure_to_data_uri(fig)).shape == png.shape


def test_image_encoding_keeps_values_and_refuses_bad_arrays():
    grey = np.array([[0.0, 0.5], [1.0, 2.0]], np.float32)  # floats are clipped to [0, 1]
    assert decode(image_to_data_uri(grey)).tolist() == [[0, 128], [255, 255]]
    assert iio.imread(image_to_png(np.array([[True, False]])), extension=".png").tolist() == [[255, 0]]
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(iio.imread(image_to_png(rgb), extension=".png"), rgb)
    with pytest.raises(ValueError, match="shape"):
        image_to_png(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8, bool or float"):
        image_to_png(np.zeros((2, 2), np.int32))


# ---------------------------------------------------------------------------- figures
def test_size_histogram_counts_every_finite_value_and_scales_the_fit_to_counts():
    values = np.random.default_rng(0).lognormal(3.0, 0.1, 300)
    fig = size_histogram_figure(np.r_[values, np.nan], unit="nm", lognormal_mu=3.0, lognormal_sigma=0.1)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 300
    (curve,) = ax.get_lines()
    width = ax.patches[0].get_width()
    peak = 300 * width / (np.sqrt(2 * np.pi) * 0.1 * np.exp(3.0 - 0.1**2 / 2))  # count density at the mode
    assert curve.get_ydata().max() == pytest.approx(peak, rel=0.01)
    assert ax.get_xlabel() == "ECD (nm)"
    assert "median 20.1 nm" in ax.get_legend().get_texts()[1].get_text()


def test_empty_inputs_give_a_figure_with_a_message():
    for fig in (size_histogram_figure([]), nn_distance_histogram_figure([np.nan]),
                pair_correlation_figure([], [])):
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert len(texts) == 1 and texts[0]
        assert not fig.axes[0].patches and not fig.axes[0].get_lines()


def test_distance_and_pair_correlation_figures_mark_the_lattice_constant():
    fig = nn_distance_histogram_figure([19.0, 20.0, 21.0, np.nan], lattice_constant=20.0)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 3
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [20.0]
    r = np.linspace(0.5, 50, 100)
    fig = pair_correlation_figure(r, 1 + np.exp(-((r - 20) ** 2)), unit="nm", lattice_constant=20.0)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and lines[2].get_xdata()[0] == 20.0
    assert "a = 20 nm" in fig.axes[0].get_legend().get_texts()[2].get_text()


def test_bond_order_map_colours_by_orientation_and_checks_lengths():
    labels = square_labels()
    psi = np.array([1.0 + 0j, np.nan])  # particle 2 undefined (near the border)
    fig = bond_order_map_figure(labels, [1, 2], psi, k=6, image=ramp())
    overlay = fig.axes[0].get_images()[1].get_array()
    assert overlay.shape == (40, 40, 4)
    assert overlay[10, 10, 3] == pytest.approx(0.95) and overlay[25, 25, 3] == 0.0
    assert overlay[0, 0, 3] == 0.0  # background
    title = bond_order_map_figure(labels, [1, 2], [np.nan, np.nan]).axes[0].get_title()
    assert title == "ψ6 undefined for every particle"
    with pytest.raises(ValueError, match="same length"):
        bond_order_map_figure(labels, [1, 2], [1.0])


def test_training_curves_draw_the_named_columns_present():
    log = pd.DataFrame({"step": [0, 10, 20], "loss": [1.0, 0.5, 0.25]})
    ax = training_curves_figure(log, [("loss", "training loss"), ("val_dice", "val Dice")], "phase 1").axes[0]
    (line,) = ax.get_lines()
    assert line.get_ydata().tolist() == [1.0, 0.5, 0.25] and ax.get_title() == "phase 1"


# ---------------------------------------------------------------------------- overlays
def test_overlay_outlines_colours_exactly_the_inner_boundary():
    labels = square_labels()
    rgb = overlay_outlines(ramp(), labels)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    outline = np.all(rgb == (255, 60, 40), axis=2)
    assert outline.sum() == 2 * 36  # the 36 edge pixels of each 10 x 10 square
    assert outline[5, 5:15].all() and not outline[6:14, 6:14].any()
    grey = rgb[~outline]
    assert np.array_equal(grey[:, 0], grey[:, 1])


def test_overlay_heatmap_blends_the_colour_map_over_the_image():
    black = np.zeros((8, 8), np.float32)
    rgb = overlay_heatmap(black, np.ones((8, 8)), alpha=0.5)
    assert rgb.dtype == np.uint8
    assert np.array_equal(rgb[0, 0], (255 * 0.5 * np.array(colormaps["inferno"](1.0)[:3])).astype(np.uint8))


def test_segmentation_overlay_resizes_for_display():
    labels = square_labels()
    small = segmentation_overlay(ramp(), labels, max_side=160)
    assert small.shape == (80, 80, 3)  # enlarged 2x: 160 // 2 // 40
    big = segmentation_overlay(np.zeros((400, 300), np.float32), np.zeros((400, 300), np.int32), max_side=100)
    assert big.shape == (100, 75, 3)  # reduced 4x
    coloured = segmentation_overlay(None, labels, max_side=80)
    assert coloured.shape == (40, 40, 3)
    assert tuple(coloured[0, 0]) == (31, 31, 31)  # dark background
    assert tuple(coloured[10, 10]) != tuple(coloured[25, 25])  # one colour per particle


def test_overlay_ids_are_drawn_at_the_centroids_only_when_asked():
    labels = np.zeros((60, 60), np.int32)
    labels[5:35, 5:35] = 12
    labels[40:58, 40:58] = 3
    plain, named = overlay_outlines(ramp((60, 60)), labels), overlay_outlines(ramp((60, 60)), labels, ids=True)
    assert named.shape == plain.shape and named.dtype == plain.dtype == np.uint8
    assert (named[15:25, 12:28] != plain[15:25, 12:28]).any()  # "12" around the centroid (19.5, 19.5)
    assert (named[45:54, 44:54] != plain[45:54, 44:54]).any()
    assert (named[:4] == plain[:4]).all()  # far from every centroid nothing changes
    tiny = np.kron(np.arange(1, 101).reshape(10, 10), np.ones((4, 4), np.int32))  # 4 px particles
    assert (overlay_outlines(ramp((40, 40)), tiny, ids=True) == overlay_outlines(ramp((40, 40)), tiny)).all()
