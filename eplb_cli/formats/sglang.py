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
    reading one back needs the GPU count. Row i is model layer i, dense
    layers included: SGLang sizes the map by
    ``get_model_config_for_expert_location`` (``num_layers=config.num_hidden_layers``
    in ``python/sglang/srt/models/deepseek_v2.py``) and indexes it by the MoE
    layer's model ``layer_id``. eplb fills the rows of layers it did not plan
    (dense ones) with SGLang's own trivial layout, and reads such rows back
    as dense layers.

``.pt`` files are loaded with ``weights_only=True`` only: a pickle that asks for
anything but tensors and plain containers is refused before any of it runs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import EplbError, listing
from ..placement import Placement
from ..trace import Trace
from .arrays import as_trace, list_tensor, why_not_array
from .base import PlacementFormat, TraceFormat
from .jsonio import json_bytes, nested_numbers
from .launch import settings
from .limits import PARSE_FACTOR, check_memory
from .maps import int_table, require_full, trivial_row
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
    meta = {k: doc[k] for k in _TOPOLOGY_KEYS if k in doc}
    experts = int(meta.get("experts", int(phy2log.max()) + 1))
    dense = (phy2log == torch.tensor(trivial_row(phy2log.shape[1], experts))).all(dim=1)
    if bool(dense.any()) and not bool(dense.all()):
        moe = (~dense).nonzero().flatten()
        phy2log, meta["layer_ids"] = phy2log[moe], moe.tolist()
    return phy2log, meta


def _by_model_layer(p: Placement, name: str) -> list[list[int]]:
    """One row per model layer 0..max id: the planned rows at their ids, SGLang's trivial layout elsewhere.

    Trivial rows read back as dense only beside other rows, so where the file
    holds any other row a planned row that equals the trivial layout has its
    first two slots swapped: on one GPU that is the same plan; with one slot
    per GPU, GPUs 0 and 1 trade experts, which leaves the multiset of GPU and
    node loads (every balance figure) unchanged.
    """
    topo = p.topology
    trivial = trivial_row(topo.slots, topo.experts)
    planned = p.phy2log.tolist()
    rows = [list(trivial) for _ in range(max(p.ids) + 1)]
    mixed = len(rows) > len(planned) or any(row != trivial for row in planned)
    if mixed and topo.experts == 1:
        raise EplbError(f"{name}: with one expert a planned layer and a dense one are the same row in an SGLang map, "
                        "so its layer ids would be lost; write .safetensors or .csv, which keep them")
    for layer, row in zip(p.ids, planned):
        if mixed and row == trivial and topo.experts > 1:
            row[0], row[1] = row[1], row[0]
        rows[layer] = row
    return rows


def holds_map(src: Source) -> bool:
    doc = src.json(nesting="a placement is a [layers][slots] table")
    return isinstance(doc, dict) and "physical_to_logical_map" in doc


def read_map_json(src: Source) -> tuple[torch.Tensor, dict]:
    """SGLang's --init-expert-location JSON."""
    return _map(src.json(nesting="a placement is a [layers][slots] table"), src.name)


def write_map_json(p: Placement, extra: dict, name: str) -> bytes:
    """SGLang's --init-expert-location JSON: the map and nothing else."""
    require_full(p, name, "SGLang")
    return json_bytes({"physical_to_logical_map": _by_model_layer(p, name)})


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
    torch.save({"physical_to_logical_map": torch.tensor(_by_model_layer(p, name), dtype=torch.int64)}, buf)
    return buf.getvalue()


def launch(p: Placement, path: str, gpus: int | None) -> dict:
    """SGLang's flags for this map.

    Checked against SGLang 0.5.23: ``--init-expert-location``,
    ``--ep-num-redundant-experts`` and ``--ep-dispatch-algorithm`` are defined in
    ``python/sglang/srt/arg_groups/fields/exec_.py``; ``ExpertLocationMetadata._init_common``
    (``srt/eplb/expert_location.py``) sizes the map as experts + redundant
    experts and asserts that it divides over ``--ep-size``; ``handle_eplb_and_dispatch``
    (``srt/arg_groups/parallel_hook.py``) picks ``static`` dispatch by default
    with an all-to-all backend, which sends each rank's tokens of an expert to
    its nearest replica (``compute_logical_to_rank_dispatch_physical_map``), while
    ``dynamic`` spreads them evenly over the replicas, as eplb's figures assume.
    """
    topo = p.topology
    flags = ("--init-expert-location {file} --ep-size {ep} --ep-num-redundant-experts {redundant} "
             "--ep-dispatch-algorithm dynamic")
    if gpus is not None and topo.nodes > 1:
        flags += f" --nnodes {topo.nodes}"
    notes = [
        f"SGLang holds experts + --ep-num-redundant-experts = {topo.slots} physical slots and requires them to divide "
        "over --ep-size; every slots / EP size successive slots are one rank",
        (f"the map lists model layers 0..{max(p.ids)}, one row each" if p.ids == list(range(p.layers)) else
         f"the map lists model layers 0..{max(p.ids)}: the {p.layers} MoE layers as planned, the dense ones in "
         "SGLang's trivial layout"),
        "eplb's figures assume each expert's tokens split evenly over its replicas, as --ep-dispatch-algorithm dynamic "
        "does; static (SGLang's default with an all-to-all backend) sends each rank's tokens to the nearest replica",
    ]
    return settings("SGLang", p, path, gpus, flags, notes)


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
                           extensions=(".json",), aliases=("json",), launch=launch)
