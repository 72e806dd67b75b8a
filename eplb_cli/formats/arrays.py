"""Arrays read from files (nested lists, tensors) turned into traces, with messages that name the key."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import EplbError
from ..trace import Trace


def list_tensor(values: Any) -> torch.Tensor:
    """Nested lists as a tensor; floats become float64 (torch's default float32 would round them)."""
    tensor = torch.as_tensor(values)
    if tensor.is_floating_point():
        tensor = torch.as_tensor(values, dtype=torch.float64)
    return tensor


def as_trace(load: Any, source: str, meta: dict | None = None, what: str = "load") -> Trace:
    """Build a Trace, naming the offending key ``what`` when the array itself is malformed."""
    if not isinstance(load, torch.Tensor):
        try:
            load = list_tensor(load)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise EplbError(
                f"{source}: {what} is not a rectangular array of numbers; every row must have the same length"
            ) from None
    if load.dim() not in (2, 3):
        raise EplbError(
            f"{source}: {what} has shape {tuple(load.shape)}; "
            "it must be [layers, experts] or [windows, layers, experts]"
        )
    if load.dtype == torch.bool or load.is_complex():
        raise EplbError(f"{source}: {what} holds {load.dtype} values; loads must be real numbers (token counts)")
    return Trace(load, source, meta or {})
