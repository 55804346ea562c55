"""Pixel size from the image itself: the SEM data bar, the burnt-in scale bar and its label.

Figures, PNG exports and many SEM TIFFs carry no pixel size, only a scale bar with a label
("500 nm") and, on SEM images, a data bar (a uniform band of text under the image). This module
finds both with plain array operations and reads their text with Tesseract OCR, imported lazily:
``tesserocr`` (Tesseract's library, a few ms a reading) when it is installed with the English
model (Debian's ``tesseract-ocr``), else ``pytesseract`` (the ``tesseract`` program):

- :func:`find_data_bar` -- the rows of the data bar, to exclude them from segmentation;
- :func:`find_scale_bars` -- straight bars (filled, or with end ticks) that may be scale bars;
- :func:`parse_lengths`, :func:`parse_field_width`, :func:`parse_pixel_size` -- lengths in text;
- :func:`calibrate_image` -- all of it combined into nm per pixel, with where it came from.

Everything works on float images in [0, 1], as :func:`sagegan.io.read_micrograph` gives them.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import _unit_factor

# OCR's usual misreadings of a label's unit, as the unit meant (the others are read as written,
# by sagegan.io's unit table). On a particle image's bar a "pm" is a misread "µm": picometre
# bars are rare there, a misread "µ" is not.
_OCR_UNITS = {"nim": "nm", "nlm": "nm", "n1m": "nm", "pm": "µm", "jum": "µm", "yum": "µm", "ym": "µm",
              "|um": "µm", "tum": "µm", "im": "µm"}
_NUMBER = r"(\d+(?:[.,]\d+)?)"
# a bar's label as OCR may misread it: "S00 nim" is "500 nm". Millimetres are left out: in a data
# bar "WD = 7.5 mm" is the working distance, and no particle image has a millimetre bar.
_FUZZY_NUMBER = r"(?<![\w.,])([SOoIl|]?[0-9][0-9Oo]{0,3}(?:[.,][0-9Oo]{1,3})?)"
_FUZZY_UNIT = r"(nm|n[il1]m|[µμ]m|[jyt|]?um|ym|pm|im|Å)"
LENGTH_RE = re.compile(_FUZZY_NUMBER + r"\s?\.?\s?" + _FUZZY_UNIT + r"(?![a-z])", re.IGNORECASE)
# (LENGTH_RE ignores case, so "s", "i" and "L" come too)
_DIGITS = str.maketrans({"S": "5", "s": "5", "O": "0", "o": "0", "I": "1", "i": "1", "l": "1", "L": "1", "|": "1"})
FIELD_WIDTH_RE = re.compile(r"(?:\bwidth|\bHFW|\bFOV|field\s+of\s+view)\s*[=:]?\s*" + _NUMBER + r"\s?" + "(mm|" + _FUZZY_UNIT[1:],
                            re.IGNORECASE)
PIXEL_SIZE_RE = re.compile(r"pixel\s*size\s*[=:]?\s*" + _NUMBER + r"\s?(nm|[µμ]m|um|pm|Å)", re.IGNORECASE)


class OCRUnavailable(RuntimeError):
    """Tesseract (the program or its Python wrapper) is not installed; the message says which."""


@dataclass
class DataBar:
    """The microscope's data bar: the last ``rows`` rows of the image, of background ``value``."""

    rows: int
    value: float


@dataclass
class ScaleBar:
    """A straight horizontal bar: columns ``x0``..``x1`` (inclusive), rows ``y0``..``y1`` of its
    body; ``bright`` when it is lighter than its surroundings; ``ticks`` the width of its end ticks
    (0 for a plain bar)."""

    x0: int
    x1: int
    y0: int
    y1: int
    bright: bool
    ticks: int = 0

    @property
    def length_px(self) -> int:
        """A plain bar's length is its whole width; a "|---|" bar's runs between the tick centres."""
        return self.x1 - self.x0 + 1 - self.ticks

    @property
    def centre(self) -> tuple[float, float]:
        return (self.y0 + self.y1) / 2, (self.x0 + self.x1) / 2


