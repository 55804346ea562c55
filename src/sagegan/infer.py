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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import N_CLASSES, median_ecd, normalise_percentile, scale_factor_for
from .io import InputError
from .plot import overlay_heatmap, overlay_outlines
from .runs import MIN_AREA_FRACTION, Segmenter, load_segmenter


# ------------------------------------------------------------------------------- particle size


def estimate_diameter_autocorr(image: np.ndarray) -> float:
    """Typical particle diameter (px) from the radial autocorrelation of the image.

    For a disc of diameter D the normalised autocorrelation falls to one half at r = 0.404 D,
    so D ~ r_half / 0.404. The background trend is removed first; it is a first guess that the
    segmenter's own prediction refines.
    """
    from scipy import ndimage as ndi

    img = image.astype(np.float32)
    h, w = img.shape
    smooth = ndi.gaussian_filter(img, 1.0)
    trend = ndi.gaussian_filter(img, max(h, w) / 8)
    x = smooth - trend
    x -= x.mean()
    spectrum = np.abs(np.fft.rfft2(x, s=(2 * h, 2 * w))) ** 2
    acf = np.fft.irfft2(spectrum, s=(2 * h, 2 * w))
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


@torch.inference_mode()
def predict_maps(seg: Segmenter, image: np.ndarray, scale: float = 1.0, tta: bool = False,
                 tile: int = 1088, min_overlap: int = 64, with_gates: bool = False,
                 device: str | torch.device | None = None, keep_zoomed: bool = False) -> dict[str, np.ndarray]:
    """Class probabilities, normalised distance (and the finest gate map) at the input's size.

    ``image`` is a float array (H, W); ``scale`` zooms it before prediction. Tiles of at most
    ``tile`` px overlap by at least ``min_overlap`` px and are blended with Gaussian weights.
    ``keep_zoomed`` returns the maps at the zoomed size instead of the input's.
    """
    from monai.inferers import sliding_window_inference

    net = seg.fast_net
    device = device or next(net.parameters()).device
    h, w = image.shape
    x = torch.from_numpy(normalise_percentile(image))[None, None].to(device)
    if abs(scale - 1.0) > 1e-3:
        size = (max(int(round(h * scale)), 8), max(int(round(w * scale)), 8))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    roi = tuple(tile_side(n, tile, min_overlap, net.divisor) for n in x.shape[-2:])
    overlap = tuple(0.0 if n <= r else min_overlap / r for n, r in zip(x.shape[-2:], roi))

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.contiguous(memory_format=torch.channels_last)
        if with_gates and net.attention_gates:
            out, gates = net(batch, return_gates=True)
            extra = [gates[0]]
        else:
            out, extra = net(batch), []
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
    maps = maps[0].float().cpu().numpy()
    result = {"probs": maps[:N_CLASSES], "distance": maps[N_CLASSES]}
    if maps.shape[0] > N_CLASSES + 1:
        result["gate"] = maps[N_CLASSES + 1]
    return result


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
    from skimage.segmentation import watershed

    foreground = probs[0] < 1.0 - fg_threshold
    seeds, n = ndi.label((distance > seed_threshold) & foreground)
    labels = watershed(-distance, seeds, mask=foreground) if n else np.zeros(foreground.shape, np.int32)
    orphans, n_orphans = ndi.label(foreground & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    if min_area_px > 0 and labels.any():
        areas = np.bincount(labels.ravel())
        small = areas < min_area_px
        small[0] = False
        labels[small[labels]] = 0
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32))[0]


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


def default_min_area(canonical_diameter_px: float | None, scale: float, fraction: float = MIN_AREA_FRACTION) -> int:
    """Minimum particle area in input px: ``fraction`` of a canonical particle's area at zoom ``scale``."""
    d = canonical_diameter_px
    if not d:
        return 4
    return max(2, int(fraction * math.pi * (d / 2) ** 2 / scale ** 2))


# Zooms tried by ``scale="auto"``: 1/16 .. 4, a factor 2 apart, i.e. particles from ~6 px to ~380 px
# across for a canonical diameter of 24 px (the winner is then refined by up to sqrt(2) either way).
SEARCH_ZOOMS = tuple(2.0 ** k for k in range(-4, 3))


def search_zoom(seg: Segmenter, image: np.ndarray, zooms: Sequence[float] = SEARCH_ZOOMS,
                crop_px: int = 384, size_weight: float = 0.1,
                prior_weight: float = 0.1) -> tuple[float, float, list[dict[str, float]]]:
    """Zoom that brings the image's particles to the model's canonical diameter, found by the model.

    Image statistics alone (the autocorrelation) often misjudge the size; the segmenter itself
    knows better (BENCHMARKS.md). At each candidate zoom it segments a central
    crop (``crop_px`` px once zoomed, so every try costs about the same) and the zoom scores

        mean class confidence on the predicted foreground   (high where particles look as in training)
        - size_weight  * |log(median predicted diameter / canonical)|
        - prior_weight * max(0, |log(zoom / autocorrelation zoom)| - log 2)

    the last term only breaking ties far from the image-statistics guess. The winner's measured
    diameter then moves the zoom by at most sqrt(2). The weights were chosen on held-out EMPS
    training images (benchmarks/studies/scale_search.py). Returns (zoom, estimated median diameter in
    input px, one record per try).
    """
    canonical = float(seg.canonical_diameter_px)
    post = seg.postprocess
    h, w = image.shape
    prior = estimate_diameter_autocorr(image) * seg.config.get("autocorr_factor", 1.0)
    prior_zoom = zoom_for(prior, canonical) if math.isfinite(prior) and prior > 0 else None
    tries: list[dict[str, float]] = []
    for zoom in zooms:
        side = max(int(round(crop_px / zoom)), 16)
        ch, cw = min(h, side), min(w, side)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        # Everything below happens at the zoomed size (at most crop_px^2), so small zooms stay cheap.
        maps = predict_maps(seg, image[y0:y0 + ch, x0:x0 + cw], zoom, keep_zoomed=True)
        labels = instances_from_maps(maps["probs"], maps["distance"], post["fg_threshold"],
                                     post["seed_threshold"], default_min_area(canonical, 1.0))
        foreground = labels > 0
        diameter = median_ecd(labels)  # zoomed px; an image may hold one big particle
        confidence = float(maps["probs"].max(0)[foreground].mean()) if foreground.any() else 0.0
        size_error = abs(math.log(diameter / canonical)) if math.isfinite(diameter) else 9.0
        off_prior = max(0.0, abs(math.log(zoom / prior_zoom)) - math.log(2)) if prior_zoom else 0.0
        tries.append({"zoom": zoom, "diameter_px": diameter / zoom, "confidence": confidence,
                      "score": confidence - size_weight * size_error - prior_weight * off_prior})
    best = max(tries, key=lambda t: t["score"])
    if not math.isfinite(best["diameter_px"]):  # no particles at any zoom: fall back on image statistics
        return (prior_zoom or 1.0), prior, tries
    step = math.sqrt(2)
    zoom = float(np.clip(zoom_for(best["diameter_px"], canonical), best["zoom"] / step, best["zoom"] * step))
    return zoom, best["diameter_px"], tries


