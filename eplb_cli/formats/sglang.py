"""SGLang: expert-distribution dumps (traces) and ``--init-expert-location`` maps (placements).

Traces
    ``sglang``: the ``stat`` mode dump ``{"logical_count": [L, E] or [steps, L,
    E]}`` as JSON (the form SGLang's published DeepSeek statistics use);
    ``sglang-pt``: the same dict saved with ``torch.save``, or one ``per_pass``
    dump; ``sglang-per-pass``: a folder of ``per_pass`` dumps. Checked against
    sgl-project/sglang ``python/sglang/srt/eplb/expert_distribution.py``
    (``_DetailAccumulator.dump``): each rank saves
    ``expert_distribution_recorder_{time}_{rank}.pt`` holding ``{"records":
    [{"forward_pass_id", "rank", "gatherer_key", "global_physical_count":
    int [L, S], ...}], "last_physical_to_logical_map": int [L, S]}``. Physical
    counts are mapped to logical experts through that map; the records of all
    ranks with the same ``forward_pass_id`` are summed into one window.
Placements
    ``sglang`` (``.json``): ``{"physical_to_logical_map": [[expert per slot]] *
    L}`` and nothing else: SGLang's ``--init-expert-location`` calls
    ``ExpertLocationMetadata.init_by_mapping(**file)``, so any other key is a
    TypeError at start-up (checked against sgl-project/sglang
    ``python/sglang/srt/eplb/expert_location.py``,
    ``compute_initial_expert_location_metadata``). ``sglang-pt`` (``.pt``): the
    same dict with an int64 tensor, via ``torch.save``; the engine and this
    reader load it with ``weights_only=True``. Neither holds a topology, so
    reading one back needs the GPU count.

``.pt`` files are loaded with ``weights_only=True`` only: a pickle that asks for
anything but tensors and plain containers is refused before any of it runs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..errors import EplbError, listing
from ..placement import Placement
from ..trace import Trace
from .arrays import as_trace, list_tensor, why_not_array
from .base import PlacementFormat, TraceFormat
from .jsonio import json_bytes, nested_numbers
from .limits import PARSE_FACTOR, check_memory
from .maps import int_table, require_full
from .source import Source

_TOPOLOGY_KEYS = ("experts", "slots", "gpus", "nodes", "groups", "policy", "excluded_gpus")
"""Topology keys that older eplb versions stored beside the map; still read."""


# ---------------------------------------------------------------- stat dumps (traces)


def _stat_trace(obj: Any, source: str) -> Trace:
    """``{"logical_count": [L, E] or [steps, L, E]}`` (parsed JSON or a .pt dict)."""
    if not isinstance(obj, dict) or "logical_count" not in obj:
        found = listing(list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
        raise EplbError(f"{source}: no 'logical_count' key (found: {found}); give an SGLang expert-distribution dump")
    meta = {}
    if isinstance(obj.get("model"), str):
        meta["model"] = obj["model"]
    return as_trace(obj["logical_count"], source, meta, what="logical_count")


def read_stat_json(src: Source) -> Trace:
    """SGLang's ``stat`` dump as JSON."""
    return _stat_trace(src.json(), src.name)


def write_stat_json(trace: Trace) -> bytes:
    """SGLang JSON: ``logical_count`` as [L, E] for one window, else [W, L, E]."""
    load = trace.load[0] if trace.windows == 1 else trace.load
    return json_bytes({"logical_count": nested_numbers(load)})


def read_pt(src: Source) -> Trace:
    """SGLang ``.pt`` dump: ``stat`` mode (``logical_count``) or one ``per_pass`` file (``records``)."""
    obj = src.torch_object()
    if isinstance(obj, dict) and "records" in obj and "logical_count" not in obj:
        return _per_pass_trace([(src.name, obj)], src.name)
    return _stat_trace(obj, src.name)


# ---------------------------------------------------------------- per_pass dumps (traces)


def read_per_pass(src: Source) -> Trace:
    """A folder of SGLang ``per_pass`` dumps (ranks summed), or one such file."""
    if not src.is_folder:
        return read_pt(src)
    files = sorted(p for p in Path(src.path).glob("*.pt") if p.is_file())
    if not files:
        raise EplbError(f"{src.name}: folder holds no .pt files; give the SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR folder")
    check_memory(src.name, sum(p.stat().st_size for p in files) * PARSE_FACTOR["torch"])
    dumps = [(str(p), Source(str(p), "per_pass dump").torch_object()) for p in files]
    return _per_pass_trace(dumps, src.name)


def is_per_pass_folder(src: Source) -> bool:
    return src.is_folder and any(Path(src.path).glob("*.pt"))