MAP_PT = PlacementFormat("sglang-pt", "torch", read_map_pt, write_map_pt, claims=holds_map_pt,
                         extensions=(".pt",), aliases=("pt",), binary=True, launch=launch)


# ---------------------------------------------------------------- per_token dumps (every token's experts)


@dataclass
class TokenRouting:
    """The experts each recorded token was sent to, from SGLang ``per_token`` dumps.

    ``slots`` int32 [L, N, K]: the physical slots token n went to in layer l
    (-1: none; dense layers are all -1); ``phy2log`` [L, S]: the placement that
    served them. Checked against sgl-project/sglang
    ``python/sglang/srt/eplb/expert_distribution.py``: with
    ``--expert-distribution-recorder-mode per_token`` each record of
    ``_DetailAccumulator.dump`` also holds ``topk_ids_of_layer`` int32
    [layers, tokens, 8] (``_DetailSinglePassGatherer.collect``): the ids that
    ``select_experts`` passed on after mapping logical to physical experts,
    -1 where unused; ``_convert_per_token_to_global_physical_count`` counts
    them as physical slots. The dump keeps only the last map, so the tokens
    are read with it: record while the placement stays fixed.
    """

    slots: torch.Tensor
    phy2log: torch.Tensor

    @property
    def tokens(self) -> int:
        return int(self.slots.shape[1])

    def experts(self) -> torch.Tensor:
        """The logical experts, int64 [L, N, K] (-1: none)."""
        slots = self.slots.to(torch.int64)
        mapped = self.phy2log.gather(1, slots.clamp(min=0).flatten(1)).view(slots.shape)
        return torch.where(slots >= 0, mapped, torch.full_like(mapped, -1))


def read_token_routing(path: str) -> TokenRouting | None:
    """Every token's routed experts from SGLang ``per_token`` dumps (a folder of them or one ``.pt``).

    None when ``path`` is no such dump: another format, or ``per_pass`` dumps
    without ``topk_ids_of_layer``. Ranks' tokens are concatenated.
    """
    src = Path(path)
    if path == "-" or not (src.is_dir() or src.suffix == ".pt"):
        return None
    files = sorted(p for p in src.glob("*.pt") if p.is_file()) if src.is_dir() else [src]
    if not files:
        return None
    check_memory(path, sum(p.stat().st_size for p in files) * PARSE_FACTOR["torch"])
    slots: list[torch.Tensor] = []
    phy2log = None
    for p in files:
        dump = Source(str(p), "per_token dump").torch_object()
        if not isinstance(dump, dict) or not isinstance(dump.get("records"), list):
            return None
        records = [r for r in dump["records"] if isinstance(r, dict) and "topk_ids_of_layer" in r]
        if not records:
            return None
        this = _token_map(dump, p.name)
        if phy2log is not None and not torch.equal(this, phy2log):
            raise EplbError(f"{p.name}: last_physical_to_logical_map differs from the other dumps'; "
                            "give the dumps of one recording")
        phy2log = this
        for i, rec in enumerate(records):
            slots.append(_token_slots(rec["topk_ids_of_layer"], phy2log, f"{p.name}: records[{i}]"))
    if phy2log is None:
        return None
    return TokenRouting(torch.cat(slots, dim=1), phy2log)


def _token_map(dump: dict, name: str) -> torch.Tensor:
    try:
        phy2log = torch.as_tensor(dump["last_physical_to_logical_map"]).to(torch.int64)
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise EplbError(f"{name}: no integer last_physical_to_logical_map beside the per_token records; re-dump it") from None
    if phy2log.dim() != 2 or 0 in phy2log.shape or bool((phy2log < 0).any()):
        raise EplbError(f"{name}: last_physical_to_logical_map must be non-negative ints [layers, slots], "
                        f"got shape {tuple(phy2log.shape)}; re-dump it")
    return phy2log


def _token_slots(ids: Any, phy2log: torch.Tensor, where: str) -> torch.Tensor:
    """``topk_ids_of_layer`` checked against the map: int [layers, tokens, K], ids in -1 .. slots - 1."""
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise EplbError(f"{where}.topk_ids_of_layer must be an integer tensor; re-dump it")
    layers, slots = phy2log.shape
    if ids.dim() != 3 or ids.shape[0] != layers:
        raise EplbError(f"{where}.topk_ids_of_layer has shape {tuple(ids.shape)}; "
                        f"expected [{layers} layers, tokens, experts per token] like the map")
    if ids.numel() and (bool((ids < -1).any()) or bool((ids >= slots).any())):
        raise EplbError(f"{where}.topk_ids_of_layer holds ids outside -1 .. {slots - 1} (the map's slots); re-dump it")
    return ids.to(torch.int32)
