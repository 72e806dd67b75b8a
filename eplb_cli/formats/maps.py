"""Checks every placement format shares: integer slot tables, full maps for engines, model layer ids."""

from __future__ import annotations

import torch

from ..errors import EplbError, arg
from ..placement import Placement


def int_table(values: object, source: str, what: str) -> torch.Tensor:
    """``values`` as an int64 [layers, slots] tensor, or a one-line error naming ``what``."""
    try:
        table = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise EplbError(f"{source}: {what} must be a rectangular [layers][slots] table of integers") from None
    if table.is_floating_point() or table.is_complex() or table.dtype == torch.bool:
        raise EplbError(f"{source}: {what} must hold integer expert ids, got {table.dtype}")
    if table.dim() != 2 or table.numel() == 0:
        raise EplbError(f"{source}: {what} must be a non-empty [layers][slots] table, got shape {tuple(table.shape)}")
    return table.to("cpu", torch.int64)


def require_full(p: Placement, name: str, engine: str) -> None:
    """Engines have no notion of an empty slot: refuse placements with excluded GPUs."""
    if bool((p.phy2log < 0).any()):
        gpus = ",".join(map(str, p.topology.excluded_gpus)) or "some"
        raise EplbError(
            f"{name}: {engine} files cannot hold empty slots, but GPUs {gpus} are excluded; "
            f"write .safetensors or .csv, or plan without {arg('exclude_gpus')}"
        )


def layer_ids(extra: dict, layers: int, name: str) -> list[int]:
    """The model's layer ids for the rows (``extra["layer_ids"]``), else 0..L-1."""
    ids = extra.get("layer_ids")
    if ids is None:
        return list(range(layers))
    ids = [int(i) for i in ids]
    if len(ids) != layers or len(set(ids)) != layers:
        raise EplbError(f"{name}: {len(ids)} layer ids for {layers} layers; give one distinct id per layer")
    return ids
