"""Arrays read from files (nested lists, tensors) turned into traces, with messages that name the key."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import EplbError, quote
from ..trace import Trace


def list_tensor(values: Any) -> torch.Tensor:
    """Nested lists as a tensor; floats become float64 (torch's default float32 would round them)."""
    tensor = torch.as_tensor(values)
    if tensor.is_floating_point():
        tensor = torch.as_tensor(values, dtype=torch.float64)
    return tensor


INT64_MAX = (1 << 63) - 1


def why_not_array(values: Any, what: str, table: str = "array of numbers") -> str:
    """Why nested lists ``values`` are no rectangular ``table``, naming the first bad entry (or an overflow).

    For error messages only (a Python walk, run after ``as_tensor`` failed): the
    user learns whether a row is short, a cell is text, or a number overflows.
    """
    reason = _first_problem(values, what)
    if reason.startswith("!"):  # a number too large: the shape is fine, say only that
        return reason[1:]
    return f"{reason}; {what} must be a rectangular {table}"


def _first_problem(values: Any, what: str) -> str:
    shape = []
    node = values
    while isinstance(node, (list, tuple)):
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    stack: list[tuple[tuple[int, ...], Any]] = [((), values)]
    while stack:
        path, node = stack.pop()
        where = what + "".join(f"[{i}]" for i in path)
        depth = len(path)
        if depth < len(shape):
            if not isinstance(node, (list, tuple)):
                return f"{where} is {quote(node, 20)} where a list of {shape[depth]} belongs"
            if len(node) != shape[depth]:
                return f"{where} has {len(node)} entries but {what + '[0]' * depth} has {shape[depth]}"
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(node))))
            continue
        if isinstance(node, bool):
            return f"{where} is {str(node).lower()}, not a number"
        if isinstance(node, int):
            if not -INT64_MAX - 1 <= node <= INT64_MAX:
                return f"!{where} is {quote(node, 30)}, beyond the 64-bit integer range; check the export"
            continue
        if isinstance(node, float):
            continue
        kind = "text" if isinstance(node, str) else type(node).__name__
        return f"{where} is {kind} {quote(node, 20)}, not a number"
    return f"{what} has rows of different lengths"


def as_trace(load: Any, source: str, meta: dict | None = None, what: str = "load") -> Trace:
    """Build a Trace, naming the offending key ``what`` when the array itself is malformed."""
    if not isinstance(load, torch.Tensor):
        try:
            load = list_tensor(load)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise EplbError(f"{source}: {why_not_array(load, what)}") from None
    if load.dim() not in (2, 3):
        raise EplbError(
            f"{source}: {what} has shape {tuple(load.shape)}; "
            "it must be [layers, experts] or [windows, layers, experts]"
        )
    if load.dtype == torch.bool or load.is_complex():
        raise EplbError(f"{source}: {what} holds {load.dtype} values; loads must be real numbers (token counts)")
    return Trace(load, source, meta or {})
