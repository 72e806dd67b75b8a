"""The strategy interface every placement algorithm implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..topology import Topology


class Strategy(ABC):
    """Turns a load matrix into phy2log for a topology.

    ``plan`` receives float64 loads [L, E] (already on ``device``) and a
    topology whose ``excluded_gpus`` is empty (failed GPUs are handled by the
    caller, see :func:`eplb_cli.strategies.plan`), and returns int64 phy2log
    [L, S]: the logical expert held by each physical slot. It must be
    deterministic for a given ``seed``, batch over layers, and give every
    expert at least one slot and every GPU exactly ``S / G`` slots.
    """

    name: str = "strategy"
    description: str = ""

    @abstractmethod
    def plan(self, load: torch.Tensor, topo: Topology, *, seed: int = 0) -> torch.Tensor:
        """Return phy2log [L, S] int64 for ``load`` [L, E] float64."""
