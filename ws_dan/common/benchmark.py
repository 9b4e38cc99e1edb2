"""Measuring helpers for the benchmark scripts: seconds per call, resident memory, synthetic batches, tables.

Benchmarks compare variants side by side in one run (shared machines are noisy: ratios, not absolute times),
so these helpers only measure; what to measure is the scripts' choice.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Sequence
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (kernels run asynchronously; a timer would stop before they finish)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per call of ``fn``: ``warmup`` untimed calls (cuDNN autotuning, allocator, caches), then the mean
    of ``steps`` timed ones, synchronised before and after."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (getrusage: bytes on macOS, KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def random_batch(batch: int, size: int, num_classes: int, device: torch.device, channels_last: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (B, 3, size, size), targets (B,)) of random values: speed does not depend on pixel values."""
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, num_classes, (batch,), device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def markdown_table(rows: Sequence[dict], cols: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table; ``cols`` = (key, header, format spec; "" for str())."""
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(format(r[c[0]], c[2]) if c[2] else str(r[c[0]]) for c in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])
