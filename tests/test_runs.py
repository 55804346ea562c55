"""Run folders: saving and loading models, the training state ``--resume`` restores, clear errors."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sagegan.io import InputError, json_ready, write_json
from sagegan.nets.attention_unet import AttentionUNet
from sagegan.nets.style_encoder import StyleEncoder
from sagegan.nets.style_unet import StyleUNet
from sagegan.runs import (CONFIG_FILE, DEFAULT_POSTPROCESS, GENERATOR_FILE, LAST_STATE_JSON, LAST_STATE_TENSORS,
                          SEGMENTER_FILE, STYLE_ENCODER_FILE, Segmenter, TrainingState, git_commit,
                          has_style_encoder, load_generator, load_module_weights, load_segmenter, load_style_encoder,
                          load_tensors, resolve_device, save_modules, save_tensors)

GEN_CFG = {"in_channels": 2, "out_channels": 1, "widths": [8, 16], "latent_dim": 8, "style_dim": 8}


def _net(widths=(8, 16), seed=0) -> AttentionUNet:
    """A tiny segmenter with non-default BatchNorm statistics (they must be saved too)."""
    torch.manual_seed(seed)
    net = AttentionUNet(1, 4, widths=widths)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return net


def _segmenter_run(folder: Path, net: AttentionUNet, **config) -> Path:
    write_json(folder / CONFIG_FILE, {"model": net.config(), **config})
    save_modules(folder, {SEGMENTER_FILE: net})
    return folder


# ------------------------------------------------------------------------------ models


def test_segmenter_round_trip(tmp_path):
    net = _net()
    run = _segmenter_run(tmp_path, net, canonical_diameter_px=20.0, postprocess={"fg_threshold": 0.4})
    seg = load_segmenter(run)
    assert isinstance(seg, Segmenter) and seg.path == run and not seg.net.training
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(seg.net(x), net.eval()(x))
    assert seg.canonical_diameter_px == 20.0
    # tuned settings override the defaults; missing ones keep them
    assert seg.postprocess == {**DEFAULT_POSTPROCESS, "fg_threshold": 0.4}


def test_generator_and_style_encoder_round_trip(tmp_path):
    torch.manual_seed(0)
    gen = StyleUNet(**GEN_CFG)
    encoder = StyleEncoder(in_channels=1, latent_dim=8)
    write_json(tmp_path / CONFIG_FILE, {"generator": GEN_CFG, "style_encoder": {"in_channels": 1, "latent_dim": 8}})
    save_modules(tmp_path, {GENERATOR_FILE: gen, STYLE_ENCODER_FILE: None})  # None: nothing written
    assert not (tmp_path / STYLE_ENCODER_FILE).exists()
    loaded, config = load_generator(tmp_path)
    assert config["generator"] == GEN_CFG and not loaded.training
    mask, z = torch.rand(1, 2, 16, 16), torch.randn(1, 8)
    noise = gen.make_noise(1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(mask, z, noise), gen.eval()(mask, z, noise))

    assert not has_style_encoder(tmp_path, config)
    with pytest.raises(InputError, match="no style encoder"):
        load_style_encoder(tmp_path, config)
    save_modules(tmp_path, {STYLE_ENCODER_FILE: encoder})
    assert has_style_encoder(tmp_path, config)
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_style_encoder(tmp_path, config)(image)[0], encoder.eval()(image)[0])

    write_json(tmp_path / CONFIG_FILE, {"model": {}})
    with pytest.raises(InputError, match="no 'generator' section"):
        load_generator(tmp_path)


def test_weights_of_another_architecture_give_one_clear_line(tmp_path):
    _segmenter_run(tmp_path, _net(widths=(8, 16)))
    # the config now describes a deeper network than the weights on disk
    write_json(tmp_path / CONFIG_FILE, {"model": AttentionUNet(1, 4, widths=(8, 16, 32)).config()})
    with pytest.raises(InputError) as err:
        load_segmenter(tmp_path)
    message = str(err.value)
    assert "\n" not in message and SEGMENTER_FILE in message and "do not fit the architecture" in message
    assert "missing" in message

    torch.manual_seed(0)
    save_tensors(tmp_path / GENERATOR_FILE, StyleUNet(**{**GEN_CFG, "latent_dim": 4}).state_dict())
    write_json(tmp_path / CONFIG_FILE, {"generator": GEN_CFG})
    with pytest.raises(InputError, match="1 wrong-shaped") as err:
        load_generator(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="do not fit"):
        load_module_weights(AttentionUNet(1, 3, widths=(8, 16)), tmp_path / GENERATOR_FILE)


def test_bad_model_folders(tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        load_segmenter(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="config.json: file not found"):
        load_segmenter(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_segmenter(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(InputError, match="no 'model' section"):
        load_segmenter(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model": {"widths": [8]}}))
    with pytest.raises(InputError, match="invalid architecture"):
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


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Weights and configs get the mode any new file gets, not the 0600 of a temporary file."""
    old = os.umask(umask)
    try:
        save_tensors(tmp_path / "w.safetensors", {"a": torch.zeros(3)})
        write_json(tmp_path / "c.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_save_tensors_accepts_views_and_keeps_values(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    save_tensors(tmp_path / "t.safetensors", {"t": base.t(), "row": base[1]}, metadata={"kind": "test"})
    back = load_tensors(tmp_path / "t.safetensors")
    assert torch.equal(back["t"], base.t()) and torch.equal(back["row"], base[1])


def test_fast_net_follows_the_weights():
    seg = Segmenter(_net().eval(), {})
    fast = seg.fast_net
    assert seg.fast_net is fast  # cached while nothing changes
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fast(x), seg.net(x), atol=1e-4)
        seg.net.head.bias.add_(1.0)  # an optimiser step changes weights in place
        assert seg.fast_net is not fast
        assert torch.allclose(seg.fast_net(x), seg.net(x), atol=1e-4)