@dataclass
class Calibration:
    """Where an image's pixel size came from.

    Attributes
    ----------
    nm_per_px : the pixel size, or None when the image gives none.
    source : ``"data bar"`` (a field width or pixel size printed in it), ``"scale bar"``, or None.
    detail : one line for people: what was read, and where.
    data_bar, scale_bar : what was found (None when nothing was).
    problem : why no pixel size came out although something was found (e.g. OCR missing).
    """

    nm_per_px: float | None = None
    source: str | None = None
    detail: str = ""
    data_bar: DataBar | None = None
    scale_bar: ScaleBar | None = None
    problem: str | None = None
    texts: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# the data bar

def find_data_bar(image: np.ndarray, tol: float = 12 / 255, max_share: float = 0.4,
                  min_dominance: float = 0.5, max_above: float = 0.15) -> DataBar | None:
    """The SEM data bar at the bottom of ``image``, or None.

    A data bar is a band of one background grey (``tol`` either side) reaching the bottom edge
    (one or two frame rows of another grey may close it), covering at least ``min_dominance`` of
    every row, holding some text (at least 0.5 % other pixels), at least 3 rows and 2 % of the
    height high and at most ``max_share`` of it. The image just above must almost never take the
    band's grey (at most ``max_above`` of a row): that rules out a saturated background, which
    runs on into the image.

    Examples
    --------
    >>> img = np.random.default_rng(0).uniform(0.3, 0.7, (100, 120)).astype(np.float32)
    >>> img[90:] = 0.0; img[94:96, 10:40] = 1.0          # a black band with some "text"
    >>> find_data_bar(img).rows
    10
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"find_data_bar expects a 2-D grey image, got shape {img.shape}")
    h = img.shape[0]
    bottom = img[h - max(4, int(0.05 * h)):]
    hist, edges = np.histogram(bottom, bins=64, range=(0.0, 1.0))
    k = int(hist.argmax())
    in_bin = bottom[(bottom >= edges[k]) & (bottom <= edges[k + 1])]
    value = float(np.median(in_bin))
    lo = max(0, int(h * (1 - max_share)))
    dominance = (np.abs(img[lo:] - value) <= tol).mean(axis=1)
    top = len(dominance)
    while top > len(dominance) - 3 and dominance[top - 1] < min_dominance:  # a frame line
        top -= 1
    while top > 0 and dominance[top - 1] >= min_dominance:
        top -= 1
    rows = len(dominance) - top
    if top == 0 or rows < max(3, 0.02 * h):
        return None
    if dominance[max(0, top - 3):top].max() > max_above:
        return None
    ink = float((np.abs(img[h - rows:] - value) > tol).mean())
    return DataBar(rows=rows, value=value) if ink >= 0.005 else None


# --------------------------------------------------------------------------------------------
# scale bars

def _long_runs(mask: np.ndarray, min_length: int, max_length: float) -> np.ndarray:
    """``mask`` keeping only its horizontal runs of ``min_length`` to ``max_length`` pixels."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)  # same rows, same order: each run has one start and one end
    keep = np.zeros((h, w), bool)
    for r, a, b in zip(rows, starts, ends):
        if min_length <= b - a <= max_length:
            keep[r, a:b] = True
    return keep


def _tick_width(mask: np.ndarray, y0: int, y1: int, columns: range) -> int:
    """How many of ``columns`` (walking from the bar's end inwards) continue as ink at least 2 px
    above or below the bar body (rows y0..y1): the width of an end tick, 0 for none."""
    h = mask.shape[0]
    width = 0
    for c in columns:
        up = mask[max(0, y0 - 2):y0, c].all() and y0 >= 2
        down = mask[y1 + 1:y1 + 3, c].all() and y1 + 2 < h
        if not (up or down):
            break
        width += 1
    return width


