"""Phase 2: a tiny SAGE-GAN trains with finite losses, resumes, and synthesises valid pairs."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from sagegan.infer import load_segmenter
from sagegan.io import Sample, load_pairs, read_mask
from sagegan.simulate import simulate_micrograph
from sagegan.synthesize import synthesize
from sagegan.train_gan import GanTrainConfig, synthetic_share, train_gan
from sagegan.train_seg import SegTrainConfig, train_segmenter


def _samples(n, size=96, seed=0):
    out = []
    for i in range(n):
        sim = simulate_micrograph(size, layout="hex", seed=seed + i, mean_diameter_px=14.0)
        out.append(Sample(f"sim{i}", sim.image, sim.labels))
    return out


def _data_folder(samples, folder):
    """``samples`` written as a data folder (images/ + masks/), as synthesize reads training pairs."""
    from sagegan.io import write_image, write_labels

    for s in samples:
        write_image(folder / "images" / f"{s.stem}.png", s.image)
        write_labels(folder / "masks" / f"{s.stem}.tif", s.labels)
    return folder


TINY_GAN = dict(patch_size=64, batch_size=2, generator_widths=(8, 16, 32), latent_dim=16, disc_channels=8,
                warmup_steps=5, ramp_steps=5, val_every=10, sample_every=10, val_max_images=2, device="cpu")


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    samples = _samples(3)
    cfg = SegTrainConfig(widths=(8, 16, 32), patch_size=64, batch_size=4, epochs=10, val_every=10,
                         canonical_diameter_px=14.0, device="cpu")
    train_segmenter(samples, out, cfg, val=samples[:1], progress=False)
    return out, samples


@pytest.fixture(scope="module")
def gan_run(seg_run, tmp_path_factory):
    seg_dir, samples = seg_run
    out = tmp_path_factory.mktemp("gan")
    cfg = GanTrainConfig(**TINY_GAN, steps=20, seed=0)
    train_gan(samples, seg_dir, out, cfg, val=samples[:1], progress=False)
    return out, samples


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
    first = (gan_run[0] / "train_log.csv").read_text().splitlines()
    second = (tmp_path / "train_log.csv").read_text().splitlines()
    strip = lambda rows: [r.split(",", 2)[2] for r in rows[1:]]  # noqa: E731  (drop step, elapsed_s)
    assert strip(first) == strip(second)


def test_frozen_segmenter_norm_keeps_phase1_statistics(seg_run, tmp_path):
    """The default: S's BatchNorm statistics stay at phase 1's; its convolutions still learn."""
    from sagegan.checkpoint import load_tensors

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
    from sagegan.checkpoint import load_tensors

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


def test_gan_resume(seg_run, tmp_path):
    seg_dir, samples = seg_run
    train_gan(samples, seg_dir, tmp_path, GanTrainConfig(**TINY_GAN, steps=10), val=samples[:1], progress=False)
    train_gan(samples, seg_dir, tmp_path, GanTrainConfig(**TINY_GAN, steps=20), val=samples[:1], resume=True,
              progress=False)
    assert json.loads((tmp_path / "last_state.json").read_text())["step"] == 20


@pytest.mark.parametrize("layouts", ["new", "real", "mixed"])
def test_synthesize_writes_valid_pairs(gan_run, tmp_path, layouts, monkeypatch):
    out, samples = gan_run
    data = _data_folder(samples, tmp_path / "data")  # `real` layouts read the training masks from it
    folder = synthesize(out, 4, tmp_path / "syn", layouts=layouts, seed=1, size=64, data=data, progress=False)
    pairs = load_pairs(folder / "images", folder / "masks")
    assert len(pairs) == 4
    for p in pairs:
        assert p.image.shape == p.labels.shape == (64, 64)
        assert p.labels.max() > 0
    meta = json.loads((folder / "synthesis.json").read_text())
    assert {r["layout"] for r in meta["pairs"]} == ({"real", "new"} if layouts == "mixed" else {layouts})
    again = synthesize(out, 4, tmp_path / "syn2", layouts=layouts, seed=1, size=64, data=data, progress=False)
    np.testing.assert_array_equal(read_mask(again / "masks" / "syn_00000.tif"),
                                  read_mask(folder / "masks" / "syn_00000.tif"))


def test_phase2_ablation_arms_train_from_one_snapshot(seg_run, tmp_path):
    """benchmarks/phase2_ablation.py: each arm really trains from the phase 1 snapshot and is tested."""
    import importlib.util
    from pathlib import Path

    from sagegan.checkpoint import load_tensors

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "phase2_ablation.py"
    spec = importlib.util.spec_from_file_location("phase2_ablation", path)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    seg_dir, samples = seg_run
    gan_config = {**TINY_GAN, "steps": 1_000_000}
    start = load_tensors(seg_dir / "segmenter.safetensors")
    for arm in ("phase1", "soft", "detached-frozen-bn"):
        weights, facts = ablation.train_arm(arm, seg_dir, gan_config, samples, 0.02, tmp_path)
        assert facts["steps"] > 0
        trained = load_tensors(weights)
        assert any(not torch.equal(trained[k], start[k]) for k in start), arm
        metrics = ablation.test_weights(seg_dir, weights, samples[:1], order={})
        assert 0.0 <= metrics["all"]["f1_50"] <= 1.0 and "ordered" not in metrics


def test_generator_benchmark_features_accept_mixed_sizes(seg_run):
    """benchmarks/run.py encoder_features: images of several sizes, rows in input order."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from run import encoder_features

    seg_dir, samples = seg_run
    seg = load_segmenter(seg_dir)
    rng = np.random.default_rng(0)
    images = [rng.random((64, 64)), rng.random((48, 32)), rng.random((64, 64))]
    feats = encoder_features(seg, images)
    assert feats.shape == (3, sum(seg.config["model"]["widths"]))
    np.testing.assert_allclose(feats[1], encoder_features(seg, images[1:2])[0], rtol=1e-5)
    np.testing.assert_allclose(feats[2], encoder_features(seg, images[2:])[0], rtol=1e-5)


