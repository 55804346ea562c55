"""Phase 1: the Attention U-Net, its training loop, tiled inference and instance separation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sagegan.data import class_map, normalised_distance
from sagegan.infer import instances_from_maps, load_segmenter, search_zoom, segment_files, segment_image
from sagegan.io import InputError, Sample, read_mask
from sagegan.nets.attention_unet import AttentionUNet
from sagegan.simulate import simulate_micrograph
from sagegan.train_seg import SegTrainConfig, train_segmenter

TINY = dict(widths=(8, 16, 32), patch_size=64, batch_size=4, val_every=25, val_max_images=2, device="cpu")


def _samples(n, size=96, seed=0, **kw):
    out = []
    for i in range(n):
        sim = simulate_micrograph(size, layout="hex", modality="sem", seed=seed + i, mean_diameter_px=14.0, **kw)
        out.append(Sample(f"sim{i}", sim.image, sim.labels))
    return out


def _two_touching_discs(size=64, r=10):
    yy, xx = np.indices((size, size))
    labels = np.zeros((size, size), np.int32)
    labels[(yy - 32) ** 2 + (xx - 22) ** 2 <= r * r] = 1
    labels[((yy - 32) ** 2 + (xx - 42) ** 2 <= r * r) & (labels == 0)] = 2
    return labels


def test_attention_unet_shapes_and_gates():
    net = AttentionUNet(1, 4, widths=(8, 16, 32))
    logits, gates = net(torch.zeros(2, 1, 64, 64), return_gates=True)
    assert logits.shape == (2, 4, 64, 64)
    assert [g.shape[-1] for g in gates] == [64, 32]
    assert all(float(g.detach().min()) >= 0 and float(g.detach().max()) <= 1 for g in gates)
    plain = AttentionUNet(1, 4, widths=(8, 16, 32), attention_gates=False, norm="group", dropout=0.1)
    assert plain(torch.zeros(1, 1, 64, 64)).shape == (1, 4, 64, 64)
    with_mhsa = AttentionUNet(1, 4, widths=(8, 16, 32), bottleneck_attention=True)
    assert with_mhsa(torch.zeros(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    assert AttentionUNet.from_config(net.config()).config() == net.config()


def test_touching_discs_split_by_distance_watershed():
    labels = _two_touching_discs()
    classes = class_map(labels)
    probs = np.stack([classes == 0, classes == 1, classes == 2]).astype(np.float32)
    pred = instances_from_maps(probs, normalised_distance(labels))
    assert pred.max() == 2
    for k in (1, 2):  # each true disc is one predicted instance
        ids = np.unique(pred[labels == k])
        assert len(ids[ids > 0]) == 1


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    """A tiny model trained briefly on three simulated images (shared by several tests)."""
    out = tmp_path_factory.mktemp("run")
    samples = _samples(3)
    cfg = SegTrainConfig(**TINY, epochs=100, canonical_diameter_px=14.0, lr=3e-3, seed=1, patience=100)
    train_segmenter(samples, out, cfg, val=samples[:2], progress=False)
    return out, samples


def test_tiny_model_overfits(overfit_run):
    out, samples = overfit_run
    seg = load_segmenter(out)
    dices = []
    for s in samples:
        pred = segment_image(seg, s.image, scale=1.0).labels > 0
        true = s.labels > 0
        dices.append(2 * (pred & true).sum() / (pred.sum() + true.sum()))
    assert np.mean(dices) > 0.9, dices
    config = json.loads((out / "config.json").read_text())
    assert config["best_validation"]["f1_50"] > 0.5
    assert {"model", "canonical_diameter_px", "normalisation", "patch_size", "data", "git_commit"} <= set(config)
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch") and len(log) > 2


@pytest.mark.parametrize("diameter", [28.0, 42.0])
def test_scale_auto_finds_the_particle_size(overfit_run, diameter):
    """A model trained on 14 px particles finds the zoom for 2x and 3x larger ones by itself."""
    seg = load_segmenter(overfit_run[0])
    sim = simulate_micrograph(256, layout="hex", modality="sem", seed=11, mean_diameter_px=diameter)
    zoom, estimate, tries = search_zoom(seg, sim.image)
    assert abs(np.log(zoom * diameter / 14.0)) < np.log(1.25), (zoom, tries)
    assert abs(np.log(estimate / diameter)) < np.log(1.25)
    result = segment_image(seg, sim.image, scale="auto")
    assert result.scale == pytest.approx(zoom) and result.passes[-1] == pytest.approx(zoom)


@pytest.mark.parametrize("shape", [(389, 517), (40, 50), (16, 16)])
def test_outputs_keep_input_shape(overfit_run, shape):
    seg = load_segmenter(overfit_run[0])
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    result = segment_image(seg, image, scale="auto", with_gates=True)
    assert result.labels.shape == shape and result.probs.shape[1:] == shape
    assert result.gate is not None and result.gate.shape == shape


def test_segment_files_writes_outputs(overfit_run, tmp_path):
    from sagegan.io import write_image

    out, samples = overfit_run
    write_image(tmp_path / "in" / "a.png", samples[0].image[:90, :77])
    table = segment_files([tmp_path / "in"], out, tmp_path / "pred", nm_per_px=2.0, scale=1.0,
                          save_attention=True, progress=False)
    for suffix in ("_labels.tif", "_mask.png", "_overlay.png", "_attention.png"):
        assert (tmp_path / "pred" / f"a{suffix}").exists()
    labels = read_mask(tmp_path / "pred" / "a_labels.tif")
    assert labels.shape == (90, 77)
    cols = {"image", "id", "area_px", "centroid_x", "centroid_y", "ecd_px", "ecd_nm"}
    assert cols <= set(table.columns) and len(table) == labels.max()


def test_selection_score_takes_the_best_watershed_setting(monkeypatch):
    import sagegan.train_seg as ts

    grid_scores = {(0.4, 0.3): (0.2, 0.9), (0.4, 0.5): (0.6, 0.7), (0.5, 0.4): (0.6, 0.8), (0.5, 0.6): (0.0, 0.8)}
    monkeypatch.setattr(ts, "validate", lambda seg, val, grid: {g: grid_scores[g] for g in grid})
    score, f1, dice = ts.selection_score(None, [])
    assert (f1, dice) == (0.6, 0.8) and score == pytest.approx(0.6 + ts.DICE_TIEBREAK * 0.8)


def test_uninformative_validation_keeps_the_latest_checkpoint(tmp_path, monkeypatch):
    # With one validation image that no checkpoint segments (seen with k = 8 EMPS images), every
    # validation ties; the run must not fall back to its first checkpoint.
    import sagegan.train_seg as ts

    monkeypatch.setattr(ts, "selection_score", lambda seg, val: (0.0, 0.0, 0.0))
    samples = _samples(2, size=64)
    cfg = SegTrainConfig(**{**TINY, "val_every": 5}, epochs=15, canonical_diameter_px=None, seed=3)
    train_segmenter(samples, tmp_path, cfg, val=samples[:1], progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["best_validation"]["step"] == 15


def test_resume_continues_from_checkpoint(tmp_path):
    samples = _samples(2, size=64)
    cfg = SegTrainConfig(**{**TINY, "val_every": 5}, epochs=10, canonical_diameter_px=None, seed=3)
    train_segmenter(samples, tmp_path, cfg, val=samples[:1], progress=False)
    state = json.loads((tmp_path / "last_state.json").read_text())
    assert state["step"] == 10
    cfg2 = SegTrainConfig(**{**TINY, "val_every": 5}, epochs=20, canonical_diameter_px=None, seed=3)
    train_segmenter(samples, tmp_path, cfg2, val=samples[:1], resume=True, progress=False)
    assert json.loads((tmp_path / "last_state.json").read_text())["step"] == 20
    steps = [int(r.split(",")[0]) for r in (tmp_path / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [5, 10, 15, 20]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["resumed"] and config["steps"] == 20 and "step" in config["best_validation"]


def test_killed_run_resumes(tmp_path):
    """A training process killed mid-run leaves a usable checkpoint that --resume continues."""
    from sagegan.io import write_image, write_labels

    for s in _samples(2, size=64):
        write_image(tmp_path / "data" / "images" / f"{s.stem}.png", s.image)
        write_labels(tmp_path / "data" / "masks" / f"{s.stem}.tif", s.labels)
    cmd = [sys.executable, "-m", "sagegan", "train-seg", "--data", str(tmp_path / "data"), "--out",
           str(tmp_path / "run"), "--widths", "8,16,32", "--patch-size", "64", "--batch-size", "2",
           "--val-every", "5", "--epochs", "100000", "--scale", "native", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "run" / "last_state.json"
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state_file.exists() and json.loads(state_file.read_text())["step"] >= 10):
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    step = json.loads(state_file.read_text())["step"]
    assert step >= 10
    load_segmenter(tmp_path / "run")  # the best checkpoint is intact
    res = subprocess.run(cmd[:-6] + ["--epochs", str(step // 1 + 5), "--scale", "native", "--device", "cpu",
                                     "--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(state_file.read_text())["step"] > step


def test_bad_model_folders(tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        load_segmenter(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="config.json: file not found"):
        load_segmenter(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_segmenter(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model": AttentionUNet(1, 4, (8, 16)).config()}))
    with pytest.raises(InputError, match="segmenter.safetensors: file not found"):
        load_segmenter(tmp_path / "a")
    (tmp_path / "a" / "segmenter.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_segmenter(tmp_path / "a")
    res = subprocess.run([sys.executable, "-m", "sagegan", "segment", str(tmp_path), "--model", str(tmp_path / "a"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
