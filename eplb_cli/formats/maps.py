"""Checks every placement format shares: integer slot tables, full maps for engines, model layer ids."""

from __future__ import annotations

import torch

from ..errors import EplbError, arg, quote
from ..placement import Placement
from .arrays import why_not_array


def int_table(values: object, source: str, what: str) -> torch.Tensor:
    """``values`` as an int64 [layers, slots] tensor, or a one-line error naming ``what``.

    Expert ids must lie in ``-1 .. slots - 1``: every expert needs a slot of
    its own, so a larger id cannot be valid, and it would otherwise set the
    width of every [layers, experts] array built from the table.
    """
    try:
        table = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise EplbError(f"{source}: {why_not_array(values, what, '[layers][slots] table of integers')}") from None
    if table.is_floating_point() or table.is_complex() or table.dtype == torch.bool:
        raise EplbError(f"{source}: {what} must hold integer expert ids, got {table.dtype}")
    if table.dim() != 2 or table.numel() == 0:
        raise EplbError(f"{source}: {what} must be a non-empty [layers][slots] table, got shape {tuple(table.shape)}")
    table = table.to("cpu", torch.int64)
    low, high = (int(v) for v in torch.aminmax(table))
    if high >= table.shape[1]:
        raise EplbError(f"{source}: {what} holds expert id {high}, out of range for {table.shape[1]} slots per layer "
                        f"(every expert needs a slot, so ids run to at most {table.shape[1] - 1}); check the file")
    if low < -1:
        raise EplbError(f"{source}: {what} holds expert id {low}; ids are >= 0 (-1 marks an empty slot)")
    return table


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


def layer_ids(extra: dict, layers: int, name: str) -> list[int]:
    """The model's layer ids for the rows (``extra["layer_ids"]``), else 0..L-1."""
    ids = extra.get("layer_ids")
    if ids is None:
        return list(range(layers))
    ids = check_layer_ids(ids, name)
    if len(ids) != layers:
        raise EplbError(f"{name}: {len(ids)} layer ids for {layers} layers; give one distinct id per layer")
    return ids


def check_layer_ids(ids: object, source: str, key: str = "layer_ids") -> list[int]:
    """``ids`` as a list of increasing non-negative integers (the model's layer numbers), or an error naming ``key``.

    Every format that stores layer ids keys its rows by them and reads them
    back in increasing order, so only such lists survive a round trip.
    """
    if not isinstance(ids, (list, tuple)) or not ids:
        raise EplbError(f"{source}: {key} must be a non-empty list of layer ids, got {quote(ids)}")
    for i, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise EplbError(f"{source}: {key}[{i}] is {quote(value)}; layer ids are non-negative integers")
        if i and value <= ids[i - 1]:
            raise EplbError(f"{source}: {key}[{i}] is {value} after {ids[i - 1]}; layer ids must increase")
    return list(ids)
