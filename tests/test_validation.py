"""Validation during training: the held-out split, scores, checkpoint choice, tuned post-processing."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

import sagegan.validation as validation
from sagegan.data import PreparedImage, class_map, normalised_distance, prepare
from sagegan.io import Sample
from sagegan.runs import MIN_AREA_FRACTION, Segmenter, load_segmenter


def _discs(size=48, centres=((12, 12), (12, 34), (34, 22)), r=6) -> np.ndarray:
    yy, xx = np.indices((size, size))
    labels = np.zeros((size, size), np.int32)
    for k, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return labels


def test_split_validation_holds_out_a_share():
    samples = [Sample(f"s{i}", np.zeros((4, 4)), np.zeros((4, 4), np.int32)) for i in range(20)]
    train, val = validation.split_validation(samples, 0.1, seed=0)
    assert len(val) == 2 and len(train) == 18
    assert sorted(s.stem for s in train + val) == sorted(s.stem for s in samples)
    assert [s.stem for s in validation.split_validation(samples, 0.1, seed=0)[1]] == [s.stem for s in val]
    assert [s.stem for s in validation.split_validation(samples, 0.1, seed=1)[1]] != [s.stem for s in val]
    assert len(validation.split_validation(samples[:3], 0.01, seed=0)[1]) == 1  # at least one
    assert validation.split_validation(samples[:1], 0.5, seed=0) == (samples[:1], [])  # nothing to hold out


def test_validate_scores_the_maps_of_each_image(monkeypatch):
    """A perfect and an empty prediction: F1 and Dice of 1 and 0, averaged over the images."""
    labels = _discs()
    perfect = PreparedImage("p", np.ones((48, 48), np.float32), labels, normalised_distance(labels), 1.0, 12.0)
    empty = PreparedImage("e", np.zeros((48, 48), np.float32), labels, normalised_distance(labels), 1.0, 12.0)
    onehot = np.stack([class_map(labels) == c for c in range(3)]).astype(np.float32)
    nothing = np.stack([np.ones_like(onehot[0]), np.zeros_like(onehot[0]), np.zeros_like(onehot[0])])

    def fake_predict(seg, image, scale):
        if image.any():
            return {"probs": onehot, "distance": normalised_distance(labels)}
        return {"probs": nothing, "distance": np.zeros((48, 48), np.float32)}

    monkeypatch.setattr(validation, "predict_maps", fake_predict)
    seg = Segmenter(nn.Identity(), {"canonical_diameter_px": None})
    assert validation.validate(seg, [perfect]) == {(0.5, 0.5): (1.0, 1.0)}
    assert validation.validate(seg, [empty]) == {(0.5, 0.5): (0.0, 0.0)}
    scores = validation.validate(seg, [perfect, empty], [(0.5, 0.5), (0.4, 0.3, 0.2)])
    assert scores == {(0.5, 0.5): (0.5, 0.5), (0.4, 0.3, 0.2): (0.5, 0.5)}


def test_selection_score_takes_the_best_watershed_setting(monkeypatch):
    grid_scores = {(0.4, 0.3): (0.2, 0.9), (0.4, 0.5): (0.6, 0.7), (0.5, 0.4): (0.6, 0.8), (0.5, 0.6): (0.0, 0.8)}
    monkeypatch.setattr(validation, "validate", lambda seg, val, grid: {g: grid_scores[g] for g in grid})
    score, f1, dice = validation.selection_score(None, [])
    assert (f1, dice) == (0.6, 0.8) and score == pytest.approx(0.6 + validation.DICE_TIEBREAK * 0.8)


def test_tune_postprocess_returns_the_grid_point_with_the_best_f1(monkeypatch):
    calls = []

    def fake_validate(seg, val, grid):
        calls.append(list(grid))
        # F1 peaks at fg 0.6, seed 0.4, min area 0.2 (the last only in the second stage)
        return {(fg, sd, fr): (1.0 - (fg - 0.6) ** 2 - (sd - 0.4) ** 2 - (fr - 0.2) ** 2, fg) for fg, sd, fr in grid}

    monkeypatch.setattr(validation, "validate", fake_validate)
    # the thresholds are tuned at the default minimum area, whatever the model's config says
    seg = Segmenter(nn.Identity(), {"postprocess": {"min_area_fraction": 0.5}})
    settings, (f1, dice) = validation.tune_postprocess(seg, [])
    assert settings == {"fg_threshold": 0.6, "seed_threshold": 0.4, "min_area_fraction": 0.2}
    assert f1 == pytest.approx(1.0) and dice == 0.6
    first, second = calls
    assert len(first) == 15 and {fr for _, _, fr in first} == {MIN_AREA_FRACTION}
    assert {(fg, sd) for fg, sd, _ in second} == {(0.6, 0.4)} and len(second) == 5


def test_tune_postprocess_on_a_trained_model(seg_run):
    run, samples = seg_run
    seg = load_segmenter(run)
    val = [prepare(s, seg.canonical_diameter_px) for s in samples[:2]]
    settings, (f1, dice) = validation.tune_postprocess(seg, val)
    chosen = (settings["fg_threshold"], settings["seed_threshold"], settings["min_area_fraction"])
    assert validation.validate(seg, val, [chosen])[chosen] == (f1, dice)
    default = (0.5, 0.5, MIN_AREA_FRACTION)  # on the grid: the tuned setting can only do better
    assert f1 >= validation.validate(seg, val, [default])[default][0]
    assert f1 > 0.5
