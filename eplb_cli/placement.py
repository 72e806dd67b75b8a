"""Placement: which logical expert each physical slot holds.

phy2log [L, S] is the source of truth; logcnt [L, E] and log2phy [L, E, R] are
derived from it (DeepSeek's names and meaning). Slots of excluded GPUs hold -1.
``layer_ids`` keeps the model's layer id of each row: a placement holds MoE
layers only (dense layers, the zero rows of an engine dump, have no experts
to place), and formats keyed by model layer id need the ids back. Files are
read and written by :mod:`eplb_cli.formats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch

from .errors import EplbError
from .topology import Topology


@dataclass
class Placement:
    """A validated placement of replicas onto slots for one topology.

    ``layer_ids``: the model's layer id of each row, increasing (DeepSeek-V3:
    3..60); None when the source did not say, and rows then count 0, 1, ...
    """

    phy2log: torch.Tensor
    topology: Topology
    layer_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.phy2log = self.phy2log.to("cpu", torch.int64).contiguous()
        if self.layer_ids is not None:
            self.layer_ids = tuple(int(i) for i in self.layer_ids)

    @property
    def layers(self) -> int:
        return int(self.phy2log.shape[0])

    @property
    def ids(self) -> list[int]:
        """The model layer id of each row (0..L-1 when not known)."""
        return list(self.layer_ids) if self.layer_ids is not None else list(range(self.layers))

    def select(self, rows: Sequence[int], ids: Sequence[int] | None = None) -> Placement:
        """The placement of rows ``rows`` only, with model layer ids ``ids`` (default: theirs)."""
        index = torch.as_tensor(list(rows), dtype=torch.int64)
        chosen = [self.ids[r] for r in rows] if ids is None else list(ids)
        return Placement(self.phy2log[index], self.topology, tuple(chosen))

    @property
    def logcnt(self) -> torch.Tensor:
        """Replicas per expert, int64 [L, E]."""
        return replica_counts(self.phy2log, self.topology.experts)

    @property
    def log2phy(self) -> torch.Tensor:
        """Slots of each expert in increasing order, -1 padded, int64 [L, E, R]."""
        return slots_of_experts(self.phy2log, self.topology.experts)

    def gpu_of_slot(self) -> torch.Tensor:
        """GPU of each slot, int64 [S]."""
        return torch.arange(self.topology.slots) // self.topology.slots_per_gpu

    def validate(self, source: str = "placement") -> Placement:
        """Check shape, id range and that every expert has a replica on a live GPU."""
        topo = self.topology
        p = self.phy2log
        if p.dim() != 2 or p.shape[1] != topo.slots:
            raise EplbError(f"{source}: phy2log must be [layers, {topo.slots}], got {tuple(p.shape)}")
        if p.shape[0] < 1:
            raise EplbError(f"{source}: placement has no layers")
        ids = self.layer_ids
        if ids is not None and (len(ids) != p.shape[0] or min(ids) < 0
                                or any(b <= a for a, b in pairwise(ids))):
            raise EplbError(f"{source}: {len(ids)} layer ids for {p.shape[0]} layers; "
                            "give one id per layer, non-negative and increasing")
        dead = torch.zeros(topo.slots, dtype=torch.bool)
        if topo.excluded_gpus:
            dead = torch.isin(self.gpu_of_slot(), torch.tensor(topo.excluded_gpus))
        if ((p < 0) & ~dead).any() or (p[:, dead] != -1).any():
            raise EplbError(f"{source}: -1 (empty slot) is only allowed on excluded GPUs' slots")
        if (p >= topo.experts).any():
            raise EplbError(
                f"{source}: expert id {int(p.max())} out of range for {topo.experts} experts; "
                "was the placement made for another model?"
            )
        cnt = self.logcnt
        if (cnt < 1).any():
            layer, expert = (cnt < 1).nonzero()[0].tolist()
            raise EplbError(f"{source}: expert {expert} of layer {layer} has no replica; every expert needs one")
        return self


def replica_counts(phy2log: torch.Tensor, experts: int) -> torch.Tensor:
    """Count replicas of each expert per layer, ignoring empty (-1) slots."""
    layers = phy2log.shape[0]
    live = phy2log >= 0
    cnt = torch.zeros(layers, experts + 1, dtype=torch.int64, device=phy2log.device)
    idx = torch.where(live, phy2log, torch.full_like(phy2log, experts))
    cnt.scatter_add_(1, idx, torch.ones_like(idx))
    return cnt[:, :experts]


def slots_of_experts(phy2log: torch.Tensor, experts: int) -> torch.Tensor:
    """Invert phy2log into log2phy [L, E, R] (R = most replicas of any expert), -1 padded."""
    layers, slots = phy2log.shape
    key = torch.where(phy2log >= 0, phy2log, torch.full_like(phy2log, experts))
    order = torch.sort(key, dim=1, stable=True)
    cnt = replica_counts(phy2log, experts)
    width = max(int(cnt.max()) if cnt.numel() else 1, 1)
    start = torch.cumsum(torch.cat([torch.zeros_like(cnt[:, :1]), cnt], dim=1), dim=1)
    sorted_expert = order.values
    valid = sorted_expert < experts
    pos = torch.arange(slots, device=phy2log.device).expand(layers, slots)
    rank = pos - start.gather(1, sorted_expert.clamp(max=experts))
    out = torch.full((layers, experts * width + 1), -1, dtype=torch.int64, device=phy2log.device)
    flat = torch.where(valid, sorted_expert * width + rank, torch.full_like(rank, experts * width))
    out.scatter_(1, flat, order.indices)
    return out[:, :-1].view(layers, experts, width)
