"""The command line's happy paths, in process: simulate -> check-data -> train-seg -> segment ->
evaluate -> train-gan -> synthesize, on tiny settings."""

from __future__ import annotations

import json

import pytest

from sagegan.cli import main
from sagegan.io import load_pairs, read_mask
from sagegan.runs import load_generator, load_segmenter


def _run(capsys, *argv: str) -> str:
    """``sagegan ARGV`` in this process; returns what it printed, failing on a non-zero exit."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    return captured.out


@pytest.fixture(autouse=True)
def _no_reexec(monkeypatch):
    # main() re-executes heavy commands with glibc malloc settings; in process, it must not
    monkeypatch.setenv("SAGEGAN_NO_MALLOC_TUNING", "1")


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """A data folder, a RUN and a GANRUN made by the commands themselves (shared by the tests below)."""
    root = tmp_path_factory.mktemp("cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("SAGEGAN_NO_MALLOC_TUNING", "1")
    try:
        for name, argv in [
            ("simulate", ["simulate", "--out", root / "data", "--n", "3", "--size", "64", "--seed", "1"]),
            ("train-seg", ["train-seg", "--data", root / "data", "--out", root / "run", "--epochs", "2",
                           "--widths", "8,16", "--patch-size", "32", "--batch-size", "2", "--device", "cpu"]),
            ("train-gan", ["train-gan", "--data", root / "data", "--seg", root / "run", "--out", root / "gan",
                           "--steps", "2", "--patch-size", "32", "--batch-size", "2", "--val-every", "2",
                           "--warmup-steps", "1", "--ramp-steps", "1", "--device", "cpu"]),
        ]:
            with pytest.raises(SystemExit) as exit_info:
                main([str(a) for a in argv])
            assert exit_info.value.code in (0, None), name
    finally:
        mp.undo()
    return root


def test_simulate_and_check_data(cli_runs, capsys):
    root = cli_runs
    out = _run(capsys, "check-data", "--data", root / "data")
    assert "3 image/mask pairs" in out and "64x64 .. 64x64 px" in out
    pairs = load_pairs(root / "data" / "images", root / "data" / "masks")
    assert len(pairs) == 3 and all(p.image.shape == (64, 64) for p in pairs)
    assert (root / "data" / "truth.csv").exists() and (root / "data" / "simulation.json").exists()


def test_simulate_imaging_options(capsys, tmp_path):
    _run(capsys, "simulate", "--out", tmp_path / "tem", "--n", "1", "--size", "64", "--modality", "tem",
         "--dose", "15", "--blur-px", "2", "--gradient", "0.5", "--shape", "cube", "--diameter-px", "12")
    params = json.loads((tmp_path / "tem" / "simulation.json").read_text())["images"][0]["params"]
    assert (params["dose"], params["blur_sigma_px"], params["background_gradient"]) == (15, 2, 0.5)
    assert (params["shape"], params["mean_diameter_px"]) == ("cube", 12)
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--out", str(tmp_path / "bad"), "--n", "1", "--size", "64", "--dose", "0"])
    assert exit_info.value.code == 2 and "dose must lie in" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_train_seg_writes_a_run(cli_runs):
    root = cli_runs
    seg = load_segmenter(root / "run")
    config = seg.config
    assert config["model"]["widths"] == [8, 16] and config["patch_size"] == 32
    assert config["steps"] == 2 and config["data"]["n_train"] + config["data"]["n_val"] == 3


def test_segment(cli_runs, capsys, tmp_path):
    root = cli_runs
    out = _run(capsys, "segment", root / "data" / "images", "--model", root / "run", "--out", tmp_path / "pred",
               "--nm-per-px", "2.0")
    assert "image(s)" in out and "particles" in out
    for stem in ("sim_0000", "sim_0001", "sim_0002"):
        assert read_mask(tmp_path / "pred" / f"{stem}_labels.tif").shape == (64, 64)
        assert (tmp_path / "pred" / f"{stem}_overlay.png").exists()
    assert (tmp_path / "pred" / "particles.csv").exists()
    config = json.loads((tmp_path / "pred" / "segment_config.json").read_text())
    assert len(config["images"]) == 3 and config["nm_per_px"] == 2.0
    # and its output is what `evaluate` reads
    out = _run(capsys, "evaluate", "--pred", tmp_path / "pred", "--truth", root / "data" / "masks",
               "--json", tmp_path / "m.json")
    assert "n_images" in out and json.loads((tmp_path / "m.json").read_text())["headline"]["n_images"] == 3


def test_train_gan_writes_a_ganrun(cli_runs):
    root = cli_runs
    generator, config = load_generator(root / "gan")
    assert config["gan"]["steps"] == 2 and config["gan"]["patch_size"] == 32
    # the data source is recorded, so that `synthesize` can find the training pairs again
    assert config["data"]["images"] == str((root / "data" / "images").resolve())
    # the phase 1 validation images stay out of GAN training
    seg_config = json.loads((root / "run" / "config.json").read_text())
    assert config["data"]["val_stems"] == seg_config["data"]["val_stems"]
    assert not set(config["data"]["train_stems"]) & set(seg_config["data"]["val_stems"])
    load_segmenter(root / "gan")  # the fine-tuned segmenter is a valid --model
    assert json.loads((root / "gan" / "last_state.json").read_text())["step"] == 2


def test_synthesize(cli_runs, capsys, tmp_path):
    root = cli_runs
    out = _run(capsys, "synthesize", "--model", root / "gan", "--n", "2", "--out", tmp_path / "syn",
               "--size", "32", "--layouts", "mixed", "--seed", "5")
    assert "wrote 2 synthetic pairs" in out
    pairs = load_pairs(tmp_path / "syn" / "images", tmp_path / "syn" / "masks")
    assert len(pairs) == 2 and all(p.image.shape == (32, 32) for p in pairs)
    meta = json.loads((tmp_path / "syn" / "synthesis.json").read_text())
    assert {r["layout"] for r in meta["pairs"]} == {"real", "new"} and meta["seed"] == 5


def test_bad_input_is_one_line_and_exit_2(cli_runs, capsys, tmp_path):
    images = cli_runs / "data" / "images"
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(images), "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sagegan: error:") and "model folder not found" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(images), "--model", str(cli_runs / "run"), "--out", str(tmp_path / "o"),
              "--scale", "-2"])
    assert exit_info.value.code == 2 and "--scale" in capsys.readouterr().err
