"""Placement: which logical expert each physical slot holds, plus its file formats.

phy2log [L, S] is the source of truth; logcnt [L, E] and log2phy [L, E, R] are
derived from it (DeepSeek's names and meaning). Slots of excluded GPUs hold -1.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .atomic import check_writable, write_bytes_atomic
from .errors import EplbError
from .topology import Topology


@dataclass
class Placement:
    """A validated placement of replicas onto slots for one topology."""

    phy2log: torch.Tensor
    topology: Topology

    def __post_init__(self) -> None:
        self.phy2log = self.phy2log.to("cpu", torch.int64).contiguous()

    @property
    def layers(self) -> int:
        return int(self.phy2log.shape[0])

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

    def validate(self, source: str = "placement") -> "Placement":
        """Check shape, id range and that every expert has a replica on a live GPU."""
        topo = self.topology
        p = self.phy2log
        if p.dim() != 2 or p.shape[1] != topo.slots:
            raise EplbError(f"{source}: phy2log must be [layers, {topo.slots}], got {tuple(p.shape)}")
        if p.shape[0] < 1:
            raise EplbError(f"{source}: placement has no layers")
        if topo.excluded_gpus:
            dead = torch.isin(self.gpu_of_slot(), torch.tensor(topo.excluded_gpus))
            empty = bool(((p < 0) & ~dead).any() or (p[:, dead] != -1).any())
            high = bool((p >= topo.experts).any())
        else:  # one pass over the ids
            ids = p.numpy()
            empty, high = bool(ids.min() < 0), bool(ids.max() >= topo.experts)
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


# ---------------------------------------------------------------- file formats
#
# Readers take a file's bytes and its name (for messages) and return (phy2log,
# meta); writers turn a Placement into bytes, which save_placement writes
# atomically (or to standard output for "-"). Engine files hold only what the
# engine reads, so most carry no topology: reading them needs --gpus.
#
#   safetensors  .safetensors  eplb's own: phy2log, log2phy, logcnt + topology
#                              metadata (JSON strings); lossless.
#   sglang       .json         {"physical_to_logical_map": [[expert per slot]] * L},
#                              nothing else: SGLang's --init-expert-location calls
#                              ExpertLocationMetadata.init_by_mapping(**file), so any
#                              other key is a TypeError at start-up (checked against
#                              sgl-project/sglang python/sglang/srt/eplb/expert_location.py,
#                              compute_initial_expert_location_metadata).
#   sglang-pt    .pt           the same dict with an int64 tensor, via torch.save; the
#                              engine and this reader load it with weights_only=True.
#   trtllm       .yaml/.yml    TensorRT-LLM's moe_load_balancer YAML (NVIDIA/TensorRT-LLM
#                              examples/wide_ep/ep_load_balancer/README.md and
#                              generate_eplb_config.py): num_slots,
#                              initial_global_assignments {layer id: [expert per slot]},
#                              layer_updates_per_iter (0 = static); every num_slots / ep_size
#                              successive slots are one rank. Layer ids are the model's
#                              (e.g. 3..60 for DeepSeek-V3), kept in meta["layer_ids"].
#   vllm-ascend  .json         vLLM-Ascend's expert map: {"moe_layer_count", "layer_list":
#                              [{"layer_id", "device_count", "device_list": [{"device_id",
#                              "device_expert": [expert per local slot]}]}]} (checked against
#                              vllm-project/vllm-ascend vllm_ascend/ops/expert_load_balancer.py,
#                              which stacks device_expert into an [L, devices, local] tensor,
#                              so every device lists the same number of experts). Told apart
#                              from SGLang's JSON by its keys on read; --format vllm-ascend
#                              on write.
#   csv          .csv          long table layer,slot,gpu,node,expert,replica (one row per
#                              slot; empty slots of excluded GPUs hold -1); carries GPUs and
#                              nodes in its gpu and node columns.

PLACEMENT_FORMATS: tuple[str, ...] = ("safetensors", "sglang", "sglang-pt", "trtllm", "vllm-ascend", "csv")
"""Names accepted by ``--format`` for placements (and by ``fmt=`` when reading)."""

_ALIASES = {"json": "sglang", "pt": "sglang-pt", "yaml": "trtllm", "yml": "trtllm", "ascend": "vllm-ascend"}
EXTENSIONS = {
    ".safetensors": "safetensors",
    ".json": "sglang",
    ".pt": "sglang-pt",
    ".yaml": "trtllm",
    ".yml": "trtllm",
    ".csv": "csv",
}
_BINARY = ("safetensors", "sglang-pt")
_CSV_COLUMNS = ("layer", "slot", "gpu", "node", "expert", "replica")
_TOPOLOGY_KEYS = ("experts", "slots", "gpus", "nodes", "groups", "policy", "excluded_gpus")
STDIN = "-"


def _first_line(exc: BaseException) -> str:
    """An exception's first line, trimmed, for one-line messages."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 120 else line[:117] + "..."


