"""The strategy interface every placement algorithm implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..topology import Topology

SEED_RANGE = (-(1 << 63), (1 << 64) - 1)
"""Seeds ``torch.Generator.manual_seed`` takes."""


def torch_seed(seed: int) -> int:
    """Any integer as a seed torch takes: itself when torch takes it, else its value modulo 2**64.

    ``--seed`` accepts any integer; the ones torch already takes keep their meaning.
    """
    seed = int(seed)
    return seed if SEED_RANGE[0] <= seed <= SEED_RANGE[1] else seed % (1 << 64)


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