def find_scale_bars(image: np.ndarray, min_length: int = 12, max_share: float = 0.7,
                    tols: tuple[float, ...] = (0.03, 0.1), data_bar: DataBar | None = None,
                    max_candidates: int = 4) -> list[ScaleBar]:
    """Straight horizontal bars in ``image`` that may be scale bars, the likeliest first.

    Scale bars are drawn in a flat grey, nearly always the image's lightest or darkest, so a
    candidate is a stack of horizontal runs of such pixels (within one of ``tols`` of the
    extreme: a tight one keeps dark particles off a black bar, a loose one allows for JPEG),
    ``min_length`` px to ``max_share`` of the width long, most of them starting and ending in the
    same columns (a particle touching the bar spoils a few rows, not the rectangle), at most a
    quarter as thick as long, and clear of the image's edges (frames and table rules reach them). End ticks ("|---|") are recognised; the length then runs between
    the ticks' centres. Inside a ``data_bar`` its background grey is no bar, and a strip of a
    label box's margin along a bar of the other grey is not one either. Longer bars, and those
    nearer the bottom corners, come first.

    Examples
    --------
    >>> img = np.full((120, 160), 0.5, np.float32)
    >>> img[100:104, 20:70] = 1.0
    >>> [(b.x0, b.x1, b.y0, b.y1) for b in find_scale_bars(img)]
    [(20, 69, 100, 103)]
    """
    from scipy import ndimage as ndi

    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"find_scale_bars expects a 2-D grey image, got shape {img.shape}")
    h, w = img.shape
    lo, hi = float(img.min()), float(img.max())
    if hi - lo < 0.2:
        return []
    found: dict[tuple[int, int, int, int], tuple[float, ScaleBar]] = {}
    masks = [(bright, tol) for tol in tols for bright in (True, False)]
    for bright, tol in masks:
        ink = img >= hi - tol if bright else img <= lo + tol
        if data_bar is not None:
            band = ink[h - data_bar.rows:]
            band &= np.abs(img[h - data_bar.rows:] - data_bar.value) > 2 * tol
        runs = _long_runs(ink, min_length, max_share * w)
        stacks, n = ndi.label(runs)
        for sl in ndi.find_objects(stacks):
            rows = range(sl[0].start, sl[0].stop)
            extents = []
            for r in rows:
                cols = np.flatnonzero(runs[r, sl[1]]) + sl[1].start
                extents.append((r, int(cols[0]), int(cols[-1])))
            x0 = int(np.median([e[1] for e in extents]))
            x1 = int(np.median([e[2] for e in extents]))
            body = [r for r, a, b in extents if abs(a - x0) <= 1 and abs(b - x1) <= 1]
            if len(body) < 0.6 * len(extents) or body[-1] - body[0] + 1 != len(body):
                continue
            y0, y1 = body[0], body[-1]
            length = x1 - x0 + 1
            if y1 - y0 + 1 > 0.25 * length:
                continue
            if x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1:
                continue  # a frame or a table's rule runs to the edge; a scale bar does not
            # a bar stands out from the rows along it; a flat background runs on
            inner = slice(x0 + 10, x1 - 9) if length > 30 else slice(x0, x1 + 1)
            if any(ink[r, inner].mean() > 0.5 for r in (y0 - 1, y1 + 1) if 0 <= r < h):
                continue
            left = _tick_width(ink, y0, y1, range(x0, min(x0 + 10, x1)))
            right = _tick_width(ink, y0, y1, range(x1, max(x1 - 10, x0), -1))
            ticks = round((left + right) / 2) if left and right and max(left, right) < 10 else 0
            bar = ScaleBar(x0=x0, x1=x1, y0=y0, y1=y1, bright=bright, ticks=ticks)
            cy, cx = bar.centre
            corner = min(cx, w - cx) / w + (h - cy) / h  # small near the bottom corners
            found.setdefault((x0, x1, y0, y1), (0.1 * corner - length / w, bar))
    bars = [b for _, b in found.values()]
    ranked = [t for t in found.values() if not any(_box_margin(t[1], other) for other in bars)]
    ranked.sort(key=lambda t: t[0])
    return [b for _, b in ranked[:max_candidates]]


def _box_margin(strip: ScaleBar, bar: ScaleBar) -> bool:
    """Whether ``strip`` is the margin of a label box along ``bar``: of the other grey, at most a
    few rows above or below it, and reaching past both its ends."""
    gap = max(3, bar.y1 - bar.y0 + 1)
    touching = strip.y1 + gap >= bar.y0 and strip.y0 - gap <= bar.y1
    return (strip.bright != bar.bright and touching and strip.x0 < bar.x0 and strip.x1 > bar.x1)


