"""eplb: expert-parallel load balancing for Mixture-of-Experts serving.

A drop-in for DeepSeek's ``rebalance_experts`` (same arguments, same
``phy2log, log2phy, logcnt``) and the library behind the ``eplb`` command::

    import eplb_cli

    phy2log, log2phy, logcnt = eplb_cli.rebalance_experts(weight, num_replicas=288, num_groups=8,
                                                          num_nodes=4, num_gpus=32)
    trace = eplb_cli.load_trace("expert_distribution.json")
    result = eplb_cli.plan_load(trace.total(), eplb_cli.resolve(trace.experts, gpus=32, nodes=4))
    print(eplb_cli.evaluate(result.placement, trace).summary())

Importing the package loads nothing: each name below is imported on first use
(PEP 562), so ``eplb --help`` never pays for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_LAZY = {
    "rebalance_experts": "api", "load_trace": "api", "plan_load": "api", "evaluate": "api", "PlanResult": "api",
    "follow_previous": "api", "plan_trace": "api", "evaluate_placement": "api", "replay_trace": "api",
    "compare_strategies": "api", "inspect_file": "api", "convert_file": "api", "generate_trace": "api",
    "ClusterOptions": "api", "TraceOptions": "api", "RobustOptions": "api", "robust_plan": "api",
    "EplbError": "errors", "GateFailed": "errors",
    "Score": "metrics",
    "Placement": "placement",
    "load_placement": "formats", "read_placement": "formats", "save_placement": "formats",
    "read_trace": "formats", "write_trace": "formats", "TRACE_FORMATS": "formats", "PLACEMENT_FORMATS": "formats",
    "Topology": "topology", "resolve": "topology",
    "Trace": "trace",
    "inspect_trace": "inspection",
    "moe_placement": "moe_layers",
}
"""Public name -> the module that defines it."""

__all__ = [
    "PLACEMENT_FORMATS",
    "TRACE_FORMATS",
    "EplbError",
    "GateFailed",
    "Placement",
    "PlanResult",
    "Score",
    "Topology",
    "Trace",
    "__version__",
    "compare_strategies",
    "convert_file",
    "evaluate",
    "evaluate_placement",
    "follow_previous",
    "generate_trace",
    "inspect_file",
    "inspect_trace",
    "load_placement",
    "load_trace",
    "moe_placement",
    "plan_load",
    "plan_trace",
    "read_placement",
    "read_trace",
    "rebalance_experts",
    "replay_trace",
    "resolve",
    "robust_plan",
    "save_placement",
    "write_trace",
]

if TYPE_CHECKING:
    from .api import (
        PlanResult,
        compare_strategies,
        convert_file,
        evaluate,
        evaluate_placement,
        follow_previous,
        generate_trace,
        inspect_file,
        load_trace,
        plan_load,
        plan_trace,
        rebalance_experts,
        replay_trace,
        robust_plan,
    )
    from .errors import EplbError, GateFailed
    from .formats import (
        PLACEMENT_FORMATS,
        TRACE_FORMATS,
        load_placement,
        read_placement,
        read_trace,
        save_placement,
        write_trace,
    )
    from .inspection import inspect_trace
    from .metrics import Score
    from .moe_layers import moe_placement
    from .placement import Placement
    from .topology import Topology, resolve
    from .trace import Trace


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("eplb-cli")
        except PackageNotFoundError:
            value = "0+unknown"
    elif name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
