"""vLLM: the expert-load history JSON that vLLM's EPLB benchmarks and the ADRS study use (traces).

``{"load_history": [{"logical_expert_load": [[...] * E] * L}, ...]}``, one
window per entry.
"""

from __future__ import annotations

import torch

from ..errors import EplbError
from ..trace import Trace
from .arrays import as_trace
from .base import TraceFormat
from .jsonio import json_bytes, nested_numbers
from .source import Source


def read_load_history(src: Source) -> Trace:
    """vLLM/ADRS ``{"load_history": [{"logical_expert_load": [L][E]}, ...]}``."""
    obj = src.json()
    source = src.name
    history = obj.get("load_history") if isinstance(obj, dict) else None
    if not isinstance(history, list):
        raise EplbError(f"{source}: 'load_history' must be a list of entries; give a vLLM expert-load JSON")
    if not history:
        raise EplbError(f"{source}: 'load_history' is empty; record at least one step")
    windows: list[torch.Tensor] = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "logical_expert_load" not in entry:
            raise EplbError(f"{source}: load_history[{i}] has no 'logical_expert_load'; fix that entry")
        load = as_trace(entry["logical_expert_load"], source, what=f"load_history[{i}].logical_expert_load").load
        if load.shape[0] != 1:
            raise EplbError(
                f"{source}: load_history[{i}].logical_expert_load must be [layers, experts], "
                f"got shape {tuple(load.shape)}; fix that entry"
            )
        if windows and load.shape != windows[0].shape:
            raise EplbError(
                f"{source}: load_history[{i}] has shape {tuple(load.shape[1:])} but entry 0 has "
                f"{tuple(windows[0].shape[1:])}; every entry must have the same layers and experts"
            )
        windows.append(load)
    return as_trace(torch.cat(windows), source)


def write_load_history(trace: Trace) -> bytes:
    """vLLM/ADRS JSON: one ``load_history`` entry per window."""
    return json_bytes({"load_history": [{"logical_expert_load": nested_numbers(w)} for w in trace.load]})


def _claims(src: Source) -> bool:
    doc = src.json()
    return isinstance(doc, dict) and "load_history" in doc


LOAD_HISTORY = TraceFormat("vllm", "json", read_load_history, write_load_history, claims=_claims,
                           hint="'load_history' (vLLM)")