# --------------------------------------------------------------------------------------------
# text

def _nm(value: str, unit: str) -> float:
    unit = unit.lower()
    return float(value.translate(_DIGITS).replace(",", ".")) * _unit_factor(_OCR_UNITS.get(unit, unit))


def _plausible(value: str) -> bool:
    """A label's number: not 0, and no leading zero unless a decimal ("0.5"); OCR that drops
    a digit ("00 nm" for "500 nm") gives such numbers."""
    digits = value.translate(_DIGITS).replace(",", ".")
    try:
        return float(digits) > 0 and (not digits.startswith("0") or digits.startswith("0."))
    except ValueError:
        return False


def parse_lengths(text: str) -> list[float]:
    """Every length written in ``text`` ("200 nm", "1 µm", "0,5um"), in nm, in order.

    OCR's usual misreadings count: of "µm" ("um", "pm", "jum", "im"; picometre scale bars are
    rare on particle images, a misread "µ" is not), of "nm" ("nim") and of digits ("S00" for
    "500", "l" for "1"). Millimetres are not lengths here (see ``LENGTH_RE``).

    >>> parse_lengths("200 nm  and 1.5 um, S00 nim")
    [200.0, 1500.0, 500.0]
    """
    return [_nm(v, u) for v, u in LENGTH_RE.findall(text) if _plausible(v)]


def parse_field_width(text: str) -> float | None:
    """The field width printed in a data bar ("Width = 7.520 µm", "HFW 12.7 µm"), in nm.

    >>> parse_field_width("Store resolution = 1024 * 768  Width = 7.520 um")
    7520.0
    """
    m = FIELD_WIDTH_RE.search(text)
    return _nm(*m.groups()) if m else None


def parse_pixel_size(text: str) -> float | None:
    """The pixel size printed in a data bar ("Pixel Size = 3.721 nm"), in nm (here "pm" is
    picometres: pixel sizes below a nanometre are common).

    >>> parse_pixel_size("Pixel Size = 3.721 nm")
    3.721
    """
    m = PIXEL_SIZE_RE.search(text)
    if not m:
        return None
    value, unit = m.groups()
    return float(value.replace(",", ".")) * _unit_factor(unit)


#: Where Debian, Ubuntu, Fedora and Homebrew put Tesseract's language data.
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata", "/opt/homebrew/share/tessdata")


def _tessdata() -> str | None:
    """The folder holding Tesseract's English model (``eng.traineddata``), or None."""
    import os

    for folder in (os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS):
        if folder and (Path(folder) / "eng.traineddata").is_file():
            return folder
    return None


def _engine() -> str | None:
    """``"tesserocr"`` (Tesseract's library in this process: a few ms a reading), else
    ``"pytesseract"`` (the tesseract program, started for every reading: about 80 ms), else None.
    ``SAGEGAN_OCR=pytesseract`` in the environment skips tesserocr."""
    import os

    if os.environ.get("SAGEGAN_OCR") != "pytesseract" and _importable("tesserocr") and _tessdata() is not None:
        return "tesserocr"
    if _importable("pytesseract") and shutil.which("tesseract"):
        return "pytesseract"
    return None


def _importable(module: str) -> bool:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def ocr_problem() -> str | None:
    """Why OCR cannot run here (one line), or None when it can."""
    if _engine() is not None:
        return None
    if _tessdata() is None and shutil.which("tesseract") is None:
        return ("OCR needs Tesseract and its English model (Debian/Ubuntu: apt-get install tesseract-ocr) "
                "and pip install 'sagegan[ocr]'")
    return "OCR needs pip install 'sagegan[ocr]' (tesserocr, or pytesseract)"


_APIS: dict[int, object] = {}  # one Tesseract engine per thread, kept: starting one takes 50 ms


