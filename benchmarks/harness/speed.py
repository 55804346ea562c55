"""The speed benchmark: inference MPix/s next to MONAI, peak RSS, training seconds per iteration.

Measured in a fresh process (``python -m benchmarks.harness.speed PARAMS_JSON``), for a clean
peak RSS: sagegan's ``predict_maps`` and MONAI's ``AttentionUnet`` with
``sliding_window_inference`` at the same tiles, interleaved; then real ``train_segmenter`` and
``train_gan`` runs whose steps are time-stamped by a :class:`StepClock` passed as their
``callbacks``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .cache import timed
from .context import MALLOC_VARS, Context
from .datasets import REPO, SIM_LAYOUTS

INFERENCE_NOTE = ("sagegan.infer.predict_maps(scale=1, tta=False): percentile normalisation, sliding window "
                  "(Gaussian blending, sw_batch_size 2), softmax + distance maps, default AttentionUNet widths "
                  "(16..256), untrained weights; MONAI: monai.networks.nets.AttentionUnet(channels=(16,32,64,128,256), "
                  "strides=(2,2,2,2)) with monai.inferers.sliding_window_inference at the same roi, overlap and "
                  "blending; median of interleaved repeats after one warm-up each, same process")
RSS_NOTE = ("peak RSS of a fresh process (VmHWM of /proc/self/status) after our inference, before MONAI ran; "
            "ru_maxrss_mb: resource.getrusage's figure at the same point, which on Linux also carries the parent "
            "process's peak across fork + exec; baseline: RSS after imports, model and image were built")


class StepClock:
    """Time stamps (wall and process CPU) of the end of every training step, via the trainers'
    ``callbacks``; the median interval is the time of one iteration (setup, saving excluded)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def callbacks(self):
        from sagegan.progress import TrainingCallbacks

        def on_step(step: int, info: dict) -> None:
            self.wall.append(time.monotonic())
            self.cpu.append(time.process_time())

        return TrainingCallbacks(on_step=on_step)

    def seconds_per_step(self) -> float:
        return float(np.median(np.diff(self.wall)))

    def cpu_seconds_per_step(self) -> float:
        return float(np.median(np.diff(self.cpu)))


def run_speed(ctx: Context) -> None:
    if ctx.store.has(benchmark="speed", dataset="simulated", method="attention_unet", k=None, seed=0, subset="all"):
        ctx.console.log("[dim]skip speed: in results.json")
        return
    s = ctx.settings
    work = (ctx.out / "runs" / "speed_tmp").resolve()
    params = {"size": s.speed_size, "patch": s.speed_patch, "repeats": s.speed_repeats, "device": s.device,
              "quick": s.quick, "workdir": str(work)}
    ctx.console.log(f"speed: inference on a {s.speed_size}x{s.speed_size} image, training iterations at "
                    f"{s.speed_patch}x{s.speed_patch} (in a fresh process, for a clean peak RSS)")
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.harness.speed", json.dumps(params)],
                              capture_output=True, text=True, env=os.environ.copy(), cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"speed child failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:
        ctx.failures.append(f"speed: {exc!r}")
        ctx.console.print(f"[red]{exc}")
        return
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = ctx.base_row("speed", "speed", "simulated", "attention_unet", None, 0, "all")
    row.update(result)
    row.update(cpu_seconds=result["child_cpu_seconds"], train_seconds=None, n_test_images=1,
               config={"settings": asdict(s), "argv": sys.argv[1:]})
    ctx.add(row)


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _peak_rss_mb() -> tuple[float, float]:
    """(VmHWM of this process image, resource.getrusage ru_maxrss), in MiB.

    On Linux ru_maxrss survives fork + exec: a child started by a large parent reports at least
    the parent's peak, so the high-water mark of /proc/self/status is the figure to use there.
    """
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, maxrss
    except (OSError, ValueError, IndexError):
        pass
    return maxrss, maxrss


def speed_samples(patch: int) -> list:
    """The four simulated labelled images the training-speed measurements train on."""
    from sagegan.io import Sample
    from sagegan.simulate import simulate_micrograph

    sims = [simulate_micrograph(max(2 * patch, 256), layout=SIM_LAYOUTS[i % 4], seed=[3, i], mean_diameter_px=24.0)
            for i in range(4)]
    return [Sample(f"s{i}", sim.image, sim.labels) for i, sim in enumerate(sims)]