def test_final_weights_reads_runs_and_ganruns(seg_run, gan_run, tmp_path):
    """benchmarks/final_weights.py takes the segmenter out of a RUN's or a GANRUN's last.safetensors."""
    import sys
    from pathlib import Path

    from sagegan.checkpoint import load_module_weights, load_tensors

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from final_weights import final_segmenter_weights

    for run in (seg_run[0], gan_run[0]):
        weights = final_segmenter_weights(run, tmp_path / "final.safetensors")
        seg = load_segmenter(run)
        load_module_weights(seg.net, weights)  # every key fits the segmenter
        assert set(load_tensors(weights)) == set(seg.net.state_dict())


def test_style_encoder_trains_resumes_and_is_repeatable(seg_run, tmp_path):
    """--style-encoder: E is trained by the paired/cycle/KL terms, saved, resumed; seeds repeat runs."""
    from sagegan.checkpoint import load_tensors
    from sagegan.nets.style_encoder import StyleEncoder

    seg_dir, samples = seg_run
    cfg = GanTrainConfig(**TINY_GAN, steps=10, style_encoder=True)
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        train_gan(samples, seg_dir, out, cfg, val=samples[:1], progress=False)
    rows = list(csv.DictReader((a / "train_log.csv").open()))
    assert all(np.isfinite(float(rows[-1][k])) for k in ("style_kl", "latent_regression", "paired_l1", "cycle_l1"))
    config = json.loads((a / "config.json").read_text())
    assert config["gan"]["style_encoder"] is True and config["style_encoder"]["latent_dim"] == 16
    trained = load_tensors(a / "style_encoder.safetensors")
    assert set(trained) == set(StyleEncoder(**config["style_encoder"]).state_dict())
    repeated = load_tensors(b / "style_encoder.safetensors")
    assert all(torch.equal(v, repeated[k]) for k, v in trained.items())
    train_gan(samples, seg_dir, a, replace(cfg, steps=20), val=samples[:1], resume=True, progress=False)
    assert json.loads((a / "last_state.json").read_text())["step"] == 20
    assert not all(torch.equal(v, load_tensors(a / "style_encoder.safetensors")[k]) for k, v in trained.items())


def test_synthesize_real_styles_take_the_look_of_training_images(gan_run, seg_run, tmp_path):
    """--styles real: same layouts as --styles random, other images; needs a style-encoder run."""
    from sagegan.io import InputError

    seg_dir, samples = seg_run
    styled = train_gan(samples, seg_dir, tmp_path / "gan", GanTrainConfig(**TINY_GAN, steps=6, style_encoder=True),
                       val=samples[:1], progress=False)
    data = _data_folder(samples, tmp_path / "data")
    real = synthesize(styled, 3, tmp_path / "real", layouts="mixed", seed=2, size=64, data=data, progress=False,
                      styles="real")
    rand = synthesize(styled, 3, tmp_path / "rand", layouts="mixed", seed=2, size=64, data=data, progress=False)
    assert json.loads((real / "synthesis.json").read_text())["styles"] == "real"
    pairs_real, pairs_rand = (load_pairs(f / "images", f / "masks") for f in (real, rand))
    assert len(pairs_real) == 3
    for a, b in zip(pairs_real, pairs_rand):
        np.testing.assert_array_equal(a.labels, b.labels)  # the layouts do not depend on the styles
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(pairs_real, pairs_rand))
    plain, _ = gan_run
    with pytest.raises(InputError, match="style encoder"):
        synthesize(plain, 1, tmp_path / "x", layouts="new", size=64, data=data, progress=False, styles="real")


def test_style_encoder_kl_and_sampling():
    from sagegan.nets.style_encoder import StyleEncoder

    enc = StyleEncoder(latent_dim=8, widths=(4, 8))
    mu, logvar = enc(torch.rand(3, 1, 32, 32))
    assert mu.shape == logvar.shape == (3, 8)
    zero = torch.zeros(3, 8)
    assert float(StyleEncoder.kl_divergence(zero, zero)) == 0.0
    assert float(StyleEncoder.kl_divergence(zero + 1, zero)) == pytest.approx(4.0)  # 0.5 * 8 * 1^2
    g1, g2 = (torch.Generator().manual_seed(3) for _ in range(2))
    assert torch.equal(StyleEncoder.sample(mu, logvar, g1), StyleEncoder.sample(mu, logvar, g2))


def test_z_diversity_measures_how_much_z_changes_images(gan_run):
    """benchmarks/z_diversity.py: finite spreads; a generator whose styles ignore z scores 0."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "z_diversity.py"
    spec = importlib.util.spec_from_file_location("z_diversity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, _ = gan_run
    result = module.z_diversity(out, n_masks=2, n_z=3, size=64)
    assert result["z_pixel_sd"] > 0 and result["layout_pixel_sd"] > 0 and result["z_mean_intensity_sd"] >= 0
    # zero every style affine's weights: the modulation is then the same for every z
    from sagegan.checkpoint import load_tensors, save_tensors

    tensors = load_tensors(out / "generator.safetensors")
    flat = {k: (torch.zeros_like(v) if k.endswith("style_affine.weight") else v) for k, v in tensors.items()}
    save_tensors(out / "generator.safetensors", flat)
    try:
        assert module.z_diversity(out, n_masks=2, n_z=3, size=64)["z_pixel_sd"] < 1e-6
    finally:
        save_tensors(out / "generator.safetensors", tensors)
