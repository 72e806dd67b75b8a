"""Between torch and the compiled kernels: CPU NumPy arrays in, tensors out, rows spread over threads.

The kernels are loaded on first use (:func:`kernels`), so that Numba is
imported only when a plan runs. They release the GIL and treat every row
(a layer, or one node of a layer) on its own, so
:func:`eplb_cli.threads.by_rows` spreads blocks of rows over threads.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import numpy as np
import torch

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
