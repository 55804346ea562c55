"""Reading and writing micrographs and masks, with physical pixel sizes and clear errors.

Everything that touches files of the user's lives here, so that every other module can assume
clean arrays: a float32 image in [0, 1] and an integer instance-label map of the same shape.
Any problem with an input file is raised as :class:`InputError`, whose message names the file
and the problem in one line; the command line prints that line and exits with status 2.

A file that is usable but doubtful (a pixel size whose metadata is broken or names an unknown
unit, so it becomes unknown; a pixel size outside :data:`PLAUSIBLE_NM_PER_PX`) gives a warning
instead: ``warnings.warn(message, InputWarning)``, the message one line naming the file. The
command line prints each as ``sagegan: warning: <message>``; a Python caller sees ordinary
warnings (``warnings.simplefilter("error", InputWarning)`` turns them into errors).

Masks are read as they were drawn (:func:`read_mask`, :func:`guess_mask_kind`): the content
decides whether a mask is binary or a label map, and :func:`read_mask` reads no calibration.
Label files carry their pixel size as TIFF resolution tags (:func:`write_labels`), which
:func:`read_pixel_size` and so :func:`read_labelled_image` pick up.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
EM_SUFFIXES = (".dm3", ".dm4", ".emd", ".ser")
MIN_SIDE_PX = 16

#: Pixel sizes (nm/px) outside this range give a warning: a microscope image is not that fine
#: or that coarse, so the metadata (or the value given) is probably wrong.
PLAUSIBLE_NM_PER_PX = (0.001, 10000.0)

# Length units seen in microscope metadata, as nanometres per unit. Keys are lower case without
# spaces; a plural "s" is accepted too (:func:`_unit_factor`).
_NM_PER_UNIT = {
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "cm": 1e7, "centimeter": 1e7, "centimetre": 1e7,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "\\u00b5m": 1e3, "\\u03bcm": 1e3, "mum": 1e3,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "a": 0.1, "å": 0.1, "Å": 0.1, "angstrom": 0.1, "ångström": 0.1, "angström": 0.1,
    "angstroem": 0.1, "\\u00c5": 0.1, "\\u00e5": 0.1,
    "pm": 1e-3, "picometer": 1e-3, "picometre": 1e-3,
}


class InputError(ValueError):
    """A user's input file or folder is unusable; the message is one line naming it."""


class InputWarning(UserWarning):
    """A user's input file is usable but doubtful (its pixel size is unknown or implausible);
    the message is one line naming it."""


@dataclass
class Micrograph:
    """A grey-level micrograph scaled to [0, 1] with its pixel size.

    Attributes
    ----------
    image : float32 array (H, W) in [0, 1].
    nm_per_px : pixel size in nanometres, or None when the file does not say.
    metadata : what the reader learned from the file (format, original dtype and range, units).
    path : the file it came from, if any.
    """

    image: np.ndarray
    nm_per_px: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]


def unit_to_nm(value: float, unit: str, source: str | Path = "") -> float:
    """Convert a length ``value`` in ``unit`` to nanometres.

    Units are matched without regard to case, spaces or a plural "s": m, cm, mm, µm (um, μm,
    micron, micrometer, micrometre), nm (nanometer, nanometre), Å (A, angstrom), pm, and the
    spelled-out forms of each. Reciprocal-space units (``1/nm``, ``nm^-1``) are refused: they
    describe a diffraction pattern or an FFT, not a real-space image.

    Raises
    ------
    InputError
        An unknown or reciprocal unit, or a value that is not a positive finite number.
    """
    try:
        return _nm_from(value, unit)
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from None


def _unit_factor(unit: str) -> float | None:
    """Nanometres per ``unit`` (see :func:`unit_to_nm`), or None for an unknown unit."""
    key = str(unit).strip().replace(" ", "").rstrip(".")
    for k in dict.fromkeys((key, key.lower(), key.casefold())):
        if k in _NM_PER_UNIT:
            return _NM_PER_UNIT[k]
        if k.endswith("s") and len(k) > 4 and k[:-1] in _NM_PER_UNIT:  # plurals of spelled-out units
            return _NM_PER_UNIT[k[:-1]]
    return None


def _nm_from(value: Any, unit: str) -> float:
    """``value`` in ``unit`` as nanometres; ValueError (without a file name) when impossible."""
    u = str(unit).strip()
    low = u.lower().replace(" ", "")
    if low.startswith("1/") or "^-1" in low or "-1" == low[-2:] or low.startswith("per"):
        raise ValueError(f"pixel size is in reciprocal units ({u}); "
                         "this looks like a diffraction pattern or FFT, not a real-space image")
    factor = _unit_factor(u)
    if factor is None:
        raise ValueError(f"unknown length unit {u!r} for the pixel size (expected m, mm, µm, nm, Å or pm)")
    try:
        nm = float(value) * factor
    except (TypeError, ValueError):
        raise ValueError(f"pixel size {value!r} {u} is not a number") from None
    if not math.isfinite(nm) or nm <= 0:
        raise ValueError(f"pixel size {value} {u} is not a positive number")
    return nm


def _metadata_nm(value: Any, unit: str, path: Path) -> float | None:
    """A pixel size from a file's metadata, in nm, or None with an :class:`InputWarning` when the
    metadata is broken (unknown or reciprocal unit, zero, negative or NaN size)."""
    try:
        return _nm_from(value, unit)
    except ValueError as exc:
        warnings.warn(f"{path}: pixel size unknown: {exc}; pass --nm-per-px to set it",
                      InputWarning, stacklevel=2)
        return None


def check_pixel_size(nm_per_px: float | None, source: str | Path) -> float | None:
    """Return ``nm_per_px``, warning (:class:`InputWarning`) when it lies outside
    :data:`PLAUSIBLE_NM_PER_PX`; ``source`` names where it came from (a file, ``--nm-per-px``)."""
    lo, hi = PLAUSIBLE_NM_PER_PX
    if nm_per_px is not None and not lo <= nm_per_px <= hi:
        warnings.warn(f"{source}: pixel size {nm_per_px:.4g} nm/px is outside the plausible range "
                      f"{lo:g}-{hi:g} nm/px; check it (--nm-per-px sets it)", InputWarning, stacklevel=2)
    return nm_per_px


# --------------------------------------------------------------------------------------------
# micrographs


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")


def _to_grey(arr: np.ndarray, path: Path) -> np.ndarray:
    """Reduce grey, grey+alpha, RGB or RGBA arrays to one luminance channel."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        if arr.shape[-1] == 2:  # grey + alpha
            return arr[..., 0]
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]  # grey stored as RGB: keep the exact values
        weights = np.array([0.2125, 0.7154, 0.0721])  # ITU-R 709 luminance, as skimage.rgb2gray
        grey = rgb.astype(np.float64) @ weights
        if arr.dtype.kind in "ui":  # keep the integer type so the full-scale range still applies
            return np.round(grey).astype(arr.dtype)
        return grey.astype(np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    raise InputError(f"{path}: expected a 2-D grey or RGB image, got an array of shape {arr.shape} "
                     "(stacks and multi-channel images are not supported)")


def _scale_to_unit(arr: np.ndarray, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Scale to float32 [0, 1]: 8/16-bit by their full range, other types by min-max."""
    info: dict[str, Any] = {"dtype": str(arr.dtype)}
    if arr.dtype == bool:
        return arr.astype(np.float32), info
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(f"{path}: image contains {bad} NaN or infinite pixel values")
    if arr.dtype in (np.uint8, np.uint16) and arr.ndim == 2:
        top = float(np.iinfo(arr.dtype).max)
        info["scaling"] = f"divided by {int(top)}"
        return (arr.astype(np.float32) / top), info
    # Floats, signed and 32-bit integers have no natural full scale (counts, electrons, ...).
    data = arr.astype(np.float64)
    lo, hi = float(data.min()), float(data.max())
    info.update(scaling="min-max", original_min=lo, original_max=hi)
    if hi <= lo:
        return np.zeros(arr.shape, np.float32), info
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        info["scaling"] = "none (already in [0, 1])"
        return data.astype(np.float32), info
    return ((data - lo) / (hi - lo)).astype(np.float32), info