def segment_image(seg: Segmenter, image: np.ndarray, scale: str | float = "auto", tta: bool = False,
                  min_area_px: int | None = None, with_gates: bool = False, tile: int = 1088) -> Segmentation:
    """Segment one micrograph (float array) into particle instances at its own size.

    ``scale="auto"`` finds the zoom with :func:`search_zoom` (models trained at a canonical
    particle size); a number fixes the zoom.
    """
    canonical = seg.canonical_diameter_px
    post = seg.postprocess
    passes: list[float] = []
    estimate = float("nan")
    if scale == "auto" and canonical:
        zoom, estimate, tries = search_zoom(seg, image)
        passes = [t["zoom"] for t in tries]
    else:
        zoom = 1.0 if scale == "auto" else float(scale)
    if not (zoom > 0 and math.isfinite(zoom)):
        raise ValueError(f"scale must be 'auto' or a positive number, got {scale}")
    passes.append(zoom)
    maps = predict_maps(seg, image, zoom, tta=tta, tile=tile, with_gates=with_gates)
    area = default_min_area(canonical, zoom, post["min_area_fraction"]) if min_area_px is None else min_area_px
    labels = instances_from_maps(maps["probs"], maps["distance"], post["fg_threshold"],
                                 post["seed_threshold"], area)
    return Segmentation(labels, maps["probs"], maps["distance"], zoom, estimate, maps.get("gate"), passes)


def zoom_for(diameter_px: float, canonical: float) -> float:
    return scale_factor_for(diameter_px, canonical, limits=(SEARCH_ZOOMS[0] / 1.5, SEARCH_ZOOMS[-1] * 1.5))


# ------------------------------------------------------------------------------- files


def segment_files(inputs: Sequence[str | Path], model: str | Path | Segmenter, out: str | Path,
                  nm_per_px: float | None = None, scale: str | float = "auto", tta: bool = False,
                  min_area_px: int | None = None, save_attention: bool = False, crop_bottom: int = 0,
                  split: str | Path | Sequence[str] | None = None, progress: bool = True):
    """Segment micrographs and write labels, masks, overlays and ``particles.csv`` to ``out``.

    ``split`` (a file or a list of stems) keeps only the inputs it names. Returns the particles
    table (a pandas DataFrame, one row per particle of every image).
    """
    import pandas as pd

    from .io import _stem, expand_inputs, write_json, read_micrograph, read_split, write_image, write_labels
    from .particles import measure

    files = expand_inputs(inputs)
    if split is not None:
        wanted = set(read_split(split) if isinstance(split, (str, Path)) else split)
        files = [f for f in files if _stem(f.name) in wanted]
        if not files:
            raise InputError(f"{split}: none of the inputs is named in the split")
    seg = model if isinstance(model, Segmenter) else load_segmenter(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables, runs = [], []
    iterator: Any = files
    if progress:
        from rich.progress import track

        iterator = track(files, description="segmenting")
    for path in iterator:
        mg = read_micrograph(path, nm_per_px=nm_per_px, crop_bottom=crop_bottom)
        result = segment_image(seg, mg.image, scale=scale, tta=tta, min_area_px=min_area_px,
                               with_gates=save_attention)
        stem = path.stem
        write_labels(out / f"{stem}_labels.tif", result.labels)
        write_image(out / f"{stem}_mask.png", ((result.labels > 0) * 255).astype(np.uint8))
        write_image(out / f"{stem}_overlay.png", overlay_outlines(mg.image, result.labels))
        if save_attention and result.gate is not None:
            write_image(out / f"{stem}_attention.png", overlay_heatmap(mg.image, result.gate))
        table = measure(result.labels, mg.image, mg.nm_per_px)
        table.insert(0, "image", stem)
        tables.append(table)
        runs.append({"image": str(path), "n_particles": int(result.labels.max()), "scale": result.scale,
                     "passes": result.passes, "nm_per_px": mg.nm_per_px})
    particles = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    particles.to_csv(out / "particles.csv", index=False)
    write_json(out / "segment_config.json", {
        "model": str(seg.path) if seg.path else None, "scale": scale, "tta": tta, "min_area_px": min_area_px,
        "nm_per_px": nm_per_px, "crop_bottom": crop_bottom, "postprocess": seg.postprocess, "images": runs})
    return particles
