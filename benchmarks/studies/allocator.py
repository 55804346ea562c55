"""Effect of the glibc malloc settings on CPU training and inference speed.

Runs the same timing child process twice, without and with
MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, and prints both (seconds per segmenter training
step at batch 8 x 256 x 256, inference MPix/s on a 2048 x 2048 image, peak RSS).

    python benchmarks/studies/allocator.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from sagegan import MALLOC_ENV as SETTINGS

CHILD = r"""
import json, resource, time
import numpy as np, torch
from sagegan.infer import predict_maps
from sagegan.runs import Segmenter
from sagegan.nets.attention_unet import AttentionUNet
torch.manual_seed(0)
net = AttentionUNet(1, 4)
opt = torch.optim.AdamW(net.parameters())
x = torch.randn(8, 1, 256, 256)
steps = []
for i in range(6):
    t = time.perf_counter(); net(x).square().mean().backward(); opt.step(); opt.zero_grad(); steps.append(time.perf_counter() - t)
net.eval()
seg = Segmenter(net, {"canonical_diameter_px": 24.0})
image = np.random.default_rng(0).random((2048, 2048)).astype(np.float32)
predict_maps(seg, image[:512, :512])
t = time.perf_counter(); predict_maps(seg, image); dt = time.perf_counter() - t
print(json.dumps({"train_step_s": float(np.median(steps[2:])), "inference_mpix_s": 2048 * 2048 / 1e6 / dt,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def run(with_settings: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    if with_settings:
        env.update(SETTINGS)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    plain, tuned = run(False), run(True)
    print(json.dumps({"default_malloc": plain, "tuned_malloc": tuned,
                      "train_speedup": plain["train_step_s"] / tuned["train_step_s"],
                      "inference_speedup": tuned["inference_mpix_s"] / plain["inference_mpix_s"]}, indent=2))
