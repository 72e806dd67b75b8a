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

import numpy as np
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
        if topo.excluded_gpus:
            dead = torch.isin(self.gpu_of_slot(), torch.tensor(topo.excluded_gpus))
            empty = bool(((p < 0) & ~dead).any() or (p[:, dead] != -1).any())
            high = bool((p >= topo.experts).any())
        else:  # one pass over the ids
            values = p.numpy()
            empty, high = bool(values.min() < 0), bool(values.max() >= topo.experts)
        if empty:
            raise EplbError(f"{source}: -1 (empty slot) is only allowed on excluded GPUs' slots")
        if high:
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
    p = phy2log.detach().to("cpu", torch.int64).numpy()
    layers = p.shape[0]
    cell = np.where(p >= 0, p, experts) + (experts + 1) * np.arange(layers)[:, None]
    counts = np.bincount(cell.ravel(), minlength=layers * (experts + 1)).reshape(layers, experts + 1)
    return torch.from_numpy(np.ascontiguousarray(counts[:, :experts])).to(phy2log.device)


def slots_of_experts(phy2log: torch.Tensor, experts: int, width: int | None = None) -> torch.Tensor:
    """Invert phy2log into log2phy [L, E, R], -1 padded; R = ``width`` or else the most replicas of any expert.

    Each expert's slots come in increasing order. Computed with NumPy on the
    CPU: one stable argsort of each row's expert ids (a radix sort for 16-bit
    ids), then every slot is written to its expert's next free column.
    """
    p = phy2log.detach().to("cpu", torch.int64).numpy()
    layers, slots = p.shape
    key = np.where(p >= 0, p, experts)
    order = np.argsort(key.astype(np.int16 if experts < 2**15 - 1 else np.int64), axis=1, kind="stable")
    ranked = np.take_along_axis(key, order, 1)  # the expert at each sorted position; `experts` for empty slots
    cell = ranked + (experts + 1) * np.arange(layers)[:, None]
    counts = np.bincount(cell.ravel(), minlength=layers * (experts + 1))
    most = int(counts.reshape(layers, experts + 1)[:, :experts].max()) if counts.size and experts else 0
    if width is None:
        width = max(most, 1)
    elif width < most:
        raise ValueError(f"slots_of_experts: width {width} is below the {most} replicas of one expert")
    start = np.cumsum(counts) - counts  # first sorted position of each (layer, expert), counted over all layers
    column = np.arange(layers * slots).reshape(layers, slots) - start[cell]
    out = np.full(layers * experts * width, -1, dtype=np.int64)
    dest = (cell - np.arange(layers)[:, None]) * width + column  # (layer * experts + expert) * width + column
    valid = ranked < experts
    if valid.all():
        out[dest.ravel()] = order.ravel()
    else:
        out[dest[valid]] = order[valid]
    return torch.from_numpy(out).view(layers, experts, width).to(phy2log.device)
