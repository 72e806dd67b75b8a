"""What a written placement file means to its engine: the start-up settings that must match it.

A placement file alone does not fix the expert-parallel size nor the number of
redundant experts: the engine takes those from its own flags, and a file
planned for 32 GPUs read by a server of 16 silently means another plan (or
fails at start-up). Each engine module builds its settings with
:func:`settings`; ``eplb plan -o`` and ``eplb convert`` print them
(``engine`` in ``--json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..placement import Placement


def fits(slots: int) -> list[int]:
    """The GPU counts that ``slots`` physical slots divide over evenly (what every engine requires)."""
    return [g for g in range(1, slots + 1) if slots % g == 0]


def fits_line(slots: int) -> str:
    """``288 slots: fits 1, 2, ... or 288 GPUs``."""
    counts = [str(g) for g in fits(slots)]
    listed = counts[0] if len(counts) == 1 else f"{', '.join(counts[:-1])} or {counts[-1]}"
    return f"{slots} slots: fits {listed} GPUs"


def layer_span(ids: list[int]) -> str:
    """``3..60`` for consecutive ids, else the list."""
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ",".join(map(str, ids))


def settings(engine: str, p: Placement, path: str, gpus: int | None, flags: str, notes: list[str]) -> dict:
    """The ``engine`` document: the flags to start with, the sizes they must match, and what to know.

    ``flags`` may hold ``{ep}`` (the EP size, or ``G`` when not known) and ``{redundant}``.
    """
    topo = p.topology
    redundant = topo.slots - topo.experts
    ep = str(gpus) if gpus is not None else "G"
    told = [] if gpus is not None else [f"G: the GPUs the plan was made for; {fits_line(topo.slots)}"]
    return {
        "engine": engine, "file": path, "ep_size": gpus, "slots": topo.slots, "experts": topo.experts,
        "redundant_experts": redundant, "moe_layers": p.layers, "layer_ids": layer_span(p.ids),
        "flags": flags.format(ep=ep, redundant=redundant, file=path), "notes": told + notes,
    }
