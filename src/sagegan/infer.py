"""Tiled prediction on images of any size -> probability and distance maps -> particle instances.

The pipeline for one micrograph:

1. percentile normalisation (as in training);
2. zoom so the particles match the model's canonical diameter (``scale="auto"`` lets the model
   itself find the zoom at which the particles look as they did in training);
3. sliding-window prediction with overlapping tiles and Gaussian blending (MONAI), optional
   flip test-time augmentation;
4. maps zoomed back to the input's size, then a seeded watershed on the predicted normalised
   distance splits touching particles; a minimum area removes specks (predictions only).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import N_CLASSES, median_ecd, normalise_percentile, scale_factor_for
from .io import MAX_PIXELS, InputError, read_micrograph
from .plot import overlay_heatmap, overlay_outlines
from .runs import MIN_AREA_FRACTION, Segmenter, load_segmenter, model_provenance, resolve_model


# ------------------------------------------------------------------------------- particle size


# The autocorrelation is computed on a central crop of at most this side: enough particles for a
# size estimate, at a cost in time and memory that does not grow with the image.
AUTOCORR_MAX_SIDE = 1024


def _central_crop(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[y0:y0 + side, x0:x0 + side]


def gaussian_trend(image: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma)`` (mode "reflect") by FFT convolution, which
    for the wide kernels of a background trend is several times faster than direct convolution."""
    from scipy import signal

    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="symmetric")  # numpy's "symmetric" is ndimage's "reflect"
    rows = signal.fftconvolve(padded, kernel[None, :], mode="valid", axes=1)
    return signal.fftconvolve(rows, kernel[:, None], mode="valid", axes=0).astype(image.dtype, copy=False)


def estimate_diameter_autocorr(image: np.ndarray) -> float:
    """Typical particle diameter (px) from the radial autocorrelation of the image.

    For a disc of diameter D the normalised autocorrelation falls to one half at r = 0.404 D,
    so D ~ r_half / 0.404. The background trend is removed first; it is a first guess that the
    segmenter's own prediction refines.
    """
    from scipy import fft
    from scipy import ndimage as ndi

    img = _central_crop(image, AUTOCORR_MAX_SIDE).astype(np.float32)
    h, w = img.shape
    smooth = ndi.gaussian_filter(img, 1.0)
    trend = gaussian_trend(img, max(h, w) / 8)
    x = smooth - trend
    x -= x.mean()
    spectrum = np.abs(fft.rfft2(x, s=(2 * h, 2 * w), workers=-1)) ** 2
    acf = fft.irfft2(spectrum, s=(2 * h, 2 * w), workers=-1)
    acf = np.fft.fftshift(acf)
    cy, cx = h, w
    r_max = min(h, w) // 2
    yy, xx = np.indices((2 * r_max + 1, 2 * r_max + 1)) - r_max
    rr = np.rint(np.hypot(yy, xx)).astype(int)
    window = acf[cy - r_max: cy + r_max + 1, cx - r_max: cx + r_max + 1]
    profile = np.bincount(rr.ravel(), window.ravel()) / np.maximum(np.bincount(rr.ravel()), 1)
    profile = profile[: r_max + 1]
    if profile[0] <= 0:
        return float("nan")
    profile = profile / profile[0]
    below = np.nonzero(profile < 0.5)[0]
    if below.size == 0:
        return float("nan")
    r = int(below[0])
    # linear interpolation between r-1 and r
    r_half = r - 1 + (profile[r - 1] - 0.5) / max(profile[r - 1] - profile[r], 1e-9) if r > 0 else 0.5
    return float(r_half / 0.404)


