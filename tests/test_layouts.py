"""Tests for the layout model: fitting real masks, drawing new layouts, augmenting real masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sagegan.layouts import (LayoutModel, augment_real_mask, draw_layout, draw_layouts,
                             fit_layout_model, layout_stats)
from sagegan.order import summarize_order
from sagegan.particles import measure
from sagegan.simulate import simulate_micrograph


def _masks(n, size, layout, seed, **kwargs):
    return [simulate_micrograph(size, layout, seed=[seed, i], render=False, **kwargs).labels
            for i in range(n)]


def _mean_ecd_and_psi6(label_images):
    """Mean ECD of the particles not touching the border (`particles.measure`) and the mean over
    images of the local bond order ``mean |psi6|`` (Delaunay neighbours, `order.summarize_order`).
    """
    ecd, psi6 = [], []
    for labels in label_images:
        table = measure(labels)
        ecd.append(table.loc[~table["touches_border"], "ecd_px"].to_numpy())
        psi6.append(summarize_order(table[["centroid_x", "centroid_y"]].to_numpy(),
                                    labels.shape)["psi6_local_mean"])
    return float(np.concatenate(ecd).mean()), float(np.mean(psi6))


@pytest.fixture(scope="module")
def hex_masks():
    return _masks(6, 256, "hex", 11, mean_diameter_px=20.0)


@pytest.fixture(scope="module")
def hex_model(hex_masks):
    return fit_layout_model(hex_masks)


def _is_label_map(labels, shape):
    assert labels.dtype == np.int32 and labels.shape == shape
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


# --------------------------------------------------------------------------------------------
# the project's requirement


def test_new_hex_layouts_reproduce_diameter_and_psi6(hex_masks, hex_model):
    """New layouts fitted to a simulated hexagonal set reproduce its mean diameter within 5 % and
    psi6 within 0.1. psi6 statistic on both sides: the mean over images of the local bond order
    mean |psi6| of non-edge particles (Delaunay neighbours), as `order.summarize_order` gives it.
    """
    new = draw_layouts(hex_model, 6, (256, 256), seed=5)
    for labels in new:
        _is_label_map(labels, (256, 256))
        assert not any(np.array_equal(labels, real) for real in hex_masks)  # really new
    real_ecd, real_psi6 = _mean_ecd_and_psi6(hex_masks)
    new_ecd, new_psi6 = _mean_ecd_and_psi6(new)
    assert new_ecd == pytest.approx(real_ecd, rel=0.05)
    assert abs(new_psi6 - real_psi6) < 0.1
    assert real_psi6 > 0.75  # the set is ordered, so the comparison means something
    # The number density follows too (spacing, vacancies and coverage together).
    real, drawn = layout_stats(hex_masks), layout_stats(new)
    assert drawn["particles_per_10k_px"] == pytest.approx(real["particles_per_10k_px"], rel=0.1)


def test_hex_model_recovers_the_simulation_parameters(hex_model):
    m = hex_model
    assert m.shape == "disc"
    assert m.layout_weights["hex"] == 1.0
    assert m.mean_diameter_px == pytest.approx(20.0, rel=0.03)  # simulated mean diameter 20 px
    assert m.diameter_sigma == pytest.approx(0.08, abs=0.03)
    assert m.gap_fraction == pytest.approx(0.08, abs=0.04)
    assert m.jitter_fraction == pytest.approx(0.03, abs=0.02)
    assert m.vacancy_fraction == pytest.approx(0.03, abs=0.02)
    assert m.coverage >= 0.9  # a full monolayer
    assert m.image_shape == (256, 256) and m.n_images == 6
    assert m.training_stats["psi6_local_mean"] > 0.75


# --------------------------------------------------------------------------------------------
# layouts and shapes


def test_square_set_is_square():
    model = fit_layout_model(_masks(3, 192, "square", 12, mean_diameter_px=16.0))
    assert max(model.layout_weights, key=model.layout_weights.get) == "square"
    assert model.layout_weights["square"] >= 2 / 3
    drawn = layout_stats(draw_layouts(model, 2, (160, 160), seed=0))
    assert drawn["psi4_local_mean"] > drawn["psi6_local_mean"]


def test_sparse_random_set_is_sparse():
    model = fit_layout_model(_masks(3, 256, "sparse", 13, mean_diameter_px=16.0))
    assert max(model.layout_weights, key=model.layout_weights.get) == "sparse"
    assert model.layout_weights["sparse"] >= 2 / 3
    assert layout_stats(draw_layouts(model, 2, (256, 256), seed=0))["foreground_fraction"] < 0.3


def test_dense_random_set_is_random():
    model = fit_layout_model(_masks(3, 192, "random", 14, mean_diameter_px=16.0))
    assert max(model.layout_weights, key=model.layout_weights.get) == "random"
    assert model.layout_weights["random"] >= 2 / 3


def test_cubes_are_cubes():
    model = fit_layout_model(_masks(2, 160, "hex", 15, shape="cube", mean_diameter_px=16.0))
    assert model.shape == "cube"
    table = measure(draw_layout(model, (160, 160), 0))
    assert table["aspect_ratio"].median() > 1.17  # squarish, as cubes are drawn


def test_rods_are_rods():
    model = fit_layout_model(_masks(2, 192, "random", 16, shape="rod", mean_diameter_px=10.0,
                                    aspect_ratio=3.0))
    assert model.shape == "rod"
    assert model.aspect_ratio == pytest.approx(3.0, rel=0.2)
    table = measure(draw_layout(model, (192, 192), 0))
    assert table.loc[~table["touches_border"], "aspect_ratio"].median() > 2.0


def test_islands_give_partial_coverage():
    masks = _masks(3, 256, "hex", 17, mean_diameter_px=16.0, coverage=0.6)
    model = fit_layout_model(masks)
    assert model.coverage == pytest.approx(0.6, abs=0.15)
    real, drawn = layout_stats(masks), layout_stats(draw_layouts(model, 3, (256, 256), seed=1))
    assert drawn["foreground_fraction"] == pytest.approx(real["foreground_fraction"], rel=0.25)


def test_mixed_magnifications_keep_per_image_sizes():
    """A set of small-particle and large-particle images draws layouts of one size or the other,
    not of the pooled mean in between."""
    masks = (_masks(2, 160, "hex", 18, mean_diameter_px=10.0)
             + _masks(2, 160, "random", 19, mean_diameter_px=24.0))
    model = fit_layout_model(masks)
    assert len(model.image_profiles) == 4
    for labels in draw_layouts(model, 6, (160, 160), seed=3):
        table = measure(labels)
        ecd = table.loc[~table["touches_border"], "ecd_px"].mean()
        assert min(abs(ecd / 10.0 - 1.0), abs(ecd / 24.0 - 1.0)) < 0.15


# --------------------------------------------------------------------------------------------
# determinism, serialisation, speed


def test_drawing_is_deterministic(hex_model):
    a = draw_layout(hex_model, (128, 160), 3)
    _is_label_map(a, (128, 160))
    assert np.array_equal(a, draw_layout(hex_model, (128, 160), 3))
    assert np.array_equal(a, draw_layout(hex_model, (128, 160), np.random.default_rng(3)))
    assert not np.array_equal(a, draw_layout(hex_model, (128, 160), 4))
    three = draw_layouts(hex_model, 3, 96, seed=2)
    two = draw_layouts(hex_model, 2, 96, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(two, three))  # layout i does not depend on n
    assert draw_layouts(hex_model, 0, 96, seed=2) == []


def test_fit_is_deterministic(hex_masks, hex_model):
    assert fit_layout_model(hex_masks[:2]).to_dict() == fit_layout_model(hex_masks[:2]).to_dict()


def test_model_round_trips_through_json(hex_model):
    text = json.dumps(hex_model.to_dict())
    back = LayoutModel.from_dict(json.loads(text))
    assert back == hex_model
    assert back.to_dict() == hex_model.to_dict()
    assert np.array_equal(draw_layout(back, 96, 0), draw_layout(hex_model, 96, 0))
    with pytest.raises(ValueError, match="unknown"):
        LayoutModel.from_dict({**hex_model.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="missing"):
        LayoutModel.from_dict({k: v for k, v in hex_model.to_dict().items() if k != "shape"})


def test_hand_made_model_draws():
    model = LayoutModel(diameter_mu=np.log(12.0), diameter_sigma=0.1, shape="disc",
                        aspect_ratio=1.0, layout_weights={"square": 1.0}, gap_fraction=0.1,
                        coverage=1.0, jitter_fraction=0.02, vacancy_fraction=0.0, n_grains=1.0,
                        image_shape=(128, 128), n_images=1)
    labels = draw_layout(model, (128, 128), 0)
    assert summarize_order(measure(labels)[["centroid_x", "centroid_y"]].to_numpy(),
                           labels.shape)["psi4_local_mean"] > 0.7


def test_render_false_gives_the_same_labels():
    full = simulate_micrograph(96, "hex", seed=3, mean_diameter_px=12.0)
    labels_only = simulate_micrograph(96, "hex", seed=3, mean_diameter_px=12.0, render=False)
    assert labels_only.image is None and full.image is not None
    assert np.array_equal(full.labels, labels_only.labels)
    assert full.truth.equals(labels_only.truth) and full.params == labels_only.params


# --------------------------------------------------------------------------------------------
# augmenting real masks


def test_augment_keeps_every_particle_without_crop(hex_masks):
    labels = hex_masks[0]
    areas = np.sort(np.bincount(labels.ravel())[1:])
    for seed in range(6):
        out = augment_real_mask(labels, np.random.default_rng(seed))
        _is_label_map(out, labels.shape)
        assert out.max() == labels.max()
        assert np.array_equal(np.sort(np.bincount(out.ravel())[1:]), areas)
    assert np.array_equal(augment_real_mask(labels, 4), augment_real_mask(labels, 4))


def test_augment_flips_turns_and_crops():
    labels = np.zeros((40, 60), np.int32)
    labels[2:6, 3:9] = 7
    labels[30:35, 50:55] = 3
    shapes = {augment_real_mask(labels, s).shape for s in range(12)}
    assert shapes == {(40, 60), (60, 40)}  # quarter turns happen
    for s in range(12):
        out = augment_real_mask(labels, s, crop_shape=(32, 50))
        assert out.shape == (32, 50)  # turns that would not fit the crop are avoided
        assert set(np.unique(out)) <= {0, 1, 2} and np.array_equal(np.unique(out),
                                                                     np.arange(out.max() + 1))
    assert augment_real_mask(labels, 0, crop_shape=(100, 16)).shape in {(40, 16), (60, 16)}
    with pytest.raises(ValueError):
        augment_real_mask(labels, 0, crop_shape=(0, 5))


# --------------------------------------------------------------------------------------------
# errors


def test_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        fit_layout_model([])
    with pytest.raises(ValueError, match="no particles"):
        fit_layout_model([np.zeros((64, 64), np.int32)] * 2)
    with pytest.raises(ValueError, match="integer"):
        fit_layout_model([np.zeros((64, 64))])
    with pytest.raises(ValueError, match="sequence"):
        fit_layout_model(np.zeros((64, 64), np.int32))
    with pytest.raises(ValueError, match="no particles"):
        layout_stats([np.zeros((32, 32), np.int32)])
    model = LayoutModel(np.log(10.0), 0.1, "disc", 1.0, {"hex": 1.0}, 0.1, 1.0, 0.03, 0.0, 1.0,
                        (64, 64), 1)
    with pytest.raises(ValueError, match="16"):
        draw_layout(model, (8, 64), 0)
    with pytest.raises(ValueError, match="seed"):
        draw_layout(model, 64, None)
    with pytest.raises(ValueError, match="layout_weights"):
        draw_layout(LayoutModel(np.log(10.0), 0.1, "disc", 1.0, {"hex": 0.0}, 0.1, 1.0, 0.03, 0.0,
                                1.0, (64, 64), 1), 64, 0)
    with pytest.raises(ValueError, match="unknown layouts"):
        draw_layout(LayoutModel(np.log(10.0), 0.1, "disc", 1.0, {"kagome": 1.0}, 0.1, 1.0, 0.03,
                                0.0, 1.0, (64, 64), 1), 64, 0)


def test_docstring_examples():
    import doctest

    from sagegan import layouts as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