# ------------------------------------------------------------------------------ training state


def _train_steps(net, opt, sched, rng, gen, n):
    """A few optimiser steps whose batches use every random source that a trainer uses."""
    net.train()
    for _ in range(n):
        x = torch.rand(2, 1, 16, 16) + float(rng.random()) + torch.rand(1, generator=gen)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss.item())


def _training_objects(seed):
    net = _net(seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", patience=0)
    return net, opt, sched, np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def test_training_state_restores_everything_exactly(tmp_path):
    net, opt, sched, rng, gen = _training_objects(seed=0)
    _train_steps(net, opt, sched, rng, gen, 3)
    TrainingState({"model": net}, {"opt": opt}, sched, rng, {"latent": gen}).save(
        tmp_path, {"step": 3, "best_f1": -math.inf, "elapsed_s": 1.5})
    saved = {"net": copy.deepcopy(net.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
             "sched": copy.deepcopy(sched.state_dict()), "torch": torch.get_rng_state(), "gen": gen.get_state(),
             "numpy": copy.deepcopy(rng.bit_generator.state)}
    # the uninterrupted run goes on
    _train_steps(net, opt, sched, rng, gen, 2)
    reference = copy.deepcopy(net.state_dict())

    # a new process: other initial weights, fresh optimiser, other seeds, then resume
    net2, opt2, sched2, rng2, gen2 = _training_objects(seed=1)
    torch.manual_seed(123)
    counters = TrainingState({"model": net2}, {"opt": opt2}, sched2, rng2, {"latent": gen2}).load(tmp_path)
    assert counters == {"step": 3, "best_f1": -math.inf, "elapsed_s": 1.5}
    for k, v in saved["net"].items():
        assert torch.equal(net2.state_dict()[k], v), k
    moments = opt2.state_dict()["state"]
    assert moments.keys() == saved["opt"]["state"].keys()
    for idx, entry in saved["opt"]["state"].items():
        assert entry.keys() == moments[idx].keys()
        for key, value in entry.items():
            assert torch.equal(moments[idx][key], value), (idx, key)
    # hyper-parameters come back through JSON (tuples such as Adam's betas as lists)
    assert opt2.state_dict()["param_groups"] == json_ready(saved["opt"]["param_groups"])
    assert sched2.state_dict() == saved["sched"]
    assert torch.equal(torch.get_rng_state(), saved["torch"])
    assert torch.equal(gen2.get_state(), saved["gen"])
    assert rng2.bit_generator.state == saved["numpy"]
    # and the resumed run continues exactly as the uninterrupted one did
    _train_steps(net2, opt2, sched2, rng2, gen2, 2)
    for k, v in reference.items():
        assert torch.equal(net2.state_dict()[k], v), k


def test_training_state_reads_the_older_phase1_format(tmp_path):
    net, opt, sched, rng, gen = _training_objects(seed=0)
    _train_steps(net, opt, sched, rng, gen, 1)
    TrainingState({"model": net}, {"opt": opt}, sched, rng).save(tmp_path, {"step": 1})
    state = json.loads((tmp_path / LAST_STATE_JSON).read_text())
    state["optimizer"] = state.pop("optimizers")["opt"]  # the older phase 1 format: one optimiser
    (tmp_path / LAST_STATE_JSON).write_text(json.dumps(state))
    net2, opt2, sched2, rng2, _ = _training_objects(seed=1)
    assert TrainingState({"model": net2}, {"opt": opt2}, sched2, rng2).load(tmp_path) == {"step": 1}
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_nothing_to_resume(tmp_path):
    net, opt, sched, rng, _ = _training_objects(seed=0)
    with pytest.raises(InputError, match=f"nothing to resume .*{LAST_STATE_TENSORS}"):
        TrainingState({"model": net}, {"opt": opt}, sched, rng).load(tmp_path)


# ------------------------------------------------------------------------------ environment


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown --device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_git_commit_names_the_checkout():
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert git_commit() == head.stdout.strip()
