"""Between torch and the compiled kernels: CPU NumPy views in, tensors out, the kernels loaded on first use."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch


def kernels() -> ModuleType:
    """The compiled kernels (:mod:`.kernels`), imported here so that Numba loads only when a plan runs."""
    from . import kernels as module

    return module


def as_floats(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous float64 NumPy array with ``x``'s values (no copy when ``x`` already is one on CPU)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def as_ints(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous int64 NumPy array with ``x``'s values."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.int64).numpy())


def to_tensor(a: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``a`` as a tensor on ``device`` (sharing memory on CPU)."""
    return torch.from_numpy(a).to(device)
