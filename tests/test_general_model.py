"""The bundled general model and the user's path to numbers: model resolution and provenance,
per-particle scores, --min-score, size hints, fine-tuning with --init, the one-line API."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sagegan
from sagegan import runs
from sagegan.infer import particle_scores, segment_files, segment_image
from sagegan.io import InputError, InputWarning, write_image
from sagegan.runs import CONFIG_FILE, SEGMENTER_FILE, load_segmenter, resolve_model, weights_sha256
from sagegan.simulate import simulate_micrograph

BUNDLED = runs.BUNDLED_MODELS_DIR / runs.GENERAL_MODEL
EMPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emps"


@pytest.fixture()
def fake_bundle(seg_run, tmp_path, monkeypatch):
    """The tiny test run installed as the bundled general model, version 9.9."""
    models = tmp_path / "models"
    shutil.copytree(seg_run[0], models / "general", ignore=shutil.ignore_patterns("last.safetensors", "*.csv"))
    config = json.loads((models / "general" / CONFIG_FILE).read_text())
    (models / "general" / CONFIG_FILE).write_text(json.dumps({**config, "name": "general", "version": "9.9"}))
    monkeypatch.setattr(runs, "BUNDLED_MODELS_DIR", models)
    monkeypatch.chdir(tmp_path)
    return models / "general"


# ------------------------------------------------------------------------------ which model


def test_no_model_means_the_bundled_one(fake_bundle):
    assert resolve_model(None) == fake_bundle
    assert resolve_model("general") == fake_bundle
    assert resolve_model("general@9.9") == fake_bundle
    assert resolve_model("some/run") == Path("some/run")
    with pytest.raises(InputError, match="version 9.9"):
        resolve_model("general@1.0")


def test_a_local_general_folder_wins_with_a_note(fake_bundle, tmp_path):
    (tmp_path / "general").mkdir()
    with pytest.warns(InputWarning, match="not the bundled general model"):
        assert resolve_model("general") == Path("general")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_model(None) == fake_bundle  # no --model: always the bundled one


def test_missing_bundle_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "BUNDLED_MODELS_DIR", tmp_path / "nothing")
    with pytest.raises(InputError, match="no bundled general model"):
        resolve_model(None)


# ------------------------------------------------------------------------------ outputs


def test_segment_writes_scores_and_provenance(fake_bundle, seg_run, tmp_path):
    write_image(tmp_path / "in" / "a.png", seg_run[1][0].image)
    table = segment_files([tmp_path / "in"], None, tmp_path / "pred", nm_per_px=2.0, progress=False)
    assert len(table) > 5
    assert table["score"].between(0, 1).all()
    csv = pd.read_csv(tmp_path / "pred" / "particles.csv")
    assert csv["model_name"].eq("general").all() and csv["model_version"].astype(str).eq("9.9").all()
    assert csv["model_sha256"].eq(weights_sha256(fake_bundle / SEGMENTER_FILE)).all()
    assert csv["sagegan_version"].eq(sagegan.__version__).all()
    assert csv["nm_per_px_source"].eq("given by the user").all()
    config = json.loads((tmp_path / "pred" / "segment_config.json").read_text())
    assert config["model_version"] == "9.9" and config["model_sha256"] == csv["model_sha256"][0]

    strict = segment_files([tmp_path / "in"], None, tmp_path / "strict", progress=False,
                           min_score=float(np.median(table["score"])) + 1e-9)
    assert 0 < len(strict) < len(table) and strict["score"].min() >= np.median(table["score"]) - 1e-4


def test_particle_scores_prefer_confident_cored_particles():
    labels = np.zeros((20, 40), np.int32)
    labels[5:15, 5:15], labels[5:15, 25:35] = 1, 2
    probs = np.zeros((3, 20, 40), np.float32)
    probs[0] = 1.0
    probs[0][labels == 1], probs[0][labels == 2] = 0.05, 0.45
    distance = np.where(labels == 1, 1.0, np.where(labels == 2, 0.4, 0.0))
    scores = particle_scores(labels, probs, distance)
    assert scores.shape == (2,) and scores[0] == pytest.approx(0.95) and scores[1] < 0.3


def test_a_size_hint_replaces_the_zoom_search(seg_run):
    seg = load_segmenter(seg_run[0])
    image = seg_run[1][0].image
    auto = segment_image(seg, image)
    hinted = segment_image(seg, image, diameter_px=14.0)
    assert len(auto.passes) > 1 and hinted.passes == [hinted.scale]
    assert hinted.scale == pytest.approx(1.0) and hinted.labels.max() > 5


def test_diameter_nm_needs_a_pixel_size(seg_run, tmp_path):
    write_image(tmp_path / "in" / "a.png", seg_run[1][0].image)
    from sagegan.infer import segment_batch

    result = segment_batch([tmp_path / "in"], seg_run[0], tmp_path / "out", diameter_nm=28.0, progress=False)
    assert len(result.failures) == 1 and "--nm-per-px" in str(result.failures[0])
    result = segment_batch([tmp_path / "in"], seg_run[0], tmp_path / "out", diameter_nm=28.0, nm_per_px=2.0,
                           progress=False)
    assert not result.failures and len(result.particles) > 5


def test_empty_image_warns(seg_run):
    result = segment_image(load_segmenter(seg_run[0]), np.full((96, 96), 0.5, np.float32), diameter_px=14.0)
    assert result.labels.max() == 0 and "no particles found" in result.warnings


def test_one_line_api(seg_run, tmp_path):
    write_image(tmp_path / "a.png", seg_run[1][0].image)
    result = sagegan.segment(tmp_path / "a.png", seg_run[0], nm_per_px=2.0)
    assert len(result.particles) == result.labels.max() > 5
    assert {"ecd_nm", "score"} <= set(result.particles.columns)


def test_training_calibrates_scores(seg_run):
    config = json.loads((seg_run[0] / CONFIG_FILE).read_text())
    curve = config["postprocess"].get("score_calibration")
    if curve is None:  # too few particles on the tiny validation set: the fit says so
        assert "note" in config["score_calibration_fit"]
    else:
        assert np.all(np.diff(curve["calibrated"]) >= 0) and 0 <= min(curve["calibrated"]) <= 1


# ------------------------------------------------------------------------------ fine-tuning


def test_init_keeps_the_models_scale_and_postprocessing(seg_run, make_samples, tmp_path):
    from sagegan.train_seg import SegTrainConfig, config_from_init, train_segmenter

    from conftest import TINY_SEG

    cfg = config_from_init(SegTrainConfig(**{**TINY_SEG, "widths": (4, 8)}, epochs=1, lr=0.0), seg_run[0])
    assert cfg.widths == (8, 16, 32) and cfg.canonical_diameter_px == 14.0
    samples = make_samples(2, size=64, seed=7)
    train_segmenter(samples, tmp_path / "ft", cfg, progress=False, init_weights=seg_run[0] / SEGMENTER_FILE)
    config = json.loads((tmp_path / "ft" / CONFIG_FILE).read_text())
    source = json.loads((seg_run[0] / CONFIG_FILE).read_text())
    assert config["init"]["sha256"] == weights_sha256(seg_run[0] / SEGMENTER_FILE)
    assert config["postprocess"]["fg_threshold"] == source["postprocess"]["fg_threshold"]  # no validation: kept


# ------------------------------------------------------------------------------ the real bundled model


needs_bundle = pytest.mark.skipif(not (BUNDLED / SEGMENTER_FILE).is_file(),
                                  reason="this checkout ships no general model weights yet")


@needs_bundle
def test_bundled_model_segments_a_simulated_micrograph():
    sim = simulate_micrograph(384, layout="hex", modality="sem", seed=3, mean_diameter_px=20.0)
    result = sagegan.segment(sim.image)
    n_true = int(sim.labels.max())
    assert 0.7 * n_true <= result.labels.max() <= 1.3 * n_true
    assert result.particles["score"].between(0, 1).all()


@needs_bundle
@pytest.mark.skipif(not EMPS.is_dir(), reason="needs ../shared/data/emps")
def test_bundled_model_on_emps_test_images():
    from sagegan.io import read_micrograph, read_mask, read_split
    from sagegan.metrics import evaluate_pair

    stems = read_split(EMPS / "test.csv")[:6]
    f1 = []
    for stem in stems:
        image = read_micrograph(next((EMPS / "images").glob(f"{stem}.*"))).image
        truth = read_mask(next((EMPS / "segmaps").glob(f"{stem}.*")))
        f1.append(evaluate_pair(sagegan.segment(image).labels, truth)["f1_50"])
    assert np.mean(f1) >= 0.8, f1  # these six score 0.94 in the full benchmark (BENCHMARKS.md)


def test_zoom_search_rules_out_noise_and_shading(seg_run, monkeypatch):
    """A zoom whose "particles" are under 4 px, or one object over half the crop, never wins,
    however confident the network is there; a large image is judged on two crops."""
    from sagegan import infer

    seg = load_segmenter(seg_run[0])
    calls = []

    def fake_try(seg, crop, zoom):
        calls.append(crop.shape)
        if zoom >= 4:       # noise: 14 zoomed px at zoom 4 is 3.5 input px
            return {"diameter": 14.0, "confidence": 0.99, "largest_share": 0.01}
        if zoom <= 0.125:   # shading: one blob
            return {"diameter": 14.0, "confidence": 0.99, "largest_share": 0.9}
        return {"diameter": 14.0, "confidence": 0.6, "largest_share": 0.02}

    monkeypatch.setattr(infer, "_zoom_try", fake_try)
    zoom, _, tries = infer.search_zoom(seg, np.zeros((2000, 2000), np.float32))
    assert 0.125 < zoom < 4 and all(t["crops"] == 2 for t in tries if t["zoom"] >= 0.5)
    assert len(calls) > len(tries)


def test_zoom_search_keeps_a_frame_of_few_large_particles(seg_run, monkeypatch):
    """A particle may cover over half of a frame that holds only two or three (EMPS has such
    images): that zoom stays eligible; one object over three quarters is shading."""
    from sagegan import infer

    seg = load_segmenter(seg_run[0])

    def fake_try(seg, crop, zoom, share):
        if zoom == 0.125:
            return {"diameter": 24.0, "confidence": 0.95, "largest_share": share}
        if zoom == 0.5:  # the runner-up
            return {"diameter": 24.0, "confidence": 0.6, "largest_share": 0.02}
        return {"diameter": 14.0, "confidence": 0.3, "largest_share": 0.02}

    image = np.zeros((500, 500), np.float32)
    monkeypatch.setattr(infer, "_zoom_try", lambda s, c, z: fake_try(s, c, z, 0.6))
    assert 0.125 / 1.5 < infer.search_zoom(seg, image)[0] < 0.125 * 1.5
    monkeypatch.setattr(infer, "_zoom_try", lambda s, c, z: fake_try(s, c, z, 0.8))
    assert 0.5 / 1.5 < infer.search_zoom(seg, image)[0] < 0.5 * 1.5


def test_zoom_search_second_crop_only_near_the_lead(seg_run, monkeypatch):
    """With second_crop_margin (the default) the zooms far behind after the first crop get no
    second one: fewer network calls than with None, the same winner; the tries can run in another
    precision (a cached twin)."""
    from sagegan import infer

    seg = load_segmenter(seg_run[0])
    calls = []

    def fake_try(s, crop, zoom):
        calls.append((s.precision, zoom))
        return {"diameter": 14.0, "confidence": 0.9 if zoom == 1.0 else 0.5, "largest_share": 0.02}

    monkeypatch.setattr(infer, "_zoom_try", fake_try)
    image = np.zeros((2000, 2000), np.float32)
    full = infer.search_zoom(seg, image, second_crop_margin=None)
    n_full = len(calls)
    calls.clear()
    cheap = infer.search_zoom(seg, image, second_crop_margin=0.1, precision="bf16")
    assert cheap[0] == pytest.approx(full[0]) and len(calls) < n_full
    assert {p for p, _ in calls} == {"bf16"} and sum(z == 1.0 for _, z in calls) == 2
    assert seg.with_precision("bf16") is seg.with_precision("bf16") and seg.with_precision("fp32") is seg


def test_zoom_search_screens_on_a_small_crop(seg_run, monkeypatch):
    """With screen_crop_px every zoom is first tried on a small crop, and only the screen_keep best
    get the full crops: the same winner for fewer zoomed pixels through the network; a screening
    crop that already covers the whole image is not run twice."""
    from sagegan import infer

    seg = load_segmenter(seg_run[0])
    calls = []

    def fake_try(s, crop, zoom):
        calls.append((zoom, crop.size * zoom ** 2))
        return {"diameter": 24.0, "confidence": {0.125: 0.9, 0.25: 0.7}.get(zoom, 0.5), "largest_share": 0.02}

    monkeypatch.setattr(infer, "_zoom_try", fake_try)
    image = np.zeros((600, 600), np.float32)
    full = infer.search_zoom(seg, image)
    zoomed_px = sum(px for _, px in calls)
    calls.clear()
    screened = infer.search_zoom(seg, image, screen_crop_px=128, screen_keep=2)
    assert screened[0] == pytest.approx(full[0]) and 0.125 / 1.5 < screened[0] < 0.125 * 1.5
    assert sum(px for _, px in calls) < zoomed_px / 2
    assert {t["zoom"] for t in screened[2]} == {0.125, 0.25}
    # At zoom 1/8 the screening crop and the full crop are both the whole image: one call.
    assert sum(z == 0.125 for z, _ in calls) == 1 and sum(z == 0.25 for z, _ in calls) == 2
