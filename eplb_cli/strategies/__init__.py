"""Placement strategies: the DeepSeek baseline and batched chains of stages."""

from __future__ import annotations

import torch

from ..placement import Placement
from ..topology import Topology
from .base import Strategy
from .registry import describe_strategies, get_strategy

__all__ = ["Strategy", "describe_strategies", "get_strategy", "plan"]


def plan(load: torch.Tensor, topo: Topology, strategy: Strategy, *, seed: int = 0, device: str = "cpu") -> Placement:
    """Run ``strategy`` on ``load`` [L, E] and return a validated Placement.

    Excluded GPUs are cut out before the strategy runs (it plans over the live
    GPUs as if they were the whole cluster) and their slots are set to -1.
    """
    load = load.to(device=device, dtype=torch.float64)
    if not topo.excluded_gpus:
        return Placement(strategy.plan(load, topo, seed=seed), topo).validate()
    live = [g for g in range(topo.gpus) if g not in topo.excluded_gpus]
    per = topo.slots_per_gpu
    sub = Topology(experts=topo.experts, slots=len(live) * per, gpus=len(live), nodes=1, groups=1, policy="global")
    sub_phy2log = strategy.plan(load, sub, seed=seed).to("cpu")
    full = torch.full((load.shape[0], topo.slots), -1, dtype=torch.int64)
    live_slots = (torch.tensor(live).unsqueeze(1) * per + torch.arange(per)).flatten()
    full[:, live_slots] = sub_phy2log
    return Placement(full, topo).validate()
