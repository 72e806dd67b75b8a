"""MoE-layer numbering: a DeepSeek-V3-shaped trace with dense rows through every placement format.

Each engine's reading rule is written out here from its source (cited in the
format modules): SGLang indexes its map by model layer id, TensorRT-LLM looks
up its YAML by model layer id, vLLM-Ascend and vLLM index theirs by a MoE-layer
counter. The test checks which planned row each engine gives each MoE layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run

from eplb_cli import api
from eplb_cli.errors import EplbError
from eplb_cli.formats import PLACEMENT_FORMATS, load_placement, read_placement, save_placement
from eplb_cli.formats.safetensors_file import encode
from eplb_cli.moe_layers import align, moe_rows
from eplb_cli.placement import Placement
from eplb_cli.synthetic import generate
from eplb_cli.trace import Trace

DENSE = 3
"""DeepSeek-V3: model layers 0-2 are dense, 3-60 MoE."""
LAYERS, EXPERTS, GPUS, NODES = 61, 256, 32, 4
EXT = {"safetensors": "p.safetensors", "sglang": "p.json", "sglang-pt": "p.pt", "trtllm": "p.yaml",
       "vllm-ascend": "ascend.json", "vllm": "vllm.json", "csv": "p.csv"}


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SGLang-style dump: 61 model layers, the first 3 all zero, 2 windows, 8 groups."""
    moe = generate(LAYERS - DENSE, EXPERTS, 2, seed=5, groups=8).load
    load = torch.cat([torch.zeros(2, DENSE, EXPERTS, dtype=torch.float64), moe], dim=1)
    path = tmp_path_factory.mktemp("dsv3") / "dump.safetensors"
    path.write_bytes(encode({"load": load.to(torch.float32)}, {"groups": "8"}))
    return path


def plan(dump: Path, out: Path, fmt: str) -> api.PlanReport:
    return api.plan_trace(str(dump), api.ClusterOptions(GPUS, NODES), strategy="fast", output=str(out), fmt=fmt,
                          force=True, warn=lambda _: None)


def engine_rows(fmt: str, path: Path) -> dict[int, list[int]]:
    """The slot table each engine loads for MoE layer k (counted 0, 1, ...) of a model whose MoE layers are 3..60."""
    moe_ids = range(DENSE, LAYERS)
    if fmt == "sglang":  # map[layer_id]: rows are model layers
        table = json.loads(path.read_text())["physical_to_logical_map"]
        return {k: table[layer] for k, layer in enumerate(moe_ids)}
    if fmt == "sglang-pt":
        table = torch.load(path, weights_only=True)["physical_to_logical_map"].tolist()
        return {k: table[layer] for k, layer in enumerate(moe_ids)}
    if fmt == "trtllm":  # initial_global_assignments[layer_idx]
        doc = yaml.safe_load(path.read_text())
        return {k: doc["initial_global_assignments"][layer] for k, layer in enumerate(moe_ids)}
    if fmt == "vllm-ascend":  # layer_list[moe_counter]; moe_counter == moe_layer_count is the MTP layer
        doc = json.loads(path.read_text())
        assert doc["moe_layer_count"] == len(moe_ids)
        return {k: [e for dev in doc["layer_list"][k]["device_list"] for e in dev["device_expert"]]
                for k in range(len(moe_ids))}
    if fmt == "vllm":  # one list per MoE layer, in order
        lists = json.loads(path.read_text())
        assert len(lists) == len(moe_ids)
        return dict(enumerate(lists))
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["sglang", "sglang-pt", "trtllm", "vllm-ascend", "vllm"])
def test_each_engine_gives_each_moe_layer_its_planned_row(fmt: str, dump: Path, tmp_path: Path) -> None:
    path = tmp_path / EXT[fmt]
    rep = plan(dump, path, fmt)
    planned = rep.result.placement.phy2log
    got = engine_rows(fmt, path)
    for k in range(LAYERS - DENSE):
        assert got[k] == planned[DENSE + k].tolist(), (fmt, k)


def test_sglang_lists_every_model_layer_dense_ones_trivially(dump: Path, tmp_path: Path) -> None:
    plan(dump, tmp_path / "p.json", "sglang")
    table = json.loads((tmp_path / "p.json").read_text())["physical_to_logical_map"]
    slots = len(table[0])
    assert len(table) == LAYERS
    assert all(table[layer] == [p % EXPERTS for p in range(slots)] for layer in range(DENSE))


def test_trtllm_keys_are_the_moe_layers_model_ids(dump: Path, tmp_path: Path) -> None:
    plan(dump, tmp_path / "p.yaml", "trtllm")
    doc = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert sorted(doc["initial_global_assignments"]) == list(range(DENSE, LAYERS))


