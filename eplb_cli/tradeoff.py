"""The policy choice: the plan under the chosen policy next to the plan under the other one.

Both policies apply when expert groups divide over several nodes. The
hierarchical policy keeps each group on one node, so a token whose experts come
from few groups (group-limited routing) reaches few nodes; the global policy
places replicas anywhere and balances the GPUs better. :class:`Tradeoff` holds
both sides' figures (balance from :mod:`eplb_cli.metrics`, token span from
:mod:`eplb_cli.span`) and says whether they differ enough to mention.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .span import Span
from .topology import Topology

BALANCE_MARGIN = 0.01
"""Relative difference in the summed busiest-GPU load (sum over layers of max GPU load) worth a mention."""
SPAN_MARGIN = 0.05
"""Difference in expected nodes per token worth a mention."""


def other_policy(topo: Topology) -> str | None:
    """The policy ``topo`` could run instead of its own, or None when only one applies.

    Both apply with several groups dividing over several nodes and no excluded
    GPU (on one node they coincide; excluded GPUs need the global policy).
    """
    if topo.nodes > 1 and topo.groups > 1 and topo.groups % topo.nodes == 0 and not topo.excluded_gpus:
        return "global" if topo.hierarchical else "hierarchical"
    return None


def with_policy(topo: Topology, policy: str) -> Topology:
    """``topo`` under ``policy`` (one that :func:`other_policy` allows)."""
    return dataclasses.replace(topo, policy=policy)


@dataclass
class PolicyFigures:
    """One policy's plan as the choice sees it: balance summary, token span, planning time."""

    policy: str
    summary: dict
    span: Span | None
    runtime_ms: float
    recorded: Span | None = None

    @property
    def node_span(self) -> float | None:
        """Nodes per token: over the engine's recorded tokens when there are some, else the routing model's."""
        if self.recorded is not None:
            return self.recorded.node_span
        return self.span.node_span if self.span is not None else None

    def as_dict(self) -> dict:
        spans = self.span.summary() if self.span is not None else dict.fromkeys(("node_span", "node_span_worst", "gpu_span"))
        recorded = self.recorded
        return {"policy": self.policy, **self.summary, **spans,
                "recorded_node_span": recorded.node_span if recorded else None,
                "recorded_gpu_span": recorded.gpu_span if recorded else None, "runtime_ms": self.runtime_ms}


@dataclass
class Tradeoff:
    """The chosen policy against the other: what each reaches and whether they differ."""

    chosen: PolicyFigures
    other: PolicyFigures

    @property
    def load_ratio(self) -> float:
        """Summed busiest-GPU load of the chosen plan over the other's (> 1: the chosen balances worse).

        Both plans serve the same load on the same GPUs, so the ratio of their
        balancedness (sum of mean / sum of max) is the inverse ratio of their
        summed maxima.
        """
        mine, theirs = self.chosen.summary["balancedness"], self.other.summary["balancedness"]
        return theirs / mine if mine > 0 else math.nan

    @property
    def span_delta(self) -> float | None:
        """Nodes per token, chosen minus other (None without a routing rule or recorded tokens)."""
        a, b = self.chosen.node_span, self.other.node_span
        return None if a is None or b is None or math.isnan(a) or math.isnan(b) else a - b

    @property
    def differs(self) -> bool:
        """Whether the policies differ by more than :data:`BALANCE_MARGIN` in balance or :data:`SPAN_MARGIN` in span."""
        delta = self.span_delta
        return abs(self.load_ratio - 1.0) > BALANCE_MARGIN or (delta is not None and abs(delta) > SPAN_MARGIN)

    def as_dict(self) -> dict:
        """The other policy's figures with the comparison (``plan --json``'s ``policy_alternative``)."""
        return {**self.other.as_dict(), "busiest_gpu_load_ratio": self.load_ratio,
                "node_span_delta": self.span_delta, "differs": self.differs}
