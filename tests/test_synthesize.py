"""Synthesis: image/mask pairs from a trained generator, exactly repeatable with a seed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sagegan.data import BOUNDARY, class_map
from sagegan.io import InputError, load_pairs, read_mask
from sagegan.runs import GENERATOR_FILE, load_tensors, save_tensors
from sagegan.synthesize import _fit, generator_mask, synthesize
from sagegan.train_gan import GanTrainConfig, train_gan

from conftest import TINY_GAN  # as the gan_run fixture


@pytest.fixture(scope="module")
def noisy_gan_run(gan_run, tmp_path_factory):
    """``gan_run`` with its per-pixel noise turned up, so that unseeded noise would show in the images."""
    out = tmp_path_factory.mktemp("noisy_gan") / "run"
    shutil.copytree(gan_run[0], out)
    weights = load_tensors(out / GENERATOR_FILE)
    strengths = [k for k in weights if k.endswith("noise.strength")]
    assert strengths
    for k in strengths:
        weights[k] = torch.full_like(weights[k], 0.5)
    save_tensors(out / GENERATOR_FILE, weights)
    return out, gan_run[1]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generator_mask_encodes_foreground_and_boundary():
    labels = np.zeros((8, 8), np.int32)
    labels[2:6, 2:6] = 1
    mask = generator_mask(labels)
    assert mask.shape == (1, 2, 8, 8) and mask.dtype == torch.float32
    np.testing.assert_array_equal(mask[0, 0].numpy(), (labels > 0).astype(np.float32))
    np.testing.assert_array_equal(mask[0, 1].numpy(), (class_map(labels) == BOUNDARY).astype(np.float32))
    assert _fit(np.zeros((70, 67), np.int32), 8).shape == (64, 64)
    with pytest.raises(InputError, match="smaller than the generator's 8-px grid"):
        _fit(np.zeros((6, 64), np.int32), 8)


@pytest.mark.parametrize("layouts", ["new", "real", "mixed"])
def test_synthesize_writes_valid_pairs(gan_run, make_data_folder, tmp_path, layouts):
    out, samples = gan_run
    data = make_data_folder(samples, tmp_path / "data")  # `real` layouts read the training masks from it
    folder = synthesize(out, 4, tmp_path / "syn", layouts=layouts, seed=1, size=64, data=data, progress=False)
    pairs = load_pairs(folder / "images", folder / "masks")
    assert len(pairs) == 4
    for p in pairs:
        assert p.image.shape == p.labels.shape == (64, 64)
        assert p.labels.max() > 0
    meta = json.loads((folder / "synthesis.json").read_text())
    assert {r["layout"] for r in meta["pairs"]} == ({"real", "new"} if layouts == "mixed" else {layouts})
    assert [r["n_particles"] for r in meta["pairs"]] == [len(np.unique(p.labels)) - 1 for p in pairs]
    assert (meta["n"], meta["seed"], meta["size"]) == (4, 1, 64)


def test_synthesize_with_a_seed_is_exactly_repeatable(noisy_gan_run, make_data_folder, tmp_path):
    out, samples = noisy_gan_run
    data = make_data_folder(samples, tmp_path / "data")
    first = synthesize(out, 4, tmp_path / "a", layouts="mixed", seed=3, size=64, data=data, progress=False)
    again = synthesize(out, 4, tmp_path / "b", layouts="mixed", seed=3, size=64, data=data, progress=False)
    files, files_again = _files(first), _files(again)
    assert files.keys() == files_again.keys() and len(files) == 9  # 4 images, 4 masks, synthesis.json
    for name, path in files.items():
        if name.endswith(".tif"):
            np.testing.assert_array_equal(read_mask(path), read_mask(files_again[name]))
        elif name.endswith(".png"):
            assert path.read_bytes() == files_again[name].read_bytes(), name
    other = synthesize(out, 4, tmp_path / "c", layouts="mixed", seed=4, size=64, data=data, progress=False)
    assert any(path.read_bytes() != (other / name).read_bytes() for name, path in files.items()
               if name.endswith(".png"))


def test_synthesize_checks_its_arguments(gan_run, tmp_path):
    out, _ = gan_run
    with pytest.raises(ValueError, match="--layouts"):
        synthesize(out, 1, tmp_path / "x", layouts="grid", progress=False)
    with pytest.raises(ValueError, match="--styles"):
        synthesize(out, 1, tmp_path / "x", styles="vintage", progress=False)
    with pytest.raises(ValueError, match="--n"):
        synthesize(out, 0, tmp_path / "x", progress=False)
    # gan_run was trained from samples in memory: `real` layouts need to be told where the data is
    with pytest.raises(InputError, match="does not record its training data"):
        synthesize(out, 1, tmp_path / "x", layouts="real", size=64, progress=False)


def test_synthesize_real_styles_take_the_look_of_training_images(gan_run, seg_run, make_data_folder, tmp_path):
    """--styles real: same layouts as --styles random, other images; needs a style-encoder run."""
    seg_dir, samples = seg_run
    styled = train_gan(samples, seg_dir, tmp_path / "gan", GanTrainConfig(**TINY_GAN, steps=6, style_encoder=True),
                       val=samples[:1], progress=False)
    data = make_data_folder(samples, tmp_path / "data")
    real = synthesize(styled, 3, tmp_path / "real", layouts="mixed", seed=2, size=64, data=data, progress=False,
                      styles="real")
    rand = synthesize(styled, 3, tmp_path / "rand", layouts="mixed", seed=2, size=64, data=data, progress=False)
    assert json.loads((real / "synthesis.json").read_text())["styles"] == "real"
    pairs_real, pairs_rand = (load_pairs(f / "images", f / "masks") for f in (real, rand))
    assert len(pairs_real) == 3
    for a, b in zip(pairs_real, pairs_rand):
        np.testing.assert_array_equal(a.labels, b.labels)  # the layouts do not depend on the styles
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(pairs_real, pairs_rand))
    again = synthesize(styled, 3, tmp_path / "again", layouts="mixed", seed=2, size=64, data=data, progress=False,
                       styles="real")
    for a, b in zip(load_pairs(again / "images", again / "masks"), pairs_real):
        np.testing.assert_array_equal(a.image, b.image)  # real styles repeat with the seed too
    plain, _ = gan_run
    with pytest.raises(InputError, match="style encoder"):
        synthesize(plain, 1, tmp_path / "x", layouts="new", size=64, data=data, progress=False, styles="real")
