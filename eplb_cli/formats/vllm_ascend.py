"""vLLM-Ascend: the expert map JSON its ``expert_map_path`` option reads (placements).

``{"moe_layer_count", "layer_list": [{"layer_id", "device_count",
"device_list": [{"device_id", "device_expert": [expert per local slot]}]}]}``
(checked against vllm-project/vllm-ascend
``vllm_ascend/ops/expert_load_balancer.py``, which stacks ``device_expert``
into an [L, devices, local] tensor, so every device lists the same number of
experts). Told apart from SGLang's JSON by its ``layer_list`` key on read;
written with ``--format vllm-ascend``. Layers are read in increasing
``layer_id`` order (like TensorRT-LLM's YAML), devices in ``device_id`` order.
"""

from __future__ import annotations

import torch

from ..errors import EplbError, quote
from ..placement import Placement
from .base import PlacementFormat
from .jsonio import json_bytes
from .maps import int_table, require_full
from .source import Source


def write_map(p: Placement, extra: dict, name: str) -> bytes:
    """vLLM-Ascend's expert map: per layer and device, the experts of its local slots in order."""
    require_full(p, name, "vLLM-Ascend")
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
    return json_bytes(doc)


def _ascend_layer(layer: object, i: int, source: str) -> list:
    """One ``layer_list`` entry as a list of per-device expert lists, in device order."""
    where = f"{source}: layer_list[{i}]"
    if not isinstance(layer, dict) or not isinstance(layer.get("device_list"), list):
        raise EplbError(f"{where} has no 'device_list' list; expected vLLM-Ascend's expert map layout")
    devices = layer["device_list"]
    count = layer.get("device_count", len(devices))
    if isinstance(count, bool) or not isinstance(count, int) or count != len(devices) or not devices:
        raise EplbError(f"{where}: device_count is {quote(count)} but device_list has {len(devices)} devices")
    if not all(isinstance(d, dict) and isinstance(d.get("device_expert"), list) for d in devices):
        raise EplbError(f"{where}: every device needs a 'device_expert' list of expert ids")
    if any("device_id" in d for d in devices):
        ids = [d.get("device_id") for d in devices]
        if any(isinstance(x, bool) or not isinstance(x, int) for x in ids) or sorted(ids) != list(range(len(devices))):
            raise EplbError(f"{where}: device_id values must be the integers 0..{len(devices) - 1}, each once")
        devices = [devices[k] for k in sorted(range(len(devices)), key=ids.__getitem__)]
    local = {len(d["device_expert"]) for d in devices}
    if len(local) != 1:
        raise EplbError(f"{where}: devices hold different numbers of experts ({sorted(local)}); each needs the same")
    return [d["device_expert"] for d in devices]


def read_map(src: Source) -> tuple[torch.Tensor, dict]:
    """vLLM-Ascend's expert map; its device count is the number of GPUs."""
    source = src.name
    doc = src.json(nesting="a placement is a [layers][slots] table")
    if not isinstance(doc, dict) or not isinstance(doc.get("layer_list"), list) or not doc["layer_list"]:
        raise EplbError(f"{source}: no non-empty 'layer_list'; expected vLLM-Ascend's expert map layout")
    layers = doc["layer_list"]
    count = doc.get("moe_layer_count", len(layers))
    if isinstance(count, bool) or not isinstance(count, int) or count != len(layers):
        raise EplbError(f"{source}: moe_layer_count is {quote(count)} but layer_list has {len(layers)} layers")
    tables = [_ascend_layer(layer, i, source) for i, layer in enumerate(layers)]
    shapes = {(len(t), len(t[0])) for t in tables}
    if len(shapes) != 1:
        raise EplbError(f"{source}: layers differ in devices or experts per device ({sorted(shapes)[:4]}); "
                        "each needs the same")
    gpus = len(tables[0])
    meta: dict = {"gpus": gpus}
    if any("layer_id" in layer for layer in layers):
        ids = [layer.get("layer_id") for layer in layers]
        for i, x in enumerate(ids):
            if isinstance(x, bool) or not isinstance(x, int) or x < 0:
                raise EplbError(f"{source}: layer_list[{i}].layer_id is {quote(x)}; layer ids are non-negative "
                                "integers")
        order = sorted(range(len(ids)), key=ids.__getitem__)
        tables, ids = [tables[k] for k in order], [ids[k] for k in order]
        if len(set(ids)) != len(ids):
            raise EplbError(f"{source}: layer_list repeats a layer_id; give each layer once")
        meta["layer_ids"] = ids
    phy2log = int_table([[e for dev in t for e in dev] for t in tables], source, "device_expert")
    return phy2log, meta


def _claims(src: Source) -> bool:
    doc = src.json(nesting="a placement is a [layers][slots] table")
    return isinstance(doc, dict) and "layer_list" in doc


MAP = PlacementFormat("vllm-ascend", "json", read_map, write_map, claims=_claims, aliases=("ascend",))
