"""Threads: one torch thread for loops of small tensor operations, blocks of rows over threads for compiled loops.

The compiled (Numba) loops release the GIL and treat every row (a layer,
or one node of a layer) on its own, so :func:`by_rows` hands contiguous
blocks of rows to as many threads as torch is set to use
(``torch.get_num_threads()``, so ``OMP_NUM_THREADS`` or
``torch.set_num_threads`` governs both; a region narrowed to fewer torch
threads by :func:`torch_threads` keeps the outer count for them): the
result is the same for any thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise

import numpy as np
import torch

MIN_ROWS = 8
"""Fewest rows worth a thread of their own."""

_pool: ThreadPoolExecutor | None = None
_outer: int | None = None  # torch's thread count outside torch_threads, while inside it


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the body on ``count`` torch intra-op threads (None: as set), restoring the setting after.

    Compiled loops (:func:`by_rows`) inside the body keep the thread count set
    outside it: the narrowing is for torch's small operations, not for them.
    """
    global _outer
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    outer = _outer
    _outer = before if outer is None else outer
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        _outer = outer


@contextmanager
def one_thread(device: torch.device | str | None = None) -> Iterator[None]:
    """Run the body on one torch intra-op thread (see :func:`torch_threads`), restoring the setting after.

    Loops of many small operations (strategy chains, budget walks, LP
    dispatch, token spans: tensors of ~10^4 elements) run fastest on
    one thread: a second OpenMP thread saves nothing on them but adds a barrier
    per operation, which costs several times more when another process holds
    the other core. With a CUDA ``device`` the setting is left alone.
    """
    with torch_threads(None if device is not None and torch.device(device).type != "cpu" else 1):
        yield


def row_threads() -> int:
    """Threads for compiled row loops: torch's thread count, as set outside any :func:`torch_threads` narrowing."""
    return _outer if _outer is not None else torch.get_num_threads()


def by_rows(rows: int, work: Callable[[slice], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``work(block)`` for contiguous blocks of ``rows`` at once, outputs joined along their first axis.

    ``work`` must treat each row on its own (every output row depends only
    on the same input row); up to :func:`row_threads` blocks of at
    least :data:`MIN_ROWS` rows run in parallel, the first in this thread.
    """
    global _pool
    parts = max(1, min(row_threads(), rows // MIN_ROWS))
    if parts == 1:
        return work(slice(0, rows))
    if _pool is None or _pool._max_workers < parts - 1:
        _pool = ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="eplb-rows")
    edges = [rows * k // parts for k in range(parts + 1)]
    blocks = [slice(a, b) for a, b in pairwise(edges)]
    pending = [_pool.submit(work, block) for block in blocks[1:]]
    done = [work(blocks[0])] + [future.result() for future in pending]
    return tuple(np.concatenate(parts_) for parts_ in zip(*done))
