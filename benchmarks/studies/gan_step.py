#!/usr/bin/env python
"""Seconds per SAGE-GAN iteration: a real ``train_gan`` run on simulated data, nothing else.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 \\
        python benchmarks/studies/gan_step.py [--steps 12] [--patch 256] [--mask-path detached] [--seg-norm frozen] \\
            [--style-encoder]

The same measurement as the GAN part of ``benchmarks/run.py --only speed`` (batch 2, default
networks, warm-up over after step 1, median interval between the ends of consecutive steps,
stamped through the trainer's ``callbacks``), as a separate script so that two versions of the
code can be timed one after the other on the same machine (``PYTHONPATH=<checkout>/src``).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from benchmarks.harness.context import MALLOC_VARS  # noqa: E402
from benchmarks.harness.speed import StepClock, speed_samples  # noqa: E402  (the speed benchmark's clock and data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--mask-path", default=None, help="detached | soft | straight-through (default: GanTrainConfig's)")
    p.add_argument("--seg-norm", default=None, help="train | frozen (default: GanTrainConfig's)")
    p.add_argument("--precision", default=None, help="fp32 | bf16 (default: GanTrainConfig's)")
    p.add_argument("--style-encoder", action="store_true", help="train with the style encoder")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the cores)")
    args = p.parse_args(argv)

    import torch

    import sagegan
    from sagegan.train_gan import GanTrainConfig, train_gan
    from sagegan.train_seg import SegTrainConfig, train_segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    samples = speed_samples(args.patch)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seg_run = train_segmenter(samples, work / "seg", replace(SegTrainConfig(), epochs=1, batch_size=8,
                                                                 patch_size=args.patch, val_every=10 ** 6),
                                  val=[], progress=False)
        cfg = GanTrainConfig(patch_size=args.patch, batch_size=2, steps=args.steps, warmup_steps=1, ramp_steps=1,
                             val_every=10 ** 6, sample_every=10 ** 6, seed=0,
                             # passed only when asked for, so that the defaults are GanTrainConfig's own
                             **({"mask_path": args.mask_path} if args.mask_path else {}),
                             **({"segmenter_norm": args.seg_norm} if args.seg_norm else {}),
                             **({"precision": args.precision} if args.precision else {}),
                             **({"style_encoder": True} if args.style_encoder else {}))
        clock = StepClock()
        start = time.process_time()
        train_gan(samples, seg_run, work / "gan", cfg, val=[], progress=False, callbacks=clock.callbacks())
        cpu = time.process_time() - start
    intervals = np.diff(clock.wall)
    print(json.dumps({"gan_s_per_iter": round(clock.seconds_per_step(), 3),
                      "gan_cpu_s_per_iter": round(clock.cpu_seconds_per_step(), 3),
                      "intervals": [round(float(t), 3) for t in intervals], "cpu_seconds": round(cpu, 1),
                      "sagegan": str(Path(sagegan.__file__).parent), "torch_threads": torch.get_num_threads(),
                      "malloc_env_set": all(os.environ.get(v) for v in MALLOC_VARS),
                      **vars(args), "mask_path_used": cfg.mask_path, "segmenter_norm_used": cfg.segmenter_norm,
                      "precision_used": cfg.precision, "style_encoder_used": cfg.style_encoder}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
