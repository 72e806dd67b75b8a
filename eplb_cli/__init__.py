"""eplb: expert-parallel load balancing for Mixture-of-Experts serving.

A drop-in for DeepSeek's ``rebalance_experts`` (same arguments, same
``phy2log, log2phy, logcnt``) and the library behind the ``eplb`` command::

    import eplb_cli

    phy2log, log2phy, logcnt = eplb_cli.rebalance_experts(weight, num_replicas=288, num_groups=8,
                                                          num_nodes=4, num_gpus=32)
    trace = eplb_cli.load_trace("expert_distribution.json")
    result = eplb_cli.plan_load(trace.total(), eplb_cli.resolve(trace.experts, gpus=32, nodes=4))
    print(eplb_cli.evaluate(result.placement, trace).summary())

Importing the package loads torch and nothing heavier: file readers that need
pandas, and matplotlib for plots, are imported only when used.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .api import PlanResult, evaluate, load_trace, plan_load, rebalance_experts
from .errors import EplbError, GateFailed
from .metrics import Score
from .placement import PLACEMENT_FORMATS, Placement, load_placement, read_placement, save_placement
from .topology import Topology, resolve
from .trace import Trace

try:
    __version__ = version("eplb-cli")
except PackageNotFoundError:
    __version__ = "0+unknown"

_LAZY = {
    "read_trace": "traces",
    "write_trace": "traces",
    "TRACE_FORMATS": "traces",
    "inspect_trace": "inspection",
}
"""Names whose modules pull in pandas and friends: imported on first use (PEP 562)."""

__all__ = [
    "rebalance_experts", "load_trace", "plan_load", "evaluate", "PlanResult", "Score",
    "Placement", "Topology", "resolve", "Trace", "load_placement", "read_placement", "save_placement",
    "PLACEMENT_FORMATS", "EplbError", "GateFailed", "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