def _tesserocr_words(picture, psm: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    import threading

    import tesserocr

    api = _APIS.get(threading.get_ident())
    if api is None:
        api = _APIS[threading.get_ident()] = tesserocr.PyTessBaseAPI(path=_tessdata(), lang="eng")
    api.SetPageSegMode(psm)
    api.SetImage(picture)
    api.Recognize()
    words = []
    iterator = api.GetIterator()
    if iterator is None:
        return words
    level = tesserocr.RIL.WORD
    for word in tesserocr.iterate_level(iterator, level):
        try:
            text, box = word.GetUTF8Text(level), word.BoundingBox(level)
        except RuntimeError:  # an empty word
            continue
        if text and box:
            words.append((text, box))
    return words


def _pytesseract_words(picture, psm: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    import pytesseract

    data = pytesseract.image_to_data(picture, config=f"--psm {psm}", output_type=pytesseract.Output.DICT)
    return [(text, (left, top, left + width, top + height))
            for text, left, top, width, height in zip(data["text"], data["left"], data["top"], data["width"],
                                                      data["height"])]


def _ocr_words(crop: np.ndarray, upscale: int, psm: int = 11, pad: int = 0) -> list[tuple[str, float, float]]:
    """Words Tesseract reads in ``crop`` (grey [0, 1]) as (text, row, col) of their centres in
    the crop's pixels; dark text on light is what Tesseract reads best, so light text is inverted.
    ``psm`` is Tesseract's page segmentation mode (11: scattered words, 6: one block); ``pad``
    adds a white margin of that many (enlarged) pixels, which Tesseract needs around text."""
    engine = _engine()
    if engine is None:
        raise OCRUnavailable(ocr_problem())
    from PIL import Image

    if np.median(crop) < 0.5:
        crop = 1.0 - crop
    pil = Image.fromarray((np.clip(crop, 0, 1) * 255).astype(np.uint8))
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.LANCZOS)
    if pad:
        from PIL import ImageOps

        pil = ImageOps.expand(pil, pad, fill=255)
    read = _tesserocr_words if engine == "tesserocr" else _pytesseract_words
    words = []
    for text, (left, top, right, bottom) in read(pil, psm):
        if text.strip():
            words.append((text.strip(), ((top + bottom) / 2 - pad) / upscale, ((left + right) / 2 - pad) / upscale))
    return words


def _glyph_upscale(ink: np.ndarray, target_px: int = 30) -> int:
    """The enlargement (1-4) that brings the ink's letters to about ``target_px`` high, the size
    Tesseract reads best; the letters' height is the median height of the ink's blobs."""
    from scipy import ndimage as ndi

    labels, _ = ndi.label(ink)
    areas = np.bincount(labels.ravel())
    heights = [sl[0].stop - sl[0].start for i, sl in enumerate(ndi.find_objects(labels), 1)
               if sl[0].stop - sl[0].start >= 5 and areas[i] >= 10]  # letters, not noise
    if not heights:
        return 2
    return int(np.clip(round(target_px / float(np.median(heights))), 1, 4))


def _nearest_length(words: list[tuple[str, float, float]], cy: float, cx: float) -> tuple[float, float, str] | None:
    """Of the lengths among ``words``, the one nearest (cy, cx): (distance, nm, words)."""
    best = None
    # a number and its unit may be one word ("200nm") or two ("200", "nm")
    for i, (text, r, c) in enumerate(words):
        candidates = [(text, r, c)]
        if i + 1 < len(words):
            nxt = words[i + 1]
            candidates.append((text + " " + nxt[0], (r + nxt[1]) / 2, (c + nxt[2]) / 2))
        for joined, rr, cc in candidates:
            found = parse_lengths(joined)
            if found:
                distance = math.hypot(rr - cy, (cc - cx) / 2)
                if best is None or distance < best[0]:
                    best = (distance, found[0], joined)
    return best


def _label_lines(ink: np.ndarray, bar: tuple[float, float, float], target_px: int = 36):
    """The lines of letters just above and just below a bar (nearest first), as the slices that
    cut each out with a margin and the enlargement that makes its letters about ``target_px`` high:
    single lines, which Tesseract reads best (page segmentation mode 7). ``bar`` is (row,
    first column, last column) in the picture; letters are blobs of ``ink`` at most half the
    bar's length high, centred over the bar's span widened by half its length."""
    from scipy import ndimage as ndi

    row, c0, c1 = bar
    reach = (c1 - c0) / 2
    blobs, _ = ndi.label(ink, structure=np.ones((3, 3)))
    boxes = [sl for sl in ndi.find_objects(blobs)
             if sl is not None and 4 <= sl[0].stop - sl[0].start <= max(8, reach)
             and c0 - reach <= (sl[1].start + sl[1].stop) / 2 <= c1 + reach]
    lines = []
    for side in (-1, 1):  # above, below
        near = [b for b in boxes if (b[0].stop <= row if side < 0 else b[0].start > row)]
        if not near:
            continue
        first = min(near, key=lambda b: abs((b[0].start + b[0].stop) / 2 - row))
        top, bottom = first[0].start, first[0].stop
        members = [b for b in near if b[0].start < bottom and b[0].stop > top]
        top, bottom = min(b[0].start for b in members), max(b[0].stop for b in members)
        left, right = min(b[1].start for b in members), max(b[1].stop for b in members)
        m = max(2, (bottom - top) // 3)
        cut = (slice(max(0, top - m), bottom + m), slice(max(0, left - m), right + m))
        upscale = int(np.clip(round(target_px / max(bottom - top, 1)), 1, 6))
        lines.append((abs((top + bottom) / 2 - row), cut, upscale))
    return [(cut, up) for _, cut, up in sorted(lines, key=lambda t: t[0])]


def read_bar_label(image: np.ndarray, bar: ScaleBar) -> tuple[float, str] | None:
    """The length written next to ``bar`` (nm) and the words it was read from, or None.

    The label is looked for in a window around the bar (as wide again on each side, and a few
    text heights above and below), in the bar's own grey, as labels are written. Tesseract
    reads, in turn: the line of letters just above and just below the bar, each cut out alone
    (from the picture, then from a picture of how far each pixel is from the bar's grey); the
    whole window as pixels of that grey, black on white, without the bar and its ticks; the
    window as it is. A length read twice wins at once; else the length read most often, the
    first read on a tie. Of the lengths in one reading, the one nearest the bar counts.

    Raises
    ------
    OCRUnavailable
        Tesseract or pytesseract is not installed.
    """
    from scipy import ndimage as ndi

    h, w = image.shape
    length = bar.length_px
    margin_y = max(24, 3 * (bar.y1 - bar.y0 + 1), int(0.08 * h))
    margin_x = max(24, length)
    y0, y1 = max(0, bar.y0 - margin_y), min(h, bar.y1 + margin_y + 1)
    x0, x1 = max(0, bar.x0 - margin_x), min(w, bar.x1 + margin_x + 1)
    crop = np.asarray(image[y0:y1, x0:x1], dtype=np.float32)
    grey = float(np.median(image[bar.y0:bar.y1 + 1, bar.x0:bar.x1 + 1]))
    cy, cx = bar.centre[0] - y0, bar.centre[1] - x0
    # the pixels of the bar's grey, black on white: sharp (tight), and soft, which keeps the
    # letters' anti-aliased edges that Tesseract reads small type by
    distance = np.abs(crop - grey)
    ink = distance <= 0.03
    blobs, _ = ndi.label(ink, structure=np.ones((3, 3)))
    on_bar = np.unique(blobs[bar.y0 - y0:bar.y1 - y0 + 1, bar.x0 - x0:bar.x1 - x0 + 1])
    bar_blobs = np.isin(blobs, on_bar[on_bar > 0])  # the bar with its ticks
    sharp = np.where(ink & ~bar_blobs, 0.0, 1.0).astype(np.float32)
    soft = np.clip(distance / 0.25, 0, 1).astype(np.float32)
    soft[ndi.binary_dilation(bar_blobs, iterations=1)] = 1.0
    guess = _glyph_upscale(ink & ~bar_blobs)
    # small type is anti-aliased grey, so its letters are looked for loosely, and then read from
    # the picture itself, cut to one line
    letters = (distance <= 0.4) & ~ndi.binary_dilation(bar_blobs, iterations=2)
    span = (cy, bar.x0 - x0, bar.x1 - x0)
    tries = [(picture[cut], up, 7) for cut, up in _label_lines(letters, span) for picture in (crop, soft)]
    tries += [(sharp, guess, 11), (soft, guess, 11), (soft, guess, 6)]
    if guess != 2:
        tries += [(soft, 2, 11)]
    tries += [(crop, 2, 11)]
    votes: dict[float, list[str]] = {}
    for picture, upscale, psm in tries:
        best = _nearest_length(_ocr_words(picture, upscale, psm=psm, pad=20), cy, cx)
        if best is not None:
            votes.setdefault(best[1], []).append(best[2])
            if len(votes[best[1]]) == 2:
                break
    if not votes:
        return None
    nm = max(votes, key=lambda v: len(votes[v]))  # the first read wins a tie
    return nm, votes[nm][0]


def read_data_bar_text(image: np.ndarray, data_bar: DataBar) -> str:
    """All the text Tesseract reads in the data bar, as one line.

    Raises
    ------
    OCRUnavailable
        Tesseract or pytesseract is not installed.
    """
    band = np.asarray(image[image.shape[0] - data_bar.rows:], dtype=np.float32)
    return " ".join(t for t, _, _ in _ocr_words(band, 2 if band.shape[0] >= 40 else 3))


# --------------------------------------------------------------------------------------------
# all of it

def calibrate_image(image: np.ndarray, scale_bar_nm: float | None = None, ocr: bool = True) -> Calibration:
    """The pixel size that ``image`` shows: printed in its data bar, or from its scale bar.

    In this order: a pixel size or field width printed in the data bar (more precise than a bar
    a few tens of pixels long); a scale bar with a length the user gave (``scale_bar_nm``); a
    scale bar with its label read by OCR. Without OCR (``ocr=False``, or Tesseract missing) only
    ``scale_bar_nm`` can give a pixel size, and ``problem`` says why none came out.

    Parameters
    ----------
    image : grey image in [0, 1], data bar included (the field width is the full image width).
    scale_bar_nm : the scale bar's length in nm, when the user read it.
    ocr : read text with Tesseract.

    Returns
    -------
    Calibration

    Examples
    --------
    >>> img = np.full((120, 160), 0.5, np.float32)
    >>> img[100:104, 20:70] = 1.0
    >>> calibrate_image(img, scale_bar_nm=500, ocr=False).nm_per_px
    10.0
    """
    img = np.asarray(image, dtype=np.float32)
    cal = Calibration(data_bar=find_data_bar(img))
    problem = None if ocr else "OCR was not asked for"
    if ocr and problem is None:
        problem = ocr_problem()
    if cal.data_bar is not None and problem is None:
        text = read_data_bar_text(img, cal.data_bar)
        cal.texts.append(text)
        pixel = parse_pixel_size(text)
        width = parse_field_width(text)
        if pixel:
            cal.nm_per_px, cal.source = pixel, "data bar"
            cal.detail = f"data bar: pixel size {pixel:g} nm"
            return cal
        if width:
            cal.nm_per_px, cal.source = width / img.shape[1], "data bar"
            cal.detail = f"data bar: field width {width:g} nm over {img.shape[1]} px"
            return cal
    bars = find_scale_bars(img, data_bar=cal.data_bar)
    if not bars:
        cal.problem = "no scale bar found"
        return cal
    if scale_bar_nm is not None:
        bar = bars[0]
        cal.scale_bar, cal.nm_per_px, cal.source = bar, scale_bar_nm / bar.length_px, "scale bar"
        cal.detail = f"scale bar: {scale_bar_nm:g} nm (given) over {bar.length_px} px"
        return cal
    if problem is not None:
        cal.scale_bar = bars[0]
        cal.problem = f"found a scale bar of {bars[0].length_px} px but cannot read its label: {problem}"
        return cal
    for bar in bars:
        read = read_bar_label(img, bar)
        if read is not None:
            nm, words = read
            cal.scale_bar, cal.nm_per_px, cal.source = bar, nm / bar.length_px, "scale bar"
            cal.detail = f"scale bar: '{words}' over {bar.length_px} px"
            cal.texts.append(words)
            return cal
    cal.scale_bar = bars[0]
    cal.problem = f"found a scale bar of {bars[0].length_px} px but could not read a length next to it"
    return cal