def test_vllm_ascend_entries_carry_model_ids(dump: Path, tmp_path: Path) -> None:
    plan(dump, tmp_path / "a.json", "vllm-ascend")
    doc = json.loads((tmp_path / "a.json").read_text())
    assert [e["layer_id"] for e in doc["layer_list"]] == list(range(DENSE, LAYERS))
    assert all(e["device_count"] == GPUS for e in doc["layer_list"])


def test_a_61_entry_ascend_file_shifts_every_layer(dump: Path, tmp_path: Path) -> None:
    """What eplb wrote before: every row of the dump. vLLM-Ascend's counter then gives MoE layer k model layer k's plan."""
    rep = plan(dump, tmp_path / "p.safetensors", "safetensors")
    full = rep.result.placement
    old = tmp_path / "old.json"
    save_placement(Placement(full.phy2log, full.topology), str(old), fmt="vllm-ascend")
    doc = json.loads(old.read_text())
    assert doc["moe_layer_count"] == LAYERS
    first_moe = [e for dev in doc["layer_list"][0]["device_list"] for e in dev["device_expert"]]
    assert first_moe != full.phy2log[DENSE].tolist() and first_moe == full.phy2log[0].tolist()


@pytest.mark.parametrize("fmt", PLACEMENT_FORMATS)
def test_every_format_keeps_the_model_ids_and_evaluates_like_the_plan(fmt: str, dump: Path, tmp_path: Path) -> None:
    path = tmp_path / EXT[fmt]
    rep = plan(dump, path, fmt)
    placement, _ = read_placement(str(path), defaults={"gpus": GPUS, "nodes": NODES, "groups": 8})
    if fmt != "vllm":  # vLLM's lists carry no ids: they are the MoE layers in order
        assert placement.ids == list(range(DENSE, LAYERS))
    trace = api.load_trace(str(dump))
    fitted = api.placement_for(str(path), trace, gpus=GPUS, nodes=NODES)
    assert torch.equal(fitted.phy2log[DENSE:], rep.result.placement.phy2log[DENSE:])
    assert api.evaluate(fitted, trace).summary() == rep.result.score.summary()


def test_convert_keeps_ids_and_drops_sglang_dense_rows(dump: Path, tmp_path: Path, capsys) -> None:
    rep = plan(dump, tmp_path / "p.safetensors", "safetensors")
    assert run(capsys, "convert", tmp_path / "p.safetensors", tmp_path / "s.json")[0] == 0
    assert run(capsys, "convert", tmp_path / "s.json", tmp_path / "v.json", "--format", "vllm")[0] == 0
    lists = json.loads((tmp_path / "v.json").read_text())
    assert lists == rep.result.placement.phy2log[DENSE:].tolist()
    code, _, err = run(capsys, "convert", tmp_path / "s.json", tmp_path / "back.csv", "--gpus", GPUS)
    assert code == 0, err
    assert load_placement(str(tmp_path / "back.csv")).ids == list(range(DENSE, LAYERS))


def test_align_fills_dense_rows_and_rejects_foreign_layers() -> None:
    load = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]]])
    trace = Trace(load)
    assert moe_rows(trace) == [1, 2]
    topo = api.topology_for(trace, 1, slots=2)
    moe = Placement(torch.tensor([[1, 0], [0, 1]]), topo, (1, 2))
    fitted = align(moe, trace)
    assert fitted.layer_ids == (0, 1, 2) and fitted.phy2log[1:].tolist() == [[1, 0], [0, 1]]
    unnamed = Placement(torch.tensor([[1, 0], [0, 1]]), topo)  # a MoE-indexed file: rows are the MoE layers
    assert torch.equal(align(unnamed, trace).phy2log[1:], fitted.phy2log[1:])
    with pytest.raises(EplbError, match="which the trace lacks"):
        align(Placement(torch.tensor([[1, 0], [0, 1]]), topo, (2, 3)), trace)
    with pytest.raises(EplbError, match="first without a placement row: 2"):
        align(Placement(torch.tensor([[1, 0]]), topo, (1,)), trace)


@pytest.mark.parametrize("strategy", ["deepseek", "fast"])
def test_previous_without_dense_rows_moves_nothing_on_the_same_load(strategy: str, dump: Path, tmp_path: Path) -> None:
    """The file served now holds the MoE layers only; its dense rows must not count as moves."""
    cluster = api.ClusterOptions(GPUS, NODES)
    api.plan_trace(str(dump), cluster, strategy=strategy, output=str(tmp_path / "now.yaml"), warn=lambda _: None)
    again = api.plan_trace(str(dump), cluster, strategy=strategy, previous=str(tmp_path / "now.yaml"),
                           warn=lambda _: None)
    assert again.result.moves == {"moves": 0, "moves_intra_node": 0, "moves_inter_node": 0}
