"""Distributed training helpers: PyTorch's DistributedDataParallel, launched by ``torchrun``.

    torchrun --nproc_per_node 4 scripts/train.py --data-dir D --save-dir S            # one machine, 4 GPUs
    torchrun --nnodes 2 --node_rank 0 --rdzv_backend c10d --rdzv_endpoint host:29500 \\
             --nproc_per_node 8 scripts/train.py ...                                   # several machines

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK for every process; :func:`init_distributed` reads them. Without
them everything here is a no-op, so the same code runs in one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on the CPU); a no-op outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if info.world_size == 1:
        return info
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return info


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op in a single process); returns it."""
    if is_enabled():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index starting at ``rank``: each image on exactly one process, none repeated.

    (DistributedSampler pads the last shard with repeated images, which would count them twice in validation.)
    """

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@torch.no_grad()
def replicas_agree(model: torch.nn.Module, atol: float = 0.0) -> bool:
    """True when every process holds the same parameters and buffers (feature centers included).

    Compares a float64 checksum per tensor across processes; cheap enough to run after each epoch.
    """
    if not is_enabled():
        return True
    state = model.state_dict()
    sums = torch.stack([t.detach().double().sum() for t in state.values()])
    device = next(iter(state.values())).device
    sums = sums.to(device if device.type == "cuda" and dist.get_backend() == "nccl" else "cpu")
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.all((high - low).abs() <= atol))


@torch.no_grad()
def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm statistics, feature centers) to every process.

    DDP does this at the start of each forward; after the last training forward of an epoch each process has
    updated its own batch-norm statistics, so evaluation and checkpoints would otherwise differ by rank."""
    if not is_enabled():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src)