def _meta(p: Placement, extra: dict | None = None) -> dict:
    """Topology and provenance stored in eplb's own safetensors files."""
    meta = {"format": "eplb-placement", "version": 1, **p.topology.as_dict()}
    if extra:
        meta.update(extra)
    return meta


def _require_full(p: Placement, name: str, engine: str) -> None:
    """Engines have no notion of an empty slot: refuse placements with excluded GPUs."""
    if bool((p.phy2log < 0).any()):
        gpus = ",".join(map(str, p.topology.excluded_gpus)) or "some"
        raise EplbError(
            f"{name}: {engine} files cannot hold empty slots, but GPUs {gpus} are excluded; "
            "write .safetensors or .csv, or plan without --exclude-gpus"
        )


def _int_table(values: object, source: str, what: str) -> torch.Tensor:
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


def _parse_json(data: bytes, source: str) -> object:
    """Parse a placement's JSON with one-line errors naming the file."""
    from .traces import parse_json

    return parse_json(data, source, nesting="a placement is a [layers][slots] table")


def _json_bytes(doc: object) -> bytes:
    """Compact JSON with a trailing newline."""
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


# ---- safetensors (eplb's own, lossless)

def _write_safetensors(p: Placement, extra: dict, name: str) -> bytes:
    """Sorted header (safetensors' own ``save`` orders metadata by hash): same plan, same bytes."""
    from .safetensors_format import encode

    tensors = {"phy2log": p.phy2log, "log2phy": p.log2phy.contiguous(), "logcnt": p.logcnt.contiguous()}
    return encode(tensors, {k: json.dumps(v) for k, v in _meta(p, extra).items()})


