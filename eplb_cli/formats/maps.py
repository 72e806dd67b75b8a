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


def trivial_row(slots: int, experts: int) -> list[int]:
    """The layout an engine starts from without a map: slot p holds expert p % experts.

    SGLang's ``ExpertLocationMetadata.init_trivial`` (python/sglang/srt/eplb/expert_location.py)
    builds every layer this way; eplb writes it for the dense layers an
    SGLang map must still list, and reads such rows back as dense layers.
    """
    return [p % experts for p in range(slots)]
