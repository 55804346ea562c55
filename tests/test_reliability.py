"""Issue 17 (reliability): every bad input or fault a user can cause gets one line, status 2, and
nothing is lost or silently wrong. One section per area, small generated files only."""

from __future__ import annotations


# ---- outputs (segment manifest, duplicate stems, re-runs, --analyze, batch failures, --overwrite, evaluate)


def _sagegan(capsys, *argv):
    """``sagegan ARGV`` in this process: (exit status, stdout, stderr)."""
    import os

    from sagegan.cli import main

    os.environ["SAGEGAN_NO_MALLOC_TUNING"] = "1"  # main() must not re-execute itself in a test
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _micrographs(samples, folder, names):
    from sagegan.io import write_image

    for i, name in enumerate(names):
        write_image(folder / f"{name}.png", samples[i % len(samples)].image[:64, :64])
    return folder


def _segment(capsys, run, out, *inputs, extra=()):
    return _sagegan(capsys, "segment", *inputs, "--model", run, "--out", out, "--scale", "1", *extra)


def test_segment_names_repeated_stems_by_their_folder(seg_run, tmp_path, capsys):
    import json

    run, samples = seg_run
    _micrographs(samples[:1], tmp_path / "a", ["x"])
    _micrographs(samples[1:], tmp_path / "b", ["x"])
    code, out, err = _segment(capsys, run, tmp_path / "out", tmp_path / "a" / "x.png", tmp_path / "b" / "x.png")
    assert code == 0, err
    assert "2 input(s) share a file name" in err and "a_x" in err and "b_x" in err
    assert (tmp_path / "out" / "a_x_labels.tif").is_file() and (tmp_path / "out" / "b_x_labels.tif").is_file()
    assert not (tmp_path / "out" / "x_labels.tif").exists()
    manifest = json.loads((tmp_path / "out" / "segment_manifest.json").read_text())
    assert manifest["images"]["b_x"]["input"] == str((tmp_path / "b" / "x.png").resolve())
    # a re-run of one of them replaces its own outputs, under the same name
    code, out, err = _segment(capsys, run, tmp_path / "out", tmp_path / "b" / "x.png")
    assert code == 0 and "replaced the earlier outputs of 1 image(s)" in err and "kept those of 1" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.tif")) == ["a_x_labels.tif", "b_x_labels.tif"]


def test_segment_into_its_input_folder_skips_its_own_outputs(seg_run, tmp_path, capsys):
    run, samples = seg_run
    folder = _micrographs(samples, tmp_path / "in", ["x", "y_mask"])  # a user's own *_mask.png is an input
    code, out, err = _segment(capsys, run, folder, folder)
    assert code == 0, err
    assert "2 image(s)," in out and (folder / "y_mask_labels.tif").is_file()
    code, out, err = _segment(capsys, run, folder, folder)
    assert code == 0, err
    assert "skipped 6 file(s) that sagegan segment wrote" in err and "2 image(s)," in out
    assert not list(folder.glob("*_labels_labels.tif")) and not list(folder.glob("*_overlay_*"))


def test_segment_never_overwrites_a_users_file(seg_run, tmp_path, capsys):
    run, samples = seg_run
    folder = _micrographs(samples, tmp_path / "in", ["x", "x_mask"])
    before = (folder / "x_mask.png").read_bytes()
    code, out, err = _segment(capsys, run, folder, folder)
    assert code == 2 and "x_mask.png: exists and was not written by sagegan segment" in err
    assert len(err.strip().splitlines()) == 1 and (folder / "x_mask.png").read_bytes() == before


def test_segment_rerun_replaces_only_the_images_given(seg_run, tmp_path, capsys):
    import pandas as pd

    run, samples = seg_run
    folder = _micrographs(samples, tmp_path / "in", ["a", "b"])
    code, _, err = _segment(capsys, run, tmp_path / "out", folder, extra=["--save-attention"])
    assert code == 0, err
    a_labels = (tmp_path / "out" / "a_labels.tif").read_bytes()
    code, out, err = _segment(capsys, run, tmp_path / "out", folder / "b.png")
    assert code == 0 and "1 image(s)," in out
    assert "replaced the earlier outputs of 1 image(s)" in err and "kept those of 1 other image(s)" in err
    assert (tmp_path / "out" / "a_labels.tif").read_bytes() == a_labels
    assert (tmp_path / "out" / "a_attention.png").exists() and not (tmp_path / "out" / "b_attention.png").exists()
    assert set(pd.read_csv(tmp_path / "out" / "particles.csv")["image"]) == {"a", "b"}


def test_segment_analyze_reads_only_this_runs_files(seg_run, tmp_path, capsys):
    import json

    run, samples = seg_run
    folder = _micrographs(samples, tmp_path / "in", ["old", "new"])
    assert _segment(capsys, run, tmp_path / "out", folder / "old.png")[0] == 0
    code, out, err = _segment(capsys, run, tmp_path / "out", folder / "new.png", extra=["--analyze"])
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "analysis" / "summary.json").read_text())
    assert list(summary["images"]) == ["new"] and "report:" in out


