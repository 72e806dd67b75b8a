"""File formats: one module per engine or container, each holding both directions for it.

=================  ==========================================  ============================================
module             traces                                      placements
=================  ==========================================  ============================================
safetensors_file   eplb's ``load`` tensor (sliced reading)     eplb's own: phy2log, log2phy, logcnt + topology
csv_file           long ``layer,expert,load``; wide            one row per slot
sglang             ``stat`` dumps (.json, .pt), per_pass       ``--init-expert-location`` .json / .pt
vllm               ``load_history`` JSON
trtllm             expert-statistic folders                    load balancer YAML
vllm_ascend                                                    expert map JSON
=================  ==========================================  ============================================

Shared pieces: :mod:`.source` (a path or standard input, read once),
:mod:`.jsonio`, :mod:`.limits` (memory checks), :mod:`.atomic` (atomic
writes), :mod:`.registry` (the two format lists and detection).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_LAZY = {
    "load_placement": "placement_io", "read_placement": "placement_io", "read_placement_source": "placement_io",
    "save_placement": "placement_io",
    "FOLDER_FORMATS": "registry", "PLACEMENT_FORMATS": "registry", "TRACE_FORMATS": "registry",
    "WRITE_FORMATS": "registry",
    "detect_format": "trace_io", "read_trace": "trace_io", "read_trace_source": "trace_io", "write_trace": "trace_io",
}
"""Public name -> its module: imported on first use (PEP 562), so the torch-free modules
(:mod:`.catalog`, :mod:`.source`, :mod:`.atomic`) load without the readers."""

__all__ = [
    "FOLDER_FORMATS",
    "PLACEMENT_FORMATS",
    "TRACE_FORMATS",
    "WRITE_FORMATS",
    "detect_format",
    "load_placement",
    "read_placement",
    "read_placement_source",
    "read_trace",
    "read_trace_source",
    "save_placement",
    "write_trace",
]

if TYPE_CHECKING:
    from .placement_io import load_placement, read_placement, read_placement_source, save_placement
    from .registry import FOLDER_FORMATS, PLACEMENT_FORMATS, TRACE_FORMATS, WRITE_FORMATS
    from .trace_io import detect_format, read_trace, read_trace_source, write_trace


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