def _safetensors_header(data: bytes, source: str) -> dict:
    """The JSON header of safetensors bytes (tensor entries and ``__metadata__``)."""
    if len(data) < 8:
        raise EplbError(f"{source}: not a readable safetensors file (only {len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise EplbError(f"{source}: not a readable safetensors file (truncated header)")
    try:
        header = json.loads(data[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EplbError(f"{source}: not a readable safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise EplbError(f"{source}: not a readable safetensors file (header is not an object)")
    return header


def _read_safetensors(data: bytes, source: str) -> tuple[torch.Tensor, dict]:
    """eplb's own file; the stored logcnt is kept to cross-check phy2log."""
    from safetensors.torch import load

    header = _safetensors_header(data, source)
    if "phy2log" not in header:
        found = ", ".join(k for k in header if k != "__metadata__") or "none"
        raise EplbError(f"{source}: no 'phy2log' tensor (found: {found}); is this a placement written by eplb?")
    try:
        tensors = load(data)
    except Exception as exc:  # the Rust parser raises its own error types
        raise EplbError(f"{source}: not a readable safetensors file ({_first_line(exc)})") from None
    raw = header.get("__metadata__") or {}
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except (json.JSONDecodeError, TypeError, AttributeError):
        raise EplbError(f"{source}: placement metadata is not valid JSON") from None
    if "logcnt" in tensors:
        meta["_logcnt"] = tensors["logcnt"]
    return _int_table(tensors["phy2log"], source, "phy2log"), meta


# ---- SGLang (.json and .pt)

def _write_sglang_json(p: Placement, extra: dict, name: str) -> bytes:
    """SGLang's --init-expert-location JSON: the map and nothing else."""
    _require_full(p, name, "SGLang")
    return _json_bytes({"physical_to_logical_map": p.phy2log.tolist()})


def _sglang_map(doc: object, source: str) -> tuple[torch.Tensor, dict]:
    """``{"physical_to_logical_map": ...}``; topology keys that older eplb files stored beside it are kept."""
    if not isinstance(doc, dict) or "physical_to_logical_map" not in doc:
        found = ", ".join(map(str, list(doc)[:8])) if isinstance(doc, dict) else type(doc).__name__
        raise EplbError(
            f"{source}: no 'physical_to_logical_map' (SGLang) or 'layer_list' (vLLM-Ascend) key "
            f"(found: {found or 'none'}); give a placement file"
        )
    phy2log = _int_table(doc["physical_to_logical_map"], source, "physical_to_logical_map")
    return phy2log, {k: doc[k] for k in _TOPOLOGY_KEYS if k in doc}


def _read_sglang_json(data: bytes, source: str) -> tuple[torch.Tensor, dict]:
    """SGLang's --init-expert-location JSON."""
    return _sglang_map(_parse_json(data, source), source)


def _write_sglang_pt(p: Placement, extra: dict, name: str) -> bytes:
    """SGLang's --init-expert-location .pt: the map as an int64 tensor."""
    _require_full(p, name, "SGLang")
    buf = io.BytesIO()
    torch.save({"physical_to_logical_map": p.phy2log.clone()}, buf)
    return buf.getvalue()


def _read_sglang_pt(data: bytes, source: str) -> tuple[torch.Tensor, dict]:
    """SGLang's .pt, loaded with weights_only=True (plain tensors and containers only)."""
    try:
        doc = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle, zip and torch raise many unrelated types for bad files
        text = str(exc)
        blocked = re.search(r"GLOBAL ([\w.]+)", text)
        if blocked or "Weights only load failed" in text:
            what = f"Python object {blocked.group(1)}" if blocked else "Python objects"
            raise EplbError(
                f"{source}: refused to load: the pickle asks for {what}, which could run code; eplb loads .pt "
                "files with weights_only=True (plain tensors, lists and dicts only), re-save it"
            ) from None
        raise EplbError(
            f"{source}: not a readable torch.save file ({_first_line(exc)}); "
            "eplb loads .pt files with weights_only=True (plain tensors, lists and dicts only), re-save it"
        ) from None
    return _sglang_map(doc, source)


# ---- TensorRT-LLM YAML

def _layer_ids(extra: dict, layers: int, name: str) -> list[int]:
    """The model's layer ids for the rows (``extra["layer_ids"]``), else 0..L-1."""
    ids = extra.get("layer_ids")
    if ids is None:
        return list(range(layers))
    ids = [int(i) for i in ids]
    if len(ids) != layers or len(set(ids)) != layers:
        raise EplbError(f"{name}: {len(ids)} layer ids for {layers} layers; give one distinct id per layer")
    return ids


def _write_trtllm_yaml(p: Placement, extra: dict, name: str) -> bytes:
    """TensorRT-LLM's static load balancer YAML, one flow-style list per layer as its generator writes."""
    _require_full(p, name, "TensorRT-LLM")
    topo = p.topology
    lines = [
        f"# eplb placement: {topo.slots} slots on {topo.gpus} ranks; every {topo.slots_per_gpu} successive slots are one rank",
        f"num_slots: {topo.slots}",
        "initial_global_assignments:",
    ]
    for layer, row in zip(_layer_ids(extra, p.layers, name), p.phy2log.tolist()):
        lines.append(f"  {layer}: [{', '.join(map(str, row))}]")
    lines.append("layer_updates_per_iter: 0")
    return ("\n".join(lines) + "\n").encode()


def _yaml_key(key: object, source: str) -> int:
    """A layer id key of initial_global_assignments (an int, or digits as text)."""
    if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit())):
        raise EplbError(f"{source}: initial_global_assignments key {key!r} is not a layer id (a non-negative integer)")
    value = int(key)
    if value < 0:
        raise EplbError(f"{source}: initial_global_assignments key {value} is not a layer id (a non-negative integer)")
    return value


def _read_trtllm_yaml(data: bytes, source: str) -> tuple[torch.Tensor, dict]:
    """TensorRT-LLM's YAML; layers in increasing id order, the ids kept in meta."""
    try:
        import yaml
    except ImportError:
        raise EplbError(f"{source}: reading TensorRT-LLM YAML needs PyYAML: pip install pyyaml") from None
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise EplbError(f"{source}: not valid YAML ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(doc, dict):
        raise EplbError(f"{source}: expected a YAML mapping with num_slots and initial_global_assignments")
    assign = doc.get("initial_global_assignments")
    if assign is None:
        raise EplbError(
            f"{source}: no 'initial_global_assignments' (an online-only load balancer config has none); "
            "give a YAML with a static assignment"
        )
    if not isinstance(assign, dict) or not assign:
        raise EplbError(f"{source}: initial_global_assignments must map layer ids to lists of expert ids")
    keyed = sorted((_yaml_key(k, source), v) for k, v in assign.items())
    ids = [k for k, _ in keyed]
    if len(set(ids)) != len(ids):
        raise EplbError(f"{source}: initial_global_assignments repeats a layer id")
    width = None
    for layer, row in keyed:
        if not isinstance(row, list):
            raise EplbError(f"{source}: layer {layer}: expected a list of expert ids, got {type(row).__name__}")
        width = len(row) if width is None else width
        if len(row) != width:
            raise EplbError(f"{source}: layer {layer} lists {len(row)} slots but layer {ids[0]} lists {width}")
    phy2log = _int_table([row for _, row in keyed], source, "initial_global_assignments")
    slots = doc.get("num_slots", phy2log.shape[1])
    if isinstance(slots, bool) or not isinstance(slots, int) or slots != phy2log.shape[1]:
        raise EplbError(f"{source}: num_slots is {slots!r} but each layer lists {phy2log.shape[1]} experts")
    return phy2log, {"slots": slots, "layer_ids": ids}


# ---- vLLM-Ascend expert map JSON

def _write_vllm_ascend(p: Placement, extra: dict, name: str) -> bytes:
    """vLLM-Ascend's expert map: per layer and device, the experts of its local slots in order."""
    _require_full(p, name, "vLLM-Ascend")
    topo = p.topology
    rows = p.phy2log.view(p.layers, topo.gpus, topo.slots_per_gpu).tolist()
    doc = {
        "moe_layer_count": p.layers,
        "layer_list": [
            {
                "layer_id": layer,
                "device_count": topo.gpus,
                "device_list": [{"device_id": g, "device_expert": experts} for g, experts in enumerate(devices)],
            }
            for layer, devices in enumerate(rows)
        ],
    }
    return _json_bytes(doc)


def _ascend_layer(layer: object, i: int, source: str) -> list:
    """One ``layer_list`` entry as a list of per-device expert lists, in device order."""
    where = f"{source}: layer_list[{i}]"
    if not isinstance(layer, dict) or not isinstance(layer.get("device_list"), list):
        raise EplbError(f"{where} has no 'device_list' list; expected vLLM-Ascend's expert map layout")
    devices = layer["device_list"]
    count = layer.get("device_count", len(devices))
    if isinstance(count, bool) or not isinstance(count, int) or count != len(devices) or not devices:
        raise EplbError(f"{where}: device_count is {count!r} but device_list has {len(devices)} devices")
    if not all(isinstance(d, dict) and isinstance(d.get("device_expert"), list) for d in devices):
        raise EplbError(f"{where}: every device needs a 'device_expert' list of expert ids")
    if all("device_id" in d for d in devices):
        order = sorted(range(len(devices)), key=lambda k: devices[k]["device_id"] if isinstance(devices[k]["device_id"], int) else -1)
        if [devices[k]["device_id"] for k in order] != list(range(len(devices))):
            raise EplbError(f"{where}: device_id values must be 0..{len(devices) - 1}, each once")
        devices = [devices[k] for k in order]
    local = {len(d["device_expert"]) for d in devices}
    if len(local) != 1:
        raise EplbError(f"{where}: devices hold different numbers of experts ({sorted(local)}); each needs the same")
    return [d["device_expert"] for d in devices]


def _read_vllm_ascend(data: bytes, source: str) -> tuple[torch.Tensor, dict]:
    """vLLM-Ascend's expert map; its device count is the number of GPUs."""
    doc = _parse_json(data, source)
    if not isinstance(doc, dict) or not isinstance(doc.get("layer_list"), list) or not doc["layer_list"]:
        raise EplbError(f"{source}: no non-empty 'layer_list'; expected vLLM-Ascend's expert map layout")
    layers = doc["layer_list"]
    count = doc.get("moe_layer_count", len(layers))
    if isinstance(count, bool) or not isinstance(count, int) or count != len(layers):
        raise EplbError(f"{source}: moe_layer_count is {count!r} but layer_list has {len(layers)} layers")
    tables = [_ascend_layer(layer, i, source) for i, layer in enumerate(layers)]
    shapes = {(len(t), len(t[0])) for t in tables}
    if len(shapes) != 1:
        raise EplbError(f"{source}: layers differ in devices or experts per device ({sorted(shapes)}); each needs the same")
    gpus = len(tables[0])
    phy2log = _int_table([[e for dev in t for e in dev] for t in tables], source, "device_expert")
    ids = [layer.get("layer_id", i) for i, layer in enumerate(layers)]
    meta: dict = {"gpus": gpus}
    if all(isinstance(x, int) and not isinstance(x, bool) for x in ids) and len(set(ids)) == len(ids):
        meta["layer_ids"] = ids
    return phy2log, meta


# ---- long CSV

def _write_csv(p: Placement, extra: dict, name: str) -> bytes:
    """One row per (layer, slot) with GPU, node and replica spelled out, for spreadsheets and joins."""
    topo = p.topology
    layers, slots = p.phy2log.shape
    slot = torch.arange(slots).expand(layers, slots)
    gpu = slot // topo.slots_per_gpu
    node = gpu // topo.gpus_per_node
    layer = torch.arange(layers).unsqueeze(1).expand(layers, slots)
    table = torch.stack([layer, slot, gpu, node, p.phy2log, _replica_index(p.phy2log)], dim=-1).reshape(-1, 6)
    body = "\n".join(",".join(map(str, row)) for row in table.tolist())
    return (",".join(_CSV_COLUMNS) + "\n" + body + "\n").encode()


def _replica_index(phy2log: torch.Tensor) -> torch.Tensor:
    """For each slot, which replica of its expert it is (0, 1, ... in slot order); -1 for empty slots."""
    layers, slots = phy2log.shape
    order = torch.sort(phy2log, dim=1, stable=True)
    values = order.values
    pos = torch.arange(slots).expand(layers, slots)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
    rank = torch.empty_like(phy2log).scatter_(1, order.indices, pos - first)
    return torch.where(phy2log >= 0, rank, torch.full_like(rank, -1))


def _read_csv(data: bytes, source: str) -> tuple[torch.Tensor, dict]:
    """The long CSV: layer, slot and expert required; gpu, node and replica checked when present."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EplbError(f"{source}: not UTF-8 text; save the CSV as UTF-8") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise EplbError(f"{source}: CSV is empty; expected columns {','.join(_CSV_COLUMNS)}")
    head = [c.strip().lower() for c in rows[0]]
    missing = [c for c in ("layer", "slot", "expert") if c not in head]
    if missing:
        raise EplbError(f"{source}: CSV header lacks {', '.join(missing)} (found: {', '.join(head)}); "
                        f"expected {','.join(_CSV_COLUMNS)}")
    if len(rows) < 2:
        raise EplbError(f"{source}: CSV has a header but no rows")
    cols = [c for c in _CSV_COLUMNS if c in head]
    idx = [head.index(c) for c in cols]
    values = []
    for n, row in enumerate(rows[1:], start=2):
        try:
            values.append([int(row[i].strip()) for i in idx])
        except (ValueError, IndexError):
            raise EplbError(f"{source}: line {n}: {','.join(cols)} must all be integers") from None
    table = torch.tensor(values, dtype=torch.int64)
    col = {c: table[:, k] for k, c in enumerate(cols)}
    if bool((col["layer"] < 0).any() | (col["slot"] < 0).any() | (col["expert"] < -1).any()):
        raise EplbError(f"{source}: layer and slot must be >= 0 and expert >= -1 (-1 = empty slot)")
    layers, slots = int(col["layer"].max()) + 1, int(col["slot"].max()) + 1
    if layers * slots != len(values):
        raise EplbError(f"{source}: {len(values)} rows but {layers} layers x {slots} slots need {layers * slots}; "
                        "give every (layer, slot) once")
    cell = col["layer"] * slots + col["slot"]
    if torch.unique(cell).numel() != cell.numel():
        raise EplbError(f"{source}: a (layer, slot) pair appears twice; give every (layer, slot) once")
    phy2log = torch.empty(layers * slots, dtype=torch.int64)
    phy2log[cell] = col["expert"]
    phy2log = phy2log.view(layers, slots)
    meta: dict = {}
    if "gpu" in col:
        meta.update(_csv_topology(col, phy2log, slots, source))
    if "replica" in col:
        want = _replica_index(phy2log).flatten()[cell]
        if not torch.equal(want, col["replica"]):
            raise EplbError(f"{source}: replica column disagrees with the slot order of the experts; the file is corrupt")
    return phy2log, meta


def _csv_topology(col: dict[str, torch.Tensor], phy2log: torch.Tensor, slots: int, source: str) -> dict:
    """GPUs, nodes and excluded GPUs implied by the gpu/node columns, checked against the slot order."""
    gpus = int(col["gpu"].max()) + 1
    if slots % gpus or bool((col["gpu"] != col["slot"] // (slots // gpus)).any()):
        raise EplbError(f"{source}: gpu column must be slot // (slots per GPU) with {slots} slots on {gpus} GPUs")
    meta: dict = {"gpus": gpus}
    if "node" in col:
        nodes = int(col["node"].max()) + 1
        if gpus % nodes or bool((col["node"] != col["gpu"] // (gpus // nodes)).any()):
            raise EplbError(f"{source}: node column must be gpu // (GPUs per node) with {gpus} GPUs on {nodes} nodes")
        meta["nodes"] = nodes
    empty = (phy2log < 0).view(phy2log.shape[0], gpus, slots // gpus).all(-1).all(0)
    if bool(empty.any()):
        meta["excluded_gpus"] = empty.nonzero().flatten().tolist()
    return meta


# ---- registries, detection, entry points

WRITERS: dict[str, Callable[[Placement, dict, str], bytes]] = {
    "safetensors": _write_safetensors,
    "sglang": _write_sglang_json,
    "sglang-pt": _write_sglang_pt,
    "trtllm": _write_trtllm_yaml,
    "vllm-ascend": _write_vllm_ascend,
    "csv": _write_csv,
}
READERS: dict[str, Callable[[bytes, str], tuple[torch.Tensor, dict]]] = {
    "safetensors": _read_safetensors,
    "sglang": _read_sglang_json,
    "sglang-pt": _read_sglang_pt,
    "trtllm": _read_trtllm_yaml,
    "vllm-ascend": _read_vllm_ascend,
    "csv": _read_csv,
}


def _normalise(fmt: str) -> str:
    """The canonical placement format name for ``fmt`` (aliases json, pt, yaml, yml, ascend)."""
    name = _ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
    if name not in WRITERS:
        raise EplbError(f"--format {fmt}: unknown placement format; use one of {', '.join(PLACEMENT_FORMATS)}")
    return name


def placement_format(path: str, fmt: str | None = None) -> str:
    """The writer for ``path``: ``fmt`` if given, else the extension (``.json`` is SGLang's)."""
    if fmt:
        return _normalise(fmt)
    if str(path) == STDIN:
        raise EplbError("-: cannot tell the placement format of standard output; pass --format")
    ext = Path(path).suffix.lower()
    if ext not in EXTENSIONS:
        raise EplbError(
            f"{path}: unknown placement extension {ext or '(none)'}; use one of {', '.join(EXTENSIONS)} or --format"
        )
    return EXTENSIONS[ext]


def detect_placement_format(data: bytes, source: str, suffix: str = "") -> str | None:
    """The placement format of ``data`` from its extension and content; None when it is no placement.

    JSON is SGLang's when it has ``physical_to_logical_map``, vLLM-Ascend's when
    it has ``layer_list``; safetensors must hold ``phy2log``; CSV needs a
    ``slot`` column; ``torch.save`` files must hold ``physical_to_logical_map``.
    """
    suffix = suffix.lower()
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if suffix in (".yaml", ".yml"):
        return "trtllm"
    if head.startswith(b"{"):
        doc = _parse_json(data, source)
        if isinstance(doc, dict) and "layer_list" in doc:
            return "vllm-ascend"
        if isinstance(doc, dict) and "physical_to_logical_map" in doc:
            return "sglang"
        return None
    if data[:4] == b"PK\x03\x04":
        try:
            doc = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception:  # not a loadable torch.save file: let the trace reader explain
            return None
        return "sglang-pt" if isinstance(doc, dict) and "physical_to_logical_map" in doc else None
    if suffix == ".safetensors" or (len(data) > 10 and data[8:10] == b'{"'):
        try:
            return "safetensors" if "phy2log" in _safetensors_header(data, source) else None
        except EplbError:
            return None
    try:
        first = data[:4096].decode("utf-8-sig").splitlines()[0].lower() if data.strip() else ""
    except UnicodeDecodeError:
        return None
    if "," in first:
        return "csv" if "slot" in [c.strip().strip('"') for c in first.split(",")] else None
    if b"initial_global_assignments" in data[:65536]:
        return "trtllm"
    return None


def read_input_bytes(path: str, what: str = "placement file") -> bytes:
    """Bytes of the file ``path``, or of standard input for ``-``, with one-line errors."""
    if path == STDIN:
        stream = getattr(sys.stdin, "buffer", sys.stdin) if sys.stdin is not None else None
        try:
            data = stream.read() if stream is not None else b""
        except (OSError, ValueError) as exc:
            raise EplbError(f"<stdin>: cannot read standard input ({exc}); give a file instead") from None
        data = data.encode() if isinstance(data, str) else data
        if not data:
            raise EplbError(f"<stdin>: standard input is empty; pipe a {what} into it or give a file")
        return data
    p = Path(path)
    if not p.exists():
        raise EplbError(f"{path}: no such {what}; check the path")
    if p.is_dir():
        raise EplbError(f"{path}: is a folder, not a {what}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise EplbError(f"{path}: cannot read the file ({exc.strerror or exc}); check its permissions") from None
    if not data.strip():
        raise EplbError(f"{path}: file is empty")
    return data


def save_placement(p: Placement, path: str, *, force: bool = False, fmt: str | None = None, extra: dict | None = None) -> None:
    """Write ``p`` atomically (``-``: standard output); refuse to overwrite an existing file without ``force``.

    ``extra`` goes into eplb's own metadata; ``extra["layer_ids"]`` (the model's
    layer ids of the rows) also keys TensorRT-LLM's YAML.
    """
    name = placement_format(path, fmt)
    if str(path) == STDIN:
        if name in _BINARY and sys.stdout.isatty():
            raise EplbError(f"-: {name} is binary and standard output is a terminal; give a file name or pipe it")
    else:
        check_writable(path, force)
    write_bytes_atomic(path, WRITERS[name](p, dict(extra or {}), str(path)), force)


def read_placement_bytes(data: bytes, source: str, *, fmt: str | None = None, defaults: dict | None = None,
                         suffix: str = "") -> tuple[Placement, dict]:
    """Parse and validate a placement already in memory; return it with the file's metadata.

    ``defaults`` fills topology keys the file lacks (``gpus`` from the command
    line, ``experts`` from the trace); keys in the file win.
    """
    if fmt:
        name = _normalise(fmt)
    else:
        name = detect_placement_format(data, source, suffix) or EXTENSIONS.get(suffix.lower())
        if name is None:
            raise EplbError(
                f"{source}: not a placement file this tool knows ({', '.join(PLACEMENT_FORMATS)}); "
                "give a placement or pass --format"
            )
    phy2log, meta = READERS[name](data, source)
    info = dict(defaults or {})
    info.update({k: v for k, v in meta.items() if k in _TOPOLOGY_KEYS})
    info.setdefault("slots", int(phy2log.shape[1]))
    info.setdefault("experts", int(phy2log.max()) + 1)
    info.setdefault("policy", "auto")
    if "gpus" not in info:
        raise EplbError(f"{source}: the file does not say how many GPUs it was made for ({name} files hold no topology); pass --gpus")
    if int(info["slots"]) != phy2log.shape[1]:
        raise EplbError(f"{source}: metadata says {info['slots']} slots but phy2log has {phy2log.shape[1]}")
    topo = Topology.from_dict(info, source=source)
    placement = Placement(phy2log, topo).validate(source=source)
    stored = meta.get("_logcnt")
    if stored is not None and (stored.shape != placement.logcnt.shape or not torch.equal(stored.to(torch.int64), placement.logcnt)):
        raise EplbError(f"{source}: stored logcnt disagrees with phy2log; the file is corrupt")
    out = {k: v for k, v in meta.items() if not k.startswith("_") and k not in _TOPOLOGY_KEYS}
    out["file_format"] = name
    return placement, out


def read_placement(path: str, *, fmt: str | None = None, defaults: dict | None = None) -> tuple[Placement, dict]:
    """Read and validate a placement file (``-``: standard input); return it with the file's metadata."""
    source = "<stdin>" if str(path) == STDIN else str(path)
    suffix = "" if str(path) == STDIN else Path(path).suffix
    if fmt is None and suffix and suffix.lower() not in EXTENSIONS:
        raise EplbError(
            f"{path}: unknown placement extension {suffix}; use one of {', '.join(EXTENSIONS)} or --format"
        )
    return read_placement_bytes(read_input_bytes(str(path)), source, fmt=fmt, defaults=defaults, suffix=suffix)


def load_placement(path: str, *, fmt: str | None = None, defaults: dict | None = None) -> Placement:
    """Read and validate a placement file in any supported format (detected from extension and content)."""
    return read_placement(path, fmt=fmt, defaults=defaults)[0]
