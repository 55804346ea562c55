"""Micrograph and mask I/O: formats, pixel sizes, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from sagegan.io import (InputError, find_pairs, load_pairs, read_labelled_image, read_mask, read_micrograph,
                        read_pixel_size, read_split, unit_to_nm, write_labels)


def _ramp(h=32, w=40):
    return np.linspace(0, 1, h * w).reshape(h, w)


# ------------------------------------------------------------------------------ micrographs


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
def test_png_grey_8_and_16_bit(tmp_path, dtype, top):
    arr = np.round(_ramp() * top).astype(dtype)
    iio.imwrite(tmp_path / "a.png", arr)
    m = read_micrograph(tmp_path / "a.png")
    assert m.image.dtype == np.float32 and m.image.shape == (32, 40)
    assert m.image.min() == 0.0 and m.image.max() == 1.0
    assert m.nm_per_px is None


def test_rgb_and_rgba_become_luminance(tmp_path):
    grey = np.round(_ramp() * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, -1)
    iio.imwrite(tmp_path / "g.png", rgb)
    np.testing.assert_allclose(read_micrograph(tmp_path / "g.png").image, grey / 255.0, atol=1e-6)
    rgba = np.concatenate([rgb, np.full(grey.shape + (1,), 255, np.uint8)], -1)
    rgba[..., 0] = 0  # pure green-blue: luminance weights apply
    iio.imwrite(tmp_path / "c.png", rgba)
    expected = (0.7154 * grey + 0.0721 * grey) / 255.0
    np.testing.assert_allclose(read_micrograph(tmp_path / "c.png").image, expected, atol=0.5 / 255)


def test_jpeg_and_bmp(tmp_path):
    arr = np.round(_ramp() * 255).astype(np.uint8)
    for name in ("a.jpg", "a.bmp"):
        iio.imwrite(tmp_path / name, arr)
        assert read_micrograph(tmp_path / name).image.shape == arr.shape


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_tiff_dtypes(tmp_path, dtype):
    arr = (_ramp() * 1000 - (200 if dtype in (np.int32, np.float32) else 0)).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    img = read_micrograph(tmp_path / "a.tif").image
    if dtype in (np.uint8, np.uint16):  # by the type's full range
        expected = arr / np.iinfo(dtype).max
    else:  # no natural full scale: min-max
        expected = (arr - arr.min()) / (arr.max() - arr.min())
    assert img.dtype == np.float32
    np.testing.assert_allclose(img, expected, atol=1e-6)


def test_imagej_resolution_gives_nm(tmp_path):
    arr = np.zeros((32, 32), np.uint8)
    # 0.5 µm per pixel -> 2 px per micron
    tifffile.imwrite(tmp_path / "ij.tif", arr, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "micron"})
    assert read_micrograph(tmp_path / "ij.tif").nm_per_px == pytest.approx(500.0)
    tifffile.imwrite(tmp_path / "a.tif", arr, imagej=True, resolution=(0.5, 0.5), metadata={"unit": "nm"})
    assert read_micrograph(tmp_path / "a.tif").nm_per_px == pytest.approx(2.0)


def test_zeiss_cz_sem_tag(tmp_path):
    arr = np.zeros((32, 32), np.uint8)
    text = "0\r\nAP_PIXEL_SIZE\r\nPixel Size = 7.344 nm\r\nAP_MAG\r\nMag = 50.00 K X\r\n"
    tifffile.imwrite(tmp_path / "z.tif", arr, extratags=[(34118, "s", 0, text, True)])
    assert read_micrograph(tmp_path / "z.tif").nm_per_px == pytest.approx(7.344)


def test_user_pixel_size_overrides(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8), imagej=True,
                     resolution=(1.0, 1.0), metadata={"unit": "nm"})
    assert read_micrograph(tmp_path / "a.tif", nm_per_px=3.5).nm_per_px == 3.5


def test_units():
    assert unit_to_nm(1, "µm") == 1000 and unit_to_nm(2, "Å") == pytest.approx(0.2)
    assert unit_to_nm(1e-9, "m") == pytest.approx(1.0)
    with pytest.raises(InputError, match="reciprocal"):
        unit_to_nm(0.1, "1/nm")


def test_crop_bottom(tmp_path):
    iio.imwrite(tmp_path / "a.png", np.zeros((40, 32), np.uint8))
    assert read_micrograph(tmp_path / "a.png", crop_bottom=8).image.shape == (32, 32)


# ------------------------------------------------------------------------------ masks


def test_binary_masks_become_instances(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[2:6, 2:6] = 255
    mask[6:10, 6:10] = 255  # touches the first only diagonally
    iio.imwrite(tmp_path / "m.png", mask)
    assert read_mask(tmp_path / "m.png").max() == 2  # 4-connectivity
    assert read_mask(tmp_path / "m.png", connectivity=2).max() == 1
    tifffile.imwrite(tmp_path / "b.tif", mask > 0)
    assert read_mask(tmp_path / "b.tif").max() == 2


def test_label_maps_keep_ids_and_roundtrip(tmp_path):
    labels = np.zeros((32, 32), np.int32)
    labels[2:6, 2:6] = 7
    labels[6:10, 6:10] = 3  # touching instances stay separate
    iio.imwrite(tmp_path / "l.png", labels.astype(np.uint16))
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png"), labels)
    write_labels(tmp_path / "l.tif", labels)
    assert tifffile.imread(tmp_path / "l.tif").dtype == np.uint16
    np.testing.assert_array_equal(read_mask(tmp_path / "l.tif"), labels)
    big = np.arange(300 * 300, dtype=np.int32).reshape(300, 300)
    write_labels(tmp_path / "big.tif", big)
    assert tifffile.imread(tmp_path / "big.tif").dtype == np.uint32


# ------------------------------------------------------------------------------ data folders


def _folder(tmp_path, n=3, size=32):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        iio.imwrite(tmp_path / "images" / f"s{i}.png", np.full((size, size), 100, np.uint8))
        m = np.zeros((size, size), np.uint8)
        m[4:10, 4:10] = 255
        iio.imwrite(tmp_path / "masks" / f"s{i}.png", m)
    return tmp_path


def test_split_files(tmp_path):
    (tmp_path / "a.txt").write_text("s0\ns2\n")
    (tmp_path / "b.csv").write_text("file,split\ns1.png,train\n")
    assert read_split(tmp_path / "a.txt") == ["s0", "s2"]
    assert read_split(tmp_path / "b.csv") == ["s1"]
    d = _folder(tmp_path / "d")
    assert [p[0] for p in find_pairs(d / "images", d / "masks", tmp_path / "a.txt")] == ["s0", "s2"]


def test_load_pairs(tmp_path):
    d = _folder(tmp_path)
    samples = load_pairs(d / "images", d / "masks", crop_bottom=4)
    assert len(samples) == 3 and samples[0].image.shape == (28, 32) == samples[0].labels.shape


# Each bad input: an InputError whose single line names the file and the problem.
def _bad_cases(tmp_path):
    d = _folder(tmp_path)
    cases = {}
    cases["missing"] = (lambda: read_micrograph(d / "nope.png"), "nope.png", "not found")
    (d / "empty.png").write_bytes(b"")
    cases["empty"] = (lambda: read_micrograph(d / "empty.png"), "empty.png", "empty")
    (d / "text.png").write_text("this is not an image\n")
    cases["text"] = (lambda: read_micrograph(d / "text.png"), "text.png", "cannot read")
    full = (d / "images" / "s0.png").read_bytes()
    iio.imwrite(d / "big.png", (np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8))
    (d / "trunc.png").write_bytes((d / "big.png").read_bytes()[:2000])
    cases["truncated"] = (lambda: read_micrograph(d / "trunc.png"), "trunc.png", "cannot read")
    iio.imwrite(d / "tiny.png", np.zeros((8, 8), np.uint8))
    cases["tiny"] = (lambda: read_micrograph(d / "tiny.png"), "tiny.png", "at least 16x16")
    nan = np.ones((32, 32), np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    cases["nan"] = (lambda: read_micrograph(d / "nan.tif"), "nan.tif", "NaN")
    assert full
    return d, cases


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "tiny", "nan"])
def test_bad_files_give_clear_errors(tmp_path, case):
    _, cases = _bad_cases(tmp_path)
    fn, name, words = cases[case]
    with pytest.raises(InputError) as err:
        fn()
    msg = str(err.value)
    assert name in msg and words in msg and "\n" not in msg


def test_size_mismatch(tmp_path):
    d = _folder(tmp_path)
    iio.imwrite(d / "masks" / "s1.png", np.zeros((20, 32), np.uint8))
    with pytest.raises(InputError, match=r"s1\.png: mask is 32x20 px but its image"):
        load_pairs(d / "images", d / "masks")


def test_images_without_masks_are_listed(tmp_path):
    d = _folder(tmp_path)
    (d / "masks" / "s1.png").unlink()
    (d / "masks" / "s2.png").unlink()
    with pytest.raises(InputError, match="no mask for 2 image.*s1, s2"):
        find_pairs(d / "images", d / "masks")


def test_masks_without_particles(tmp_path):
    d = _folder(tmp_path)
    for p in (d / "masks").iterdir():
        iio.imwrite(p, np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match="no particles at all"):
        load_pairs(d / "images", d / "masks")


def test_fractional_mask_dtype(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.full((32, 32), 0.5, np.float32))
    with pytest.raises(InputError, match="m.tif: mask has fractional values"):
        read_mask(tmp_path / "m.tif")
    soft = np.zeros((32, 32), np.float32)
    soft[4:12, 4:12], soft[12, 4:12] = 1.0, 0.4  # a soft edge below half the maximum
    tifffile.imwrite(tmp_path / "s.tif", soft)
    assert np.array_equal(read_mask(tmp_path / "s.tif", kind="binary"), (soft > 0.5).astype(np.int32))


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    d = _folder(tmp_path)
    (d / "masks" / "s1.png").unlink()
    cmd = [sys.executable, "-m", "sagegan", "check-data", "--data", str(d)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and "no mask for 1 image(s): s1" in res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr


def test_cli_help_does_not_import_torch():
    code = ("import sys; from sagegan.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_version():
    res = subprocess.run([sys.executable, "-m", "sagegan", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("sagegan ")


# ------------------------------------------------------------------------------ label files for analysis
def test_find_label_files_prefers_labels_and_skips_pictures(tmp_path):
    from sagegan.io import find_label_files, write_image

    labels = np.zeros((32, 32), np.int32)
    labels[4:12, 4:12] = 1
    seg, masks = tmp_path / "seg", tmp_path / "masks"
    for name in ("b_labels.tif", "a_labels.tif"):
        write_labels(seg / name, labels)
    write_image(seg / "a_overlay.png", _ramp(32, 32))
    write_image(seg / "a_mask.png", _ramp(32, 32))
    write_labels(masks / "x.tif", labels)
    write_image(masks / "x_overlay.png", _ramp(32, 32))
    assert find_label_files(seg) == [seg / "a_labels.tif", seg / "b_labels.tif"]
    assert find_label_files([masks, seg / "a_labels.tif", str(seg / "*_labels.tif")]) == [
        masks / "x.tif", seg / "a_labels.tif", seg / "b_labels.tif"]
    with pytest.raises(InputError, match="matches no files"):
        find_label_files(str(tmp_path / "*.nothing"))


def test_find_micrographs_and_unique_names(tmp_path):
    from sagegan.io import find_micrographs, strip_label_suffix, unique_image_names, write_image

    write_image(tmp_path / "b.png", _ramp())
    write_image(tmp_path / "a.png", _ramp())
    write_image(tmp_path / ".hidden.png", _ramp())
    (tmp_path / "notes.txt").write_text("x")
    assert find_micrographs(tmp_path) == {"a": tmp_path / "a.png", "b": tmp_path / "b.png"}
    assert find_micrographs(None) == {}
    with pytest.raises(InputError, match="images folder not found"):
        find_micrographs(tmp_path / "nowhere")
    assert [strip_label_suffix(s) for s in ("a_labels", "a_mask", "a", "_labels")] == ["a", "a", "a", "_labels"]
    files = [Path("x/a_labels.tif"), Path("y/a_labels.tif"), Path("y/a.tif"), Path("y/b_mask.png")]
    assert unique_image_names(files) == ["a", "a_labels", "y/a", "b"]


def test_read_labelled_image_finds_micrograph_and_pixel_size(tmp_path):
    import json

    from sagegan.io import find_micrographs, read_labelled_image, read_segment_records, write_image

    labels = np.zeros((32, 40), np.int32)
    labels[4:12, 4:12] = 1
    write_labels(tmp_path / "seg" / "a_labels.tif", labels)
    write_image(tmp_path / "raw" / "a.png", _ramp())
    (tmp_path / "seg" / "segment_config.json").write_text(json.dumps(
        {"crop_bottom": 0, "images": [{"image": str(tmp_path / "raw" / "a.png"), "nm_per_px": 1.5}]}))
    records = read_segment_records([tmp_path / "seg" / "a_labels.tif"])
    assert records == {"a": {"image": tmp_path / "raw" / "a.png", "nm_per_px": 1.5, "crop_bottom": 0}}

    found = read_labelled_image(tmp_path / "seg" / "a_labels.tif", records=records)
    assert (found.name, found.micrograph_file, found.nm_per_px) == ("a", tmp_path / "raw" / "a.png", 1.5)
    assert found.nm_per_px_source == "segment_config.json" and found.image.shape == (32, 40)
    assert np.array_equal(found.labels, labels)
    given = read_labelled_image(tmp_path / "seg" / "a_labels.tif", "A", find_micrographs(tmp_path / "raw"),
                                nm_per_px=2.0)
    assert (given.name, given.nm_per_px, given.nm_per_px_source) == ("A", 2.0, "given by the user")
    alone = read_labelled_image(tmp_path / "seg" / "a_labels.tif")
    assert alone.image is None and alone.micrograph_file is None and alone.nm_per_px is None

    (tmp_path / "seg" / "segment_config.json").write_text("{not json")
    assert read_segment_records([tmp_path / "seg" / "a_labels.tif"]) == {}


# ------------------------------------------------------------------------------ writing


def test_atomic_write_replaces_whole_files_or_nothing(tmp_path):
    from sagegan.io import atomic_write, atomic_write_bytes, atomic_write_text

    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "first")  # creates the folder
    assert target.read_text() == "first"

    def fails(tmp):
        tmp.write_text("half a fi")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, fails)
    assert target.read_text() == "first"  # the old file, whole
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temporary file left
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_written_images_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        write_labels(tmp_path / "l.tif", np.ones((16, 16), np.int32))
        from sagegan.io import write_image

        write_image(tmp_path / "i.png", _ramp())
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o640}


def test_json_helpers(tmp_path):
    import dataclasses
    import json

    from sagegan.io import json_ready, read_json, write_json

    @dataclasses.dataclass
    class Point:
        x: float
        y: tuple

    data = {"nan": float("nan"), "inf": np.float32("inf"), "f": np.float32(1.5), "i": np.int64(3),
            "b": np.bool_(True), "arr": np.arange(3), "path": Path("a/b"), "tuple": (1, (2, 3)),
            "point": Point(np.float64(0.5), (np.nan,)), 7: "key"}
    expected = {"nan": None, "inf": None, "f": 1.5, "i": 3, "b": True, "arr": [0, 1, 2], "path": "a/b",
                "tuple": [1, [2, 3]], "point": {"x": 0.5, "y": [None]}, "7": "key"}
    assert json_ready(data) == expected
    write_json(tmp_path / "d.json", data)
    text = (tmp_path / "d.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: other tools can read it
    assert json.loads(text) == expected == read_json(tmp_path / "d.json")
    # internal state that must come back exactly keeps its non-finite numbers
    write_json(tmp_path / "s.json", {"best": -np.inf, "x": [np.nan]}, strict=False)
    back = read_json(tmp_path / "s.json")
    assert back["best"] == -np.inf and np.isnan(back["x"][0])
    with pytest.raises(InputError, match="f.json: file not found"):
        read_json(tmp_path / "f.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


# ---- masks and calibration (issue 17): masks read as drawn; the user's pixel size always wins


def _three_squares(value=255, dtype=np.uint8):
    mask = np.zeros((64, 64), dtype)
    for r, c in ((4, 4), (4, 36), (36, 20)):
        mask[r:r + 20, c:c + 20] = value
    return mask


def test_antialiased_edge_row_makes_no_particle(tmp_path):
    # read as 2 "particles" before: the three squares (255) merged into one, the edge row (128) another
    mask = _three_squares()
    mask[24, 4:24] = 128  # an anti-aliased row along the first square's lower edge
    iio.imwrite(tmp_path / "m.png", mask)
    labels = read_mask(tmp_path / "m.png")
    assert labels.max() == 3 and np.count_nonzero(labels) == np.count_nonzero(mask)
    assert len(np.unique(labels[4:25, 4:24])) == 1  # the row (above half the maximum) joins its square


def test_one_antialiased_particle_is_one_particle(tmp_path):
    # each rim level forms one region, as ids do: the rims hugging the core say it is anti-aliasing
    r = np.hypot(*np.mgrid[:64, :64] - 32.0)
    mask = np.select([r < 12, r < 13, r < 14], [255, 170, 85], 0).astype(np.uint8)
    iio.imwrite(tmp_path / "m.png", mask)
    labels = read_mask(tmp_path / "m.png")
    assert labels.max() == 1 and np.array_equal(labels > 0, mask > 127)


def test_jpeg_saved_mask_keeps_its_particles(tmp_path):
    from skimage.draw import disk

    mask = np.zeros((64, 64), np.uint8)
    mask[disk((20, 20), 10)] = 255
    mask[disk((44, 42), 12)] = 255
    iio.imwrite(tmp_path / "m.jpg", mask, quality=75)
    assert len(np.unique(iio.imread(tmp_path / "m.jpg"))) > 10  # JPEG noise: many grey levels
    labels = read_mask(tmp_path / "m.jpg")
    assert labels.max() == 2
    assert np.count_nonzero((labels > 0) != (mask > 0)) < 0.02 * np.count_nonzero(mask)


def test_stray_value_in_a_binary_mask_is_read_as_binary(tmp_path):
    # a 0/1 mask with one pixel of 2 is near-binary, so binary: the stray pixel is foreground and
    # joins the particle it lies in (on its own it would be a 1-px particle)
    mask = _three_squares(1)
    mask[10, 10] = 2
    iio.imwrite(tmp_path / "m.png", mask)
    labels = read_mask(tmp_path / "m.png")
    assert labels.max() == 3 and np.array_equal(labels > 0, mask > 0)
    mask[60, 60] = 2
    iio.imwrite(tmp_path / "m.png", mask)
    assert read_mask(tmp_path / "m.png").max() == 4


def test_true_label_maps_stay_label_maps(tmp_path):
    labels = np.zeros((64, 64), np.int32)
    labels[8:28, 8:28], labels[8:28, 28:48], labels[28:48, 8:28] = 1, 2, 3  # touching particles
    for offset in (0, 1000):  # ids cut from a larger map need not start at 1
        ids = np.where(labels > 0, labels + offset, 0)
        iio.imwrite(tmp_path / "l.png", ids.astype(np.uint16))
        np.testing.assert_array_equal(read_mask(tmp_path / "l.png"), ids)
    pieces = labels.copy()
    pieces[52:60, 52:60] = 3  # an id that names two pieces (as some EMPS maps do) is still a label map
    write_labels(tmp_path / "p.tif", pieces)
    np.testing.assert_array_equal(read_mask(tmp_path / "p.tif"), pieces)
    rgb = np.zeros((64, 64, 3), np.uint8)  # colour-coded: one particle per colour
    rgb[labels == 1], rgb[labels == 2], rgb[labels == 3] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    iio.imwrite(tmp_path / "c.png", rgb)
    assert len(np.unique(read_mask(tmp_path / "c.png"))) == 4


def test_ambiguous_mask_is_refused_unless_the_kind_is_given(tmp_path):
    mask = _three_squares(1)
    mask[4:24, 36:56] = 2
    mask[40:60, 50:60] = 2  # two values, each naming several particles: classes? ids?
    iio.imwrite(tmp_path / "m.png", mask)
    with pytest.raises(InputError) as err:
        read_mask(tmp_path / "m.png")
    msg = str(err.value)
    assert "m.png: cannot tell whether this mask is binary or a label map" in msg
    assert "--mask-kind binary or --mask-kind labels" in msg and "\n" not in msg
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", kind="labels"), mask)
    assert read_mask(tmp_path / "m.png", kind="binary").max() == 2  # foreground: above half the maximum
    with pytest.raises(ValueError, match="--mask-kind must be auto, binary or labels"):
        read_mask(tmp_path / "m.png", kind="instances")


def test_a_micrograph_is_not_a_mask(tmp_path):
    from sagegan.io import guess_mask_kind

    rng = np.random.default_rng(0)
    image = np.clip(_ramp(64, 64) * 200 + rng.normal(0, 12, (64, 64)) + 20, 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", image)
    assert guess_mask_kind(image)[0] == "micrograph"
    with pytest.raises(InputError, match=r"a\.png: looks like a micrograph, not a mask or label image"):
        read_mask(tmp_path / "a.png")
    assert read_mask(tmp_path / "a.png", kind="labels").max() == image.max()  # when the user insists


def test_load_pairs_reads_masks_as_told(tmp_path):
    d = _folder(tmp_path)
    mask = _three_squares(1)[:32, :32]
    mask[20:28, 20:28] = 2
    mask[2:4, 28:30] = 2
    for p in (d / "masks").iterdir():
        iio.imwrite(p, mask)
    with pytest.raises(InputError, match="--mask-kind"):
        load_pairs(d / "images", d / "masks")
    assert load_pairs(d / "images", d / "masks", mask_kind="labels")[0].labels.max() == 2


@pytest.mark.parametrize("unit,nm", [
    ("nm", 1.0), ("NM", 1.0), ("nanometer", 1.0), ("Nanometers", 1.0), ("nanometres", 1.0),
    ("µm", 1e3), ("μm", 1e3), ("um", 1e3), ("\\u00B5m", 1e3), ("micron", 1e3), ("Microns", 1e3),
    ("micrometers", 1e3), ("micrometre", 1e3), ("Å", 0.1), ("A", 0.1), ("angstroms", 0.1),
    ("Ångström", 0.1), ("pm", 1e-3), ("mm", 1e6), ("cm", 1e7), ("m", 1e9), ("meters", 1e9)])
def test_unit_spellings(unit, nm):
    assert unit_to_nm(2.0, unit) == pytest.approx(2.0 * nm)


def _cz_sem_tiff(path, value_text):
    text = f"0\r\nAP_PIXEL_SIZE\r\nPixel Size = {value_text}\r\n"
    tifffile.imwrite(path, np.full((32, 32), 100, np.uint8), extratags=[(34118, "s", 0, text, True)])


def _imagej_tiff(path, px_per_unit, unit, arr=None):
    arr = np.full((32, 32), 100, np.uint8) if arr is None else arr
    tifffile.imwrite(path, arr, imagej=True, resolution=(px_per_unit, px_per_unit), metadata={"unit": unit})


@pytest.mark.parametrize("case,words", [
    ("unknown unit", "unknown length unit 'furlong'"), ("reciprocal", "reciprocal units"),
    ("zero", "not a positive number"), ("negative", "not a positive number"), ("nan", "not a positive number")])
def test_broken_metadata_becomes_unknown_with_a_warning(tmp_path, case, words):
    import warnings

    from sagegan.io import InputWarning

    path = tmp_path / "a.tif"
    if case == "unknown unit":
        _imagej_tiff(path, 2.0, "furlong")
    elif case == "reciprocal":
        _imagej_tiff(path, 2.0, "1/nm")
    else:
        _cz_sem_tiff(path, {"zero": "0 nm", "negative": "-3 nm", "nan": "nan nm"}[case])
    with pytest.warns(InputWarning) as record:
        m = read_micrograph(path)
    assert m.nm_per_px is None and len(record) == 1
    msg = str(record[0].message)
    assert msg.startswith(f"{path}: pixel size unknown") and words in msg and "--nm-per-px" in msg and "\n" not in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # the user's value wins before any parsing
        given = read_micrograph(path, nm_per_px=2.5)
    assert given.nm_per_px == 2.5 and given.metadata["pixel_size_source"] == "given by the user"


def test_implausible_pixel_size_is_a_warning(tmp_path):
    from sagegan.io import InputWarning

    _cz_sem_tiff(tmp_path / "a.tif", "5 m")
    with pytest.warns(InputWarning, match=r"a\.tif: pixel size 5e\+09 nm/px is outside the plausible range"):
        assert read_micrograph(tmp_path / "a.tif").nm_per_px == pytest.approx(5e9)
    with pytest.warns(InputWarning, match="--nm-per-px: pixel size 0.0001 nm/px is outside"):
        assert read_micrograph(tmp_path / "a.tif", nm_per_px=1e-4).nm_per_px == 1e-4
    with pytest.raises(InputError, match="--nm-per-px must be a positive number"):
        read_micrograph(tmp_path / "a.tif", nm_per_px=float("nan"))


def test_label_tiffs_with_odd_imagej_units_read_as_masks(tmp_path):
    import warnings

    from sagegan.io import InputWarning

    labels = np.zeros((32, 32), np.uint16)
    labels[4:12, 4:12], labels[4:12, 12:20] = 1, 2
    for i, unit in enumerate(("1/nm", "furlong", "nm")):
        _imagej_tiff(tmp_path / f"l{i}.tif", 0.0 if unit == "nm" else 2.0, unit, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("error", InputWarning)  # masks never read calibration
            np.testing.assert_array_equal(read_mask(tmp_path / f"l{i}.tif"), labels)


@pytest.mark.parametrize("top", [7, 70000])  # uint16 (ImageJ tags) and uint32 (plain TIFF tags)
def test_write_labels_records_the_pixel_size(tmp_path, top):
    labels = np.zeros((300, 300), np.int64)
    labels[10:20, 10:20], labels[30:40, 30:40] = 1, top
    write_labels(tmp_path / "l.tif", labels, nm_per_px=2.5)
    assert read_pixel_size(tmp_path / "l.tif") == pytest.approx(2.5, rel=1e-6)
    np.testing.assert_array_equal(read_mask(tmp_path / "l.tif", kind="labels"), labels)
    loaded = read_labelled_image(tmp_path / "l.tif")
    assert loaded.nm_per_px == pytest.approx(2.5, rel=1e-6) and loaded.nm_per_px_source == "labels file"
    if top < 65536:  # ImageJ reads the calibration from these tags
        with tifffile.TiffFile(tmp_path / "l.tif") as tif:
            assert tif.imagej_metadata["unit"] == "nm"
        assert read_micrograph(tmp_path / "l.tif").nm_per_px == pytest.approx(2.5, rel=1e-6)
    write_labels(tmp_path / "plain.tif", labels)  # default: no calibration
    assert read_pixel_size(tmp_path / "plain.tif") is None
    assert read_labelled_image(tmp_path / "plain.tif").nm_per_px is None
    with pytest.raises(ValueError, match="nm_per_px"):
        write_labels(tmp_path / "bad.tif", labels, nm_per_px=0.0)
