"""vLLM: the expert-load history JSON (traces) and the initial expert map JSON (placements).

Traces (``vllm``): ``{"load_history": [{"logical_expert_load": [[...] * E] * L},
...]}``, one window per entry, as vLLM's EPLB benchmarks and the ADRS study use.

Placements (``vllm``, written with ``--format vllm``): the physical-to-logical
map that vLLM's custom initial expert map reads from
``eplb_config.initial_expert_map_path``: one list of S logical expert ids per
MoE layer, in MoE-layer order, or a single list that every MoE layer shares.
This follows an open proposal, vllm-project/vllm pull request 49572 ("[EPLB]
Support custom initial expert maps", open in August 2026), as its description
states the format: it may still change before it lands. vLLM itself sizes its
maps per MoE layer (``physical_to_logical_map``: (num_moe_layers,
num_physical_experts) in ``vllm/distributed/eplb/eplb_state.py``, vLLM 0.33).
The expert-load statistics file of the offline EPLB proposal (pull request
41141) is not read: its format is not stated where it could be checked.
"""

from __future__ import annotations

import torch

from ..errors import EplbError
from ..placement import Placement
from ..trace import Trace
from .arrays import as_trace
from .base import PlacementFormat, TraceFormat
from .jsonio import json_bytes, nested_numbers
from .launch import settings
from .maps import int_table, require_full
from .source import Source


def read_load_history(src: Source) -> Trace:
    """vLLM/ADRS ``{"load_history": [{"logical_expert_load": [L][E]}, ...]}``."""
    obj = src.json()
    source = src.name
    history = obj.get("load_history") if isinstance(obj, dict) else None
    if not isinstance(history, list):
        raise EplbError(f"{source}: 'load_history' must be a list of entries; give a vLLM expert-load JSON")
    if not history:
        raise EplbError(f"{source}: 'load_history' is empty; record at least one step")
    windows: list[torch.Tensor] = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "logical_expert_load" not in entry:
            raise EplbError(f"{source}: load_history[{i}] has no 'logical_expert_load'; fix that entry")
        load = as_trace(entry["logical_expert_load"], source, what=f"load_history[{i}].logical_expert_load").load
        if load.shape[0] != 1:
            raise EplbError(
                f"{source}: load_history[{i}].logical_expert_load must be [layers, experts], "
                f"got shape {tuple(load.shape)}; fix that entry"
            )
        if windows and load.shape != windows[0].shape:
            raise EplbError(
                f"{source}: load_history[{i}] has shape {tuple(load.shape[1:])} but entry 0 has "
                f"{tuple(windows[0].shape[1:])}; every entry must have the same layers and experts"
            )
        windows.append(load)
    return as_trace(torch.cat(windows), source)


def write_load_history(trace: Trace) -> bytes:
    """vLLM/ADRS JSON: one ``load_history`` entry per window."""
    return json_bytes({"load_history": [{"logical_expert_load": nested_numbers(w)} for w in trace.load]})


def _claims(src: Source) -> bool:
    doc = src.json()
    return isinstance(doc, dict) and "load_history" in doc


LOAD_HISTORY = TraceFormat("vllm", "json", read_load_history, write_load_history, claims=_claims,
                           hint="'load_history' (vLLM)")


# ---------------------------------------------------------------- initial expert map (placements)


def write_expert_map(p: Placement, extra: dict, name: str) -> bytes:
    """One list of logical expert ids per MoE layer (slot order), the layers in model order.

    A map read as one list for every layer (``extra["all_layers"]``) is written back as one list.
    """
    require_full(p, name, "vLLM")
    if extra.get("all_layers") and p.layers == 1:
        return json_bytes(p.phy2log[0].tolist())
    return json_bytes(p.phy2log.tolist())


def read_expert_map(src: Source) -> tuple[torch.Tensor, dict]:
    """A list per MoE layer; a single flat list is one map for every MoE layer (``all_layers`` in meta)."""
    doc = src.json(nesting="a placement is a [layers][slots] table")
    if not isinstance(doc, list) or not doc:
        raise EplbError(f"{src.name}: expected a non-empty JSON list of expert ids per slot (vLLM's initial expert map)")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in doc):
        return int_table([doc], src.name, "the expert map"), {"all_layers": True}
    return int_table(doc, src.name, "the expert map"), {}


def launch(p: Placement, path: str, gpus: int | None) -> dict:
    """vLLM's flags for this map (pull request 49572's ``initial_expert_map_path``).

    ``--enable-expert-parallel``, ``--enable-eplb`` and ``--eplb-config`` are
    vLLM 0.33's (``vllm/engine/arg_utils.py``); ``EPLBConfig.num_redundant_experts``
    and ``step_interval`` (default 3000) are in ``vllm/config/parallel.py``.
    """
    flags = ("--enable-expert-parallel --enable-eplb --eplb-config "
             "'{{\"num_redundant_experts\": {redundant}, \"initial_expert_map_path\": \"{file}\"}}' "
             "with tensor x data parallel size = {ep}")
    notes = [
        "initial_expert_map_path follows vllm-project/vllm pull request 49572, still open: check it is in your vLLM",
        f"vLLM allocates experts + num_redundant_experts = {p.topology.slots} physical experts and needs them to divide "
        "over the EP ranks (FusedMoE in vllm/model_executor/layers/fused_moe/layer.py)",
        f"{p.layers} lists, one per MoE layer in order: the model's dense layers have none",
        "vLLM sends each token to one replica of its expert by a hash of the token index: an even split, as eplb scores",
        "EPLB rebalances every eplb_config.step_interval steps (default 3000): raise it to keep this layout",
    ]
    return settings("vLLM", p, path, gpus, flags, notes)


def _claims_map(src: Source) -> bool:
    """A JSON list of expert ids, or of lists of them (judged by its first entry)."""
    doc = src.json(nesting="a placement is a [layers][slots] table")
    first = doc[0] if isinstance(doc, list) and doc else None
    head = first[0] if isinstance(first, list) and first else first
    return isinstance(head, int) and not isinstance(head, bool)


EXPERT_MAP = PlacementFormat("vllm", "json", read_expert_map, write_expert_map, claims=_claims_map, launch=launch)
