"""Phase 1 training: the loop, checkpoint choice, callbacks, budgets and exact resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import pytest
import torch

from sagegan.io import InputError
from sagegan.progress import TrainingCallbacks
from sagegan.runs import LAST_STATE_TENSORS, SEGMENTER_FILE, load_segmenter, load_tensors
from sagegan.train_seg import SegTrainConfig, train_segmenter

TINY = dict(widths=(8, 16, 32), patch_size=64, batch_size=4, val_every=5, val_max_images=2, device="cpu",
            canonical_diameter_px=None, seed=3)


def _rows(run):
    return list(csv.DictReader((run / "train_log.csv").open()))


class _Recorder(TrainingCallbacks):
    def __init__(self):
        self.steps, self.infos, self.validations = [], [], []
        super().__init__(on_step=lambda step, info: (self.steps.append(step), self.infos.append(info)),
                         on_validation=lambda step, metrics: self.validations.append((step, metrics)))


def test_tiny_model_trains_and_records_its_run(seg_run):
    out, _ = seg_run
    config = json.loads((out / "config.json").read_text())
    assert config["best_validation"]["f1_50"] > 0.5
    assert {"model", "canonical_diameter_px", "normalisation", "patch_size", "data", "git_commit",
            "postprocess", "autocorr_factor"} <= set(config)
    assert config["stop_reason"] == "epochs" and config["steps"] == 100
    assert config["data"]["n_train"] == 3 and config["data"]["n_val"] == 2
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [25, 50, 75, 100]


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown --arch"):
        SegTrainConfig(arch="resnet")
    with pytest.raises(ValueError, match="divisible by 4"):
        SegTrainConfig(widths=(8, 16, 32), patch_size=66)
    assert SegTrainConfig.from_dict({"epochs": 3, "not_a_setting": 1}).epochs == 3


def test_no_training_images(tmp_path):
    with pytest.raises(InputError, match="no training images"):
        train_segmenter([], tmp_path, SegTrainConfig(**TINY), progress=False)


def test_callbacks_see_every_step_and_validation(make_samples, tmp_path):
    samples = make_samples(2, size=64)
    recorder = _Recorder()
    train_segmenter(samples, tmp_path, SegTrainConfig(**TINY, epochs=12), val=samples[:1], progress=False,
                    callbacks=recorder)
    assert recorder.steps == list(range(1, 13))
    assert all({"loss", "elapsed_s"} <= set(info) for info in recorder.infos)
    elapsed = [info["elapsed_s"] for info in recorder.infos]
    assert elapsed == sorted(elapsed)
    assert [step for step, _ in recorder.validations] == [5, 10, 12]  # every val_every steps and the last
    assert all({"f1_50", "dice", "loss", "lr"} <= set(m) for _, m in recorder.validations)
    logged = [float(r["loss"]) for r in _rows(tmp_path)]
    assert [m["loss"] for _, m in recorder.validations] == pytest.approx(logged, abs=1e-5)


def test_uninformative_validation_keeps_the_latest_checkpoint(make_samples, tmp_path, monkeypatch):
    # With one validation image that no checkpoint segments, every validation ties; the run must
    # not fall back to its first checkpoint.
    import sagegan.train_seg as ts

    monkeypatch.setattr(ts, "selection_score", lambda seg, val: (0.0, 0.0, 0.0))
    samples = make_samples(2, size=64)
    train_segmenter(samples, tmp_path, SegTrainConfig(**TINY, epochs=15), val=samples[:1], progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["best_validation"]["step"] == 15


def test_resume_continues_exactly_where_the_run_stopped(make_samples, tmp_path):
    """Ten steps, then ten more with --resume: the same weights, optimiser state and log as twenty at once."""
    samples = make_samples(2, size=64)
    whole, split = tmp_path / "whole", tmp_path / "split"
    train_segmenter(samples, whole, SegTrainConfig(**TINY, epochs=20), val=samples[:1], progress=False)
    train_segmenter(samples, split, SegTrainConfig(**TINY, epochs=10), val=samples[:1], progress=False)
    assert json.loads((split / "last_state.json").read_text())["step"] == 10
    recorder = _Recorder()
    train_segmenter(samples, split, SegTrainConfig(**TINY, epochs=20), val=samples[:1], resume=True, progress=False,
                    callbacks=recorder)
    assert recorder.steps == list(range(11, 21))  # not a restart from step 0
    assert json.loads((split / "last_state.json").read_text())["step"] == 20
    expected, resumed = load_tensors(whole / LAST_STATE_TENSORS), load_tensors(split / LAST_STATE_TENSORS)
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():  # weights, Adam moments and random-number states
        assert torch.equal(resumed[key], value), key
    best, best_resumed = load_tensors(whole / SEGMENTER_FILE), load_tensors(split / SEGMENTER_FILE)
    assert all(torch.equal(best_resumed[k], v) for k, v in best.items())
    drop_elapsed = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert drop_elapsed(_rows(split)) == drop_elapsed(_rows(whole))
    assert [int(r["step"]) for r in _rows(split)] == [5, 10, 15, 20]
    config = json.loads((split / "config.json").read_text())
    assert config["resumed"] and config["steps"] == 20
    best_whole = json.loads((whole / "config.json").read_text())["best_validation"]
    assert config["best_validation"] == best_whole


def test_init_weights_start_the_run(seg_run, make_samples, tmp_path):
    """Fine-tuning starts from the given weights: with a learning rate of 0 the convolutions keep them."""
    samples = make_samples(2, size=64)
    cfg = SegTrainConfig(**{**TINY, "canonical_diameter_px": 14.0, "seed": 5}, epochs=1, lr=0.0)
    train_segmenter(samples, tmp_path, cfg, val=samples[:1], progress=False,
                    init_weights=seg_run[0] / SEGMENTER_FILE)
    before, after = load_tensors(seg_run[0] / SEGMENTER_FILE), load_tensors(tmp_path / SEGMENTER_FILE)
    convolutions = [k for k, v in before.items() if v.dim() == 4]
    assert convolutions and all(torch.equal(before[k], after[k]) for k in convolutions)


def test_time_budget_still_leaves_a_model(make_samples, tmp_path):
    samples = make_samples(2, size=64)
    train_segmenter(samples, tmp_path, SegTrainConfig(**TINY, epochs=1000, max_minutes=1e-9), val=samples[:1],
                    progress=False)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["stop_reason"] == "max_minutes" and config["steps"] < 1000
    load_segmenter(tmp_path)


def test_killed_run_resumes(make_samples, make_data_folder, tmp_path):
    """A training process killed mid-run leaves a usable checkpoint that --resume continues."""
    make_data_folder(make_samples(2, size=64), tmp_path / "data")
    cmd = [sys.executable, "-m", "sagegan", "train-seg", "--data", str(tmp_path / "data"), "--out",
           str(tmp_path / "run"), "--widths", "8,16,32", "--patch-size", "64", "--batch-size", "2",
           "--val-every", "5", "--scale", "native", "--device", "cpu"]
    proc = subprocess.Popen(cmd + ["--epochs", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "run" / "last_state.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not (state_file.exists()
                                                   and json.loads(state_file.read_text())["step"] >= 10):
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
    step = json.loads(state_file.read_text())["step"]
    assert step >= 10
    load_segmenter(tmp_path / "run")  # the best checkpoint is intact
    res = subprocess.run(cmd + ["--epochs", str(step + 5), "--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(state_file.read_text())["step"] == step + 5
