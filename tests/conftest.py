"""Shared fixtures: simulated samples and the tiny trained runs that several test files use.

The runs are session-scoped, so a segmenter is trained once however many of test_train_seg,
test_infer, test_validation, test_train_gan, test_synthesize and test_cli run together.
"""

from __future__ import annotations

import os

import pytest

# Tiny tensors gain nothing from a second thread, and when another process holds the other core,
# OpenMP threads waiting on each other make each call many times slower. Set before torch is
# imported, so it holds for every test and is inherited by the subprocesses tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_SEG = dict(widths=(8, 16, 32), patch_size=64, batch_size=4, val_every=25, val_max_images=2, device="cpu")
TINY_GAN = dict(patch_size=64, batch_size=2, generator_widths=(8, 16, 32), latent_dim=16, disc_channels=8,
                warmup_steps=5, ramp_steps=5, val_every=10, sample_every=10, val_max_images=2, device="cpu")


def simulated_samples(n: int, size: int = 96, seed: int = 0, diameter: float = 14.0):
    """``n`` simulated SEM micrographs of hexagonal arrays, as :class:`sagegan.io.Sample`."""
    from sagegan.io import Sample
    from sagegan.simulate import simulate_micrograph

    out = []
    for i in range(n):
        sim = simulate_micrograph(size, layout="hex", modality="sem", seed=seed + i, mean_diameter_px=diameter)
        out.append(Sample(f"sim{i}", sim.image, sim.labels))
    return out


def write_data_folder(samples, folder):
    """``samples`` written as a data folder (images/ + masks/)."""
    from sagegan.io import write_image, write_labels

    for s in samples:
        write_image(folder / "images" / f"{s.stem}.png", s.image)
        write_labels(folder / "masks" / f"{s.stem}.tif", s.labels)
    return folder


@pytest.fixture(scope="session")
def make_samples():
    """:func:`simulated_samples`, for tests that need their own images."""
    return simulated_samples


@pytest.fixture(scope="session")
def make_data_folder():
    """:func:`write_data_folder`."""
    return write_data_folder


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory):
    """A tiny segmenter trained on three simulated images until it segments them well: (RUN, samples)."""
    from sagegan.train_seg import SegTrainConfig, train_segmenter

    out = tmp_path_factory.mktemp("seg_run")
    samples = simulated_samples(3)
    cfg = SegTrainConfig(**TINY_SEG, epochs=100, canonical_diameter_px=14.0, lr=3e-3, seed=1, patience=100)
    train_segmenter(samples, out, cfg, val=samples[:2], progress=False)
    return out, samples


@pytest.fixture(scope="session")
def gan_run(seg_run, tmp_path_factory):
    """A tiny SAGE-GAN (20 steps, seed 0) around ``seg_run``: (GANRUN, samples)."""
    from sagegan.train_gan import GanTrainConfig, train_gan

    seg_dir, samples = seg_run
    out = tmp_path_factory.mktemp("gan_run")
    train_gan(samples, seg_dir, out, GanTrainConfig(**TINY_GAN, steps=20, seed=0), val=samples[:1], progress=False)
    return out, samples
