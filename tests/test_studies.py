"""The one-off studies in benchmarks/studies/ on the tiny phase 1 and SAGE-GAN runs of conftest.py."""

from __future__ import annotations

import numpy as np
import torch

from sagegan.runs import GENERATOR_FILE, SEGMENTER_FILE, load_module_weights, load_segmenter, load_tensors, save_tensors
from sagegan.train_gan import GanTrainConfig, train_gan

# as the gan_run fixture (tests/conftest.py, which also gives seg_run)
TINY_GAN = dict(patch_size=64, batch_size=2, generator_widths=(8, 16, 32), latent_dim=16, disc_channels=8,
                warmup_steps=5, ramp_steps=5, val_every=10, sample_every=10, val_max_images=2, device="cpu")


def test_phase2_ablation_arms_train_from_one_snapshot(seg_run, tmp_path):
    """phase2_ablation.py: each arm really trains from the phase 1 snapshot and is tested."""
    from benchmarks.studies import phase2_ablation

    seg_dir, samples = seg_run
    gan_config = {**TINY_GAN, "steps": 1_000_000}
    start = load_tensors(seg_dir / SEGMENTER_FILE)
    for arm in ("phase1", "soft", "detached-frozen-bn"):
        weights, facts = phase2_ablation.train_arm(arm, seg_dir, gan_config, samples, 0.02, tmp_path)
        assert facts["steps"] > 0
        trained = load_tensors(weights)
        assert any(not torch.equal(trained[k], start[k]) for k in start), arm
        metrics = phase2_ablation.test_weights(seg_dir, weights, samples[:1], order={})
        assert 0.0 <= metrics["all"]["f1_50"] <= 1.0 and "ordered" not in metrics


def test_final_weights_reads_runs_and_ganruns(seg_run, gan_run, tmp_path):
    """final_weights.py takes the segmenter out of a RUN's or a GANRUN's last training state."""
    from benchmarks.studies.final_weights import final_segmenter_weights

    for run in (seg_run[0], gan_run[0]):
        weights = final_segmenter_weights(run, tmp_path / "final.safetensors")
        seg = load_segmenter(run)
        load_module_weights(seg.net, weights)  # every key fits the segmenter
        assert set(load_tensors(weights)) == set(seg.net.state_dict())
    # the GANRUN's final segmenter is its own, not phase 1's
    gan_final = load_tensors(final_segmenter_weights(gan_run[0], tmp_path / "gan_final.safetensors"))
    phase1 = load_tensors(seg_run[0] / SEGMENTER_FILE)
    assert any(not torch.equal(gan_final[k], phase1[k]) for k in phase1)


def test_z_diversity_measures_how_much_z_changes_images(gan_run):
    """z_diversity.py: positive spreads; a generator whose styles ignore z scores 0."""
    from benchmarks.studies.z_diversity import z_diversity

    out, _ = gan_run
    result = z_diversity(out, n_masks=2, n_z=3, size=64)
    assert result["z_pixel_sd"] > 0 and result["layout_pixel_sd"] > 0 and result["z_mean_intensity_sd"] > 0
    # zero every style affine's weights: the modulation is then the same for every z
    tensors = load_tensors(out / GENERATOR_FILE)
    flat = {k: (torch.zeros_like(v) if k.endswith("style_affine.weight") else v) for k, v in tensors.items()}
    save_tensors(out / GENERATOR_FILE, flat)
    try:
        flat_result = z_diversity(out, n_masks=2, n_z=3, size=64)
        assert flat_result["z_pixel_sd"] < 1e-6 and flat_result["z_mean_intensity_sd"] < 1e-6
        assert flat_result["layout_pixel_sd"] > 0  # the masks still make the images differ
    finally:
        save_tensors(out / GENERATOR_FILE, tensors)


def test_gan_step_clock_times_steps_through_callbacks(seg_run, tmp_path):
    """The speed benchmark's StepClock stamps one time per optimisation step, via callbacks=."""
    from benchmarks.harness.speed import StepClock

    seg_dir, samples = seg_run
    clock = StepClock()
    train_gan(samples, seg_dir, tmp_path / "gan", GanTrainConfig(**TINY_GAN, steps=4), val=[], progress=False,
              callbacks=clock.callbacks())
    assert len(clock.wall) == len(clock.cpu) == 4
    assert np.all(np.diff(clock.wall) > 0) and clock.seconds_per_step() > 0
