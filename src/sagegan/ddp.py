"""Training on several processes with PyTorch DDP: ``torchrun --nproc_per_node N -m sagegan train-seg ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`distributed_context` then
joins the process group (gloo on CPU, NCCL on GPUs, each rank on ``cuda:LOCAL_RANK``). Every rank
trains on its share of the global batch (``batch_size / WORLD_SIZE`` patches from its own random
stream: patches are drawn with replacement, so independent streams are the distributed sampler)
and DDP averages the gradients; rank 0 alone validates, tunes and writes the run folder. The
ranks agree on every decision that ends the run (the time budget by rank 0's clock, early
stopping, a signal to any rank) and on rank 0's learning rate after each validation.

BatchNorm: on GPUs the statistics are synchronised (SyncBatchNorm); this torch's SyncBatchNorm
refuses CPU tensors, so on CPU each rank normalises with its own share of the batch
(BENCHMARKS.md measures the difference). The batch-pooled Dice term is likewise per rank.
Without torchrun nothing here changes a run.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass
class Ranks:
    """Where this process stands among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``cuda:LOCAL_RANK`` for a CUDA run under torchrun; the device otherwise."""
        if self.active and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the {self.world_size} processes "
                             "of torchrun")
        return batch_size // self.world_size

    def agree(self, code: int) -> int:
        """The largest ``code`` over all ranks (0: go on; anything else: stop, and why)."""
        if not self.active:
            return code
        flag = torch.tensor([code], dtype=torch.int64, device=_collective_device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def share_learning_rate(self, optimizer: torch.optim.Optimizer) -> None:
        """Every rank takes rank 0's learning rate (its scheduler watches the validation score)."""
        if not self.active:
            return
        lr = torch.tensor([group["lr"] for group in optimizer.param_groups], dtype=torch.float64,
                          device=_collective_device())
        torch.distributed.broadcast(lr, src=0)
        for group, value in zip(optimizer.param_groups, lr.tolist()):
            group["lr"] = value

    def wrap(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``net`` for the training forward pass: DDP around it (SyncBatchNorm on GPUs) under
        torchrun, ``net`` itself otherwise. The module keeps its own parameters either way."""
        if not self.active:
            return net
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)


def _collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def ranks_from_env() -> Ranks:
    """The ranks torchrun gives this process (``WORLD_SIZE`` unset or 1: a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def sync_batchnorm(net: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """BatchNorm layers synchronised across the ranks of a GPU run (unchanged on CPU, where
    torch's SyncBatchNorm does not run)."""
    if ranks.active and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


@contextmanager
def distributed_context(device_name: str = "auto") -> Iterator[Ranks]:
    """Join torchrun's process group for the duration of a training run (nothing without torchrun)."""
    ranks = ranks_from_env()
    if not ranks.active or torch.distributed.is_initialized():
        yield ranks
        return
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield ranks
        # the other ranks wait while rank 0 tunes and saves: a rank that tears its connections
        # down early can abort the process group under the others
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()
