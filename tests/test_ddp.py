"""Training under torchrun (PyTorch DDP, gloo on CPU): one run folder, gradients of the global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import simulated_samples, write_data_folder

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WIDTHS = (8, 16, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch(n: int = 4, size: int = 64):
    from sagegan.data import make_batch, prepare

    items = [prepare(s, 14.0) for s in simulated_samples(2, size=96)]
    image, classes, distance, weights = make_batch(items, n, size, np.random.default_rng(0))
    return (torch.from_numpy(image)[:, None], torch.from_numpy(classes).long(), torch.from_numpy(distance),
            torch.from_numpy(weights))


def _net(norm: str):
    from sagegan.losses import OUT_CHANNELS
    from sagegan.nets.attention_unet import AttentionUNet

    torch.manual_seed(0)
    return AttentionUNet(1, OUT_CHANNELS, widths=WIDTHS, norm=norm)


def _grads(net, image, classes, distance, weights):
    from sagegan.losses import segmentation_loss

    net.zero_grad()
    segmentation_loss(net(image), classes, distance, weights).backward()
    return [p.grad.detach().clone() for p in net.parameters()]


def _rank(rank: int, port: int, norm: str, out: str) -> None:
    from sagegan.ddp import Ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    ranks = Ranks(rank, 2, rank)
    net = _net(norm)
    half = [t[rank * 2:(rank + 1) * 2] for t in _global_batch()]
    grads = _grads(ranks.wrap(net, torch.device("cpu")), *half)
    if rank == 0:
        torch.save(grads, out)
    dist.barrier()  # no rank tears the group down while another still uses it
    dist.destroy_process_group()


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_ddp_gradients_match_one_process_on_the_global_batch(norm, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "grads.pt"
    mp.spawn(_rank, args=(_free_port(), norm, str(out)), nprocs=2)
    ddp = torch.load(out)
    batch = _global_batch()
    net = _net(norm)
    halves = [_grads(net, *[t[i * 2:(i + 1) * 2] for t in batch]) for i in range(2)]
    whole = _grads(net, *batch)
    # what DDP computes: the mean of the ranks' gradients, exactly
    for g, a, b in zip(ddp, *halves):
        torch.testing.assert_close(g, (a + b) / 2, rtol=1e-4, atol=1e-6)
    # against one process on the same 4 patches: only the batch-pooled terms differ (the Dice term,
    # and with BatchNorm the statistics, which CPU ranks cannot synchronise)
    flat = lambda gs: torch.cat([x.flatten() for x in gs])  # noqa: E731
    rel = ((flat(ddp) - flat(whole)).norm() / flat(whole).norm()).item()
    cos = torch.nn.functional.cosine_similarity(flat(ddp), flat(whole), dim=0).item()
    print(f"{norm}: relative gradient difference {rel:.3f}, cosine {cos:.4f}")
    assert cos > (0.999 if norm == "instance" else 0.95)


def test_torchrun_trains_and_rank0_writes_the_run(tmp_path):
    data = write_data_folder(simulated_samples(4), tmp_path / "data")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(_free_port()), "-m", "sagegan", "train-seg", "--data", str(data),
                             "--out", str(run), "--widths", "8,16,32", "--patch-size", "64", "--batch-size", "4",
                             "--max-steps", "4", "--val-every", "2", "--seed", "0"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((run / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo", "batch_per_rank": 2}
    assert config["steps"] == 4 and config["stop_reason"] == "epochs"
    assert result.stdout.count("segmenter written to") == 1  # rank 0 speaks for the run
    log = (run / "train_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["2", "4"]  # one log, rank 0's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]  # nothing else written
