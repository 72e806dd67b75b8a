"""vLLM-Ascend: the expert map JSON its ``expert_map_path`` option reads (placements).

``{"moe_layer_count", "layer_list": [{"layer_id", "device_count",
"device_list": [{"device_id", "device_expert": [expert per local slot]}]}]}``
(checked against vllm-project/vllm-ascend at commit 182b75e, August 2026:
``vllm_ascend/eplb/core/eplb_utils.py``, ``expert_file_to_tensor`` stacks one
entry's ``device_expert`` lists into a [devices, local] tensor, so every
device lists the same number of experts).

The entries are MoE layers, in order: ``AscendRoutedExperts.init_eplb``
(``vllm_ascend/ops/fused_moe/routed_experts.py``) passes its MoE-layer counter
(0 for the first MoE layer, whatever its model id) as the index into
``layer_list``, and ``layer_id`` is never read. An entry index equal to
``moe_layer_count`` is the MTP layer, which gets the default layout. So the
file holds exactly the MoE layers: a 61-entry file for DeepSeek-V3 (dense
layers 0-2 included, as eplb wrote before it kept layer ids) gives every MoE
layer the plan of the layer three below it and the MTP layer the plan of
layer 58. ``layer_id`` carries the model id, for people and for eplb, so it
must be a non-negative integer that increases with the entries, as the
engine reads them; devices are read in ``device_id`` order. Told apart from
SGLang's JSON by its ``layer_list`` key on read; written with ``--format
vllm-ascend``.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from ..errors import EplbError, quote
from ..placement import Placement
from .base import PlacementFormat
from .jsonio import json_bytes
from .launch import settings
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
                "layer_id": p.ids[layer],
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
        for i, (a, b) in enumerate(pairwise(ids), start=1):
            if b <= a:
                raise EplbError(f"{source}: layer_list[{i}].layer_id is {b} after {a}; vLLM-Ascend reads the "
                                "entries in order (MoE layer 0, 1, ...), so their layer ids must increase")
        meta["layer_ids"] = ids
    phy2log = int_table([[e for dev in t for e in dev] for t in tables], source, "device_expert")
    return phy2log, meta


def launch(p: Placement, path: str, gpus: int | None) -> dict:
    """vLLM-Ascend's settings for this map (``EplbConfig`` in ``vllm_ascend/ascend_config.py``)."""
    flags = ("--enable-expert-parallel --additional-config "
             "'{{\"eplb_config\": {{\"expert_map_path\": \"{file}\", \"num_redundant_experts\": {redundant}}}}}' "
             "with tensor x data parallel size = {ep}")
    notes = [
        f"num_redundant_experts must be slots - experts = {p.topology.slots - p.topology.experts}: the weights are "
        "allocated with it and AscendRoutedExperts.init_eplb refuses a map of another size",
        f"the EP size must equal the file's device_count ({p.topology.gpus}); layer_list holds the {p.layers} MoE "
        "layers in order, read by MoE-layer counter",
        "vLLM-Ascend's documentation marks the static expert map MRv1 only and due for removal in v0.25.1",
    ]
    return settings("vLLM-Ascend", p, path, gpus, flags, notes)


def _claims(src: Source) -> bool:
    doc = src.json(nesting="a placement is a [layers][slots] table")
    return isinstance(doc, dict) and "layer_list" in doc


MAP = PlacementFormat("vllm-ascend", "json", read_map, write_map, claims=_claims, aliases=("ascend",), topology=True,
                      launch=launch)
