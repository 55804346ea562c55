"""Phase 2: a tiny SAGE-GAN trains with finite losses, repeats with a seed, resumes exactly."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from sagegan.io import InputError
from sagegan.progress import TrainingCallbacks
from sagegan.runs import GENERATOR_FILE, LAST_STATE_TENSORS, SEGMENTER_FILE, load_segmenter, load_tensors
from sagegan.train_gan import GanTrainConfig, synthetic_share, train_gan

from conftest import TINY_GAN  # as the gan_run fixture


def _rows(run):
    return list(csv.DictReader((run / "train_log.csv").open()))


def _without_elapsed(rows):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def _assert_same_tensors(expected_file, actual_file):
    expected, actual = load_tensors(expected_file), load_tensors(actual_file)
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_synthetic_share_ramps_after_warmup():
    cfg = GanTrainConfig(warmup_steps=100, ramp_steps=100)
    assert synthetic_share(0, cfg) == 0 and synthetic_share(99, cfg) == 0
    assert synthetic_share(150, cfg) == pytest.approx(0.3) and synthetic_share(10_000, cfg) == pytest.approx(0.6)


def test_tiny_gan_trains_with_finite_losses(gan_run):
    out, _ = gan_run
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20]
    for row in rows:
        for key in ("seg_synthetic", "seg_real", "cycle_l1", "paired_l1", "adv_image", "adv_mask", "d_image",
                    "d_mask"):
            assert np.isfinite(float(row[key])), (key, row)
    assert float(rows[-1]["synthetic_share"]) > 0
    for name in ("generator", "disc_image", "disc_mask", "segmenter"):
        assert (out / f"{name}.safetensors").exists()
    assert list((out / "samples").glob("step_*.png"))
    config = json.loads((out / "config.json").read_text())
    assert {"generator", "layout_model", "gan", "model"} <= set(config)
    load_segmenter(out)  # the fine-tuned segmenter is a valid --model


def test_gan_is_repeatable_with_a_seed(seg_run, gan_run, tmp_path):
    seg_dir, samples = seg_run
    cfg = GanTrainConfig(**TINY_GAN, steps=20, seed=0)
    train_gan(samples, seg_dir, tmp_path, cfg, val=samples[:1], progress=False)
    assert _without_elapsed(_rows(tmp_path)) == _without_elapsed(_rows(gan_run[0]))
    _assert_same_tensors(gan_run[0] / LAST_STATE_TENSORS, tmp_path / LAST_STATE_TENSORS)
    other = GanTrainConfig(**TINY_GAN, steps=10, seed=1)  # its one log row holds steps 1-10, as row 0 here
    train_gan(samples, seg_dir, tmp_path / "other", other, val=samples[:1], progress=False)
    assert _rows(tmp_path / "other")[0]["cycle_l1"] != _rows(tmp_path)[0]["cycle_l1"]  # the seed matters


def test_frozen_segmenter_norm_keeps_phase1_statistics(seg_run, tmp_path):
    """The default: S's BatchNorm statistics stay at phase 1's; its convolutions still learn."""
    seg_dir, samples = seg_run
    cfg = GanTrainConfig(**{**TINY_GAN, "val_every": 100}, steps=6)
    assert cfg.segmenter_norm == "frozen"
    train_gan(samples, seg_dir, tmp_path, cfg, val=samples[:1], progress=False)
    before = load_tensors(seg_dir / "segmenter.safetensors")
    after = load_tensors(tmp_path / "last.safetensors")
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in before if k.endswith("weight") and before[k].dim() == 4]
    assert stats and all(torch.equal(before[k], after[f"S.{k}"]) for k in stats)
    assert any(not torch.equal(before[k], after[f"S.{k}"]) for k in weights)  # the convolutions learn
    with pytest.raises(ValueError, match="norm mode"):
        GanTrainConfig(segmenter_norm="group")
    # a config saved before the option existed reproduces what that run did
    assert GanTrainConfig.from_dict({"steps": 6}).segmenter_norm == "train"
    assert GanTrainConfig.from_dict(asdict(cfg)).segmenter_norm == "frozen"


def test_bf16_precision_trains_with_float32_weights(seg_run, tmp_path):
    """--precision bf16: autocast for the networks; weights, checkpoints and losses stay float32."""
    seg_dir, samples = seg_run
    cfg = GanTrainConfig(**TINY_GAN, steps=10, precision="bf16")
    train_gan(samples, seg_dir, tmp_path, cfg, val=samples[:1], progress=False)
    row = list(csv.DictReader((tmp_path / "train_log.csv").open()))[-1]
    assert all(np.isfinite(float(row[k])) for k in ("seg_real", "cycle_l1", "adv_image", "adv_mask", "d_image"))
    for name in ("generator", "segmenter", "disc_image"):
        assert {t.dtype for t in load_tensors(tmp_path / f"{name}.safetensors").values()} <= {torch.float32,
                                                                                                torch.int64}
    assert json.loads((tmp_path / "config.json").read_text())["gan"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        GanTrainConfig(precision="fp16")


class _Recorder(TrainingCallbacks):
    def __init__(self):
        self.steps, self.infos, self.validations = [], [], []
        super().__init__(on_step=lambda step, info: (self.steps.append(step), self.infos.append(info)),
                         on_validation=lambda step, metrics: self.validations.append((step, metrics)))


def test_gan_resume_continues_exactly_where_the_run_stopped(seg_run, gan_run, tmp_path):
    """Ten steps, then ten more with --resume: the same run as the twenty steps of ``gan_run``."""
    seg_dir, samples = seg_run
    train_gan(samples, seg_dir, tmp_path, GanTrainConfig(**TINY_GAN, steps=10), val=samples[:1], progress=False)
    recorder = _Recorder()
    train_gan(samples, seg_dir, tmp_path, GanTrainConfig(**TINY_GAN, steps=20), val=samples[:1], resume=True,
              progress=False, callbacks=recorder)
    assert recorder.steps == list(range(11, 21))  # not a restart from step 0
    assert json.loads((tmp_path / "last_state.json").read_text())["step"] == 20
    whole = gan_run[0]
    # every module, Adam moment and random-number state, and the files written from them
    _assert_same_tensors(whole / LAST_STATE_TENSORS, tmp_path / LAST_STATE_TENSORS)
    for name in (GENERATOR_FILE, SEGMENTER_FILE, "disc_image.safetensors", "disc_mask.safetensors"):
        _assert_same_tensors(whole / name, tmp_path / name)
    assert _without_elapsed(_rows(tmp_path)) == _without_elapsed(_rows(whole))
    assert [int(r["step"]) for r in _rows(tmp_path)] == [10, 20]


def test_resume_keeps_the_best_checkpoint_of_an_earlier_sitting(seg_run, tmp_path, monkeypatch):
    """When no later validation beats the phase 1 segmenter, a resumed run's config.json still says so."""
    import sagegan.train_gan as tg

    scores = iter([0.9, 0.5, 0.4, 0.3, 0.2])  # step 0 (phase 1), then every validation worse

    def falling(seg, val):
        score = next(scores)
        return score, score, 0.5

    monkeypatch.setattr(tg, "selection_score", falling)
    monkeypatch.setattr(tg, "tune_postprocess", lambda seg, val: (dict(seg.postprocess), (0.8, 0.5)))
    seg_dir, samples = seg_run
    cfg = GanTrainConfig(**{**TINY_GAN, "val_every": 2})
    train_gan(samples, seg_dir, tmp_path, replace(cfg, steps=2), val=samples[:1], progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["best_validation"]["step"] == 0
    train_gan(samples, seg_dir, tmp_path, replace(cfg, steps=4), val=samples[:1], resume=True, progress=False)
    best = json.loads((tmp_path / "config.json").read_text())["best_validation"]
    assert best["step"] == 0 and best["f1_50"] == 0.9
    # the segmenter file is still phase 1's
    _assert_same_tensors(seg_dir / SEGMENTER_FILE, tmp_path / SEGMENTER_FILE)


def test_callbacks_see_every_step_and_validation(seg_run, tmp_path):
    seg_dir, samples = seg_run
    recorder = _Recorder()
    train_gan(samples, seg_dir, tmp_path, GanTrainConfig(**{**TINY_GAN, "val_every": 3}, steps=7),
              val=samples[:1], progress=False, callbacks=recorder)
    assert recorder.steps == list(range(1, 8))
    assert all({"loss", "d_image", "d_mask", "elapsed_s"} <= set(info) for info in recorder.infos)
    assert all(np.isfinite(info["loss"]) for info in recorder.infos)
    assert [step for step, _ in recorder.validations] == [3, 6, 7]  # every val_every steps and the last
    assert all({"f1_50", "dice", "seg_real", "d_image"} <= set(m) for _, m in recorder.validations)
    logged = [float(r["seg_real"]) for r in _rows(tmp_path)]
    assert [m["seg_real"] for _, m in recorder.validations] == pytest.approx(logged, abs=1e-4)


def test_no_training_images(seg_run, tmp_path):
    with pytest.raises(InputError, match="no training images"):
        train_gan([], seg_run[0], tmp_path, GanTrainConfig(**TINY_GAN, steps=1), progress=False)
    for bad in ({"mask_path": "hard"}, {"precision": "fp16"}, {"perceptual": "vgg19"}):
        with pytest.raises(ValueError):
            GanTrainConfig(**bad)


def test_style_encoder_trains_and_resumes_exactly(seg_run, tmp_path):
    """--style-encoder: E is trained, saved and resumed; 10 + 10 resumed steps equal 20 at once."""
    from sagegan.nets.style_encoder import StyleEncoder

    seg_dir, samples = seg_run
    cfg = GanTrainConfig(**TINY_GAN, steps=10, style_encoder=True)
    split, whole = tmp_path / "split", tmp_path / "whole"
    train_gan(samples, seg_dir, split, cfg, val=samples[:1], progress=False)
    rows = _rows(split)
    assert all(np.isfinite(float(rows[-1][k])) for k in ("style_kl", "latent_regression", "paired_l1", "cycle_l1"))
    config = json.loads((split / "config.json").read_text())
    assert config["gan"]["style_encoder"] is True and config["style_encoder"]["latent_dim"] == 16
    halfway = load_tensors(split / "style_encoder.safetensors")
    assert set(halfway) == set(StyleEncoder(**config["style_encoder"]).state_dict())
    recorder = _Recorder()
    train_gan(samples, seg_dir, split, replace(cfg, steps=20), val=samples[:1], resume=True, progress=False,
              callbacks=recorder)
    assert recorder.steps == list(range(11, 21))
    final = load_tensors(split / "style_encoder.safetensors")
    assert not all(torch.equal(v, final[k]) for k, v in halfway.items())  # E learns
    train_gan(samples, seg_dir, whole, replace(cfg, steps=20), val=samples[:1], progress=False)
    _assert_same_tensors(whole / "style_encoder.safetensors", split / "style_encoder.safetensors")
    _assert_same_tensors(whole / LAST_STATE_TENSORS, split / LAST_STATE_TENSORS)
