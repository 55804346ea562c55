"""The classical baseline: threshold + distance watershed, and its grid tuning."""

from __future__ import annotations

import numpy as np
import pytest

from sagegan.classical import (QUICK_GRID, ClassicalParams, foreground_mask, grid_scores, segment_classical,
                               split_instances, tune_classical)
from sagegan.io import Sample
from sagegan.metrics import evaluate_pair
from sagegan.simulate import simulate_micrograph


def _sims(layout, modality, seeds, size=192):
    return [simulate_micrograph(size, layout=layout, modality=modality, seed=s, mean_diameter_px=18.0) for s in seeds]


def _discs(centres, r, shape=(64, 96)):
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = i
    return labels


def test_two_touching_discs_are_split():
    labels = _discs([(32, 30), (32, 48)], 10)  # overlapping discs: a neck between two centres
    for seeds in ("h_maxima", "peaks"):
        pred = split_instances(labels > 0, ClassicalParams(seeds=seeds, min_area_px=0))
        assert pred.max() == 2, seeds
        dominant = []
        for k in (1, 2):  # each disc is (almost all) one predicted particle, a different one each
            ids, counts = np.unique(pred[labels == k], return_counts=True)
            assert counts.max() / counts.sum() > 0.9
            dominant.append(ids[counts.argmax()])
        assert dominant[0] != dominant[1] and 0 not in dominant


def test_polarity_bright_dark_and_auto():
    labels = _discs([(20, 20), (40, 70)], 8)
    bright = np.where(labels > 0, 0.8, 0.2).astype(np.float32)
    dark = 1.0 - bright
    for image, polarity in ((bright, "bright"), (dark, "dark"), (bright, "auto"), (dark, "auto")):
        pred = segment_classical(image, ClassicalParams(polarity=polarity, sigma=0.5))
        assert pred.max() == 2, polarity
        assert evaluate_pair(pred, labels)["f1_50"] == 1.0
    # the wrong polarity finds the background instead
    assert evaluate_pair(segment_classical(bright, {"polarity": "dark", "sigma": 0.5}), labels)["f1_50"] == 0.0


def test_small_holes_filled_large_kept():
    mask = np.zeros((60, 60), bool)
    mask[5:25, 5:25] = True
    mask[14:16, 14:16] = False          # a 4-px hole: filled
    mask[30:58, 30:58] = True
    mask[38:50, 38:50] = False          # a 144-px hole: kept
    image = mask.astype(np.float32)
    fg = foreground_mask(image, ClassicalParams(polarity="bright", sigma=0, max_hole_area_px=32))
    assert fg[14, 14] and not fg[44, 44]


def test_min_area_removes_specks():
    labels = _discs([(30, 30)], 10)
    image = (labels > 0).astype(np.float32)
    image[5, 80] = 1.0  # a one-pixel speck
    assert segment_classical(image, ClassicalParams(polarity="bright", sigma=0, min_area_px=10)).max() == 1
    assert segment_classical(image, ClassicalParams(polarity="bright", sigma=0, min_area_px=0)).max() == 2


def test_invalid_input_and_params():
    with pytest.raises(ValueError, match="polarity"):
        ClassicalParams(polarity="grey")
    with pytest.raises(ValueError, match="seeds"):
        ClassicalParams(seeds="random")
    with pytest.raises(ValueError, match="2-D"):
        segment_classical(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        segment_classical(np.full((8, 8), np.nan))
    assert segment_classical(np.zeros((16, 16))).max() == 0  # a flat image has no particles


def test_pure_function_output_type():
    sim = _sims("sparse", "sem", [0])[0]
    image = sim.image.copy()
    labels = segment_classical(image)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert np.array_equal(image, sim.image)  # input untouched
    assert set(np.unique(labels)) == set(range(labels.max() + 1))  # consecutive ids


@pytest.mark.parametrize("layout,modality", [("sparse", "sem"), ("sparse", "tem"), ("random", "sem")])
def test_tuned_classical_on_simulated_images(layout, modality):
    """Tuned on two images, tested on two others: F1@0.5 > 0.5 where particles are apart or random."""
    sims = _sims(layout, modality, [10, 11, 12, 13])
    train = [Sample(f"t{i}", s.image, s.labels) for i, s in enumerate(sims[:2])]
    params = tune_classical(train, QUICK_GRID)
    assert isinstance(params, ClassicalParams)
    f1 = [evaluate_pair(segment_classical(s.image, params), s.labels)["f1_50"] for s in sims[2:]]
    assert np.mean(f1) > 0.5, (params, f1)


def test_tuning_uses_the_grid_and_subsamples():
    sims = _sims("sparse", "sem", [20, 21, 22])
    pairs = [(s.image, s.labels) for s in sims]
    grid = {"polarity": ("bright", "dark"), "sigma": (1.0,), "seeding": (("h_maxima", 0.3),), "min_area_px": (5, 10)}
    scores = grid_scores(pairs, grid)
    assert len(scores) == 4
    by_polarity = {p.polarity: f for p, f in scores if p.min_area_px == 5}
    assert by_polarity["bright"] > by_polarity["dark"]  # SEM: bright particles
    assert tune_classical(pairs, grid, max_images=1).polarity == "bright"
    with pytest.raises(ValueError, match="no samples"):
        tune_classical([])
    with pytest.raises(ValueError, match="one value"):
        grid_scores(pairs, {**grid, "max_hole_area_px": (8, 16)})