def calibrate_autocorr(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Factor turning :func:`estimate_diameter_autocorr` into the true median particle diameter.

    The disc model behind the estimate ignores noise, edges and background texture, so on real
    micrographs it is biased; the factor is the median ratio true / estimated over labelled
    (training) images, and is stored in the model's config.json.
    """
    ratios = []
    for image, lab in zip(images, labels):
        est, true = estimate_diameter_autocorr(image), median_ecd(lab)
        if np.isfinite(est) and est > 0 and np.isfinite(true):
            ratios.append(true / est)
    return float(np.exp(np.median(np.log(ratios)))) if ratios else 1.0


# ------------------------------------------------------------------------------- prediction


def tile_side(length: int, max_tile: int, min_overlap: int, divisor: int) -> int:
    """Smallest tile side (a multiple of ``divisor``) that covers ``length`` in as few tiles as
    ``max_tile`` allows while neighbouring tiles overlap by at least ``min_overlap``."""
    up = lambda n: int(math.ceil(n / divisor) * divisor)  # noqa: E731
    if length <= max_tile:
        return up(length)
    n = math.ceil((length - min_overlap) / (max_tile - min_overlap))
    return up(math.ceil((length + (n - 1) * min_overlap) / n))


# Images larger than this once zoomed are predicted in blocks of about BLOCK_ZOOMED_PX a side (in
# zoomed px) with BLOCK_MARGIN_ZOOMED_PX of context around each, so that memory stays bounded by
# the maps at the input's size; smaller images are predicted in one pass.
MAX_WHOLE_ZOOMED_PX = 4096 * 4096
BLOCK_ZOOMED_PX = 3072
BLOCK_MARGIN_ZOOMED_PX = 256


@torch.inference_mode()
def predict_maps(seg: Segmenter, image: np.ndarray, scale: float = 1.0, tta: bool = False,
                 tile: int = 1088, min_overlap: int = 64, with_gates: bool = False,
                 device: str | torch.device | None = None, keep_zoomed: bool = False) -> dict[str, np.ndarray]:
    """Class probabilities, normalised distance (and the finest gate map) at the input's size.

    ``image`` is a float array (H, W); ``scale`` zooms it before prediction. Tiles of at most
    ``tile`` px overlap by at least ``min_overlap`` px and are blended with Gaussian weights.
    ``keep_zoomed`` returns the maps at the zoomed size instead of the input's. Images above
    ``MAX_WHOLE_ZOOMED_PX`` once zoomed are predicted block by block (normalised as a whole).
    """
    h, w = image.shape
    norm = normalise_percentile(image)
    options = dict(tta=tta, tile=tile, min_overlap=min_overlap, with_gates=with_gates, device=device)
    if keep_zoomed or h * w * scale ** 2 <= MAX_WHOLE_ZOOMED_PX:
        maps = _predict(seg, norm, scale, keep_zoomed=keep_zoomed, **options)
    else:
        maps = _predict_blocks(seg, norm, scale, **options)
    result = {"probs": maps[:N_CLASSES], "distance": maps[N_CLASSES]}
    if maps.shape[0] > N_CLASSES + 1:
        result["gate"] = maps[N_CLASSES + 1]
    return result


def _predict_blocks(seg: Segmenter, norm: np.ndarray, scale: float, **options) -> np.ndarray:
    """:func:`_predict` on overlapping blocks of a large image, each kept without its margin."""
    h, w = norm.shape
    block = max(64, int(BLOCK_ZOOMED_PX / scale))
    margin = int(math.ceil(BLOCK_MARGIN_ZOOMED_PX / scale))
    out: np.ndarray | None = None
    for core, context, inner in _blocks((h, w), block, margin):
        part = _predict(seg, norm[context], scale, **options)
        if out is None:
            out = np.empty((part.shape[0], h, w), np.float32)
        out[(slice(None), *core)] = part[(slice(None), *inner)]
    return out


def _blocks(shape: tuple[int, int], block: int, margin: int):
    """Tile an image of ``shape`` into ``block``-px squares; per square yield the slices of the
    square (``core``), of the square with ``margin`` px of context (``context``), and of the
    square within its context (``inner``)."""
    h, w = shape
    for y0 in range(0, h, block):
        for x0 in range(0, w, block):
            y1, x1 = min(h, y0 + block), min(w, x0 + block)
            ya, xa, yb, xb = max(0, y0 - margin), max(0, x0 - margin), min(h, y1 + margin), min(w, x1 + margin)
            yield ((slice(y0, y1), slice(x0, x1)), (slice(ya, yb), slice(xa, xb)),
                   (slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa)))


def _predict(seg: Segmenter, norm: np.ndarray, scale: float, tta: bool, tile: int, min_overlap: int,
             with_gates: bool, device, keep_zoomed: bool = False) -> np.ndarray:
    """Maps (C, H, W) of one normalised image in one sliding-window pass."""
    from monai.inferers import sliding_window_inference

    net = seg.fast_net
    device = device or next(net.parameters()).device
    h, w = norm.shape
    x = torch.from_numpy(norm)[None, None].to(device)
    if abs(scale - 1.0) > 1e-3:
        size = (max(int(round(h * scale)), 8), max(int(round(w * scale)), 8))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    roi = tuple(tile_side(n, tile, min_overlap, net.divisor) for n in x.shape[-2:])
    overlap = tuple(0.0 if n <= r else min_overlap / r for n, r in zip(x.shape[-2:], roi))

    dtype = next(net.parameters()).dtype

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(dtype).contiguous(memory_format=torch.channels_last)
        if with_gates and net.attention_gates:
            out, gates = net(batch, return_gates=True)
            out, extra = out.float(), [gates[0].float()]
        else:
            out, extra = net(batch).float(), []
        return torch.cat([out[:, :N_CLASSES].softmax(1), torch.sigmoid(out[:, N_CLASSES:N_CLASSES + 1])]
                         + extra, 1)

    flips: Sequence[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    total = None
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        pred = sliding_window_inference(xi, roi, sw_batch_size=1, predictor=predictor, overlap=overlap,
                                        mode="gaussian", padding_mode="reflect")
        pred = torch.flip(pred, dims) if dims else pred
        total = pred if total is None else total + pred
    maps = total / len(flips)
    if maps.shape[-2:] != (h, w) and not keep_zoomed:
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False,
                             antialias=maps.shape[-1] > w)
    return maps[0].float().cpu().numpy()


@torch.inference_mode()
def encoder_features(seg: Segmenter, images: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
    """Global-average-pooled outputs of every encoder stage, concatenated: ``(N, sum(widths))``.

    The features of the Fréchet distance between real and synthetic images
    (:func:`sagegan.metrics.frechet_distance`). Images may differ in size: they are batched by
    shape, and the rows keep the input order.
    """
    device = next(seg.net.parameters()).device
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    feats: list[np.ndarray | None] = [None] * len(images)
    seg.net.eval()
    for indices in by_shape.values():
        for j in range(0, len(indices), batch):
            chunk = indices[j:j + batch]
            x = torch.from_numpy(np.stack([normalise_percentile(images[i]) for i in chunk]))[:, None]
            stages = seg.net.encode(x.to(device))
            pooled = torch.cat([f.float().mean(dim=(2, 3)) for f in stages], 1).cpu().numpy()
            for i, row in zip(chunk, pooled):
                feats[i] = row
    return np.stack(feats).astype(np.float64)


def instances_from_maps(probs: np.ndarray, distance: np.ndarray, fg_threshold: float = 0.5,
                        seed_threshold: float = 0.5, min_area_px: int = 0) -> np.ndarray:
    """Instance labels (int32) by a watershed on the predicted distance, seeded by its cores.

    Foreground is where background probability < 1 - ``fg_threshold``; each connected core where
    the normalised distance exceeds ``seed_threshold`` seeds one particle; foreground pieces that
    hold no core become particles of their own. Instances under ``min_area_px`` are dropped.
    """
    from scipy import ndimage as ndi

    foreground = probs[0] < 1.0 - fg_threshold
    seeds, n = ndi.label((distance > seed_threshold) & foreground)
    labels = _watershed(distance, seeds, foreground) if n else np.zeros(foreground.shape, np.int32)
    del seeds  # full-size arrays are released or updated in place: a large image holds several
    orphans, n_orphans = ndi.label(foreground & (labels == 0))
    if n_orphans:
        orphans[orphans > 0] += labels.max()
        labels += orphans  # orphans lie where labels are 0
    del orphans
    if min_area_px > 0 and labels.any():
        areas = np.bincount(labels.ravel())
        small = areas < min_area_px
        small[0] = False
        labels[small[labels]] = 0
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32, copy=False))[0]


# Images above this many pixels are flooded block by block, each block with a margin of a few
# particle diameters, so that the watershed's memory stays bounded; smaller ones in one pass.
MAX_WHOLE_WATERSHED_PX = 4096 * 4096
WATERSHED_BLOCK_PX = 2048


def _watershed(distance: np.ndarray, seeds: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The seeded watershed of :func:`instances_from_maps`, in blocks for large images.

    A pixel is flooded from seeds within a particle's reach, so a block that sees every seed
    within a margin of four core diameters (about two particle diameters) floods its inside as
    the whole image would; seeds keep their global ids, so the blocks need no stitching. Only
    particles wider than the margin (beyond the 99th percentile) can differ at block seams.
    """
    from skimage.segmentation import watershed

    if foreground.size <= MAX_WHOLE_WATERSHED_PX:
        return watershed(-distance, seeds, mask=foreground)
    # the reach of nearly every particle; a few huge cores (a misread background) must not make
    # every block the whole image
    areas = np.bincount(seeds.ravel())[1:]
    core_area = float(np.percentile(areas[areas > 0], 99))
    margin = min(int(4 * 2 * math.sqrt(core_area / math.pi)) + 16, WATERSHED_BLOCK_PX)
    labels = np.zeros(seeds.shape, seeds.dtype)
    for core, context, inner in _blocks(seeds.shape, WATERSHED_BLOCK_PX, margin):
        labels[core] = watershed(-distance[context], seeds[context], mask=foreground[context])[inner]
    return labels


@dataclass
class Segmentation:
    """Result for one image: instance labels plus the maps they came from."""

    labels: np.ndarray
    probs: np.ndarray
    distance: np.ndarray
    scale: float
    diameter_estimate_px: float
    gate: np.ndarray | None = None
    passes: list[float] = field(default_factory=list)
    scores: np.ndarray | None = None   # per particle (label i -> scores[i - 1]), see particle_scores
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall clock per stage (see STAGES)
    particles: Any = None              # measurements (pandas DataFrame), filled by :func:`segment`


def default_min_area(canonical_diameter_px: float | None, scale: float, fraction: float = MIN_AREA_FRACTION) -> int:
    """Minimum particle area in input px: ``fraction`` of a canonical particle's area at zoom ``scale``."""
    d = canonical_diameter_px
    if not d:
        return 4
    return max(2, int(fraction * math.pi * (d / 2) ** 2 / scale ** 2))


# Zooms tried by ``scale="auto"``: 1/16 .. 4, a factor 2 apart, i.e. particles from ~6 px to ~380 px
# across for a canonical diameter of 24 px (the winner is then refined by up to sqrt(2) either way).
SEARCH_ZOOMS = tuple(2.0 ** k for k in range(-4, 3))
# Smallest particle diameter (input px) the zoom search accepts; below it "particles" are noise.
MIN_PARTICLE_PX = 4.0


def search_zoom(seg: Segmenter, image: np.ndarray, zooms: Sequence[float] = SEARCH_ZOOMS,
                crop_px: int = 256, size_weight: float = 0.1, prior_weight: float = 0.1,
                max_share: float = 0.75, max_step: float = math.sqrt(2), second_crop_margin: float | None = 0.1,
                precision: str | None = None, screen_crop_px: int | None = None,
                screen_keep: int = 3) -> tuple[float, float, list[dict[str, float]]]:
    """Zoom that brings the image's particles to the model's canonical diameter, found by the model.

    Image statistics alone (the autocorrelation) often misjudge the size; the segmenter itself
    knows better (BENCHMARKS.md). At each candidate zoom it segments a central
    crop (``crop_px`` px once zoomed, so every try costs about the same) and the zoom scores

        mean class confidence on the predicted foreground   (high where particles look as in training)
        - size_weight  * |log(median predicted diameter / canonical)|
        - prior_weight * max(0, |log(zoom / autocorrelation zoom)| - log 2)

    the last term only breaking ties far from the image-statistics guess. On a large image a
    second crop is scored too and each zoom gets the mean (median diameter) of the two, but only
    the zooms whose first crop scored within ``second_crop_margin`` of the best plausible one get
    it (a zoom that far behind seldom wins; None gives every zoom its second crop). Zooms
    whose result cannot be particles (under ``MIN_PARTICLE_PX`` across, or one object over
    ``max_share`` of the crop) lose to any plausible one. The winner's measured diameter then
    moves the zoom by at most ``max_step``. ``precision`` runs the tries in another precision
    than the segmenter's ("bf16" is faster where the CPU has bf16 units). ``screen_crop_px``
    first screens every zoom on a smaller central crop (that many zoomed px) and searches as
    above among the ``screen_keep`` best only. The weights were
    chosen on held-out EMPS training images (benchmarks/studies/scale_search.py), ``max_share``
    on the bundled model's validation images (benchmarks/studies/zoom_search_rules.py), as were
    ``second_crop_margin`` and leaving ``screen_crop_px`` off. Returns
    (zoom, estimated median diameter in input px, one record per try).
    """
    canonical = float(seg.canonical_diameter_px)
    h, w = image.shape
    prior = estimate_diameter_autocorr(image) * seg.config.get("autocorr_factor", 1.0)
    prior_zoom = zoom_for(prior, canonical) if math.isfinite(prior) and prior > 0 else None
    searcher = seg.with_precision(precision) if precision else seg

    def score(zoom: float, crops: list[dict[str, float]]) -> dict[str, float]:
        diameters = [c["diameter"] for c in crops if math.isfinite(c["diameter"])]
        diameter = float(np.median(diameters)) if diameters else float("nan")
        confidence = float(np.mean([c["confidence"] for c in crops]))
        size_error = abs(math.log(diameter / canonical)) if math.isfinite(diameter) else 9.0
        off_prior = max(0.0, abs(math.log(zoom / prior_zoom)) - math.log(2)) if prior_zoom else 0.0
        return {"zoom": zoom, "diameter_px": diameter / zoom, "confidence": confidence,
                "largest_share": max(c["largest_share"] for c in crops), "crops": len(crops),
                "score": confidence - size_weight * size_error - prior_weight * off_prior}

    def plausible(tries: list[dict[str, float]]) -> list[dict[str, float]]:
        # "Particles" under MIN_PARTICLE_PX across are pixel noise, and one object over three
        # quarters of the crop is background shading (a real particle may cover half of a
        # frame that holds two or three).
        return [t for t in tries if t["diameter_px"] >= MIN_PARTICLE_PX and t["largest_share"] <= max_share]

    def central(zoom: float, px: int) -> tuple[int, int, int, int]:
        side = max(int(round(px / zoom)), 16)
        ch, cw = min(h, side), min(w, side)
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def attempt(zoom: float, box: tuple[int, int, int, int]) -> dict[str, float]:
        y0, x0, ch, cw = box
        return _zoom_try(searcher, image[y0:y0 + ch, x0:x0 + cw], zoom)

    screened: dict[float, tuple[tuple[int, int, int, int], dict[str, float]]] = {}
    if screen_crop_px is not None and len(zooms) > screen_keep:
        # Most zooms are far off; a smaller crop tells them apart for a fraction of the cost.
        small = {z: central(z, screen_crop_px) for z in zooms}
        screened = {z: (box, attempt(z, box)) for z, box in small.items()}
        first = [score(z, [try_]) for z, (_, try_) in screened.items()]
        fits = {t["zoom"] for t in plausible(first)}
        ranked = sorted(first, key=lambda t: (t["zoom"] not in fits, -t["score"]))
        kept = {t["zoom"] for t in ranked[:screen_keep]}
        zooms = [z for z in zooms if z in kept]
    # The central crop, and on a large enough image a second one around the upper-left quarter
    # point: a zoom must suit both, so that one odd region (a data bar, a cluster, bare support)
    # does not decide for the whole image.
    crops: dict[float, list[tuple[int, int, int, int]]] = {}
    for zoom in zooms:
        y0, x0, ch, cw = central(zoom, crop_px)
        crops[zoom] = [(y0, x0, ch, cw)]
        if h >= 1.5 * ch or w >= 1.5 * cw:
            crops[zoom].append((max(0, h // 4 - ch // 2), max(0, w // 4 - cw // 2), ch, cw))
    # Where the screening crop was already the whole image, its try is the central one.
    results = {zoom: [screened[zoom][1] if zoom in screened and screened[zoom][0] == boxes[0]
                      else attempt(zoom, boxes[0])] for zoom, boxes in crops.items()}
    second = [z for z in zooms if len(crops[z]) > 1]
    if second_crop_margin is not None and second:
        first = [score(z, results[z]) for z in zooms]
        lead = max(t["score"] for t in (plausible(first) or first))
        second = [t["zoom"] for t in first if len(crops[t["zoom"]]) > 1 and t["score"] >= lead - second_crop_margin]
    for zoom in second:
        results[zoom].append(attempt(zoom, crops[zoom][1]))
    tries = [score(z, results[z]) for z in zooms]
    # A zoom left with one crop where two fit was behind by more than the margin: it stays out.
    finalists = [t for t in tries if t["crops"] == len(crops[t["zoom"]])]
    best = max(plausible(finalists) or finalists, key=lambda t: t["score"])
    if not math.isfinite(best["diameter_px"]):  # no particles at any zoom: fall back on image statistics
        return (prior_zoom or 1.0), prior, tries
    zoom = float(np.clip(zoom_for(best["diameter_px"], canonical), best["zoom"] / max_step, best["zoom"] * max_step))
    return zoom, best["diameter_px"], tries


def _zoom_try(seg: Segmenter, crop: np.ndarray, zoom: float) -> dict[str, float]:
    """One crop segmented at one zoom: median diameter (zoomed px), mean class confidence on the
    foreground, and the share of the crop that its largest particle covers."""
    post = seg.postprocess
    # Everything happens at the zoomed size (at most crop_px^2), so small zooms stay cheap.
    maps = predict_maps(seg, crop, zoom, keep_zoomed=True)
    labels = instances_from_maps(maps["probs"], maps["distance"], post["fg_threshold"],
                                 post["seed_threshold"], default_min_area(seg.canonical_diameter_px, 1.0))
    foreground = labels > 0
    areas = np.bincount(labels.ravel())[1:]
    return {"diameter": median_ecd(labels),  # an image may hold one big particle
            "confidence": float(maps["probs"].max(0)[foreground].mean()) if foreground.any() else 0.0,
            "largest_share": float(areas.max() / labels.size) if areas.size else 0.0}


# Where the time of ``segment`` goes, per image, in order (``seconds`` in segment_config.json).
STAGES = ("read", "zoom_search", "network", "instances", "scores", "write", "measure")


class StageClock:
    """Wall-clock seconds per stage: ``lap(name)`` adds the time since the previous lap to ``name``."""

    def __init__(self) -> None:
        self._now = time.perf_counter
        self._last = self._now()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = self._now()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def merge(self, seconds: dict[str, float]) -> None:
        """Add stages timed elsewhere (by another clock) since the previous lap."""
        for stage, value in seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value
        self._last = self._now()


def segment_image(seg: Segmenter, image: np.ndarray, scale: str | float = "auto", tta: bool = False,
                  min_area_px: int | None = None, with_gates: bool = False, tile: int = 1088,
                  diameter_px: float | None = None, min_score: float | None = None) -> Segmentation:
    """Segment one micrograph (float array) into particle instances at its own size.

    ``scale="auto"`` finds the zoom with :func:`search_zoom` (models trained at a canonical
    particle size), run by the model's ``zoom_guide`` where it has one; a number fixes the zoom.
    ``diameter_px``, a typical particle diameter in input px, replaces the search. Every particle gets a score (:func:`particle_scores`);
    those under ``min_score`` (default: the model's tuned ``postprocess.min_score``) are dropped.
    ``warnings`` holds one-line notes on results that look wrong.
    """
    canonical = seg.canonical_diameter_px
    post = seg.postprocess
    passes: list[float] = []
    warnings: list[str] = []
    estimate = float("nan")
    clock = StageClock()
    if diameter_px is not None:
        if not (diameter_px > 0 and math.isfinite(diameter_px)):
            raise ValueError(f"the particle diameter must be a positive number of px, got {diameter_px}")
        zoom, estimate = (zoom_for(diameter_px, canonical) if canonical else 1.0), float(diameter_px)
    elif scale == "auto" and canonical:
        zoom, estimate, tries = search_zoom(seg.zoom_guide or seg, image)
        passes = [t["zoom"] for t in tries]
        if zoom <= SEARCH_ZOOMS[0] or zoom >= SEARCH_ZOOMS[-1]:
            side = "large" if zoom <= SEARCH_ZOOMS[0] else "small"
            warnings.append(f"the zoom search ended at the edge of its range (zoom {zoom:.3g}): the particles may be "
                            f"too {side} for it; give their typical size with --diameter-px or --diameter-nm")
    else:
        zoom = 1.0 if scale == "auto" else float(scale)
    if not (zoom > 0 and math.isfinite(zoom)):
        raise ValueError(f"scale must be 'auto' or a positive number, got {scale}")
    passes.append(zoom)
    clock.lap("zoom_search")
    maps = predict_maps(seg, image, zoom, tta=tta, tile=tile, with_gates=with_gates)
    clock.lap("network")
    area = default_min_area(canonical, zoom, post["min_area_fraction"]) if min_area_px is None else min_area_px
    labels = instances_from_maps(maps["probs"], maps["distance"], post["fg_threshold"],
                                 post["seed_threshold"], area)
    clock.lap("instances")
    scores = calibrated_scores(particle_scores(labels, maps["probs"], maps["distance"]), post)
    threshold = post.get("min_score", 0.0) if min_score is None else min_score
    if threshold > 0 and scores.size:
        labels, scores = _drop_low_scores(labels, scores, threshold)
    warnings += result_warnings(labels, scores, post)
    clock.lap("scores")
    return Segmentation(labels, maps["probs"], maps["distance"], zoom, estimate, maps.get("gate"), passes,
                        scores, warnings, clock.seconds)


def particle_scores(labels: np.ndarray, probs: np.ndarray, distance: np.ndarray,
                    block_rows: int = 1024) -> np.ndarray:
    """Raw confidence in [0, 1] of each particle (``labels`` 1..n -> entry 0..n-1).

    The mean foreground probability inside the particle times the peak of its predicted
    normalised distance (clipped to [0, 1]): a particle the network is sure of is foreground
    throughout and has a clear core, whereas fragments, debris and merged blobs lack one or the
    other. Models tuned by sagegan map it to a calibrated probability (:func:`calibrated_scores`).
    Sums, counts and peaks are gathered ``block_rows`` rows at a time, so that a huge image
    needs no full-size temporaries.
    """
    from scipy import ndimage as ndi

    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros(0)
    index = np.arange(1, n + 1)
    background_sum = np.zeros(n + 1)
    count = np.zeros(n + 1)
    peak = np.full(n, -np.inf)
    for r0 in range(0, labels.shape[0], block_rows):
        rows = slice(r0, r0 + block_rows)
        block = labels[rows]
        inside = block > 0  # the particles' pixels only: ndimage sorts what it is given
        ids = block[inside]
        if not ids.size:
            continue
        background_sum += np.bincount(ids, weights=probs[0][rows][inside], minlength=n + 1)
        count += np.bincount(ids, minlength=n + 1)
        peak = np.maximum(peak, ndi.maximum(distance[rows][inside], ids, index))
    foreground = 1.0 - background_sum[1:] / np.maximum(count[1:], 1)
    return np.clip(foreground * np.clip(peak, 0.0, 1.0), 0.0, 1.0)


def calibrated_scores(raw: np.ndarray, postprocess: dict) -> np.ndarray:
    """Raw particle scores through the model's calibration curve (``postprocess.score_calibration``,
    fitted on validation images by :func:`sagegan.validation.calibrate_scores`); unchanged without one."""
    curve = postprocess.get("score_calibration")
    if not curve or not len(raw):
        return np.asarray(raw, float)
    return np.interp(raw, curve["raw"], curve["calibrated"])


def _drop_low_scores(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop the particles scoring under ``threshold``; ``labels`` is changed in place (it may be huge)."""
    from skimage.segmentation import relabel_sequential

    keep = np.concatenate([[False], scores >= threshold])
    labels[~keep[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32, copy=False), scores[keep[1:]]


# An image whose particles score this low, in the median, looks unlike the model's training data.
UNFAMILIAR_MEDIAN_SCORE = 0.5


def result_warnings(labels: np.ndarray, scores: np.ndarray, postprocess: dict) -> list[str]:
    """One-line notes on a segmentation that is probably wrong or unreliable."""
    notes = []
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return ["no particles found"]
    areas = np.bincount(labels.ravel())[1:]
    if areas.max() > 0.5 * labels.size:
        notes.append("one particle covers more than half of the image: probably background shading, "
                     "not a particle; check the overlay")
    from .particles import MIN_RELIABLE_ECD_PX

    median = median_ecd(labels)
    if median < MIN_RELIABLE_ECD_PX:
        notes.append(f"the median particle spans {median:.1f} px: sizes are unreliable below about "
                     f"{MIN_RELIABLE_ECD_PX:g} px")
    limit = postprocess.get("unfamiliar_median_score", UNFAMILIAR_MEDIAN_SCORE)
    if scores.size and postprocess.get("score_calibration") and float(np.median(scores)) < limit:
        notes.append(f"median particle score {float(np.median(scores)):.2f} (< {limit:g}): the image looks "
                     "unlike the model's training data; check the overlay, or fine-tune (train-seg --init)")
    return notes


def segment(image: np.ndarray | str | Path, model: str | Path | Segmenter | None = None, *,
            nm_per_px: float | str | None = "auto", crop_bottom: int | str = "auto",
            diameter_px: float | None = None, diameter_nm: float | None = None,
            scale: str | float = "auto", min_score: float | None = None, tta: bool = False) -> Segmentation:
    """Particles of one micrograph, measured: the one-line entry point (``sagegan.segment``).

    Parameters
    ----------
    image : a float array (H, W) or the path of a micrograph file (its pixel size is read from it).
    model : None or ``"general"`` for the model bundled with sagegan, a RUN folder, or a loaded
        :class:`Segmenter`.
    nm_per_px : the pixel size, or where it comes from for a file (:func:`sagegan.io.read_micrograph`):
        ``"auto"`` (its metadata, else its data bar or scale bar), ``"auto-bar"``, ``"metadata"``.
    crop_bottom : rows of a file's data bar to drop, or ``"auto"`` to find it.
    diameter_px, diameter_nm : a typical particle diameter, replacing the zoom search.
    scale, min_score, tta : see :func:`segment_image`.

    Returns
    -------
    Segmentation
        ``labels`` (0 = background), ``scores`` and ``particles`` (one row per particle: size in
        px and nm, shape, ``score``), plus the maps and ``warnings``.

    Example
    -------
    >>> import sagegan
    >>> result = sagegan.segment("my.tif")                      # doctest: +SKIP
    >>> result.particles[["id", "ecd_nm", "score"]].head()     # doctest: +SKIP
    """
    from .particles import measure

    if isinstance(image, (str, Path)):
        mg = read_micrograph(image, nm_per_px=nm_per_px, crop_bottom=crop_bottom)
        image, nm_per_px = mg.image, mg.nm_per_px
    elif isinstance(nm_per_px, str):  # an array has no metadata: only its scale bar can say
        from .io import pixel_size_mode
        from .scalebar import calibrate_image

        mode, _ = pixel_size_mode(nm_per_px)
        nm_per_px = calibrate_image(np.asarray(image, np.float32)).nm_per_px if mode != "metadata" else None
    image = np.asarray(image, dtype=np.float32)
    seg = model if isinstance(model, Segmenter) else _cached_segmenter(str(resolve_model(model).resolve()))
    diameter_px = diameter_in_px(diameter_px, diameter_nm, nm_per_px, "the image")
    result = segment_image(seg, image, scale=scale, tta=tta, diameter_px=diameter_px, min_score=min_score)
    result.particles = measure(result.labels, image, nm_per_px)
    result.particles["score"] = result.scores
    return result


def diameter_in_px(diameter_px: float | None, diameter_nm: float | None, nm_per_px: float | None,
                   where: str | Path) -> float | None:
    """The particle-size hint in px: ``diameter_px``, or ``diameter_nm`` through the pixel size of
    ``where`` (an image; an :class:`InputError` naming it when its pixel size is unknown)."""
    if diameter_nm is None:
        return diameter_px
    if nm_per_px is None:
        raise InputError(f"{where}: --diameter-nm needs the pixel size, which this image does not record; "
                         "pass --nm-per-px, or give --diameter-px")
    return diameter_nm / nm_per_px


# The one-liner loads a model once per process (by folder), not once per image.
_cached_segmenter = lru_cache(maxsize=2)(load_segmenter)


def zoom_for(diameter_px: float, canonical: float) -> float:
    return scale_factor_for(diameter_px, canonical, limits=(SEARCH_ZOOMS[0] / 1.5, SEARCH_ZOOMS[-1] * 1.5))


# ------------------------------------------------------------------------------- files


@dataclass
class SegmentBatch:
    """What one :func:`segment_batch` run did.

    Attributes
    ----------
    particles : this run's particles (one row per particle, ``image`` first).
    label_files : the label images this run wrote, in input order.
    names : output name of every input segmented or tried (its stem, or ``<folder>_<stem>``).
    renamed : the inputs not named by their stem alone, and their output names.
    skipped : inputs left out because a segment manifest names them as sagegan outputs.
    replaced : names of the images whose earlier outputs in ``out`` this run replaced.
    kept : names of the other images whose outputs ``out`` holds from earlier runs.
    failures : the inputs that failed (:class:`sagegan.io.BatchFailure`); the others finished.
    calibrations : where each segmented image's pixel size came from, by name (``"user"``,
        ``"metadata"``, ``"data bar"``, ``"scale bar"``, or None when unknown).
    """

    particles: Any
    label_files: list[Path]
    names: dict[Path, str]
    renamed: dict[Path, str]
    skipped: list[Path]
    replaced: list[str]
    kept: list[str]
    failures: list
    calibrations: dict[str, str | None] = field(default_factory=dict)

    def calibration_line(self) -> str | None:
        """One line saying how many images got their pixel size from where, when some were read
        from the image itself (a data bar or scale bar, which can be misread: worth a check);
        None otherwise."""
        counts: dict[str, int] = {}
        for kind in self.calibrations.values():
            counts[kind or "unknown"] = counts.get(kind or "unknown", 0) + 1
        if not set(counts) & {"scale bar", "data bar"}:
            return None
        parts = ", ".join(f"{n} from {k}" if k != "unknown" else f"{n} unknown" for k, n in sorted(counts.items()))
        return (f"pixel size: {parts} (read from the image: check the nm sizes of a few; nm_per_px_source in "
                "particles.csv)")


def output_names(files: Sequence[Path], recorded: dict[str, dict]) -> dict[Path, str]:
    """The name of each input's outputs (``<name>_labels.tif``, ...) in a folder whose manifest
    is ``recorded`` (:func:`sagegan.io.read_segment_manifest`).

    An input the manifest records keeps its name, so a re-run replaces its outputs. Any other
    input is named by its stem, unless that stem is shared by another input of the batch or
    names the outputs of another input in the manifest: then it is ``<parent folder>_<stem>``
    (every input of a shared stem is renamed, so the names do not depend on the order).

    Raises
    ------
    InputError
        Two inputs would still share a name (same file and folder name).

    Example
    -------
    >>> names = output_names([Path("a/x.png"), Path("b/x.png"), Path("b/y.png")], {})
    >>> [names[p] for p in (Path("a/x.png"), Path("b/x.png"), Path("b/y.png"))]
    ['a_x', 'b_x', 'y']
    """
    from collections import Counter

    by_input = {str(Path(r["input"]).resolve()): name for name, r in recorded.items() if r.get("input")}
    names = {f: by_input[str(f.resolve())] for f in files if str(f.resolve()) in by_input}
    new = [f for f in files if f not in names]
    stems = Counter(f.stem for f in new)
    for f in new:
        clash = stems[f.stem] > 1 or f.stem in recorded
        names[f] = f"{f.resolve().parent.name or 'root'}_{f.stem}" if clash else f.stem
    owner: dict[str, Path] = {}
    for f in files:
        name = names[f]
        if name in owner:
            raise InputError(f"{owner[name]} and {f}: both would be written as {name}_labels.tif; "
                             "segment them into different --out folders")
        if f in new and name in recorded:
            raise InputError(f"{f}: its outputs would be named {name}, which holds the outputs of "
                             f"{recorded[name].get('input')}; segment it into a different --out folder")
        owner[name] = f
    return names


def segment_batch(inputs: Sequence[str | Path], model: str | Path | Segmenter | None, out: str | Path,
                  nm_per_px: float | None = None, scale: str | float = "auto", tta: bool = False,
                  min_area_px: int | None = None, save_attention: bool = False, crop_bottom: int = 0,
                  split: str | Path | Sequence[str] | None = None, progress: bool = True,
                  report: Callable[[str], None] | None = None, max_pixels: int | None = MAX_PIXELS,
                  diameter_px: float | None = None, diameter_nm: float | None = None,
                  min_score: float | None = None, overlay_ids: bool = False, workers: int | None = None,
                  scheduler: str | None = None, precision: str = "fp32", save_rois: bool = False,
                  save_geojson: bool = False, ome: bool = False, scale_bar_nm: float | None = None) -> SegmentBatch:
    """Segment micrographs into ``out``; a bad image is reported and the others finish.

    Per image ``<name>_labels.tif``, ``_mask.png``, ``_overlay.png`` (and ``_attention.png``,
    with ``save_rois`` ``_rois.zip``: one ImageJ polygon ROI per particle, named by its id; with
    ``save_geojson`` ``_particles.geojson``: the same outlines with their measurements, for QuPath;
    ``ome`` writes the labels as OME-TIFF with the pixel size as PhysicalSizeX/Y);
    ``name`` is the stem (see :func:`output_names` for repeated stems). The folder also gets

    * ``segment_manifest.json``: every image whose outputs the folder holds, with its input,
      output files and settings. Inputs that a manifest in their own folder names as outputs
      are skipped (so ``--out`` may be the input folder), and it is what lets a re-run replace
      only the outputs of the images given, keeping the others;
    * ``particles.csv``: the particles of every image in the manifest (this run's rows replace
      earlier ones of the same image, other images' rows are kept);
    * ``segment_config.json``: the settings and images of this run, and which model made them
      (name, version, weights hash; the same columns are in ``particles.csv``).

    ``model`` is a RUN folder, a loaded :class:`Segmenter`, or None / ``"general"`` for the model
    bundled with sagegan (:func:`sagegan.runs.resolve_model`). ``diameter_px`` or ``diameter_nm``
    (a typical particle diameter; nm needs the pixel size) replaces the zoom search, and
    ``min_score`` overrides the model's score threshold (:func:`segment_image`).

    ``precision="bf16"`` runs the network in bfloat16 (BENCHMARKS.md: speed and accuracy).
    ``workers`` runs the images on a Dask ``LocalCluster`` of that many processes, ``scheduler``
    (an address) on an existing Dask cluster: one image is one task, each worker loads the model
    once, and the outputs are those of a serial run (:mod:`sagegan.cluster`).

    Files in ``out`` that ``segment`` did not write are never overwritten (the run is refused).
    A bad image (an :class:`InputError`: unreadable, corrupt, too small) goes to ``failures``
    (and ``report``); nothing is raised for it. ``report`` gets one-line messages.
    """
    import pandas as pd

    from .io import (SEGMENT_MANIFEST, SEGMENT_OUTPUT_SUFFIXES, Batch, _listing, read_segment_manifest,
                     segment_outputs, write_json)

    files, skipped = _select_inputs(inputs, split, report)
    files = list({f.resolve(): f for f in files}.values())
    out = Path(out)
    recorded = read_segment_manifest(out)
    names = output_names(files, recorded)
    wanted = {"_attention.png": save_attention, "_rois.zip": save_rois, "_particles.geojson": save_geojson}
    suffixes = [s for s in SEGMENT_OUTPUT_SUFFIXES if wanted.get(s, True)]
    ours = segment_outputs(out)
    theirs = [out / (n + s) for n in names.values() for s in suffixes
              if (out / (n + s)).exists() and n + s not in ours]
    if theirs:
        raise InputError(f"{theirs[0]}: exists and was not written by sagegan segment; not overwriting it "
                         "(choose another --out)")
    renamed = {f: n for f, n in names.items() if n != f.stem}
    if renamed and report is not None:
        report(f"{len(renamed)} input(s) share a file name with another input or an earlier output, so "
               f"their outputs are named after their folder: "
               f"{_listing(f'{f} -> {n}' for f, n in renamed.items())}")
    if diameter_px is not None and diameter_nm is not None:
        raise ValueError("give the particle size once: --diameter-px or --diameter-nm, not both")
    if workers is not None or scheduler is not None:
        from .cluster import check_cluster_options

        check_cluster_options(workers, scheduler)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"--precision must be fp32 or bf16, got {precision!r}")
    seg = model if isinstance(model, Segmenter) else load_segmenter(resolve_model(model))
    if seg.precision != precision:
        from dataclasses import replace

        seg = replace(seg, precision=precision)
    provenance = model_provenance(seg)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": str(seg.path) if seg.path else None, **provenance, "precision": precision,
                "scale": scale, "tta": tta, "min_area_px": min_area_px, "nm_per_px": nm_per_px,
                "crop_bottom": crop_bottom, "scale_bar_nm": scale_bar_nm, "diameter_px": diameter_px,
                "diameter_nm": diameter_nm,
                "min_score": seg.postprocess.get("min_score", 0.0) if min_score is None else min_score}
    manifest = {"format": "sagegan segment manifest", "version": 1, "images": dict(recorded)}
    with_gate = save_attention and seg.net.attention_gates
    planned = {name: [name + s for s in suffixes if s != "_attention.png" or with_gate] for name in names.values()}
    options = dict(nm_per_px=nm_per_px, crop_bottom=crop_bottom, max_pixels=max_pixels, scale=scale, tta=tta,
                   min_area_px=min_area_px, save_attention=save_attention, diameter_px=diameter_px,
                   diameter_nm=diameter_nm, min_score=min_score, overlay_ids=overlay_ids, ome=ome,
                   scale_bar_nm=scale_bar_nm)
    results: dict[Path, dict] = {}
    earlier: dict[str, tuple[dict | None, bool]] = {}
    batch = Batch(len(files), "image", report)

    def begin(path: Path) -> None:
        """Record the image's outputs (and what the folder held of it) before they are written:
        a crash never leaves unrecorded outputs."""
        name = names[path]
        old = manifest["images"].get(name)
        earlier[name] = (old, old is not None or any((out / w).exists() for w in planned[name]))
        on_disk = list(dict.fromkeys(planned[name] + (old["outputs"] if old else [])))
        manifest["images"][name] = {**settings, "input": str(path.resolve()), "outputs": on_disk}

    def undo(path: Path) -> None:
        old = earlier[names[path]][0]
        if old is None:
            manifest["images"].pop(names[path], None)
        else:
            manifest["images"][names[path]] = old
        write_json(out / SEGMENT_MANIFEST, manifest)

    def end(path: Path, result: dict) -> None:
        name, run = names[path], result["run"]
        old = earlier[name][0]
        for stale in set(old["outputs"] if old else []) - set(planned[name]):
            (out / stale).unlink(missing_ok=True)
        manifest["images"][name] = {**settings, **run, "input": str(path.resolve()), "outputs": planned[name]}
        write_json(out / SEGMENT_MANIFEST, manifest)
        if report is not None:
            for warning in run["warnings"]:
                report(f"{path}: {warning}")
        results[path] = result

    if workers is None and scheduler is None:
        iterator: Any = files
        if progress:
            from rich.progress import track

            iterator = track(files, description="segmenting")
        # The next image is read (decoded, its scale bar read) on a thread while this one is
        # segmented: the decoders and the OCR release the GIL. A bad file raises at its own turn.
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sagegan-read")
        read_options = {k: options[k] for k in ("nm_per_px", "crop_bottom", "max_pixels", "scale_bar_nm")}
        ahead = {files[0]: reader.submit(read_micrograph, files[0], **read_options)}
        try:
            for i, path in enumerate(iterator):
                if i + 1 < len(files):
                    ahead[files[i + 1]] = reader.submit(read_micrograph, files[i + 1], **read_options)
                with batch.item(path):
                    begin(path)
                    write_json(out / SEGMENT_MANIFEST, manifest)
                    try:
                        result = segment_to_files(seg, path, names[path], out, planned[names[path]],
                                                  micrograph=ahead.pop(path), **options)
                    except BaseException:
                        undo(path)
                        raise
                    end(path, result)
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
    else:
        from .cluster import segment_on_cluster

        if seg.path is None:
            raise ValueError("segmenting on Dask workers needs a model folder (each worker loads it)")
        for path in files:
            begin(path)
        write_json(out / SEGMENT_MANIFEST, manifest)
        for path, outcome in segment_on_cluster(seg.path, precision, files, names, out, planned, options,
                                                workers=workers, scheduler=scheduler, progress=progress):
            with batch.item(path):
                if isinstance(outcome, BaseException):
                    undo(path)
                    raise outcome
                end(path, outcome)
    tables: dict[str, Any] = {}
    runs, label_files, replaced = [], [], []
    for path in files:  # in input order, whichever finished first
        if path in results:
            name = names[path]
            tables[name] = results[path]["table"]
            runs.append(results[path]["run"])
            label_files.append(out / f"{name}_labels.tif")
            if earlier[name][1]:
                replaced.append(name)
    particles = pd.concat(tables.values(), ignore_index=True) if tables else pd.DataFrame()
    kept = sorted(set(manifest["images"]) - set(tables))
    _write_particles_csv(out, particles, kept)
    dask = {"dask": {"workers": workers, "scheduler": scheduler}} if workers or scheduler else {}
    write_json(out / "segment_config.json", {**settings, "postprocess": seg.postprocess, **dask, "images": runs})
    if (replaced or kept) and report is not None:
        report(f"replaced the earlier outputs of {len(replaced)} image(s) in {out}"
               + (f"; kept those of {len(kept)} other image(s) (particles.csv and {SEGMENT_MANIFEST} list all "
                  f"{len(manifest['images'])})" if kept else ""))
    calibrations = {names[p]: results[p]["run"].get("calibration") for p in files if p in results}
    return SegmentBatch(particles, label_files, names, renamed, skipped, replaced, kept, batch.failures,
                        calibrations)


def segment_to_files(seg: Segmenter, path: Path, name: str, out: Path, outputs: Sequence[str], *,
                     nm_per_px: float | str | None, crop_bottom: int | str, max_pixels: int | None,
                     scale: str | float, tta: bool, min_area_px: int | None, save_attention: bool,
                     diameter_px: float | None, diameter_nm: float | None, min_score: float | None,
                     overlay_ids: bool, ome: bool = False, scale_bar_nm: float | None = None,
                     micrograph: Future | None = None) -> dict:
    """One image of :func:`segment_batch`: read, segment, write the ``outputs`` (file names in
    ``out``), measure. Returns ``run`` (its record in segment_config.json) and ``table`` (its
    particles); the same on a Dask worker as in the serial loop. ``micrograph``, a future of
    :func:`sagegan.io.read_micrograph` started earlier, replaces the read (its ``read`` stage is
    then the wait)."""
    from .io import write_geojson, write_image, write_imagej_rois, write_labels
    from .particles import measure

    clock = StageClock()
    mg = micrograph.result() if micrograph is not None else read_micrograph(
        path, nm_per_px=nm_per_px, crop_bottom=crop_bottom, max_pixels=max_pixels, scale_bar_nm=scale_bar_nm)
    hint = diameter_in_px(diameter_px, diameter_nm, mg.nm_per_px, path)
    source = mg.metadata.get("pixel_size_source", "micrograph file") if mg.nm_per_px else None
    clock.lap("read")
    result = segment_image(seg, mg.image, scale=scale, tta=tta, min_area_px=min_area_px,
                           with_gates=save_attention, diameter_px=hint, min_score=min_score)
    clock.merge(result.seconds)
    labels, gate, scores = result.labels, result.gate, result.scores
    run = {"image": str(path), "shape": list(mg.image.shape), "n_particles": int(labels.max()),
           "scale": result.scale, "passes": result.passes, "nm_per_px": mg.nm_per_px, "nm_per_px_source": source,
           "calibration": mg.metadata.get("calibration"), "crop_bottom": mg.metadata.get("crop_bottom", 0),
           "warnings": result.warnings}
    del result  # its probability maps are the largest arrays of a big image
    write_labels(out / f"{name}_labels.tif", labels, nm_per_px=mg.nm_per_px, ome=ome)
    write_image(out / f"{name}_mask.png", ((labels > 0) * 255).astype(np.uint8))
    write_image(out / f"{name}_overlay.png", overlay_outlines(mg.image, labels, ids=overlay_ids))
    if f"{name}_attention.png" in outputs and gate is not None:
        write_image(out / f"{name}_attention.png", overlay_heatmap(mg.image, gate))
    outlines = None
    if f"{name}_rois.zip" in outputs or f"{name}_particles.geojson" in outputs:
        from .particles import pixel_outlines

        outlines = pixel_outlines(labels)  # one tracing serves both formats
    if f"{name}_rois.zip" in outputs:
        write_imagej_rois(out / f"{name}_rois.zip", outlines)
    clock.lap("write")
    table = measure(labels, mg.image, mg.nm_per_px)
    table.insert(0, "image", name)
    table["score"] = np.round(scores, 4)
    table["nm_per_px_source"] = source
    for key, value in model_provenance(seg).items():
        table[key] = value
    clock.lap("measure")
    if f"{name}_particles.geojson" in outputs:
        write_geojson(out / f"{name}_particles.geojson", outlines, table)
        clock.lap("write")
    run["seconds"] = {stage: round(clock.seconds.get(stage, 0.0), 4) for stage in STAGES}
    return {"run": run, "table": table}


def _select_inputs(inputs, split, report) -> tuple[list[Path], list[Path]]:
    """The input files to segment (in a split, when given) and those skipped as sagegan's own outputs."""
    from .io import _listing, _stem, expand_inputs, read_split, segment_outputs

    files = expand_inputs(inputs)
    own: dict[Path, set[str]] = {}
    skipped = []
    for f in files:
        if f.parent not in own:
            own[f.parent] = segment_outputs(f.parent)
        if f.name in own[f.parent]:
            skipped.append(f)
    files = [f for f in files if f not in skipped]
    if skipped and report is not None:
        report(f"skipped {len(skipped)} file(s) that sagegan segment wrote (named in their folder's "
               f"segment_manifest.json): {_listing(f.name for f in skipped)}")
    if not files:
        raise InputError(f"{', '.join(map(str, inputs))}: all {len(skipped)} image files are outputs of "
                         "sagegan segment (named in their folder's segment_manifest.json)")
    if split is not None:
        wanted = set(read_split(split) if isinstance(split, (str, Path)) else split)
        files = [f for f in files if _stem(f.name) in wanted]
        if not files:
            raise InputError(f"{split}: none of the inputs is named in the split")
    return files, skipped


def _write_particles_csv(out: Path, particles, kept: Sequence[str]) -> None:
    """``particles.csv``: this run's rows plus the earlier rows of the images it ``kept``."""
    import pandas as pd

    from .io import atomic_write

    earlier = None
    if kept and (out / "particles.csv").is_file():
        try:
            earlier = pd.read_csv(out / "particles.csv", dtype={"image": str})
        except (OSError, ValueError, pd.errors.ParserError):
            earlier = None
    if earlier is not None and "image" in earlier.columns:
        earlier = earlier[earlier["image"].astype(str).isin(kept)]
        table = pd.concat([earlier, particles], ignore_index=True) if len(particles) else earlier
    else:
        table = particles
    atomic_write(out / "particles.csv", lambda tmp: table.to_csv(tmp, index=False))


def segment_files(inputs: Sequence[str | Path], model: str | Path | Segmenter | None, out: str | Path,
                  nm_per_px: float | None = None, scale: str | float = "auto", tta: bool = False,
                  min_area_px: int | None = None, save_attention: bool = False, crop_bottom: int = 0,
                  split: str | Path | Sequence[str] | None = None, progress: bool = True,
                  report: Callable[[str], None] | None = None, max_pixels: int | None = MAX_PIXELS,
                  **options):
    """Segment micrographs and write labels, masks, overlays and ``particles.csv`` to ``out``.

    See :func:`segment_batch` (the outputs, the manifest, re-runs into the same folder, the
    one-line messages passed to ``report``).
    ``split`` (a file or a list of stems) keeps only the inputs it names. Returns this run's
    particles table (a pandas DataFrame, one row per particle of every image).

    Raises
    ------
    sagegan.io.BatchError
        Some images failed; the others were segmented and written.
    """
    batch = segment_batch(inputs, model, out, nm_per_px=nm_per_px, scale=scale, tta=tta, min_area_px=min_area_px,
                          save_attention=save_attention, crop_bottom=crop_bottom, split=split, progress=progress,
                          report=report, max_pixels=max_pixels, **options)
    if batch.failures:
        from .io import BatchError

        raise BatchError(batch.failures, len(batch.names))
    return batch.particles