def _per_pass_logical(dump: Any, name: str) -> list[tuple[int | None, torch.Tensor]]:
    """``(forward_pass_id, logical count [L, E])`` for every record of one dump."""
    if not isinstance(dump, dict) or "records" not in dump or "last_physical_to_logical_map" not in dump:
        found = listing(list(dump)[:8]) if isinstance(dump, dict) else type(dump).__name__
        raise EplbError(
            f"{name}: not an SGLang per_pass dump "
            f"(needs 'records' and 'last_physical_to_logical_map', found: {found}); "
            "record with --expert-distribution-recorder-mode per_pass"
        )
    phy2log = int_table(dump["last_physical_to_logical_map"], name, "last_physical_to_logical_map")
    if bool((phy2log < 0).any()):
        raise EplbError(f"{name}: last_physical_to_logical_map holds -1; a dump's map has an expert in every slot, "
                        "re-dump it")
    records = dump["records"]
    if not isinstance(records, list):
        raise EplbError(f"{name}: 'records' must be a list; re-dump it")
    experts = int(phy2log.max()) + 1
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "global_physical_count" not in rec:
            raise EplbError(f"{name}: records[{i}] has no 'global_physical_count'; re-dump it")
        values = rec["global_physical_count"]
        try:
            count = list_tensor(values).to(torch.float64)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise EplbError(f"{name}: {why_not_array(values, f'records[{i}].global_physical_count')}") from None
        if count.shape != phy2log.shape:
            raise EplbError(
                f"{name}: records[{i}].global_physical_count has shape {tuple(count.shape)} but the map has "
                f"{tuple(phy2log.shape)}; both must be [layers, physical slots]"
            )
        logical = torch.zeros(phy2log.shape[0], experts, dtype=torch.float64).scatter_add_(1, phy2log, count)
        fid = rec.get("forward_pass_id")
        out.append((fid if isinstance(fid, int) and not isinstance(fid, bool) else None, logical))
    return out


def _per_pass_trace(dumps: list[tuple[str, Any]], source: str) -> Trace:
    """Merge per_pass dumps: sum records of equal ``forward_pass_id`` (one per rank) into one window."""
    by_pass: dict[int, torch.Tensor] = {}
    shape = None
    for name, dump in dumps:
        for k, (fid, logical) in enumerate(_per_pass_logical(dump, name)):
            key = fid if fid is not None else k
            if shape is not None and logical.shape != shape:
                raise EplbError(
                    f"{name}: counts have shape {tuple(logical.shape)} but earlier dumps have {tuple(shape)}; "
                    "give dumps of one model run"
                )
            shape = logical.shape
            by_pass[key] = by_pass[key] + logical if key in by_pass else logical
    if not by_pass:
        raise EplbError(f"{source}: per_pass dump holds no records; record some forward passes before dumping")
    load = torch.stack([by_pass[k] for k in sorted(by_pass)])
    return as_trace(load, source)


# ---------------------------------------------------------------- --init-expert-location maps (placements)


def _map(doc: object, source: str) -> tuple[torch.Tensor, dict]:
    """``{"physical_to_logical_map": ...}``; topology keys that older eplb files stored beside it are kept."""
    if not isinstance(doc, dict) or "physical_to_logical_map" not in doc:
        found = listing(list(doc)[:8]) if isinstance(doc, dict) else type(doc).__name__
        raise EplbError(
            f"{source}: no 'physical_to_logical_map' (SGLang) or 'layer_list' (vLLM-Ascend) key "
            f"(found: {found or 'none'}); give a placement file"
        )
    phy2log = int_table(doc["physical_to_logical_map"], source, "physical_to_logical_map")
    return phy2log, {k: doc[k] for k in _TOPOLOGY_KEYS if k in doc}


def holds_map(src: Source) -> bool:
    doc = src.json(nesting="a placement is a [layers][slots] table")
    return isinstance(doc, dict) and "physical_to_logical_map" in doc


def read_map_json(src: Source) -> tuple[torch.Tensor, dict]:
    """SGLang's --init-expert-location JSON."""
    return _map(src.json(nesting="a placement is a [layers][slots] table"), src.name)


def write_map_json(p: Placement, extra: dict, name: str) -> bytes:
    """SGLang's --init-expert-location JSON: the map and nothing else."""
    require_full(p, name, "SGLang")
    return json_bytes({"physical_to_logical_map": p.phy2log.tolist()})


def holds_map_pt(src: Source) -> bool:
    try:
        doc = src.torch_object()
    except EplbError:  # not a loadable torch.save file: the trace reader explains
        return False
    return isinstance(doc, dict) and "physical_to_logical_map" in doc


def read_map_pt(src: Source) -> tuple[torch.Tensor, dict]:
    """SGLang's .pt, loaded with weights_only=True (plain tensors and containers only)."""
    return _map(src.torch_object(), src.name)


def write_map_pt(p: Placement, extra: dict, name: str) -> bytes:
    """SGLang's --init-expert-location .pt: the map as an int64 tensor."""
    require_full(p, name, "SGLang")
    buf = io.BytesIO()
    torch.save({"physical_to_logical_map": p.phy2log.clone()}, buf)
    return buf.getvalue()


def _has_key(key: str):
    def claims(src: Source) -> bool:
        doc = src.json()
        return isinstance(doc, dict) and key in doc
    return claims


STAT_JSON = TraceFormat("sglang", "json", read_stat_json, write_stat_json, claims=_has_key("logical_count"),
                        extensions=(".json",), hint="'logical_count' (SGLang)")
STAT_PT = TraceFormat("sglang-pt", "torch", read_pt)
PER_PASS = TraceFormat("sglang-per-pass", "folder", read_per_pass, claims=is_per_pass_folder,
                       hint=".pt files (SGLang per_pass)")
MAP_JSON = PlacementFormat("sglang", "json", read_map_json, write_map_json, claims=holds_map,
                           extensions=(".json",), aliases=("json",))
MAP_PT = PlacementFormat("sglang-pt", "torch", read_map_pt, write_map_pt, claims=holds_map_pt,
                         extensions=(".pt",), aliases=("pt",), binary=True)
