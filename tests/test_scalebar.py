"""Pixel size from the image itself: data bar, scale bar, their text, and how read_micrograph uses them."""

from __future__ import annotations

import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from sagegan.io import InputError, InputWarning, pixel_size_mode, read_micrograph
from sagegan.scalebar import (calibrate_image, find_data_bar, find_scale_bars, ocr_problem, parse_field_width,
                              parse_lengths, parse_pixel_size)
from sagegan.simulate import add_scale_bar, simulate_micrograph

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BAM = DATA / "bam_tio2_sem" / "images"
needs_ocr = pytest.mark.skipif(ocr_problem() is not None, reason=f"{ocr_problem()}")


def _noise(h=200, w=240, seed=0):
    return np.random.default_rng(seed).uniform(0.3, 0.7, (h, w)).astype(np.float32)


def _png(path: Path, image: np.ndarray) -> Path:
    iio.imwrite(path, np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return path


# ------------------------------------------------------------------------------------ data bar

def test_data_bar_is_found_with_its_rows():
    img = _noise()
    img[170:] = 0.0
    img[180:186, 10:90] = 1.0  # its text
    img[-1] = 0.9  # a frame line under it
    assert find_data_bar(img).rows == 30


@pytest.mark.parametrize("case", ["none", "saturated background", "empty band", "band too high"])
def test_no_data_bar_where_there_is_none(case):
    img = _noise()
    if case == "saturated background":  # a TEM film clipped to white runs on into the image
        img[img > 0.55] = 1.0
        img[150:] = 1.0
        img[160:165, 20:60] = 0.2
    elif case == "empty band":
        img[170:] = 0.0
    elif case == "band too high":
        img[60:] = 0.0
        img[100:110, 10:90] = 1.0
    assert find_data_bar(img) is None


def test_simulated_data_bar_is_found():
    sim = simulate_micrograph(256, "hex", "sem", 1)
    barred = add_scale_bar(sim, nm_per_px=2.0, seed=0, style="data-bar")
    assert find_data_bar(barred.image).rows == barred.image.shape[0] - 256
    assert find_data_bar(sim.image) is None


# ------------------------------------------------------------------------------------ scale bars

def test_plain_and_ticked_bars_have_their_lengths():
    img = _noise()
    img[180:184, 20:120] = 1.0  # plain: 100 px
    assert [(b.length_px, b.bright, b.ticks) for b in find_scale_bars(img)][:1] == [(100, True, 0)]
    img = _noise()
    img[150:152, 30:91] = 0.0  # "|---|": ticks 3 px wide centred on columns 31 and 89
    img[144:158, 30:33] = 0.0
    img[144:158, 88:91] = 0.0
    bar = find_scale_bars(img)[0]
    assert (bar.x0, bar.x1, bar.ticks, bar.length_px) == (30, 90, 3, 58)


def test_flat_background_and_particles_are_no_bars():
    img = np.full((200, 240), 0.8, np.float32)
    img[40:80, 40:80] = 0.1  # a square particle: as thick as long
    yy, xx = np.mgrid[:200, :240]
    img[(yy - 150) ** 2 + (xx - 150) ** 2 < 30 ** 2] = 0.1  # a round one
    assert find_scale_bars(img) == []


def test_a_label_box_margin_is_not_the_bar():
    img = _noise()
    img[150:190, 20:140] = 0.0  # a black box
    img[170:174, 40:120] = 1.0  # the white bar in it
    assert (find_scale_bars(img)[0].x0, find_scale_bars(img)[0].x1) == (40, 119)


# ------------------------------------------------------------------------------------ text

def test_lengths_in_text():
    assert parse_lengths("200 nm") == [200.0]
    assert parse_lengths("1 µm, 0,5um and 20nm") == [1000.0, 500.0, 20.0]
    assert parse_lengths("S00 nim") == [500.0]  # OCR's misreadings
    assert parse_lengths("WD = 7.5 mm") == []  # a working distance
    assert parse_lengths("00 nm") == []  # a lost digit
    assert parse_lengths("L00 nm") == [100.0]  # "l" read as "L"
    assert parse_field_width("Store resolution = 1024 * 768 Width = 7.520 yum") == pytest.approx(7520)
    assert parse_field_width("HFW 1.27 mm") == pytest.approx(1.27e6)
    assert parse_pixel_size("Pixel Size = 3.721 nm") == pytest.approx(3.721)
    assert parse_pixel_size("Pixel size: 512 pm") == pytest.approx(0.512)


def test_bar_with_a_given_length_needs_no_ocr():
    img = _noise()
    img[180:184, 20:120] = 1.0
    cal = calibrate_image(img, scale_bar_nm=500, ocr=False)
    assert cal.nm_per_px == pytest.approx(5.0) and cal.source == "scale bar"
    cal = calibrate_image(img, ocr=False)
    assert cal.nm_per_px is None and "cannot read its label" in cal.problem


@needs_ocr
@pytest.mark.parametrize("engine", ["default", "pytesseract"])
@pytest.mark.parametrize("style", ["boxed", "data-bar"])
def test_ocr_reads_a_simulated_bar(style, engine, monkeypatch):
    if engine == "pytesseract":  # the fallback when tesserocr is missing
        monkeypatch.setenv("SAGEGAN_OCR", "pytesseract")
        if ocr_problem() is not None:
            pytest.skip(ocr_problem())
    sim = simulate_micrograph(384, "hex", "sem", 2)
    barred = add_scale_bar(sim, nm_per_px=3.0, seed=5, style=style, font="DejaVuSans.ttf", font_px=22)
    cal = calibrate_image(np.round(barred.image * 255) / 255)
    assert cal.nm_per_px == pytest.approx(3.0, rel=0.02), cal.detail or cal.problem


# ------------------------------------------------------------------------------------ read_micrograph

def test_pixel_size_modes():
    assert pixel_size_mode(None) == ("metadata", None)
    assert pixel_size_mode("AUTO-bar") == ("auto-bar", None)
    assert pixel_size_mode(2) == ("user", 2.0)
    for bad in ("fast", "-1", "nan"):
        with pytest.raises(InputError, match="--nm-per-px"):
            pixel_size_mode(bad)


def test_read_micrograph_drops_a_found_data_bar(tmp_path):
    sim = simulate_micrograph(256, "hex", "sem", 1)
    barred = add_scale_bar(sim, nm_per_px=2.0, seed=0, style="data-bar")
    path = _png(tmp_path / "a.png", barred.image)
    mg = read_micrograph(path, crop_bottom="auto")
    assert mg.image.shape == (256, 256) and mg.metadata["crop_bottom"] == barred.image.shape[0] - 256
    assert read_micrograph(path).image.shape == barred.image.shape  # 0 keeps every row
    assert read_micrograph(path, crop_bottom=10).metadata["crop_bottom"] == 10
    with pytest.raises(InputError, match="--crop-bottom"):
        read_micrograph(path, crop_bottom="bar")


def test_user_value_wins_and_an_unread_bar_is_one_warning(tmp_path):
    img = _noise()
    img[180:184, 20:120] = 1.0  # a bar without a label
    path = _png(tmp_path / "b.png", img)
    mg = read_micrograph(path, nm_per_px=2.5)
    assert mg.nm_per_px == 2.5 and mg.metadata["calibration"] == "user"
    mg = read_micrograph(path, nm_per_px="auto", scale_bar_nm=200)
    assert mg.nm_per_px == pytest.approx(2.0) and mg.metadata["calibration"] == "scale bar"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mg = read_micrograph(path, nm_per_px="auto")
    assert mg.nm_per_px is None
    lines = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(lines) == 1 and str(path) in lines[0] and "--scale-bar-nm" in lines[0] and "\n" not in lines[0]


def test_metadata_wins_over_the_bar_unless_auto_bar(tmp_path):
    import tifffile

    img = _noise()
    img[180:184, 20:120] = 1.0
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, (img * 255).astype(np.uint8), imagej=True, resolution=(1 / 4.0, 1 / 4.0),
                     metadata={"unit": "nm"})
    mg = read_micrograph(path, nm_per_px="auto", scale_bar_nm=200)
    assert mg.nm_per_px == pytest.approx(4.0) and mg.metadata["calibration"] == "metadata"
    mg = read_micrograph(path, nm_per_px="auto-bar", scale_bar_nm=200)
    assert mg.nm_per_px == pytest.approx(2.0) and mg.metadata["calibration"] == "scale bar"


