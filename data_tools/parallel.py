"""Progress reports and parallel work for the data tools: tqdm, a callback, or nothing; a process pool in order.

Standard library only at the top, so worker processes that import it start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Optional, TypeVar, Union

from ws_dan.common.runtime import default_workers

T = TypeVar("T")
R = TypeVar("R")

#: A progress report: ``True`` for a tqdm bar, ``False`` for none, or a callable ``(done, total, description)``.
Progress = Union[bool, Callable[[int, int, str], None]]


def track(iterable: Iterable[T], total: Optional[int] = None, desc: str = "",
          progress: Progress = False) -> Iterator[T]:
    """Iterate, reporting progress with tqdm (``progress=True``), a callback, or not at all."""
    if progress is True:
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
        return
    if callable(progress):
        n = total if total is not None else 0
        for i, item in enumerate(iterable, 1):
            yield item
            progress(i, n, desc)
        return
    yield from iterable


def _one_thread_per_worker() -> None:
    # Pool initializer. Each worker is one of ``workers`` processes sharing the cores, so its numpy must not start
    # a BLAS thread per core as well: with 2 workers x 2 OpenBLAS threads on 2 cores, the threads spin against
    # each other and hashing ran 3x slower than on one process (scripts/benchmark_dedupe.py, docs/scale.md).
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "torch" in sys.modules:  # imported with the parent (forked): same reasoning for its intra-op threads
        sys.modules["torch"].set_num_threads(1)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: Optional[int] = None, progress: Progress = False,
                 desc: str = "", chunksize: Optional[int] = None) -> Iterator[R]:
    """``map(fn, items)`` in order, over ``workers`` processes (all cores when None; 0 or 1: this process).

    ``fn`` must be a module-level function (or a functools.partial of one) so it can be sent to the workers.
    On Ctrl-C the pending work is cancelled rather than waited for.
    """
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) <= 1:
        yield from track(map(fn, items), total=len(items), desc=desc, progress=progress)
        return
    if chunksize is None:
        chunksize = max(1, min(64, len(items) // (workers * 8)))
    ex = ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=_one_thread_per_worker)
    try:
        yield from track(ex.map(fn, items, chunksize=chunksize), total=len(items), desc=desc, progress=progress)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