def test_segment_bad_images_fail_alone(seg_run, tmp_path, capsys):
    import json

    from sagegan.io import write_image

    run, samples = seg_run
    folder = _micrographs(samples, tmp_path / "in", ["good"])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_image(folder / "tiny.png", samples[0].image[:8, :8])
    code, out, err = _segment(capsys, run, tmp_path / "out", folder)
    assert code == 2 and "1 image(s)," in out
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "corrupt.png" in lines[0] and "tiny.png" in lines[1]
    assert lines[-1].startswith("sagegan: error: 2 of 3 image(s) failed")
    assert list(json.loads((tmp_path / "out" / "segment_manifest.json").read_text())["images"]) == ["good"]


def test_segment_reads_ahead_on_a_thread_in_input_order(seg_run, tmp_path, monkeypatch):
    """The next image is read on a background thread while one is segmented; reads keep the input
    order and the outputs are those of every image."""
    import threading
    from pathlib import Path

    from sagegan import infer

    run, samples = seg_run
    folder = _micrographs(samples, tmp_path / "in", ["a", "b", "c"])
    reads = []
    real_read = infer.read_micrograph

    def read(path, **options):
        reads.append((Path(path).stem, threading.current_thread().name))
        return real_read(path, **options)

    monkeypatch.setattr(infer, "read_micrograph", read)
    infer.segment_files([folder], run, tmp_path / "out", scale=1.0, progress=False)
    assert [stem for stem, _ in reads] == ["a", "b", "c"]
    assert all(thread.startswith("sagegan-read") for _, thread in reads)
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.tif")) == ["a_labels.tif", "b_labels.tif", "c_labels.tif"]


def test_batch_policy_for_a_distributed_loop():
    import pytest

    from sagegan.io import Batch, BatchError, InputError

    lines = []
    batch = Batch(3, report=lines.append)
    batch.fail("b.png", InputError("b.png: not an image"))  # as a task's exception comes back
    with batch.item("c.png"):
        raise InputError("too small")
    assert lines == ["failed: b.png: not an image", "failed: c.png: too small"]
    with pytest.raises(BatchError, match="2 of 3 image"):
        batch.finish()
    with pytest.raises(RuntimeError):  # not a bad input: the batch stops
        with batch.item("d.png"):
            raise RuntimeError("bug")


def test_simulate_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    import pandas as pd

    from sagegan.simulate import simulate_dataset

    assert _sagegan(capsys, "simulate", "--out", tmp_path / "sim", "--n", "3", "--size", "32")[0] == 0
    code, out, err = _sagegan(capsys, "simulate", "--out", tmp_path / "sim", "--n", "2", "--size", "32")
    assert code == 2 and "folder is not empty" in err and "--overwrite" in err
    assert _sagegan(capsys, "simulate", "--out", tmp_path / "sim", "--n", "2", "--size", "32", "--overwrite")[0] == 0
    assert sorted(p.name for p in (tmp_path / "sim" / "images").iterdir()) == ["sim_0000.png", "sim_0001.png"]
    assert set(pd.read_csv(tmp_path / "sim" / "truth.csv")["image"]) == {"sim_0000", "sim_0001"}
    # files sagegan did not generate are never removed
    (tmp_path / "sim" / "notes.txt").write_text("mine")
    code, out, err = _sagegan(capsys, "simulate", "--out", tmp_path / "sim", "--n", "1", "--size", "32", "--overwrite")
    assert code == 2 and "notes.txt" in err and (tmp_path / "sim" / "masks" / "sim_0001.tif").exists()
    # bad arguments leave the old pairs in place
    (tmp_path / "sim" / "notes.txt").unlink()
    import pytest

    with pytest.raises(ValueError):
        simulate_dataset(tmp_path / "sim", n=1, size=32, layout="nope", progress=False, overwrite=True)
    assert (tmp_path / "sim" / "images" / "sim_0001.png").exists()


def test_synthesize_refuses_a_non_empty_folder_unless_overwrite(gan_run, tmp_path):
    import pytest

    from sagegan.io import InputError
    from sagegan.synthesize import synthesize

    run, _ = gan_run
    synthesize(run, 3, tmp_path / "syn", layouts="new", size=64, progress=False)
    with pytest.raises(InputError, match="folder is not empty"):
        synthesize(run, 2, tmp_path / "syn", layouts="new", size=64, progress=False)
    synthesize(run, 2, tmp_path / "syn", layouts="new", size=64, progress=False, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "syn" / "masks").iterdir()) == ["syn_00000.tif", "syn_00001.tif"]


