"""Between torch and the compiled kernels: CPU NumPy arrays in, tensors out, rows spread over threads.

The kernels are loaded on first use (:func:`kernels`), so that Numba is
imported only when a plan runs. They release the GIL and treat every row
(a layer, or one node of a layer) on its own, so :func:`by_rows` hands
contiguous blocks of rows to as many threads as torch is set to use
(``torch.get_num_threads()``, so ``OMP_NUM_THREADS`` or
``torch.set_num_threads`` governs both): the result is the same for any
thread count.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from types import ModuleType

import numpy as np
import torch

MIN_ROWS = 8
"""Fewest rows worth a thread of their own."""

_pool: ThreadPoolExecutor | None = None
_told = False


def kernels() -> ModuleType:
    """The compiled kernels (:mod:`.kernels`), imported here so that Numba loads only when a plan runs.

    The first plan on a machine compiles them (about 40 s of CPU on a slow
    2-core machine) and Numba caches the machine code; when that cache is
    missing and standard error is a terminal, one line says so, so that the
    wait does not look like a hang.
    """
    global _told
    from . import kernels as module

    if not _told:
        _told = True
        if sys.stderr.isatty() and not compiled_before(module.dhondt_rows):
            print("eplb: compiling the planning kernels for this machine, once (up to a minute; "
                  "later runs load them from Numba's cache)", file=sys.stderr, flush=True)
    return module


def compiled_before(kernel: object) -> bool:
    """Whether Numba's cache holds machine code for ``kernel`` (True when that cannot be told)."""
    try:
        index = kernel._cache._cache_file._index_path  # type: ignore[attr-defined]
    except AttributeError:
        return True
    return os.path.exists(index)


def as_floats(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous float64 NumPy array with ``x``'s values (no copy when ``x`` already is one on CPU)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def as_ints(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous int64 NumPy array with ``x``'s values."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.int64).numpy())


def to_tensor(a: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``a`` as a tensor on ``device`` (sharing memory on CPU)."""
    return torch.from_numpy(a).to(device)


def by_rows(rows: int, work: Callable[[slice], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``work(block)`` for contiguous blocks of ``rows`` at once, outputs joined along their first axis.

    ``work`` must treat each row on its own (every output row depends only
    on the same input row); up to ``torch.get_num_threads()`` blocks of at
    least :data:`MIN_ROWS` rows run in parallel, the first in this thread.
    """
    global _pool
    parts = max(1, min(torch.get_num_threads(), rows // MIN_ROWS))
    if parts == 1:
        return work(slice(0, rows))
    if _pool is None or _pool._max_workers < parts - 1:
        _pool = ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="eplb-rows")
    edges = [rows * k // parts for k in range(parts + 1)]
    blocks = [slice(a, b) for a, b in pairwise(edges)]
    pending = [_pool.submit(work, block) for block in blocks[1:]]
    done = [work(blocks[0])] + [future.result() for future in pending]
    return tuple(np.concatenate(parts_) for parts_ in zip(*done))