def measure_inference(size: int, repeats: int, device) -> dict:
    """sagegan's tiled inference against MONAI's sliding window on a ``size`` x ``size`` image."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import AttentionUnet

    from sagegan.infer import predict_maps, tile_side
    from sagegan.nets.attention_unet import AttentionUNet
    from sagegan.runs import Segmenter
    from sagegan.simulate import simulate_micrograph
    from sagegan.train_seg import SegTrainConfig

    torch.manual_seed(0)
    cfg = SegTrainConfig()
    net = AttentionUNet.from_config(cfg.model_config()).to(device).eval()
    seg = Segmenter(net, {"model": cfg.model_config(), "canonical_diameter_px": cfg.canonical_diameter_px})
    unit = simulate_micrograph(512, layout="hex", modality="sem", seed=0).image
    reps = -(-size // unit.shape[0])
    image = np.ascontiguousarray(np.tile(unit, (reps, reps))[:size, :size])
    tile, min_overlap = 1088, 64   # predict_maps' defaults; MONAI gets the same tiles below
    baseline_rss = _rss_mb()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours():
        predict_maps(seg, image, scale=1.0, tta=False, tile=tile, min_overlap=min_overlap)
        sync()

    monai_net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=4, channels=(16, 32, 64, 128, 256),
                              strides=(2, 2, 2, 2)).to(device).eval()
    roi = tuple(tile_side(n, tile, min_overlap, net.divisor) for n in image.shape)
    overlap = tuple(0.0 if n <= r else min_overlap / r for n, r in zip(image.shape, roi))
    x = torch.from_numpy(image)[None, None].to(device)

    def monai_run():
        with torch.inference_mode():
            sliding_window_inference(x, roi, sw_batch_size=1, predictor=monai_net, overlap=overlap, mode="gaussian",
                                     padding_mode="reflect")
        sync()

    ours()                        # warm-up
    peak_ours, maxrss_ours = _peak_rss_mb()  # before MONAI has run: the peak of our inference
    monai_run()                   # warm-up
    t_ours, t_monai = [], []
    for _ in range(repeats):      # interleaved, so that load changes hit both alike
        t_ours.append(timed(ours)[1])
        t_monai.append(timed(monai_run)[1])
    ours_s, monai_s = float(np.median(t_ours)), float(np.median(t_monai))
    mpix = image.size / 1e6
    return {"image_size": size, "tile": tile, "overlap": overlap, "repeats": repeats,
            "inference_seconds": ours_s, "inference_mpix_per_s": mpix / ours_s,
            "monai_inference_seconds": monai_s, "monai_inference_mpix_per_s": mpix / monai_s,
            "speed_ratio_vs_monai": monai_s / ours_s, "inference_note": INFERENCE_NOTE,
            "peak_rss_mb": peak_ours, "ru_maxrss_mb": maxrss_ours, "baseline_rss_mb": baseline_rss,
            "rss_note": RSS_NOTE}


def measure_training(patch: int, n_steps: int, device: str, work: Path) -> dict:
    """Seconds per iteration of real train_segmenter and train_gan runs (median step interval)."""
    from sagegan.train_gan import GanTrainConfig, train_gan
    from sagegan.train_seg import SegTrainConfig, train_segmenter

    samples = speed_samples(patch)
    shutil.rmtree(work, ignore_errors=True)
    seg_clock, gan_clock = StepClock(), StepClock()
    cfg = replace(SegTrainConfig(), epochs=n_steps, batch_size=8, patch_size=patch, val_every=10 ** 6, device=device)
    seg_run = train_segmenter(samples, work / "seg", cfg, val=[], progress=False, callbacks=seg_clock.callbacks())
    gcfg = GanTrainConfig(patch_size=patch, batch_size=2, steps=n_steps, warmup_steps=1, ramp_steps=1,
                          val_every=10 ** 6, sample_every=10 ** 6, seed=0, device=device)
    train_gan(samples, seg_run, work / "gan", gcfg, val=[], progress=False, callbacks=gan_clock.callbacks())
    return {
        "seg_train_s_per_iter": seg_clock.seconds_per_step(), "seg_train_batch": 8, "seg_train_patch": patch,
        "seg_train_note": f"a real train_segmenter run of {n_steps} steps (default widths); median interval between "
                          "the ends of consecutive steps (batch sampling with augmentation, forward, loss, backward, "
                          "AdamW step), stamped by TrainingCallbacks.on_step; setup, validation and saving excluded",
        "gan_train_s_per_iter": gan_clock.seconds_per_step(), "gan_train_batch": 2, "gan_train_patch": patch,
        "gan_train_note": f"a real train_gan run of {n_steps} steps (default GanTrainConfig networks, after warm-up "
                          "from step 1); median interval between the ends of consecutive steps: one iteration = "
                          "generator + segmenter update and both discriminators' update; setup and saving excluded",
    }


def speed_child(params: dict) -> dict:
    """Runs in a fresh process: inference (ours vs MONAI, interleaved) then training iterations."""
    c0 = time.process_time()
    import torch

    from sagegan.runs import resolve_device

    device = resolve_device(params["device"])
    result = measure_inference(int(params["size"]), int(params["repeats"]), device)
    result.update(measure_training(int(params["patch"]), 4 if params["quick"] else 8, params["device"],
                                   Path(params["workdir"])))
    malloc = {v: os.environ.get(v) for v in MALLOC_VARS}
    result.update(malloc_env=malloc, malloc_env_set=all(malloc.values()),
                  malloc_note="benchmarks/run.py re-executes itself with the sagegan CLI's glibc malloc settings "
                              "unless they are set already or SAGEGAN_NO_MALLOC_TUNING is set",
                  torch_threads=torch.get_num_threads(), device=str(device),
                  child_cpu_seconds=time.process_time() - c0)
    return result


if __name__ == "__main__":
    from sagegan.io import json_ready

    print(json.dumps(json_ready(speed_child(json.loads(sys.argv[1])))))