@pytest.mark.realdata
@needs_ocr
def test_bam_data_bar_gives_the_metadata_pixel_size():
    if not BAM.is_dir():
        pytest.skip("needs ../shared/data/bam_tio2_sem")
    mg = read_micrograph(sorted(BAM.glob("*.png"))[0], nm_per_px="auto", crop_bottom="auto")
    assert mg.image.shape == (712, 1024) and mg.metadata["crop_bottom"] == 56
    assert mg.nm_per_px == pytest.approx(7.344, rel=0.002) and mg.metadata["calibration"] == "data bar"


# ------------------------------------------------------------------------------------ command line

def _cli(capsys, monkeypatch, *argv) -> tuple[int, str, str]:
    from sagegan.cli import main

    monkeypatch.setenv("SAGEGAN_NO_MALLOC_TUNING", "1")  # no re-executing this process
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def test_bad_pixel_size_option_is_one_line(capsys, monkeypatch, tmp_path):
    code, _, err = _cli(capsys, monkeypatch, "segment", tmp_path / "x.png", "--out", tmp_path / "out", "--nm-per-px", "fast")
    assert code == 2 and "--nm-per-px" in err and "auto-bar" in err


@pytest.mark.realdata
@needs_ocr
def test_check_data_drops_the_bam_data_bars(capsys, monkeypatch):
    if not BAM.is_dir():
        pytest.skip("needs ../shared/data/bam_tio2_sem")
    code, out, _ = _cli(capsys, monkeypatch, "check-data", "--data", BAM.parent, "--nm-per-px", "auto")
    assert code == 0 and "sizes 1024x712 .. 1024x712 px, 40 with a pixel size" in out


@needs_ocr
def test_segment_reads_the_pixel_size_from_the_bar_and_says_so(capsys, monkeypatch, tmp_path):
    import json

    sim = simulate_micrograph(256, "hex", "sem", 3, mean_diameter_px=20)
    barred = add_scale_bar(sim, 2.0, seed=1, style="data-bar", font="DejaVuSans.ttf", font_px=20)
    (tmp_path / "in").mkdir()
    _png(tmp_path / "in" / "a.png", barred.image)
    code, _, err = _cli(capsys, monkeypatch, "segment", tmp_path / "in", "--out", tmp_path / "out",
                        "--diameter-px", "20")
    assert code == 0 and "pixel size: 1 from scale bar" in err
    [run] = json.loads((tmp_path / "out" / "segment_config.json").read_text())["images"]
    assert run["calibration"] == "scale bar" and run["nm_per_px"] == pytest.approx(2.0, rel=0.02)
    assert run["crop_bottom"] == barred.image.shape[0] - 256 and run["shape"] == [256, 256]
