"""``sagegan adapt``: label-free adaptation runs, repeats, resumes and refuses bad folders in one line."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import simulated_samples, write_data_folder

TINY_ADAPT = dict(steps=6, batch_size=2, patch_size=64, gan_patch_size=64, gan_batch_size=2, device="cpu",
                  min_score=0.0, gan_options=dict(generator_widths=(8, 16, 32), latent_dim=16, disc_channels=8))


@pytest.fixture(scope="module")
def target_images(tmp_path_factory):
    """Unlabelled target micrographs: simulated TEM (dark particles), another domain than the SEM source."""
    from sagegan.io import write_image
    from sagegan.simulate import simulate_micrograph

    folder = tmp_path_factory.mktemp("targets")
    for i in range(3):
        sim = simulate_micrograph(96, layout="hex", modality="sem", seed=40 + i, mean_diameter_px=14.0)
        write_image(folder / f"t{i}.png", sim.image)
    return folder


def _adapt(target_images, seg_run, out, method, **options):
    from sagegan.adapt import AdaptConfig, adapt

    cfg = AdaptConfig(method=method, **{**TINY_ADAPT, **options})
    return adapt(target_images, out, model=seg_run[0], config=cfg, progress=False)


@pytest.mark.parametrize("method", ["pseudo-label", "copy-paste", "sage-gan"])
def test_each_method_writes_a_run_that_segment_accepts(target_images, seg_run, tmp_path, method):
    from sagegan.infer import segment_image
    from sagegan.io import read_json, read_micrograph
    from sagegan.runs import load_segmenter

    run = _adapt(target_images, seg_run, tmp_path / "run", method)
    config = read_json(run / "config.json")
    assert config["adapt"]["method"] == method
    assert config["adapt"]["target_stems"] == ["t0", "t1", "t2"]
    assert config["adapt"]["source_model"]["path"] == str(seg_run[0])
    assert config["steps"] == TINY_ADAPT["steps"]
    seg = load_segmenter(run)
    result = segment_image(seg, read_micrograph(target_images / "t0.png").image, scale=1.0)
    assert result.labels.shape == (96, 96)
    if method == "sage-gan":
        assert (run / "gan" / "generator.safetensors").exists()
        assert len(list((run / "synthetic" / "images").iterdir())) == 3 * 4


def test_the_adapted_model_keeps_its_sources_zoom_search(target_images, seg_run, tmp_path, monkeypatch):
    import shutil

    import sagegan.infer as infer
    from sagegan.io import InputError, read_micrograph
    from sagegan.runs import load_segmenter, weights_sha256

    run = _adapt(target_images, seg_run, tmp_path / "run", "pseudo-label")
    assert weights_sha256(run / "zoom_guide" / "segmenter.safetensors") == \
        weights_sha256(seg_run[0] / "segmenter.safetensors")
    seg = load_segmenter(run)
    searched = []
    search = infer.search_zoom
    monkeypatch.setattr(infer, "search_zoom", lambda s, image, **kw: searched.append(s) or search(s, image, **kw))
    infer.segment_image(seg, read_micrograph(target_images / "t0.png").image)
    assert searched == [seg.zoom_guide] and seg.zoom_guide.path == run / "zoom_guide"
    # adapting the adapted model keeps the first source's search
    again = _adapt(target_images, (run, None), tmp_path / "again", "pseudo-label")
    assert weights_sha256(again / "zoom_guide" / "segmenter.safetensors") == \
        weights_sha256(seg_run[0] / "segmenter.safetensors")
    shutil.rmtree(run / "zoom_guide")
    with pytest.raises(InputError, match="zoom_guide/\\) is missing"):
        load_segmenter(run)


def test_a_seeded_run_repeats_exactly_and_resumes(target_images, seg_run, tmp_path):
    from sagegan.runs import load_tensors

    a = _adapt(target_images, seg_run, tmp_path / "a", "copy-paste")
    b = _adapt(target_images, seg_run, tmp_path / "b", "copy-paste")
    wa, wb = load_tensors(a / "segmenter.safetensors"), load_tensors(b / "segmenter.safetensors")
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    # a run of 3 steps, continued to 6 with --resume, ends where the 6-step run ends
    from sagegan.adapt import AdaptConfig, adapt

    _adapt(target_images, seg_run, tmp_path / "c", "copy-paste", steps=3)
    c = adapt(target_images, tmp_path / "c", model=seg_run[0], config=AdaptConfig(method="copy-paste", **TINY_ADAPT),
              resume=True, progress=False)
    wc = load_tensors(c / "segmenter.safetensors")
    assert all(np.allclose(wa[k].numpy(), wc[k].numpy(), atol=1e-5) for k in wa)


def test_pseudo_labels_leave_unsure_pixels_out(seg_run):
    from sagegan.adapt import pseudo_label
    from sagegan.runs import load_segmenter

    seg = load_segmenter(seg_run[0])
    image = seg_run[1][0].image
    everything = pseudo_label(seg, image, "x", min_score=0.0)
    strict = pseudo_label(seg, image, "x", min_score=0.999)
    assert everything.n_confident > 0 and strict.n_confident < everything.n_confident
    assert not (strict.sample.ignore & (strict.sample.labels > 0)).any()
    assert strict.sample.ignore.sum() >= everything.sample.ignore.sum()


def test_refusals_are_one_line(seg_run, tmp_path, target_images):
    from sagegan.adapt import AdaptConfig, adapt
    from sagegan.io import InputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        adapt(tmp_path / "empty", tmp_path / "r1", model=seg_run[0], config=AdaptConfig(**TINY_ADAPT), progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        adapt(bad, tmp_path / "r2", model=seg_run[0], config=AdaptConfig(**TINY_ADAPT), progress=False)
    with pytest.raises(InputError, match="too few to adapt on"):
        adapt(target_images, tmp_path / "r3", model=seg_run[0], progress=False,
              config=AdaptConfig(**{**TINY_ADAPT, "min_score": 0.99}))
    (tmp_path / "r4").mkdir()
    (tmp_path / "r4" / "x").write_text("")
    with pytest.raises(InputError, match="not empty"):
        adapt(target_images, tmp_path / "r4", model=seg_run[0], config=AdaptConfig(**TINY_ADAPT), progress=False)


def test_copy_paste_pairs_have_exact_masks(make_samples):
    from sagegan.copy_paste import copy_paste_pairs

    samples = make_samples(2, size=96)
    pairs = copy_paste_pairs(samples, 3, np.random.default_rng(0))
    assert len(pairs) == 3
    for p in pairs:
        n = len(np.unique(p.labels)) - 1
        assert n >= 5
        assert p.image.shape == p.labels.shape == (96, 96)
        # every pasted particle is one connected piece of pixels taken from a real particle
        assert 0.0 <= p.image.min() and p.image.max() <= 1.0


def test_clustered_pasting_makes_touching_particles(make_samples):
    """With cluster=1 every particle after the first lands touching one already pasted: the pasted
    particles form agglomerates (pairs of labels that touch), which scattered pasting rarely
    makes; cluster=0 keeps the layout of earlier runs."""
    from sagegan.copy_paste import copy_paste_pairs

    def touching_pairs(labels):
        right = np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1)
        down = np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)
        both = np.concatenate([right, down])
        both = both[(both[:, 0] > 0) & (both[:, 1] > 0) & (both[:, 0] != both[:, 1])]
        return len({tuple(sorted(p)) for p in both.tolist()})

    samples = make_samples(2, size=96)
    scattered = copy_paste_pairs(samples, 4, np.random.default_rng(0))
    clustered = copy_paste_pairs(samples, 4, np.random.default_rng(0), cluster=1.0)
    again = copy_paste_pairs(samples, 4, np.random.default_rng(0), cluster=0.0)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(scattered, again))
    assert sum(touching_pairs(p.labels) for p in clustered) > sum(touching_pairs(p.labels) for p in scattered)
    assert all(len(np.unique(p.labels)) - 1 >= 3 for p in clustered)


def test_train_seg_copy_paste_adds_pasted_pairs(tmp_path):
    from conftest import TINY_SEG

    from sagegan.io import read_json
    from sagegan.train_seg import SegTrainConfig, train_segmenter

    samples = simulated_samples(3)
    cfg = SegTrainConfig(**{**TINY_SEG, "val_every": 2}, epochs=1, max_steps=2, canonical_diameter_px=14.0,
                         copy_paste_per_image=2.0)
    run = train_segmenter(samples[1:], tmp_path / "run", cfg, val=samples[:1], progress=False)
    data = read_json(run / "config.json")["data"]
    assert data["n_train"] == 2 + 4
    assert sum(s.startswith("paste_") for s in data["train_stems"]) == 4


def test_train_gan_unlabeled_images_feed_the_cycle(seg_run, tmp_path):
    from conftest import TINY_GAN

    import pandas as pd

    from sagegan.io import read_json
    from sagegan.train_gan import GanTrainConfig, train_gan

    seg_dir, samples = seg_run
    cfg = GanTrainConfig(**{**TINY_GAN, "val_every": 3, "sample_every": 3}, steps=3, seed=0)
    targets = [1.0 - s.image for s in simulated_samples(2, seed=50)]  # inverted contrast: another look
    with_unlabeled = train_gan(samples, seg_dir, tmp_path / "u", cfg, val=[], progress=False, unlabeled=targets)
    without = train_gan(samples, seg_dir, tmp_path / "p", cfg, val=[], progress=False)
    assert read_json(with_unlabeled / "config.json")["data"]["n_unlabeled"] == 2
    a, b = pd.read_csv(with_unlabeled / "train_log.csv"), pd.read_csv(without / "train_log.csv")
    assert a["cycle_l1"].iloc[-1] != b["cycle_l1"].iloc[-1]


def test_a_split_chooses_the_images(target_images, seg_run, tmp_path):
    from sagegan.adapt import AdaptConfig, adapt
    from sagegan.io import read_json

    split = tmp_path / "ids.txt"
    split.write_text("t0\nt2\n")
    run = adapt(target_images, tmp_path / "run", model=seg_run[0], progress=False, split=split,
                config=AdaptConfig(**{**TINY_ADAPT, "steps": 1}))
    assert read_json(run / "config.json")["adapt"]["target_stems"] == ["t0", "t2"]