def test_evaluate_counts_missing_predictions(tmp_path, capsys):
    import json

    import numpy as np

    from sagegan.io import write_labels

    for i in range(3):
        labels = np.zeros((32, 32), np.uint16)
        labels[4:12, 4:12] = 1
        write_labels(tmp_path / "truth" / f"im{i}.tif", labels)
        if i < 2:
            write_labels(tmp_path / "pred" / f"im{i}_labels.tif", labels)
    code, out, err = _sagegan(capsys, "evaluate", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth")
    assert code == 2 and "no prediction for 1 image(s) of the 3 with ground truth: im2" in err
    code, out, err = _sagegan(capsys, "evaluate", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth",
                              "--allow-missing", "--json", tmp_path / "m.json")
    assert code == 0 and "lacks predictions for 1 of the 3 images" in err and "left out: im2" in err
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["headline"]["n_images"] == 2 and data["summary"]["missing_predictions"] == ["im2"]


# ---- masks and calibration (masks read as drawn, micrographs refused as labels, --mask-kind, --nm-per-px)


def _cli(capsys, monkeypatch, *argv):
    """``sagegan ARGV`` in this process: (exit status, stdout, stderr lines)."""
    code, out, err = _sagegan(capsys, *argv)
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def _noisy_micrograph(seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    return np.clip(ramp * 200 + rng.normal(0, 12, (64, 64)) + 20, 0, 255).astype(np.uint8)


def _mask_folder(root, masks, micrographs=True):
    """root/masks/im<i>.png for each mask, and root/images/im<i>.png (noisy micrographs) when
    ``micrographs``."""
    import imageio.v3 as iio

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(masks):
        iio.imwrite(root / "masks" / f"im{i}.png", mask)
        if micrographs:
            iio.imwrite(root / "images" / f"im{i}.png", _noisy_micrograph(i))
    return root


def _square_mask(value=255):
    import numpy as np

    mask = np.zeros((64, 64), np.uint8)
    mask[8:28, 8:28] = value
    mask[36:56, 30:50] = value
    return mask


def test_analyze_and_evaluate_refuse_a_micrograph_as_labels(tmp_path, capsys, monkeypatch):
    # before: analyze counted each grey level as a particle, evaluate scored the micrograph, exit 0
    d = _mask_folder(tmp_path / "d", [_square_mask(), _square_mask()])
    code, out, err = _cli(capsys, monkeypatch, "analyze", d / "images" / "im0.png", "--out", tmp_path / "a")
    assert code == 2 and len(err) == 1 and "im0.png: looks like a micrograph, not a mask or label image" in err[0]
    assert not (tmp_path / "a" / "report.html").exists()
    code, out, err = _cli(capsys, monkeypatch, "evaluate", "--pred", d / "images", "--truth", d / "masks")
    assert code == 2 and len(err) == 1 and "looks like a micrograph" in err[0] and "Traceback" not in err[0]
    code, out, err = _cli(capsys, monkeypatch, "evaluate", "--pred", d / "masks", "--truth", d / "masks")
    assert code == 0 and "mean_dice: 1.0000" in out


def test_mask_kind_option_decides_ambiguous_masks(tmp_path, capsys, monkeypatch):
    ambiguous = _square_mask(1)
    ambiguous[40:60, 4:20] = 2
    ambiguous[4:20, 44:60] = 2  # two values, each several particles
    d = _mask_folder(tmp_path / "d", [ambiguous, _square_mask()])
    code, out, err = _cli(capsys, monkeypatch, "check-data", "--data", d)
    assert code == 2 and len(err) == 1
    assert "im0.png: cannot tell whether this mask is binary or a label map" in err[0]
    assert "pass --mask-kind binary or --mask-kind labels" in err[0]
    code, out, err = _cli(capsys, monkeypatch, "check-data", "--data", d, "--mask-kind", "labels")
    assert code == 0 and "2 image/mask pairs" in out  # im1 is binary: a single value, one id for all
    code, out, err = _cli(capsys, monkeypatch, "check-data", "--data", d, "--mask-kind", "binary")
    assert code == 0 and "4 particles" in out  # im0: the two squares of 2; im1: its two squares
    code, out, err = _cli(capsys, monkeypatch, "check-data", "--data", d, "--mask-kind", "instances")
    assert code == 2 and err == ["sagegan: error: --mask-kind must be auto, binary or labels, got 'instances'"]
    for command in ("check-data", "train-seg", "train-gan", "evaluate", "analyze", "synthesize", "demo"):
        code, out, _ = _cli(capsys, monkeypatch, command, "--help")
        assert code == 0 and "--mask-kind" in out, command


def test_nm_per_px_wins_over_broken_metadata(tmp_path, capsys, monkeypatch):
    import tifffile

    d = _mask_folder(tmp_path / "d", [_square_mask(), _square_mask()], micrographs=False)
    for i, unit in enumerate(("nanometers", "1/nm")):  # a known unit spelled out, a reciprocal one
        tifffile.imwrite(d / "images" / f"im{i}.tif", _noisy_micrograph(i), imagej=True,
                         resolution=(0.5, 0.5), metadata={"unit": unit})
    code, out, err = _cli(capsys, monkeypatch, "check-data", "--data", d)
    assert code == 0 and "1 with a pixel size" in out
    assert err == [f"sagegan: warning: {d / 'images' / 'im1.tif'}: pixel size unknown: pixel size is in "
                   "reciprocal units (1/nm); this looks like a diffraction pattern or FFT, not a real-space "
                   "image; pass --nm-per-px to set it"]
    code, out, err = _cli(capsys, monkeypatch, "check-data", "--data", d, "--nm-per-px", "2")
    assert code == 0 and "2 with a pixel size" in out and err == []
    code, out, err = _cli(capsys, monkeypatch, "check-data", "--data", d, "--nm-per-px", "1e6")
    assert code == 0 and err == ["sagegan: warning: --nm-per-px: pixel size 1e+06 nm/px is outside the "
                                 "plausible range 0.001-10000 nm/px; check it (--nm-per-px sets it)"]


# ---- big images, option values, and failures of the machine (lead)


def test_autocorrelation_prior_reads_a_bounded_crop():
    import numpy as np

    from sagegan.infer import AUTOCORR_MAX_SIDE, _central_crop, estimate_diameter_autocorr
    from sagegan.simulate import simulate_micrograph

    big = np.tile(simulate_micrograph(512, layout="hex", seed=2, mean_diameter_px=16.0).image, (3, 3))
    crop = _central_crop(big, AUTOCORR_MAX_SIDE)
    assert crop.shape == (AUTOCORR_MAX_SIDE, AUTOCORR_MAX_SIDE)
    assert estimate_diameter_autocorr(big) == estimate_diameter_autocorr(crop)


def test_large_images_are_predicted_in_blocks(seg_run, monkeypatch):
    import numpy as np

    import sagegan.infer as infer
    from sagegan.runs import load_segmenter

    run, samples = seg_run
    seg = load_segmenter(run)
    image = np.tile(samples[0].image, (2, 3))
    whole = infer.predict_maps(seg, image, 1.0)
    monkeypatch.setattr(infer, "MAX_WHOLE_ZOOMED_PX", 1)
    monkeypatch.setattr(infer, "BLOCK_ZOOMED_PX", 96)
    monkeypatch.setattr(infer, "BLOCK_MARGIN_ZOOMED_PX", 32)
    blocks = infer.predict_maps(seg, image, 1.0)
    assert blocks["probs"].shape == whole["probs"].shape and blocks["distance"].shape == image.shape
    # the blocks see less context at their seams, so they differ a little from one pass, not much
    assert np.abs(blocks["probs"] - whole["probs"]).mean() < 0.05


def test_max_pixels_refuses_an_image_before_decoding(tmp_path, capsys, seg_run):
    import numpy as np

    from sagegan.io import InputError, read_micrograph, write_image

    write_image(tmp_path / "in" / "big.png", np.zeros((200, 300), np.float32))
    try:
        read_micrograph(tmp_path / "in" / "big.png", max_pixels=50_000)
        raise AssertionError("not refused")
    except InputError as exc:
        assert "big.png" in str(exc) and "--max-pixels" in str(exc)
    assert read_micrograph(tmp_path / "in" / "big.png", max_pixels=60_000).image.shape == (200, 300)
    code, _, err = _segment(capsys, seg_run[0], tmp_path / "out", tmp_path / "in", extra=("--max-pixels", "1000"))
    assert code == 2 and "big.png" in err and "--max-pixels" in err


def test_invalid_option_values_get_one_line(tmp_path, capsys):
    for argv, option in ((("train-seg", "--data", tmp_path, "--out", tmp_path / "r", "--val-every", "0"), "--val-every"),
                         (("train-seg", "--data", tmp_path, "--out", tmp_path / "r", "--diameter", "0"), "--diameter"),
                         (("train-seg", "--data", tmp_path, "--out", tmp_path / "r", "--widths", "a,b"), "--widths"),
                         (("segment", tmp_path, "--model", tmp_path, "--out", tmp_path / "o", "--min-area", "-1"),
                          "--min-area")):
        code, _, err = _sagegan(capsys, *argv)
        assert code == 2 and option in err and len(err.strip().splitlines()) == 1, (option, err)


def test_machine_failures_and_internal_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import sagegan.simulate

    code, _, err = _sagegan(capsys, "simulate", "--out", "/proc/sagegan-test", "--n", "1", "--size", "32")
    assert code == 2 and err.startswith("sagegan: error: /proc/sagegan-test") and len(err.strip().splitlines()) == 1

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png"))

    monkeypatch.setattr(sagegan.simulate, "simulate_dataset", full_disk)
    code, _, err = _sagegan(capsys, "simulate", "--out", tmp_path / "s", "--n", "1")
    assert code == 2 and err.strip() == f"sagegan: error: {tmp_path / 'x.png'}: No space left on device"

    def bug(*args, **kwargs):
        raise RuntimeError("something internal")

    monkeypatch.setattr(sagegan.simulate, "simulate_dataset", bug)
    code, _, err = _sagegan(capsys, "simulate", "--out", tmp_path / "s", "--n", "1")
    assert code == 1 and "internal error: RuntimeError: something internal" in err and "--debug" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.delenv("SAGEGAN_DEBUG", raising=False)
    try:
        _sagegan(capsys, "simulate", "--out", tmp_path / "s", "--n", "1", "--debug")
        raise AssertionError("--debug did not raise")
    except RuntimeError as exc:
        assert str(exc) == "something internal"
    finally:
        import os

        os.environ.pop("SAGEGAN_DEBUG", None)


# ---- run folders (issue 17: never clobbered, --overwrite, --resume, budgets, signals, lock, kill test)

import json as _json
import os as _os
import random as _random
import signal as _signal
import socket as _socket
import subprocess as _subprocess
import sys as _sys
import time as _time

import pytest as _pytest


def _rf_seg_config(**kw):
    from sagegan.train_seg import SegTrainConfig

    base = dict(widths=(8, 16), patch_size=32, batch_size=2, val_every=3, val_max_images=1, device="cpu",
                canonical_diameter_px=None, seed=0, epochs=4)
    return SegTrainConfig(**{**base, **kw})


def _rf_gan_config(**kw):
    from sagegan.train_gan import GanTrainConfig

    from conftest import TINY_GAN

    return GanTrainConfig(**{**TINY_GAN, "patch_size": 32, "steps": 2, "val_every": 2, **kw})


def _rf_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def _rf_cli(capsys, *argv):
    """``sagegan ARGV`` in process: (exit status, stdout, stderr lines)."""
    from sagegan.cli import main

    with _pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return info.value.code or 0, captured.out, captured.err.strip().splitlines()


@_pytest.fixture
def _rf_no_reexec(monkeypatch):
    monkeypatch.setenv("SAGEGAN_NO_MALLOC_TUNING", "1")


def test_run_folder_non_empty_out_is_refused(make_samples, make_data_folder, tmp_path, capsys, _rf_no_reexec):
    from sagegan.io import InputError
    from sagegan.train_seg import train_segmenter

    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with _pytest.raises(InputError, match="not empty .*--resume.*--overwrite"):
        train_segmenter(make_samples(2, size=64), run, _rf_seg_config(), progress=False)
    assert _rf_files(run) == {"notes.txt": b"mine"} and not (run / ".lock").exists()
    make_data_folder(make_samples(2, size=64), tmp_path / "data")
    status, _, err = _rf_cli(capsys, "train-seg", "--data", tmp_path / "data", "--out", run, "--epochs", "1")
    assert status == 2 and len(err) == 1 and err[0].startswith(f"sagegan: error: {run}: not empty")
    status, _, err = _rf_cli(capsys, "train-seg", "--data", tmp_path / "data", "--out", run, "--resume",
                             "--overwrite")
    assert status == 2 and len(err) == 1 and "exclude each other" in err[0]


def test_run_folder_overwrite_moves_the_old_run_aside_at_the_first_checkpoint(make_samples, tmp_path):
    from sagegan.progress import TrainingCallbacks
    from sagegan.runs import load_segmenter
    from sagegan.train_seg import train_segmenter

    samples = make_samples(2, size=64)
    run = tmp_path / "run"
    train_segmenter(samples, run, _rf_seg_config(), val=samples[:1], progress=False)
    old = _rf_files(run)
    seen = []

    def before_first_checkpoint(step, info):
        if step < 3:  # the new run trains beside the old one, which is untouched
            partial = [p.name for p in tmp_path.iterdir() if p.name.startswith("run.partial-")]
            seen.append((_rf_files(run) == old, len(partial)))

    train_segmenter(samples, run, _rf_seg_config(seed=1, epochs=5), val=samples[:1], progress=False,
                    overwrite=True, callbacks=TrainingCallbacks(on_step=before_first_checkpoint))
    assert seen == [(True, 1), (True, 1)]
    backups = sorted(tmp_path.glob("run.bak-*"))
    assert len(backups) == 1 and _rf_files(backups[0]) == old  # nothing lost, nothing mixed
    assert not list(tmp_path.glob("run.partial-*")) and not (run / ".lock").exists()
    config = _json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 1 and config["steps"] == 5
    assert [r.split(",")[0] for r in (run / "train_log.csv").read_text().split()[1:]] == ["3", "5"]
    load_segmenter(run)


def test_run_folder_overwrite_that_fails_early_keeps_the_old_run(make_samples, tmp_path):
    from sagegan.progress import TrainingCallbacks
    from sagegan.train_seg import train_segmenter

    samples = make_samples(2, size=64)
    run = tmp_path / "run"
    train_segmenter(samples, run, _rf_seg_config(epochs=3), val=samples[:1], progress=False)
    old = _rf_files(run)

    def fail(step, info):
        raise RuntimeError("boom")

    with _pytest.raises(RuntimeError, match="boom"):
        train_segmenter(samples, run, _rf_seg_config(), val=samples[:1], progress=False, overwrite=True,
                        callbacks=TrainingCallbacks(on_step=fail))
    assert _rf_files(run) == old and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_run_folder_gan_out_equal_to_seg_is_refused(seg_run, tmp_path, capsys, _rf_no_reexec):
    from sagegan.io import InputError
    from sagegan.train_gan import train_gan

    seg_dir, samples = seg_run
    before = _rf_files(seg_dir)
    same = seg_dir.parent / "." / seg_dir.name / ".." / seg_dir.name  # the same folder, spelled differently
    with _pytest.raises(InputError, match="--out is the --seg folder"):
        train_gan(samples, seg_dir, same, _rf_gan_config(), progress=False, overwrite=True)
    status, _, err = _rf_cli(capsys, "train-gan", "--data", tmp_path, "--seg", seg_dir, "--out", same)
    assert status == 2 and len(err) == 1 and "--out is the --seg folder" in err[0]
    assert _rf_files(seg_dir) == before


def test_run_folder_gan_refuses_a_non_empty_out_and_overwrites_on_request(seg_run, tmp_path):
    from sagegan.io import InputError
    from sagegan.train_gan import train_gan

    seg_dir, samples = seg_run
    out = tmp_path / "gan"
    train_gan(samples, seg_dir, out, _rf_gan_config(), val=samples[:1], progress=False)
    old = _rf_files(out)
    with _pytest.raises(InputError, match="not empty"):
        train_gan(samples, seg_dir, out, _rf_gan_config(), val=samples[:1], progress=False)
    train_gan(samples, seg_dir, out, _rf_gan_config(seed=1), val=samples[:1], progress=False, overwrite=True)
    (backup,) = tmp_path.glob("gan.bak-*")
    assert _rf_files(backup) == old and _json.loads((out / "config.json").read_text())["gan"]["seed"] == 1


def test_run_folder_resume_keeps_the_tuned_postprocessing(make_samples, tmp_path, monkeypatch):
    import sagegan.train_seg as ts
    from sagegan.progress import TrainingCallbacks

    tuned = {"fg_threshold": 0.6, "seed_threshold": 0.3, "min_area_fraction": 0.2}
    monkeypatch.setattr(ts, "tune_postprocess", lambda seg, val: (dict(tuned), (0.5, 0.5)))
    samples = make_samples(2, size=64)
    run = tmp_path / "run"
    ts.train_segmenter(samples, run, _rf_seg_config(epochs=3), val=samples[:1], progress=False)
    during = []
    watch = TrainingCallbacks(on_step=lambda step, info: during.append(
        _json.loads((run / "config.json").read_text())["postprocess"]))
    ts.train_segmenter(samples, run, _rf_seg_config(epochs=5), val=samples[:1], progress=False, resume=True,
                       callbacks=watch)
    assert during and all(p == tuned for p in during)


def test_run_folder_gan_resume_keeps_its_own_tuned_postprocessing(seg_run, tmp_path, monkeypatch):
    import sagegan.train_gan as tg

    tuned = {"fg_threshold": 0.4, "seed_threshold": 0.7, "min_area_fraction": 0.3}
    seg_dir, samples = seg_run
    out = tmp_path / "gan"
    monkeypatch.setattr(tg, "tune_postprocess", lambda seg, val: (dict(tuned), (0.5, 0.5)))
    tg.train_gan(samples, seg_dir, out, _rf_gan_config(), val=samples[:1], progress=False)
    monkeypatch.setattr(tg, "tune_postprocess", lambda seg, val: (dict(seg.postprocess), (0.5, 0.5)))
    tg.train_gan(samples, seg_dir, out, _rf_gan_config(steps=3), val=samples[:1], progress=False, resume=True)
    assert _json.loads((out / "config.json").read_text())["postprocess"] == tuned


@_pytest.mark.parametrize("resume", [False, True])
def test_run_folder_budget_before_the_first_validation_still_validates(make_samples, tmp_path, monkeypatch, resume):
    import sagegan.train_seg as ts

    monkeypatch.setattr(ts, "tune_postprocess", lambda seg, val: ({"fg_threshold": 0.4}, (0.5, 0.5)))
    samples = make_samples(2, size=64)
    run = tmp_path / "run"
    if resume:
        ts.train_segmenter(samples, run, _rf_seg_config(epochs=3), val=samples[:1], progress=False)
    ts.train_segmenter(samples, run, _rf_seg_config(epochs=10_000, val_every=10_000, max_minutes=0.03 + 0.03 * resume),
                       val=samples[:1], progress=False, resume=resume)
    config = _json.loads((run / "config.json").read_text())
    steps = config["steps"]
    assert config["stop_reason"] == "max_minutes" and 3 + 2 * resume <= steps < 10_000
    rows = (run / "train_log.csv").read_text().split()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [3] * resume + [steps]  # validated once, at the end
    assert config["best_validation"]["step"] in (3, steps) and "tuned_f1_50" in config["best_validation"]
    assert config["postprocess"]["fg_threshold"] == 0.4  # the tuned settings, then the score calibration
    assert _json.loads((run / "last_state.json").read_text())["step"] == steps


def test_run_folder_gan_budget_before_the_first_validation_still_validates(seg_run, tmp_path):
    from sagegan.train_gan import train_gan

    seg_dir, samples = seg_run
    out = tmp_path / "gan"
    train_gan(samples, seg_dir, out, _rf_gan_config(steps=10_000, val_every=10_000, sample_every=10_000,
                                                   max_minutes=0.03), val=samples[:1], progress=False)
    steps = _json.loads((out / "config.json").read_text())["steps"]
    rows = (out / "train_log.csv").read_text().split()[1:]
    assert 0 < steps < 10_000 and [int(r.split(",")[0]) for r in rows] == [steps]
    assert "tuned_f1_50" in _json.loads((out / "config.json").read_text())["best_validation"]


@_pytest.mark.parametrize("signum", [_signal.SIGINT, _signal.SIGTERM])
def test_run_folder_signal_saves_a_resumable_tuned_run(make_samples, tmp_path, signum):
    from sagegan.progress import TrainingCallbacks
    from sagegan.runs import TrainingInterrupted
    from sagegan.train_seg import train_segmenter

    samples = make_samples(2, size=64)
    run = tmp_path / "run"
    ask = TrainingCallbacks(on_step=lambda step, info: step == 4 and _os.kill(_os.getpid(), signum))
    previous = _signal.getsignal(signum)
    with _pytest.raises(TrainingInterrupted) as info:
        train_segmenter(samples, run, _rf_seg_config(epochs=20), val=samples[:1], progress=False, callbacks=ask)
    assert info.value.step == 4 and info.value.exit_status == 128 + signum
    assert _signal.getsignal(signum) is previous  # handlers restored
    config = _json.loads((run / "config.json").read_text())
    assert config["stop_reason"] == "interrupted" and "tuned_f1_50" in config["best_validation"]
    assert _json.loads((run / "last_state.json").read_text())["step"] == 4
    steps = []
    train_segmenter(samples, run, _rf_seg_config(epochs=6), val=samples[:1], progress=False, resume=True,
                    callbacks=TrainingCallbacks(on_step=lambda step, info: steps.append(step)))
    assert steps == [5, 6]


def test_run_folder_gan_signal_saves_a_resumable_run(seg_run, tmp_path):
    from sagegan.progress import TrainingCallbacks
    from sagegan.runs import TrainingInterrupted
    from sagegan.train_gan import train_gan

    seg_dir, samples = seg_run
    out = tmp_path / "gan"
    ask = TrainingCallbacks(on_step=lambda step, info: step == 3 and _os.kill(_os.getpid(), _signal.SIGTERM))
    with _pytest.raises(TrainingInterrupted) as info:
        train_gan(samples, seg_dir, out, _rf_gan_config(steps=50, val_every=50), val=samples[:1], progress=False,
                  callbacks=ask)
    assert info.value.step == 3 and info.value.exit_status == 143
    assert _json.loads((out / "last_state.json").read_text())["step"] == 3
    assert [int(r.split(",")[0]) for r in (out / "train_log.csv").read_text().split()[1:]] == [3]


def test_run_folder_sigterm_from_outside_prints_how_to_resume(make_samples, make_data_folder, tmp_path):
    make_data_folder(make_samples(3, size=64), tmp_path / "data")
    cmd = [_sys.executable, "-m", "sagegan", "train-seg", "--data", str(tmp_path / "data"), "--out",
           str(tmp_path / "run"), "--widths", "8,16", "--patch-size", "32", "--batch-size", "2", "--val-every", "3",
           "--scale", "native", "--device", "cpu", "--epochs", "100000"]
    proc = _subprocess.Popen(cmd, stdout=_subprocess.PIPE, stderr=_subprocess.PIPE, text=True)
    _rf_wait_for(tmp_path / "run" / "last.safetensors", proc)
    proc.send_signal(_signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sagegan: interrupted at step ") and last.endswith(" --epochs 100000 --resume")
    assert "resume with: sagegan train-seg --data " in last
    step = int(last.split("step ")[1].split(";")[0])
    assert _json.loads((tmp_path / "run" / "last_state.json").read_text())["step"] == step
    assert "postprocess" in _json.loads((tmp_path / "run" / "config.json").read_text())


def _rf_wait_for(path, proc, timeout=120):
    deadline = _time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and _time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        _time.sleep(0.01)


def test_run_folder_lock_stops_a_second_writer(make_samples, tmp_path, capsys):
    from sagegan.io import InputError
    from sagegan.train_seg import train_segmenter

    samples = make_samples(2, size=64)
    run = tmp_path / "run"
    run.mkdir()
    sleeper = _subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{sleeper.pid} {_socket.gethostname()}\n")
        with _pytest.raises(InputError, match=f"process {sleeper.pid} .* is training into this folder"):
            train_segmenter(samples, run, _rf_seg_config(epochs=1), val=samples[:1], progress=False)
        with _pytest.raises(InputError, match="is training into this folder"):
            train_segmenter(samples, run, _rf_seg_config(epochs=1), val=samples[:1], progress=False, resume=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    capsys.readouterr()
    # the holder is gone: its lock is stale and taken over, with one note
    train_segmenter(samples, run, _rf_seg_config(epochs=1), val=samples[:1], progress=False)
    notes = [line for line in capsys.readouterr().err.splitlines() if "lock" in line]
    assert len(notes) == 1 and f"taking over the lock of process {sleeper.pid}" in notes[0]
    assert not (run / ".lock").exists() and (run / "segmenter.safetensors").exists()


def test_run_folder_resume_with_another_architecture_is_one_line(make_samples, tmp_path):
    from sagegan.io import InputError
    from sagegan.train_seg import train_segmenter

    samples = make_samples(2, size=64)
    run = tmp_path / "run"
    train_segmenter(samples, run, _rf_seg_config(epochs=3), val=samples[:1], progress=False)
    before = _rf_files(run)
    with _pytest.raises(InputError, match=r"last.safetensors: saved with another architecture \(model.widths") as e:
        train_segmenter(samples, run, _rf_seg_config(widths=(8, 16, 32), epochs=5), val=samples[:1],
                        progress=False, resume=True)
    assert "\n" not in str(e.value) and _rf_files(run) == before


def test_run_folder_state_file_alone_is_consistent(tmp_path):
    """A kill between writing last.safetensors and last_state.json cannot mix two states."""
    import numpy as np
    import torch

    from sagegan.runs import LAST_STATE_JSON, TrainingState

    def objects():
        net = torch.nn.Linear(2, 2)
        opt = torch.optim.Adam(net.parameters())
        return net, opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt), np.random.default_rng(0)

    net, opt, sched, rng = objects()
    TrainingState({"m": net}, {"o": opt}, sched, rng).save(tmp_path, {"step": 7, "best_f1": float("-inf")})
    (tmp_path / LAST_STATE_JSON).write_text(_json.dumps({"step": 3}))  # an older sitting's counters
    assert TrainingState({"m": net}, {"o": opt}, sched, rng).load(tmp_path) == {"step": 7, "best_f1": float("-inf")}


def _rf_kill_command(data, out, epochs):
    return [_sys.executable, "-m", "sagegan", "train-seg", "--data", str(data), "--out", str(out), "--widths", "8,16,32",
            "--patch-size", "64", "--batch-size", "2", "--val-every", "3", "--scale", "native", "--device", "cpu",
            "--epochs", str(epochs), "--seed", "0"]


@_pytest.mark.slow
def test_run_folder_kill_test_resumes_to_identical_weights(make_samples, make_data_folder, tmp_path):
    """SIGKILL at a random step, then --resume: the same final weights, bit for bit, as a run never killed
    (the state is saved at validations; with fixed threads every step is repeatable)."""
    from sagegan.runs import LAST_STATE_TENSORS, SEGMENTER_FILE, load_tensors

    import torch

    data = make_data_folder(make_samples(3, size=64), tmp_path / "data")
    env = {**_os.environ, "OMP_NUM_THREADS": "1"}
    epochs = 60
    _subprocess.run(_rf_kill_command(data, tmp_path / "whole", epochs), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = _subprocess.Popen(_rf_kill_command(data, killed, epochs), env=env, stdout=_subprocess.DEVNULL,
                             stderr=_subprocess.PIPE)
    _rf_wait_for(killed / LAST_STATE_TENSORS, proc)
    _time.sleep(_random.uniform(0.0, 0.5))
    proc.kill()
    proc.wait()
    assert proc.returncode == -_signal.SIGKILL
    at = _json.loads((killed / "last_state.json").read_text())["step"]
    assert at < epochs  # killed mid-run
    res = _subprocess.run(_rf_kill_command(data, killed, epochs) + ["--resume"], env=env, capture_output=True,
                          text=True)
    assert res.returncode == 0, res.stderr
    assert (killed / SEGMENTER_FILE).read_bytes() == (tmp_path / "whole" / SEGMENTER_FILE).read_bytes()
    whole, resumed = load_tensors(tmp_path / "whole" / LAST_STATE_TENSORS), load_tensors(killed / LAST_STATE_TENSORS)
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    drop = lambda p: [r.split(",")[:2] + r.split(",")[3:] for r in p.read_text().split()]  # noqa: E731 (elapsed)
    assert drop(killed / "train_log.csv") == drop(tmp_path / "whole" / "train_log.csv")


def test_large_images_are_flooded_in_blocks_with_the_same_result(seg_run, monkeypatch):
    import numpy as np

    import sagegan.infer as infer
    from sagegan.runs import load_segmenter

    run, samples = seg_run
    image = np.tile(samples[0].image, (2, 2))
    maps = infer.predict_maps(load_segmenter(run), image, 1.0)
    whole = infer.instances_from_maps(maps["probs"], maps["distance"], 0.5, 0.5, 4)
    monkeypatch.setattr(infer, "MAX_WHOLE_WATERSHED_PX", 1)
    monkeypatch.setattr(infer, "WATERSHED_BLOCK_PX", 48)
    blocks = infer.instances_from_maps(maps["probs"], maps["distance"], 0.5, 0.5, 4)
    assert whole.max() > 10 and np.array_equal(blocks, whole)


def test_demo_moves_an_earlier_demo_aside_and_refuses_other_folders(tmp_path):
    from sagegan.demo import _fresh_folder
    from sagegan.io import InputError

    out = tmp_path / "demo_output"
    (out / "phase1").mkdir(parents=True)
    (out / "demo_config.json").write_text("{}")
    assert _fresh_folder(out) == out and not any(out.iterdir())
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("demo_output.bak-")]
    assert len(backups) == 1 and (backups[0] / "demo_config.json").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    try:
        _fresh_folder(tmp_path / "mine")
        raise AssertionError("not refused")
    except InputError as exc:
        assert "not empty" in str(exc)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