def _tiff_pixel_size(tif: Any, path: Path) -> tuple[float | None, dict[str, Any]]:
    """Pixel size from a Zeiss CZ_SEM tag or ImageJ resolution tags, in nm.

    None when the file gives none, and (with an :class:`InputWarning`) when its metadata is
    broken: never an error, since ``--nm-per-px`` or an uncalibrated analysis can still use it.
    """
    page = tif.pages[0]
    meta: dict[str, Any] = {}
    tags = page.tags
    if "CZ_SEM" in tags:
        cz = tags["CZ_SEM"].value
        if isinstance(cz, dict):
            for key, entry in cz.items():
                if "pixel_size" in str(key).lower() and isinstance(entry, tuple) and len(entry) >= 3:
                    nm = _metadata_nm(entry[1], entry[2], path)
                    if nm is not None:
                        meta["pixel_size_source"] = f"CZ_SEM {key}"
                    return nm, meta
    ij = tif.imagej_metadata
    if ij and "XResolution" in tags:
        unit = ij.get("unit")
        num, den = tags["XResolution"].value
        if unit and str(unit).strip().lower() not in ("pixel", "pixels", "inch", ""):
            nm = _metadata_nm(den / num if num else math.inf, unit, path)  # units per px
            if nm is not None:
                meta["pixel_size_source"] = "ImageJ resolution"
            return nm, meta
    return None, meta


# TIFF ResolutionUnit codes with a length (3 is the standard's centimetre; tifffile knows 4 and 5)
_NM_PER_RESOLUTION_UNIT = {3: 1e7, 4: 1e6, 5: 1e3}


def _plain_resolution_nm(page: Any) -> float | None:
    """Pixel size from plain TIFF resolution tags in pixels per cm (mm, µm), or None.

    Inch resolutions are print settings (72 or 300 dpi), not calibrations, and are ignored, and
    so are sizes outside :data:`PLAUSIBLE_NM_PER_PX`, which are print settings in cm.
    """
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    per_unit = _NM_PER_RESOLUTION_UNIT.get(int(tags["ResolutionUnit"].value))
    num, den = tags["XResolution"].value
    if per_unit is None or not num > 0 or not den > 0:
        return None
    nm = per_unit * den / num
    lo, hi = PLAUSIBLE_NM_PER_PX
    return nm if lo <= nm <= hi else None


def read_pixel_size(path: str | Path) -> float | None:
    """The pixel size, in nm, that a TIFF file records; None for other files or none recorded.

    Reads the tags :func:`read_micrograph` reads (Zeiss CZ_SEM, ImageJ resolution with a length
    unit) and, failing those, plain TIFF resolution in pixels per centimetre, as
    :func:`write_labels` writes it for label files the ImageJ format cannot hold (uint32).
    The pixels are not decoded.

    Example
    -------
    >>> write_labels("l.tif", np.ones((8, 8), np.uint16), nm_per_px=2.5)  # doctest: +SKIP
    >>> read_pixel_size("l.tif")                                           # doctest: +SKIP
    2.5
    """
    import tifffile

    path = Path(path)
    _check_file(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            nm, _ = _tiff_pixel_size(tif, path)
            if nm is None and not tif.imagej_metadata:
                nm = _plain_resolution_nm(tif.pages[0])
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{path}: cannot read as TIFF ({_short(exc)})") from None
    return nm


def _read_tiff(path: Path, pixel_size: bool = True) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    """The first page of a TIFF, with its pixel size (:func:`_tiff_pixel_size`) when
    ``pixel_size``; metadata that cannot be parsed gives a warning, never an error."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            arr = tif.pages[0].asarray()
            nm, meta = None, {}
            if pixel_size:
                try:
                    nm, meta = _tiff_pixel_size(tif, path)
                except Exception as exc:  # malformed tags: the image itself is still usable
                    warnings.warn(f"{path}: pixel size unknown: cannot parse its metadata ({_short(exc)}); "
                                  "pass --nm-per-px to set it", InputWarning, stacklevel=2)
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{path}: cannot read as TIFF ({_short(exc)})") from None
    return arr, nm, meta


def _read_em(path: Path, pixel_size: bool = True) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    """Gatan .dm3/.dm4, Velox/FEI .emd and TIA .ser through the optional (GPL) rosettasciio."""
    try:
        if path.suffix.lower() in (".dm3", ".dm4"):
            from rsciio.digitalmicrograph import file_reader
        elif path.suffix.lower() == ".emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.tia import file_reader
    except ImportError:
        raise InputError(f"{path}: reading {path.suffix} files needs the optional extra: "
                         "pip install 'sagegan[em]'") from None
    try:
        signals = file_reader(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot read ({_short(exc)})") from None
    images = [s for s in signals if np.asarray(s["data"]).ndim == 2]
    if not images:
        raise InputError(f"{path}: contains no 2-D image")
    sig = images[0]
    axes = sig.get("axes", []) if pixel_size else []
    nm = None
    if axes:
        ax = axes[-1]
        unit, scale = ax.get("units"), ax.get("scale")
        if unit and str(unit) not in ("<undefined>", "") and scale is not None:
            nm = _metadata_nm(scale, unit, path)
    return np.asarray(sig["data"]), nm, {"pixel_size_source": "rosettasciio axes"} if nm else {}


def _read_plain(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        plugin = "tifffile" if path.suffix.lower() in (".tif", ".tiff") else "pillow"
        return np.asarray(iio.imread(path, plugin=plugin))
    except Exception as exc:
        raise InputError(f"{path}: cannot read as an image ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


#: Where a pixel size may come from, besides a number the user gives (see :func:`read_micrograph`).
PIXEL_SIZE_MODES = ("auto", "auto-bar", "metadata")


def pixel_size_mode(nm_per_px: float | str | None, source: str | Path = "--nm-per-px") -> tuple[str, float | None]:
    """``--nm-per-px`` as (mode, number): a number gives ("user", it); None, "metadata",
    "auto" and "auto-bar" give themselves and None. Anything else is an :class:`InputError`.

    >>> pixel_size_mode("2.5"), pixel_size_mode("auto")
    (('user', 2.5), ('auto', None))
    """
    if nm_per_px is None:
        return "metadata", None
    if isinstance(nm_per_px, str) and nm_per_px.strip().lower() in PIXEL_SIZE_MODES:
        return nm_per_px.strip().lower(), None
    try:
        value = float(nm_per_px)
    except (TypeError, ValueError):
        raise InputError(f"{source}: --nm-per-px must be a positive number or one of "
                         f"{', '.join(PIXEL_SIZE_MODES)}, got {nm_per_px!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"{source}: --nm-per-px must be a positive number, got {nm_per_px}")
    return "user", value


def _calibrate_from_image(image: np.ndarray, path: Path, mode: str, scale_bar_nm: float | None,
                          meta: dict[str, Any]) -> tuple[float | None, Any]:
    """The pixel size the image shows (its data bar or scale bar), recorded in ``meta``, and the
    :class:`sagegan.scalebar.Calibration` (None when OCR failed). The pixel size is None, with
    one :class:`InputWarning` line saying why, when a bar was found but not read (or, with
    ``auto-bar``, when none was found)."""
    from .scalebar import calibrate_image

    try:
        cal = calibrate_image(image, scale_bar_nm=scale_bar_nm)
    except (RuntimeError, OSError) as exc:  # Tesseract failing on this image (TesseractError is a RuntimeError)
        warnings.warn(f"{path}: pixel size unknown: OCR failed ({_short(exc)}); pass --scale-bar-nm L or --nm-per-px",
                      InputWarning, stacklevel=3)
        return None, None
    if cal.nm_per_px is not None:
        meta["calibration"], meta["pixel_size_source"] = cal.source, cal.detail
        return cal.nm_per_px, cal
    if cal.scale_bar is not None or mode == "auto-bar":
        warnings.warn(f"{path}: pixel size unknown: {cal.problem}; pass --scale-bar-nm L (the bar's length "
                      "in nm) or --nm-per-px", InputWarning, stacklevel=3)
    return None, cal


# The largest image read by default. Segmenting needs a few tens of bytes per pixel at its peak
# (BENCHMARKS.md, "Reliability"), so this keeps a default run within a laptop's memory;
# ``--max-pixels`` raises it.
MAX_PIXELS = 100_000_000


def read_micrograph(path: str | Path, nm_per_px: float | str | None = None,
                    crop_bottom: int | str = 0, max_pixels: int | None = MAX_PIXELS,
                    scale_bar_nm: float | None = None) -> Micrograph:
    """Read a micrograph as float32 grey levels in [0, 1] with its pixel size.

    Parameters
    ----------
    path : PNG, JPEG, BMP, TIFF, or (with the ``em`` extra) .dm3/.dm4/.emd/.ser.
    nm_per_px : where the pixel size comes from (see :data:`PIXEL_SIZE_MODES`):
        - a number: the user's value. It always wins: the file's calibration metadata is then
          not even parsed, so a file whose metadata is broken is still usable;
        - None or ``"metadata"``: the file's metadata only;
        - ``"auto"``: the metadata, else the image itself (:func:`sagegan.scalebar.calibrate_image`:
          a field width or pixel size printed in the data bar, else the scale bar and its label);
        - ``"auto-bar"``: the image itself, whatever the metadata says.
    crop_bottom : rows to drop at the bottom (the microscope's data bar), or ``"auto"`` to find
        the data bar (:func:`sagegan.scalebar.find_data_bar`) and drop it when there is one.
    max_pixels : refuse images with more pixels than this, before decoding them (None: no limit).
    scale_bar_nm : the length of the image's scale bar, read by the user: with ``"auto"`` or
        ``"auto-bar"``, the bar is found and measured, and its label need not be read.

    Returns
    -------
    Micrograph
        ``nm_per_px`` is None when nothing gives a pixel size, and also, with an
        :class:`InputWarning`, when the metadata is broken (unknown or reciprocal unit, zero,
        negative or NaN size) or a scale bar was found but its label could not be read. A pixel
        size outside :data:`PLAUSIBLE_NM_PER_PX` is kept, with an :class:`InputWarning`.
        ``metadata`` says where the pixel size came from: ``calibration`` is ``"user"``,
        ``"metadata"``, ``"data bar"``, ``"scale bar"`` or None, and ``pixel_size_source`` the
        details; ``crop_bottom`` is the number of rows dropped.

    Examples
    --------
    >>> m = read_micrograph("particles.tif")          # doctest: +SKIP
    >>> m.image.shape, m.nm_per_px                    # doctest: +SKIP
    ((712, 1024), 7.344)
    """
    path = Path(path)
    _check_file(path)
    mode, user_nm = pixel_size_mode(nm_per_px, path)
    if crop_bottom != "auto" and not isinstance(crop_bottom, (int, np.integer)):
        raise InputError(f"{path}: --crop-bottom must be a number of rows or 'auto', got {crop_bottom!r}")
    if scale_bar_nm is not None and not (scale_bar_nm > 0 and math.isfinite(scale_bar_nm)):
        raise InputError(f"{path}: --scale-bar-nm must be a positive length in nm, got {scale_bar_nm}")
    suffix = path.suffix.lower()
    if max_pixels is not None:
        _check_pixel_count(path, max_pixels)
    nm_file: float | None = None
    meta: dict[str, Any] = {"format": suffix.lstrip(".")}
    # the user's value wins before any metadata is parsed; "auto-bar" ignores the metadata
    parse = user_nm is None and mode != "auto-bar"
    if suffix in (".tif", ".tiff"):
        arr, nm_file, extra = _read_tiff(path, pixel_size=parse)
        meta.update(extra)
    elif suffix in EM_SUFFIXES:
        arr, nm_file, extra = _read_em(path, pixel_size=parse)
        meta.update(extra)
    elif suffix in IMAGE_SUFFIXES:
        arr = _read_plain(path)
    else:
        raise InputError(f"{path}: unsupported file type {suffix!r} "
                         f"(expected one of {', '.join(IMAGE_SUFFIXES + EM_SUFFIXES)})")
    arr = _to_grey(arr, path)
    image, info = _scale_to_unit(arr, path)
    meta.update(info)
    meta["calibration"] = "metadata" if nm_file is not None else None
    cal = None
    if user_nm is None and (mode == "auto-bar" or (mode == "auto" and nm_file is None)):
        nm_file, cal = _calibrate_from_image(image, path, mode, scale_bar_nm, meta)
    if crop_bottom == "auto":
        from .scalebar import find_data_bar

        data_bar = cal.data_bar if cal is not None else find_data_bar(image)  # the calibration looked already
        crop_bottom = data_bar.rows if data_bar is not None else 0
    meta["crop_bottom"] = int(crop_bottom)
    if crop_bottom:
        image = _crop(image, crop_bottom, path)
    _check_size(image.shape, path)
    if user_nm is not None:
        meta["pixel_size_source"], meta["calibration"] = "given by the user", "user"
        nm_file = check_pixel_size(user_nm, "--nm-per-px")
    else:
        check_pixel_size(nm_file, path)
    return Micrograph(image=np.ascontiguousarray(image, dtype=np.float32), nm_per_px=nm_file,
                      metadata=meta, path=path)


def _check_pixel_count(path: Path, max_pixels: int) -> None:
    """Refuse an image larger than ``max_pixels`` from its header, before it is decoded."""
    shape = None
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            import imageio.v3 as iio

            shape = iio.improps(path).shape
    except Exception:  # unreadable headers are reported by the reader itself
        return
    if not shape or len(shape) < 2:
        return
    # grey or RGB(A): the two largest axes are the image plane
    h, w = sorted(int(n) for n in shape)[-2:]
    if h * w > max_pixels:
        raise InputError(f"{path}: {h * w / 1e6:.0f} MPix is more than the limit of {max_pixels / 1e6:.0f} MPix; "
                         "pass --max-pixels N to read it anyway (memory grows with the pixel count)")


def _crop(arr: np.ndarray, crop_bottom: int, path: Path) -> np.ndarray:
    if crop_bottom < 0 or crop_bottom >= arr.shape[0]:
        raise InputError(f"{path}: cannot crop {crop_bottom} rows from an image {arr.shape[0]} rows high")
    return arr[: arr.shape[0] - crop_bottom]


def _check_size(shape: tuple[int, ...], path: Path) -> None:
    if min(shape[:2]) < MIN_SIDE_PX:
        raise InputError(f"{path}: image is {shape[1]}x{shape[0]} px; at least "
                         f"{MIN_SIDE_PX}x{MIN_SIDE_PX} is needed")


# --------------------------------------------------------------------------------------------
# masks


def labels_from_binary(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Instance labels of a binary mask by connected components (1 = 4-, 2 = 8-connectivity)."""
    from skimage.measure import label

    return label(np.asarray(mask) > 0, connectivity=connectivity).astype(np.int32)


#: How :func:`read_mask` reads masks: ``auto`` decides from the content (:func:`guess_mask_kind`),
#: ``binary`` and ``labels`` say it (the ``--mask-kind`` option).
MASK_KINDS = ("auto", "binary", "labels")


def check_mask_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`MASK_KINDS`, else raise ValueError."""
    if kind not in MASK_KINDS:
        raise ValueError(f"--mask-kind must be auto, binary or labels, got {kind!r}")
    return kind


def _same_as_neighbours(arr: np.ndarray) -> np.ndarray:
    """True where a pixel equals its four neighbours (the border repeats the edge pixels)."""
    p = np.pad(arr, 1, mode="edge")
    return ((p[:-2, 1:-1] == arr) & (p[2:, 1:-1] == arr) & (p[1:-1, :-2] == arr) & (p[1:-1, 2:] == arr))


def _regions_per_value(arr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many 8-connected regions each of ``values`` (the sorted non-zero values) forms."""
    from skimage.measure import label

    regions, n = label(arr, background=0, connectivity=2, return_num=True)
    region_values = np.zeros(n + 1, arr.dtype)
    region_values[regions.ravel()] = arr.ravel()  # every pixel of a region holds the same value
    return np.bincount(np.searchsorted(values, region_values[1:]), minlength=values.size)


def _mask_top(arr: np.ndarray) -> float:
    """The mask's foreground level: the 99th percentile of its non-zero values, so that a few
    stray pixels above it do not set the threshold."""
    nonzero = arr[arr != 0]
    return float(np.percentile(nonzero, 99)) if nonzero.size else 0.0


def _binary_foreground(arr: np.ndarray) -> np.ndarray:
    """A mask thresholded at half its foreground level (:func:`_mask_top`)."""
    if arr.dtype == bool:
        return arr
    return arr > _mask_top(arr) / 2


def _threshold_changes(arr: np.ndarray) -> float:
    """Share of the foreground that thresholding at half the maximum changes by more than a
    quarter of the maximum, not counting the 2-px band along the foreground's edges."""
    from scipy import ndimage as ndi

    top = _mask_top(arr)
    a = arr.astype(np.float64)
    foreground = a > top / 2
    changed = np.abs(a - np.where(foreground, top, 0.0)) > top / 4
    if changed.any():
        square = np.ones((3, 3), bool)
        band = (ndi.binary_dilation(foreground, square, iterations=2)
                & ~ndi.binary_erosion(foreground, square, iterations=2, border_value=1))
        changed &= ~band
    return float(np.count_nonzero(changed)) / max(int(np.count_nonzero(foreground)), 1)


def guess_mask_kind(arr: np.ndarray, ordered: bool = True) -> tuple[str, str]:
    """Tell from its content whether a 2-D array is a binary mask, a label map, or neither.

    The rules, in order:

    1. at most one non-zero value: ``"binary"``;
    2. ``"labels"`` when at least 95 % of the non-zero values each form one 8-connected
       region, unless the pixels of the values other than the most common one nearly all
       (90 %) lie within 3 px of it (the rims of an anti-aliased particle, a stray pixel in one);
    3. ``"binary"`` (near-binary: anti-aliasing, JPEG noise, stray values) when thresholding
       at half the maximum changes under 1 % of the foreground pixels, and at least half of all
       pixels are exactly 0 or exactly the most common non-zero value. The maximum is the 99th
       percentile of the non-zero values; a pixel counts as changed when thresholding moves it
       by more than a quarter of the maximum, outside the 2-px band along the foreground's edges;
    4. ``"labels"`` when there are at least 3 values, most of them form at most two regions,
       and at least half of the non-zero pixels equal their four neighbours (a label map in
       which some ids name several pieces, not the nested rings of a blurred mask);
    5. otherwise ``"micrograph"`` when there are more than 64 values, or more than 16 and under
       half of the non-zero pixels equal their four neighbours (grey levels that vary from pixel
       to pixel), else ``"ambiguous"``.

    Parameters
    ----------
    arr : 2-D non-negative integer or boolean array.
    ordered : False when the values are ids without an order (one per colour); rule 3 is
        then skipped.

    Returns
    -------
    (kind, evidence) : kind is ``"binary"``, ``"labels"``, ``"micrograph"`` or
    ``"ambiguous"``; evidence is a short phrase for messages.

    Example
    -------
    >>> m = np.zeros((32, 32), np.uint8); m[4:12, 4:12] = 255; m[12, 4:12] = 128
    >>> guess_mask_kind(m)[0], guess_mask_kind(np.random.default_rng(0).integers(0, 256, (32, 32)))[0]
    ('binary', 'micrograph')
    """
    from scipy import ndimage as ndi

    arr = np.asarray(arr)
    if arr.dtype == bool:
        return "binary", "boolean mask"
    nonzero = arr != 0
    values, counts = np.unique(arr[nonzero], return_counts=True)
    if values.size <= 1:
        return "binary", "one non-zero value"
    regions = _regions_per_value(arr, values)
    single = float(np.mean(regions == 1))
    dominant = values[np.argmax(counts)]
    if single >= 0.95:
        others = nonzero & (arr != dominant)
        near = ndi.binary_dilation(arr == dominant, np.ones((3, 3), bool), iterations=3)
        if np.count_nonzero(others & near) < 0.9 * np.count_nonzero(others):
            return "labels", f"{values.size} ids, each one particle"
    changed = _threshold_changes(arr) if ordered else float("nan")
    two_level = (np.count_nonzero(~nonzero) + counts.max()) / arr.size
    if changed < 0.01 and two_level >= 0.5:
        return "binary", f"near-binary: thresholding changes {changed:.1%} of the foreground"
    solid = float(np.mean(_same_as_neighbours(arr)[nonzero]))
    if values.size >= 3 and np.median(regions) <= 2 and solid >= 0.5:
        return "labels", f"{values.size} ids, {single:.0%} of them one particle each"
    if values.size > 64 or (values.size > 16 and solid < 0.5):
        return "micrograph", (f"{values.size} grey levels, {solid:.0%} of its pixels equal "
                              "their neighbours")
    detail = f", thresholding at half the maximum changes {changed:.0%} of the foreground" if ordered else ""
    return "ambiguous", f"{values.size} values, {single:.0%} of them one particle each{detail}"


def read_mask(path: str | Path, connectivity: int = 1, crop_bottom: int = 0,
              kind: str = "auto") -> np.ndarray:
    """Read a mask as an int32 instance-label map (0 = background), as it was drawn.

    Parameters
    ----------
    path : PNG, JPEG, BMP or TIFF. Calibration metadata is never read from masks.
    connectivity : for binary masks, particles are 4-connected components (1) or 8- (2).
    crop_bottom : rows to drop at the bottom (the microscope's data bar).
    kind : ``"auto"`` decides from the content (:func:`guess_mask_kind`): a binary mask, also a
        near-binary one (anti-aliased edges, JPEG noise, a stray value), is thresholded at half
        its maximum and split into connected components; a label map keeps its ids. ``"binary"``
        or ``"labels"`` reads it so without asking. Colour-coded instance maps (RGB) get one id
        per colour; as binary, their brightest channel is thresholded.

    Raises
    ------
    InputError
        Unreadable files, and, with ``kind="auto"``, arrays that look like a micrograph or that
        are neither clearly binary nor clearly a label map (the message suggests
        ``--mask-kind``).
    """
    check_mask_kind(kind)
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        arr, _, _ = _read_tiff(path, pixel_size=False)
    elif suffix in IMAGE_SUFFIXES:
        arr = _read_plain(path)
    else:
        raise InputError(f"{path}: unsupported mask file type {suffix!r}")
    grey = None  # what a colour-coded map thresholds as binary
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = rgb[..., 0]
        else:  # one instance per colour, black = background
            flat = rgb.reshape(-1, 3).astype(np.int64)
            key = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
            _, inv = np.unique(key, return_inverse=True)
            arr = inv.reshape(rgb.shape[:2]).astype(np.int32)
            if key.min() != 0:
                arr = arr + 1
            grey = rgb.max(axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 2:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(f"{path}: mask must be 2-D, got shape {arr.shape}")
    if crop_bottom:
        arr = _crop(arr, crop_bottom, path)
        grey = None if grey is None else _crop(grey, crop_bottom, path)
    _check_size(arr.shape, path)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: mask contains NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            if kind == "binary" and arr.min() >= 0:
                return labels_from_binary(_binary_foreground(arr), connectivity)
            raise InputError(f"{path}: mask has fractional values ({arr.dtype}); expected a "
                             "binary mask or integer label ids (--mask-kind binary thresholds it)")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "uib":
        raise InputError(f"{path}: unsupported mask dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise InputError(f"{path}: mask has negative label ids")
    if kind == "auto":
        kind, evidence = guess_mask_kind(arr, ordered=grey is None)
        if kind not in ("binary", "labels") and grey is not None and guess_mask_kind(grey)[0] == "binary":
            kind = "binary"
        if kind == "micrograph":
            raise InputError(f"{path}: looks like a micrograph, not a mask or label image ({evidence}); "
                             "give masks or label images, or pass --mask-kind binary|labels to read it as one")
        if kind == "ambiguous":
            raise InputError(f"{path}: cannot tell whether this mask is binary or a label map ({evidence}); "
                             "pass --mask-kind binary or --mask-kind labels")
    if kind == "binary":
        return labels_from_binary(_binary_foreground(arr if grey is None else grey), connectivity)
    if arr.dtype == bool:
        return arr.astype(np.int32)
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise InputError(f"{path}: label ids exceed the int32 range")
    return arr.astype(np.int32)


# --------------------------------------------------------------------------------------------
# writing: every file sagegan writes goes through atomic_write, so a killed run never leaves a
# half-written file under a final name


def atomic_write(path: str | Path, write: Any) -> Path:
    """Create ``path`` atomically: ``write(tmp_path)`` fills a uniquely named temporary file in the
    same folder, which is flushed to disk and then renamed over ``path``.

    The temporary name is unique per call, so two writers never share one, and an interrupted
    write leaves at most a stray ``.<name>.*.part`` file, never a truncated ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file with mode 0600; give it the mode any other new file would get
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_ready(obj: Any, finite: bool = True) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON.

    NaN and infinities become None (``null``; kept as they are with ``finite=False``), numpy
    scalars and arrays Python numbers and lists, paths strings, dataclasses dicts; dicts, lists
    and tuples are converted recursively.

    Example
    -------
    >>> json_ready({"a": float("nan"), "b": np.float32(1.5), "c": (np.int64(2), None)})
    {'a': None, 'b': 1.5, 'c': [2, None]}
    """
    if isinstance(obj, dict):
        return {str(k): json_ready(v, finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v, finite) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist(), finite)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) or not finite else None
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_ready(dataclasses.asdict(obj), finite)
    if hasattr(obj, "keys") and hasattr(obj, "__getitem__"):  # other mappings
        return {str(k): json_ready(obj[k], finite) for k in obj.keys()}
    return obj


def write_json(path: str | Path, data: Any, indent: int = 2, strict: bool = True) -> Path:
    """Write ``data`` as JSON (see :func:`json_ready`), atomically.

    ``strict=False`` keeps NaN and infinities (as Python's ``json`` spells them), for internal
    state that must come back exactly, such as a scheduler's best score of ``-inf``.
    """
    text = json.dumps(json_ready(data, finite=strict), indent=indent, allow_nan=not strict)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or malformed file is an :class:`InputError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def write_imagej_rois(path: str | Path, outlines: dict[int, np.ndarray]) -> Path:
    """One ImageJ polygon ROI per particle, named by its id (the ``id`` of particles.csv), in a
    ZIP that Fiji's ROI Manager opens (roifile). ``outlines`` are those of
    :func:`sagegan.particles.pixel_outlines`, along pixel edges: filled by ImageJ, a ROI covers
    exactly its particle's pixels (holes filled; of a particle in pieces, the largest piece)."""
    from roifile import ROI_TYPE, ImagejRoi, roiwrite

    rois = []
    for i, points in outlines.items():
        roi = ImagejRoi.frompoints(points, name=str(i))
        roi.roitype = ROI_TYPE.POLYGON
        rois.append(roi)

    def write(tmp: Path) -> None:
        if rois:
            roiwrite(tmp, rois, mode="w")
        else:  # an image without particles: an empty archive
            import zipfile

            zipfile.ZipFile(tmp, "w").close()

    return atomic_write(path, write)


def write_geojson(path: str | Path, outlines: dict[int, np.ndarray], particles: Any = None) -> Path:
    """The particles as a GeoJSON FeatureCollection that QuPath imports as detections: one
    polygon per particle in pixel coordinates (``outlines`` of
    :func:`sagegan.particles.pixel_outlines`), with its ``id`` as name and, from ``particles``
    (the rows of particles.csv), its numeric columns as measurements."""
    rows = {}
    if particles is not None and len(particles):
        numeric = particles.select_dtypes("number")
        rows = {int(i): {k: float(v) for k, v in r.items() if np.isfinite(v)}
                for i, r in zip(particles["id"], numeric.to_dict("records"))}
    features = []
    for i, points in outlines.items():
        ring = np.vstack([points, points[:1]]).tolist()  # a closed ring
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "detection", "name": str(i),
                                        "measurements": rows.get(i, {})}})
    data = {"type": "FeatureCollection", "features": features}
    return atomic_write_bytes(path, json.dumps(data).encode("utf-8"))


def write_labels(path: str | Path, labels: np.ndarray, nm_per_px: float | None = None, ome: bool = False) -> Path:
    """Write an instance-label map as a compressed TIFF: uint16, or uint32 above 65535 ids.

    Parameters
    ----------
    path : output file.
    labels : (H, W) integer or bool array, 0 = background.
    nm_per_px : pixel size to record. uint16 files get ImageJ resolution tags in nm (ImageJ and
        Fiji show the calibration; :func:`read_micrograph` reads it too); uint32 files, which
        the ImageJ format cannot hold, get plain TIFF resolution in pixels per centimetre.
        :func:`read_pixel_size` (and so :func:`read_labelled_image`) reads both back. None
        writes no calibration.
    ome : an OME-TIFF instead (Bio-Formats, QuPath, napari): the pixel size as OME
        PhysicalSizeX/Y in nm, and as plain TIFF resolution, which :func:`read_pixel_size` reads.
    """
    import tifffile

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "uib":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if nm_per_px is not None and not (nm_per_px > 0 and math.isfinite(nm_per_px)):
        raise ValueError(f"nm_per_px must be a positive number, got {nm_per_px}")
    top = int(labels.max()) if labels.size else 0
    dtype = np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32
    # plain TIFF resolution in pixels per centimetre, which read_pixel_size reads back
    options: dict[str, Any] = {}
    if nm_per_px is not None:
        px_per_cm = 1e7 / float(nm_per_px)
        options = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
    if ome:
        metadata: dict[str, Any] = {"axes": "YX"}
        if nm_per_px is not None:
            metadata.update(PhysicalSizeX=float(nm_per_px), PhysicalSizeXUnit="nm", PhysicalSizeY=float(nm_per_px),
                            PhysicalSizeYUnit="nm")
        options.update(ome=True, metadata=metadata)
    elif nm_per_px is not None and dtype == np.uint16:
        px_per_nm = 1.0 / float(nm_per_px)
        options = {"imagej": True, "resolution": (px_per_nm, px_per_nm), "metadata": {"unit": "nm"}}
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib",
                                                           **options))


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write a float [0, 1] grey image (or an RGB uint8 array) as an 8-bit image (PNG by default)."""
    import imageio.v3 as iio

    extension = Path(path).suffix.lower() or ".png"
    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    # zlib level 1: much faster than Pillow's default 6 for a few per cent more bytes (overlays
    # are most of segment's write time; BENCHMARKS.md)
    options = {"compress_level": 1} if extension == ".png" else {}
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, arr, extension=extension, **options))


# --------------------------------------------------------------------------------------------
# data folders: DIR/images/<stem>.<ext> + DIR/masks/<stem>.<ext>


@dataclass
class Sample:
    """One labelled training or test image."""

    stem: str
    image: np.ndarray
    labels: np.ndarray
    nm_per_px: float | None = None
    image_path: Path | None = None
    mask_path: Path | None = None
    # pixels whose label is unknown (bool, the image's shape): left out of the segmentation loss;
    # pseudo-labels of unlabelled images have them (sagegan.adapt)
    ignore: np.ndarray | None = None


def _stem(name: str) -> str:
    base = Path(name.strip()).name
    while Path(base).suffix.lower() in IMAGE_SUFFIXES + EM_SUFFIXES:
        base = Path(base).stem
    return base


def read_split(path: str | Path) -> list[str]:
    """Stems listed in the first column of a text or CSV file (a header row is skipped).

    Extensions are dropped, so ``a1.png`` and ``a1`` name the same image.
    """
    path = Path(path)
    _check_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot read split file ({_short(exc)})") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and r[0].strip() and not r[0].startswith("#")]
    stems = [_stem(r[0]) for r in rows]
    if stems and stems[0].lower() in {"file", "filename", "stem", "id", "name", "image"}:
        stems = stems[1:]
    if not stems:
        raise InputError(f"{path}: split file lists no images")
    return stems


def _files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            found.setdefault(_stem(p.name), p)
    return found


def _listing(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def resolve_data_dirs(data: str | Path | None = None, images: str | Path | None = None,
                      masks: str | Path | None = None) -> tuple[Path, Path]:
    """Image and mask folders from ``--data DIR`` or ``--images DIR --masks DIR``."""
    if data is not None and (images is not None or masks is not None):
        raise InputError("give either --data DIR or --images DIR --masks DIR, not both")
    if data is not None:
        images, masks = Path(data) / "images", Path(data) / "masks"
    if images is None or masks is None:
        raise InputError("no training data: give --data DIR or both --images DIR and --masks DIR")
    images, masks = Path(images), Path(masks)
    for folder in (images, masks):
        if not folder.is_dir():
            raise InputError(f"{folder}: folder not found")
    return images, masks


def find_pairs(images_dir: str | Path, masks_dir: str | Path,
               split: str | Path | Sequence[str] | None = None) -> list[tuple[str, Path, Path]]:
    """Pair ``images_dir/<stem>.*`` with ``masks_dir/<stem>.*``, restricted to a split.

    Raises :class:`InputError` listing images without masks, and stems of the split that are
    missing from the image folder.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _files_by_stem(images_dir, IMAGE_SUFFIXES + EM_SUFFIXES)
    masks = _files_by_stem(masks_dir, IMAGE_SUFFIXES)
    if split is not None:
        wanted = read_split(split) if isinstance(split, (str, Path)) else [_stem(s) for s in split]
        missing = [s for s in wanted if s not in images]
        if missing:
            raise InputError(f"{images_dir}: {len(missing)} image(s) named in the split are missing: "
                             f"{_listing(missing)}")
        stems = list(dict.fromkeys(wanted))
    else:
        stems = sorted(images)
    if not stems:
        raise InputError(f"{images_dir}: no images found (expected {', '.join(IMAGE_SUFFIXES)})")
    no_mask = [s for s in stems if s not in masks]
    if no_mask:
        raise InputError(f"{masks_dir}: no mask for {len(no_mask)} image(s): {_listing(no_mask)}")
    return [(s, images[s], masks[s]) for s in stems]


def load_pairs(images_dir: str | Path, masks_dir: str | Path,
               split: str | Path | Sequence[str] | None = None, crop_bottom: int | str = 0,
               nm_per_px: float | str | None = None, connectivity: int = 1,
               progress: bool = False, mask_kind: str = "auto") -> list[Sample]:
    """Read every image/mask pair of a data folder, checking sizes and that particles exist.

    ``mask_kind`` says how to read the masks (:func:`read_mask`'s ``kind``: ``"auto"``,
    ``"binary"`` or ``"labels"``); ``nm_per_px`` overrides every image's pixel size (or says
    where to find it: :func:`read_micrograph`); ``crop_bottom`` (rows, or ``"auto"`` for each
    image's data bar) drops the same rows from an image and its mask.
    """
    check_mask_kind(mask_kind)
    pairs = find_pairs(images_dir, masks_dir, split)
    samples: list[Sample] = []
    iterator: Iterable = pairs
    if progress:
        from rich.progress import track

        iterator = track(pairs, description="reading data", transient=True)
    for stem, image_path, mask_path in iterator:
        micrograph = read_micrograph(image_path, nm_per_px=nm_per_px, crop_bottom=crop_bottom)
        # the mask loses the rows its image lost (with "auto", the data bar found in the image)
        labels = read_mask(mask_path, connectivity=connectivity, crop_bottom=micrograph.metadata["crop_bottom"],
                           kind=mask_kind)
        if labels.shape != micrograph.image.shape:
            raise InputError(f"{mask_path}: mask is {labels.shape[1]}x{labels.shape[0]} px but its image "
                             f"{image_path.name} is {micrograph.image.shape[1]}x{micrograph.image.shape[0]} px")
        samples.append(Sample(stem, micrograph.image, labels, micrograph.nm_per_px, image_path, mask_path))
    if not any(s.labels.any() for s in samples):
        raise InputError(f"{masks_dir}: the masks contain no particles at all")
    return samples


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their images) or glob patterns -> a sorted, de-duplicated list of files."""
    import glob

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += [f for f in sorted(p.iterdir())
                      if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + EM_SUFFIXES]
        elif p.exists():
            files.append(p)
        elif re.search(r"[*?\[]", str(item)):
            matched = [Path(m) for m in sorted(glob.glob(str(item)))]
            if not matched:
                raise InputError(f"{item}: pattern matches no files")
            files += [m for m in matched if m.is_file()]
        else:
            raise InputError(f"{item}: file not found")
    files = list(dict.fromkeys(files))
    if not files:
        raise InputError(f"{', '.join(map(str, inputs))}: no image files found")
    return files


def read_micrographs(inputs: str | Path | Sequence[str | Path], crop_bottom: int | str = 0,
                     split: str | Path | None = None) -> list[tuple[str, np.ndarray, float | None]]:
    """(stem, image, nm/px) of every micrograph in folders, files or patterns (only the stems in
    ``split`` when given), e.g. unlabelled images; a bad file or a repeated stem is one line."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files = expand_inputs(items)
    if split is not None:
        wanted = set(read_split(split))
        files = [f for f in files if f.stem in wanted]
        if not files:
            raise InputError(f"{split}: none of the images in {', '.join(map(str, items))} is named in the split")
    stems = [f.stem for f in files]
    if len(set(stems)) < len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise InputError(f"{', '.join(map(str, items))}: several images named {twice[0]!r}; give each image its "
                         "own name")
    out = []
    for f in files:
        mg = read_micrograph(f, crop_bottom=crop_bottom)
        out.append((f.stem, mg.image, mg.nm_per_px))
    return out


# --------------------------------------------------------------------------------------------
# label images for analysis: which files hold labels, where their micrographs are, and which
# pixel size applies (``sagegan analyze`` reads what ``sagegan segment`` writes, or any masks)

#: Stem endings of label files that name their micrograph: ``a_labels.tif`` belongs to ``a``.
LABEL_SUFFIXES = ("_labels", "_mask")


def strip_label_suffix(stem: str) -> str:
    """The micrograph stem of a label file's stem (``_labels`` or ``_mask`` removed).

    Example
    -------
    >>> strip_label_suffix("grid_03_labels"), strip_label_suffix("grid_03"), strip_label_suffix("_mask")
    ('grid_03', 'grid_03', '_mask')
    """
    for suffix in LABEL_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def find_label_files(label_paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Label images named by files, folders or glob patterns, de-duplicated, in order.

    A folder that holds ``*_labels.*`` files (as ``sagegan segment`` writes them) gives only
    those; any other folder gives its images except ``*_overlay`` and ``*_attention`` pictures.
    Files and patterns are taken as given (see :func:`expand_inputs`).

    Raises
    ------
    InputError
        A path that does not exist, or a pattern that matches nothing.
    """
    if isinstance(label_paths, (str, Path)):
        label_paths = [label_paths]
    files: list[Path] = []
    for item in label_paths:
        found = expand_inputs([item])
        if Path(item).is_dir():
            labelled = [f for f in found if f.stem.endswith("_labels")]
            found = labelled or [f for f in found if not f.stem.endswith(("_overlay", "_attention"))]
        files += found
    return list(dict.fromkeys(files))


def find_micrographs(images: str | Path | None) -> dict[str, Path]:
    """The micrographs of a folder by stem (the first in name order where stems repeat).

    Returns an empty dict for ``images=None``; hidden files are skipped.

    Raises
    ------
    InputError
        ``images`` is not a folder.
    """
    if images is None:
        return {}
    folder = Path(images)
    if not folder.is_dir():
        raise InputError(f"{folder}: images folder not found (expected a folder of micrographs)")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + EM_SUFFIXES and not p.name.startswith("."):
            found.setdefault(p.stem, p)
    return found


#: Written by ``sagegan segment`` into its output folder: every image whose outputs the folder
#: holds, by output name, with the input it came from, the files written and the settings used.
SEGMENT_MANIFEST = "segment_manifest.json"
#: The per-image outputs of ``sagegan segment``: ``<name><suffix>``.
SEGMENT_OUTPUT_SUFFIXES = ("_labels.tif", "_mask.png", "_overlay.png", "_attention.png", "_rois.zip",
                           "_particles.geojson")


def read_segment_manifest(folder: str | Path) -> dict[str, dict]:
    """The images whose ``sagegan segment`` outputs ``folder`` holds, by output name.

    Each record has ``input`` (the micrograph's path) and ``outputs`` (file names in
    ``folder``), and the settings it was segmented with (``nm_per_px``, ``crop_bottom``, ...).
    Read from :data:`SEGMENT_MANIFEST`; a folder written before manifests existed gives the
    images its ``segment_config.json`` lists, with those of their outputs still present. Images
    none of whose outputs are left are dropped. A folder without either gives ``{}``.

    Raises
    ------
    InputError
        The manifest is unreadable (it is what keeps sagegan's outputs apart from inputs).
    """
    folder = Path(folder)
    manifest = folder / SEGMENT_MANIFEST
    images: dict[str, dict] = {}
    if manifest.is_file():
        data = read_json(manifest)
        try:
            for name, record in data["images"].items():
                images[str(name)] = {**record, "outputs": [str(o) for o in record.get("outputs", [])]}
        except (KeyError, TypeError, AttributeError):
            raise InputError(f"{manifest}: not a sagegan segment manifest; fix or remove it") from None
    elif (folder / "segment_config.json").is_file():
        try:
            data = read_json(folder / "segment_config.json")
            for run in data.get("images", []):
                name = Path(run["image"]).stem
                images[name] = {**run, "input": run["image"],
                                "crop_bottom": _recorded_rows(run.get("crop_bottom", data.get("crop_bottom"))),
                                "outputs": [name + s for s in SEGMENT_OUTPUT_SUFFIXES]}
        except (InputError, TypeError, KeyError, AttributeError, ValueError):
            return {}
    for record in images.values():
        record["outputs"] = [o for o in record["outputs"] if (folder / o).is_file()]
    return {name: r for name, r in images.items() if r["outputs"]}


def segment_outputs(folder: str | Path) -> set[str]:
    """Names of the files in ``folder`` that ``sagegan segment`` wrote (see
    :func:`read_segment_manifest`), including its tables and records."""
    images = read_segment_manifest(folder)
    if not images:
        return set()
    names = {o for r in images.values() for o in r["outputs"]}
    return names | {SEGMENT_MANIFEST, "segment_config.json", "particles.csv"}


def _recorded_rows(value: Any) -> int:
    """A recorded bottom crop as rows: ``"auto"`` (the option, not what it found) counts as 0."""
    return int(value) if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()) else 0


def read_segment_records(label_files: Sequence[Path]) -> dict[str, dict]:
    """What ``sagegan segment`` recorded about each micrograph, by output name (its stem unless
    ``segment`` renamed it).

    Reads the segment manifest (:func:`read_segment_manifest`), else ``segment_config.json``, in
    each folder of ``label_files``. Each record has ``image`` (the micrograph's path),
    ``nm_per_px`` (None when unknown) and ``crop_bottom``. The records only help to find
    micrographs and pixel sizes, so a missing or unreadable file gives none.
    """
    records: dict[str, dict] = {}
    for folder in dict.fromkeys(Path(f).parent for f in label_files):
        try:
            manifest = read_segment_manifest(folder) if (folder / SEGMENT_MANIFEST).is_file() else {}
            for name, run in manifest.items():
                records.setdefault(name, {"image": Path(run["input"]), "nm_per_px": run.get("nm_per_px"),
                                          "crop_bottom": _recorded_rows(run.get("crop_bottom"))})
        except (ValueError, TypeError, KeyError, AttributeError):  # InputError is a ValueError
            manifest = {}
        if manifest:
            continue
        config = folder / "segment_config.json"
        if not config.is_file():
            continue
        try:
            data = read_json(config)
            for run in data.get("images", []):
                image = Path(run["image"])
                records.setdefault(image.stem, {"image": image, "nm_per_px": run.get("nm_per_px"),
                                                "crop_bottom": _recorded_rows(run.get("crop_bottom",
                                                                                      data.get("crop_bottom")))})
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return records


def unique_image_names(files: Sequence[Path]) -> list[str]:
    """One distinct name per label file: its micrograph stem, else its own stem, else
    ``folder/stem``.

    Example
    -------
    >>> unique_image_names([Path("x/a_labels.tif"), Path("y/a_labels.tif"), Path("y/a.tif")])
    ['a', 'a_labels', 'y/a']
    """
    names: list[str] = []
    for f in files:
        name = strip_label_suffix(f.stem)
        if name in names:
            name = f.stem if f.stem not in names else f"{f.parent.name}/{f.stem}"
        names.append(name)
    return names


@dataclass
class LabelledImage:
    """A label image with its micrograph (when found) and pixel size.

    Attributes
    ----------
    name : the image's name in tables and reports.
    labels_file : the label image's path.
    labels : (H, W) int32 instance labels.
    image : (H, W) float32 micrograph in [0, 1], or None when none was found.
    micrograph_file : the micrograph's path, or None.
    nm_per_px : pixel size in nanometres, or None when unknown.
    nm_per_px_source : where the pixel size came from (``"given by the user"``, the
        micrograph's metadata, ``"segment_config.json"``), or None.
    """

    name: str
    labels_file: Path
    labels: np.ndarray
    image: np.ndarray | None
    micrograph_file: Path | None
    nm_per_px: float | None
    nm_per_px_source: str | None


def read_labelled_image(path: str | Path, name: str | None = None,
                        micrographs: dict[str, Path] | None = None,
                        records: dict[str, dict] | None = None,
                        nm_per_px: float | str | None = None, mask_kind: str = "auto",
                        scale_bar_nm: float | None = None) -> LabelledImage:
    """Read a label image, find its micrograph and decide its pixel size.

    Parameters
    ----------
    path : label image (or binary mask, split into 4-connected particles).
    name : its name; default: the stem without a ``_labels`` / ``_mask`` suffix.
    micrographs : micrographs by stem (:func:`find_micrographs`), looked up by the stem without
        the suffix, then by the full stem.
    records : :func:`read_segment_records`; used when ``micrographs`` has no match (the recorded
        micrograph, if the file still exists, with its recorded bottom crop) and for the pixel
        size when neither the argument, the micrograph nor the label file gives one.
    nm_per_px : pixel size that overrides every file, or where to look for it
        (:func:`read_micrograph`): None or ``"metadata"``, ``"auto"``, ``"auto-bar"``.
    scale_bar_nm : the length of the micrographs' scale bars, read by the user.

    The pixel size comes from, in this order: a number ``nm_per_px``, the micrograph's metadata
    (with ``"auto-bar"``: its data bar or scale bar), the label file's resolution tags
    (:func:`read_pixel_size`; ``nm_per_px_source`` "labels file"), the record, and with
    ``"auto"`` at last the micrograph's data bar or scale bar.
    mask_kind : how to read the label image (:func:`read_mask`'s ``kind``); ``"auto"`` refuses
        a micrograph given in place of a label image.

    Raises
    ------
    InputError
        Unreadable files, a micrograph in place of the label image, a micrograph whose size
        differs from the labels, or a pixel size that is not a positive number.
    """
    path = Path(path)
    micrographs = micrographs or {}
    labels = read_mask(path, kind=mask_kind)
    key = strip_label_suffix(path.stem)
    record = (records or {}).get(key, {})
    micrograph_file = micrographs.get(key) or micrographs.get(path.stem)
    crop = 0
    if micrograph_file is None and record.get("image") is not None and Path(record["image"]).is_file():
        micrograph_file, crop = Path(record["image"]), record.get("crop_bottom", 0)
    if micrograph_file is not None and micrograph_file.resolve() == path.resolve():
        micrograph_file = None
    mode, user_nm = pixel_size_mode(nm_per_px)
    image, scale, source = None, None, None
    if micrograph_file is not None:
        # the micrograph's scale bar is read last (it is the slowest), unless asked for first
        first = "auto-bar" if mode == "auto-bar" else "metadata"
        micrograph = read_micrograph(micrograph_file, nm_per_px=user_nm or first, crop_bottom=crop,
                                     scale_bar_nm=scale_bar_nm)
        if micrograph.image.shape != labels.shape and crop == 0 and micrograph.image.shape[1] == labels.shape[1]:
            # a micrograph whose data bar segment dropped: drop it here too
            micrograph = read_micrograph(micrograph_file, nm_per_px=user_nm or first, crop_bottom="auto",
                                         scale_bar_nm=scale_bar_nm)
        if micrograph.image.shape != labels.shape:
            raise InputError(f"{path}: labels are {labels.shape[1]}x{labels.shape[0]} px but the "
                             f"micrograph {micrograph_file} is {micrograph.image.shape[1]}x"
                             f"{micrograph.image.shape[0]} px")
        image, scale = micrograph.image, micrograph.nm_per_px
        source = micrograph.metadata.get("pixel_size_source", "micrograph file") if scale else None
    if user_nm is not None:
        scale, source = user_nm, "given by the user"
    elif scale is None and (recorded := read_pixel_size(path)) is not None:
        scale, source = recorded, "labels file"
    elif scale is None and record.get("nm_per_px"):
        scale, source = float(record["nm_per_px"]), "segment_config.json"
    elif scale is None and mode == "auto" and micrograph_file is not None:
        late = read_micrograph(micrograph_file, nm_per_px="auto-bar", crop_bottom=crop, scale_bar_nm=scale_bar_nm)
        if late.nm_per_px is not None:
            scale, source = late.nm_per_px, late.metadata.get("pixel_size_source")
    return LabelledImage(key if name is None else name, path, labels, image, micrograph_file, scale, source)


# --------------------------------------------------------------------------------------------
# batches: one failure policy for every command that works through many files


@dataclass
class BatchFailure:
    """One item of a batch that failed: its name and the one-line reason (which names it)."""

    name: str
    reason: str


class BatchError(InputError):
    """Some items of a batch failed while the others finished; ``failures`` lists them."""

    def __init__(self, failures: Sequence[BatchFailure], total: int, what: str = "image"):
        self.failures = list(failures)
        self.total = int(total)
        super().__init__(f"{len(self.failures)} of {self.total} {what}(s) failed: "
                         f"{_listing(f.name for f in self.failures)}")


class Batch:
    """The failure policy of a batch, serial or distributed.

    A bad item (anything that raises :class:`InputError`: an unreadable, corrupt or too small
    image) is reported by name in one line and the others go on; :meth:`finish` then raises
    :class:`BatchError` naming the count that failed (the command line exits with status 2).
    Any other exception (a bug, a full disk) stops the batch at once.

    A serial loop wraps each item in :meth:`item`; a distributed one hands the exception each
    task raised to :meth:`fail` (and re-raises the others itself).

    Example
    -------
    >>> batch, done = Batch(3, report=print), []
    >>> for name in ("a.png", "b.png", "c.png"):
    ...     with batch.item(name):
    ...         if name == "b.png":
    ...             raise InputError("b.png: not an image")
    ...         done.append(name)
    failed: b.png: not an image
    >>> done, [f.name for f in batch.failures]
    (['a.png', 'c.png'], ['b.png'])
    """

    def __init__(self, total: int, what: str = "image", report: Any = None):
        self.total, self.what, self.report = int(total), what, report
        self.failures: list[BatchFailure] = []

    def item(self, name: str | Path) -> "_BatchItem":
        """Context manager: an :class:`InputError` inside is recorded (:meth:`fail`) and swallowed."""
        return _BatchItem(self, str(name))

    def fail(self, name: str | Path, exc: BaseException) -> None:
        """Record that item ``name`` failed with ``exc``, and report it in one line."""
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        name = str(name)
        line = reason if name in reason or Path(name).name in reason else f"{name}: {reason}"
        self.failures.append(BatchFailure(name, line))
        if self.report is not None:
            self.report(f"failed: {line}")

    def finish(self) -> None:
        """Raise :class:`BatchError` when any item failed."""
        if self.failures:
            raise BatchError(self.failures, self.total, self.what)


class _BatchItem:
    def __init__(self, batch: Batch, name: str):
        self.batch, self.name = batch, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, InputError):
            self.batch.fail(self.name, exc)
            return True
        return False


# --------------------------------------------------------------------------------------------
# generated data folders (``simulate``, ``synthesize``): never new pairs beside old ones

#: The record each generator writes first (listing the pairs it will write) and completes last.
GENERATED_RECORDS = ("simulation.json", "synthesis.json")


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _recorded_stems(record: Path) -> set[str] | None:
    try:
        data = read_json(record)
        items = data.get("images") if record.name == "simulation.json" else data.get("pairs")
        return {str(r.get("image") or r.get("id")) for r in items}
    except (InputError, AttributeError, TypeError):
        return None


def generated_folder_files(folder: str | Path, overwrite: bool = False) -> list[Path]:
    """Check that a generator may write a data folder; return the old files to remove first.

    An empty or missing folder gives ``[]``. A folder with files is refused unless
    ``overwrite``; then every file in it must be one that ``sagegan simulate`` or ``sagegan
    synthesize`` wrote (its record ``simulation.json`` / ``synthesis.json``, ``truth.csv``, and
    the recorded pairs in ``images/`` and ``masks/``), and those are returned. Files of any other
    origin are never removed: such a folder is refused even with ``overwrite``. Hidden files are
    ignored.

    Raises
    ------
    InputError
        The folder is not empty and ``overwrite`` is false, or it holds files sagegan did not
        generate, or it is a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file, not a folder")
    files = _visible_files(folder) if folder.is_dir() else []
    if not files:
        return []
    if not overwrite:
        raise InputError(f"{folder}: folder is not empty ({len(files)} files); pass --overwrite to replace "
                         "the pairs sagegan generated there, or choose a new folder")
    stems: set[str] = set()
    records = [folder / name for name in GENERATED_RECORDS if (folder / name).is_file()]
    for record in records:
        recorded = _recorded_stems(record)
        if recorded is None:
            raise InputError(f"{record}: unreadable record; not removing {folder} (remove it yourself)")
        stems |= recorded
    foreign = [p for p in files
               if not (p.parent == folder and p.name in (*GENERATED_RECORDS, "truth.csv"))
               and not (p.parent.parent == folder and p.parent.name in ("images", "masks")
                        and _stem(p.name) in stems)]
    if not records or foreign:
        example = foreign[0] if foreign else files[0]
        raise InputError(f"{folder}: holds files sagegan did not generate (e.g. {example.relative_to(folder)}); "
                         "not removing them even with --overwrite: choose a new folder")
    return files


def remove_generated(folder: str | Path, files: Sequence[Path]) -> None:
    """Delete ``files`` (from :func:`generated_folder_files`) and the then empty images/ and masks/."""
    for path in files:
        Path(path).unlink(missing_ok=True)
    for sub in ("images", "masks"):
        d = Path(folder) / sub
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
