"""Placement file formats: every writer round-trips through its reader, engine layouts are exact, bad files fail in one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.errors import EplbError
from eplb_cli.formats import (
    PLACEMENT_FORMATS,
    load_placement,
    read_placement,
    save_placement,
)
from eplb_cli.formats.placement_io import read_placement_source
from eplb_cli.formats.registry import detect_placement, placement_format
from eplb_cli.formats.source import Source
from eplb_cli.placement import Placement
from eplb_cli.topology import resolve

# DeepSeek's README example: 12 experts, 16 slots, 8 GPUs in 2 nodes, 4 groups.
PHY2LOG = torch.tensor([[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                        [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]])
FLAGS = {"gpus": 8, "nodes": 2, "groups": 4}
EXT = {"safetensors": "p.safetensors", "sglang": "p.json", "sglang-pt": "p.pt", "trtllm": "p.yaml",
       "vllm-ascend": "p.json", "vllm": "p.json", "csv": "p.csv"}
NAMED_ONLY = ("vllm-ascend", "vllm")
"""Formats written only when named: their files share SGLang's extension."""


def small() -> Placement:
    return Placement(PHY2LOG, resolve(12, 8, 2, slots=16, groups=4)).validate()


def excluded() -> Placement:
    return Placement(torch.tensor([[0, 1, -1, -1, 2, 3]]), resolve(4, 3, slots=6, exclude_gpus=[1])).validate()


@pytest.mark.parametrize("fmt", PLACEMENT_FORMATS)
def test_every_format_round_trips(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / EXT[fmt]
    save_placement(small(), str(path), fmt=fmt if fmt in NAMED_ONLY else None)
    q = load_placement(str(path), defaults=FLAGS)
    assert torch.equal(q.phy2log, PHY2LOG)
    assert q.topology == small().topology
    assert torch.equal(q.logcnt, small().logcnt) and torch.equal(q.log2phy, small().log2phy)


def test_sglang_json_holds_only_the_map(tmp_path: Path) -> None:
    """SGLang passes every key of the file to init_by_mapping(), so nothing else may be there."""
    path = tmp_path / "p.json"
    save_placement(small(), str(path), extra={"strategy": "deepseek"})
    assert json.loads(path.read_text()) == {"physical_to_logical_map": PHY2LOG.tolist()}


def test_sglang_pt_is_a_plain_tensor_dict(tmp_path: Path) -> None:
    path = tmp_path / "p.pt"
    save_placement(small(), str(path))
    doc = torch.load(path, weights_only=True)
    assert list(doc) == ["physical_to_logical_map"]
    assert doc["physical_to_logical_map"].dtype == torch.int64 and torch.equal(doc["physical_to_logical_map"], PHY2LOG)


def test_trtllm_yaml_layout(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    save_placement(small(), str(path), extra={"layer_ids": [3, 4]})
    doc = yaml.safe_load(path.read_text())
    assert doc == {"num_slots": 16, "initial_global_assignments": {3: PHY2LOG[0].tolist(), 4: PHY2LOG[1].tolist()},
                   "layer_updates_per_iter": 0}
    q, meta = read_placement(str(path), defaults=FLAGS)
    assert meta["layer_ids"] == [3, 4] and torch.equal(q.phy2log, PHY2LOG)


def test_vllm_ascend_layout(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    save_placement(small(), str(path), fmt="vllm-ascend")
    doc = json.loads(path.read_text())
    assert doc["moe_layer_count"] == 2 and len(doc["layer_list"]) == 2
    layer = doc["layer_list"][1]
    assert layer["layer_id"] == 1 and layer["device_count"] == 8 and len(layer["device_list"]) == 8
    assert layer["device_list"][3] == {"device_id": 3, "device_expert": PHY2LOG[1, 6:8].tolist()}
    q = load_placement(str(path), defaults={"nodes": 2, "groups": 4})
    assert q.topology.gpus == 8 and torch.equal(q.phy2log, PHY2LOG)


def test_csv_layout_carries_gpus_and_nodes(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    save_placement(small(), str(path))
    lines = path.read_text().splitlines()
    assert lines[0] == "layer,slot,gpu,node,expert,replica" and len(lines) == 1 + 2 * 16
    assert lines[1:4] == ["0,0,0,0,5,0", "0,1,0,0,6,0", "0,2,1,0,5,1"]
    assert lines[16] == "0,15,7,1,1,1"
    q = load_placement(str(path))
    assert (q.topology.gpus, q.topology.nodes) == (8, 2)


def test_foreign_files_in_the_engines_documented_layouts(tmp_path: Path) -> None:
    """Files as the engines' docs and sources show them, not as this tool writes them."""
    trt = tmp_path / "moe_load_balancer.yaml"
    trt.write_text("initial_global_assignments:\n  3: [1, 0, 2, 1]\n  4:\n  - 2\n  - 1\n  - 0\n  - 2\n"
                   "num_slots: 4\nlayer_updates_per_iter: 0\n")
    p, meta = read_placement(str(trt), defaults={"gpus": 2})
    assert p.phy2log.tolist() == [[1, 0, 2, 1], [2, 1, 0, 2]] and meta["layer_ids"] == [3, 4]
    asc = tmp_path / "expert_map.json"
    asc.write_text(json.dumps({"moe_layer_count": 1, "layer_list": [{"layer_id": 0, "device_count": 2, "device_list": [
        {"device_id": 1, "device_expert": [2, 0]}, {"device_id": 0, "device_expert": [1, 2]}]}]}))
    assert load_placement(str(asc)).phy2log.tolist() == [[1, 2, 2, 0]]
    csv_min = tmp_path / "min.csv"
    csv_min.write_text("layer,slot,expert\n0,1,1\n0,0,0\n0,3,2\n0,2,0\n")
    assert load_placement(str(csv_min), defaults={"gpus": 2}).phy2log.tolist() == [[0, 1, 0, 2]]
    legacy = tmp_path / "old.json"
    legacy.write_text(json.dumps({"physical_to_logical_map": [[0, 1, 1, 2]], "gpus": 2, "experts": 3, "slots": 4}))
    assert load_placement(str(legacy)).topology.gpus == 2


def test_json_kind_is_read_from_the_content(tmp_path: Path) -> None:
    sg, asc = tmp_path / "a.json", tmp_path / "b.json"
    save_placement(small(), str(sg))
    save_placement(small(), str(asc), fmt="vllm-ascend")
    assert detect_placement(Source.of_bytes(sg.read_bytes(), "a")).name == "sglang"
    assert detect_placement(Source.of_bytes(asc.read_bytes(), "b")).name == "vllm-ascend"
    assert detect_placement(Source.of_bytes(b'{"logical_count": [[1]]}', "t")) is None
    assert detect_placement(Source.of_bytes(b"layer,expert,load\n0,0,1\n", "t")) is None


def test_excluded_gpus_stay_in_eplb_formats_and_are_refused_by_engines(tmp_path: Path) -> None:
    for name in ("p.safetensors", "p.csv"):
        save_placement(excluded(), str(tmp_path / name))
        assert load_placement(str(tmp_path / name)).topology.excluded_gpus == (1,)
    for name, fmt in (("p.json", None), ("p.pt", None), ("p.yaml", None), ("a.json", "vllm-ascend")):
        with pytest.raises(EplbError, match="cannot hold empty slots") as err:
            save_placement(excluded(), str(tmp_path / name), fmt=fmt)
        assert str(tmp_path / name) in str(err.value)
        assert not (tmp_path / name).exists()


def test_stdout_and_stdin(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    save_placement(small(), "-", fmt="trtllm")
    data = capsysbinary.readouterr().out
    assert data.startswith(b"# eplb placement")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert torch.equal(load_placement("-", defaults=FLAGS).phy2log, PHY2LOG)
    with pytest.raises(EplbError, match="pass fmt"):
        save_placement(small(), "-")


def test_layer_ids_must_match_the_layers(tmp_path: Path) -> None:
    with pytest.raises(EplbError, match="layer ids"):
        save_placement(small(), str(tmp_path / "p.yaml"), extra={"layer_ids": [3]})
    assert not (tmp_path / "p.yaml").exists()


def test_unknown_format_names() -> None:
    with pytest.raises(EplbError, match=r"fmt=nope.*vllm-ascend"):
        save_placement(small(), "x.json", fmt="nope")


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("p.yaml", b"num_slots: [\n", "not valid YAML"),
        ("p.yaml", b"num_slots: 4\nlayer_updates_per_iter: 2\n", "online-only"),
        ("p.yaml", b"num_slots: 5\ninitial_global_assignments:\n  3: [0, 1, 0, 1]\n", "num_slots is 5"),
        ("p.yaml", b"initial_global_assignments:\n  3: [0, 1]\n  4: [0, 1, 1]\n", "layer 4 lists 3 slots"),
        ("p.yaml", b"initial_global_assignments:\n  x: [0, 1]\n", "not a layer id"),
        ("p.yaml", b"initial_global_assignments:\n  3: [0, 1.5]\n", "integer expert ids"),
        ("p.yaml", b"- 1\n- 2\n", "YAML mapping"),
        ("p.json", b'{"moe_layer_count": 2, "layer_list": [{"device_count": 1, "device_list": [{"device_expert": [0]}]}]}',
         "moe_layer_count is 2"),
        ("p.json", b'{"moe_layer_count": 1, "layer_list": [{"device_count": 2, "device_list": [{"device_expert": [0]}]}]}',
         "device_count is 2"),
        ("p.json", b'{"layer_list": [{"device_list": [{"device_expert": [0]}, {"device_expert": [1, 0]}]}]}',
         "different numbers of experts"),
        ("p.json", b'{"layer_list": [{"device_list": [{"device_id": 0, "device_expert": [0]}, {"device_id": 0, "device_expert": [1]}]}]}',
         "device_id values"),
        ("p.json", b'{"layer_list": [{"devices": []}]}', "device_list"),
        ("p.json", b'{"physical_to_logical_map": [[0, 1], [0]]}', "rectangular"),
        ("p.json", b'{"physical_to_logical_map": [[0.5, 1]]}', "integer expert ids"),
        ("p.json", b'{"something": 1}', "physical_to_logical_map"),
        ("p.json", b"{broken", "invalid JSON"),
        ("p.pt", b"PK\x03\x04 not a zip", "torch.save"),
        ("p.csv", b"layer,slot\n0,0\n", "lacks expert"),
        ("p.csv", b"layer,slot,expert\n0,0,x\n", "line 2"),
        ("p.csv", b"layer,slot,expert\n0,0,0\n0,0,1\n", "rows but"),
        ("p.csv", b"layer,slot,gpu,expert\n0,0,1,0\n0,1,0,1\n", "gpu column"),
        ("p.csv", b"layer,slot,gpu,node,expert,replica\n0,0,0,0,0,1\n0,1,1,0,1,0\n", "replica column"),
        ("p.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}", "safetensors"),
    ],
)
def test_bad_files_fail_in_one_line_naming_the_file(name: str, content: bytes, needle: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EplbError) as err:
        load_placement(str(path), defaults={"gpus": 1})
    message = str(err.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message


def test_refused_arbitrary_pickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"physical_to_logical_map": PHY2LOG, "hook": Path("x")}, path)
    with pytest.raises(EplbError, match=r"refused to load.*PosixPath.*weights_only=True"):
        load_placement(str(path), defaults=FLAGS)


def test_vllm_map_one_list_for_every_layer(tmp_path: Path) -> None:
    """vLLM's initial expert map may be one flat list that every MoE layer shares (pull request 49572)."""
    from eplb_cli import api
    from eplb_cli.trace import Trace

    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(PHY2LOG[0].tolist()))
    placement, meta = read_placement(str(flat), defaults=FLAGS)
    assert meta["all_layers"] is True and placement.layers == 1 and meta["file_format"] == "vllm"
    trace = Trace(torch.rand(1, 3, 12) + 0.5)
    fitted = api.placement_for(str(flat), trace, gpus=8, nodes=2, groups=4)
    assert fitted.layers == 3 and all(torch.equal(row, PHY2LOG[0]) for row in fitted.phy2log)
    with pytest.raises(EplbError, match="one expert map shared by every MoE layer"):
        api.convert_file(str(flat), str(tmp_path / "x.yaml"))
    api.convert_file(str(flat), str(tmp_path / "again.json"), fmt="vllm")
    assert json.loads((tmp_path / "again.json").read_text()) == PHY2LOG[0].tolist()
@st.composite
def placements(draw: st.DrawFn) -> tuple[Placement, list[int] | None]:
    """Any valid placement (maybe with excluded GPUs) and maybe the model's layer ids of its rows."""
    experts, gpus = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    per = draw(st.integers(-(-experts // gpus), -(-experts // gpus) + 2))
    excluded = draw(st.lists(st.integers(0, gpus - 1), unique=True, max_size=gpus - 1))
    if (gpus - len(excluded)) * per < experts:
        excluded = []
    topo = resolve(experts, gpus, slots=gpus * per, exclude_gpus=excluded)
    live = [s for s in range(topo.slots) if s // per not in excluded]
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        extra = draw(st.lists(st.integers(0, experts - 1), min_size=len(live) - experts, max_size=len(live) - experts))
        order = draw(st.permutations(list(range(experts)) + extra))
        row = [-1] * topo.slots
        for slot, expert in zip(live, order):
            row[slot] = expert
        rows.append(row)
    ids = draw(st.one_of(st.none(), st.lists(st.integers(0, 200), unique=True, min_size=len(rows),
                                             max_size=len(rows)).map(sorted)))
    return Placement(torch.tensor(rows), topo).validate(), ids


KEEPS_LAYER_IDS = {"safetensors", "trtllm"}
KEEPS_TOPOLOGY = {"safetensors"}
HOLDS_EMPTY_SLOTS = {"safetensors", "csv"}
SWAPS_TRIVIAL_ROWS = {"sglang", "sglang-pt"}
"""Formats that tell dense layers by SGLang's trivial row: a planned row equal to it comes back with slots 0 and 1 swapped."""


@pytest.mark.parametrize("fmt", PLACEMENT_FORMATS)
@settings(max_examples=40, deadline=None)
@given(case=placements(), text=st.text(max_size=12))
def test_every_writer_is_read_back_exactly(fmt: str, case: tuple[Placement, list[int] | None], text: str) -> None:
    """Whatever eplb writes, eplb reads: the same slots, GPUs, topology and layer ids where the format keeps them."""
    p, ids = case
    if ids is not None:
        p = Placement(p.phy2log, p.topology, tuple(ids)).validate()
    extra: dict = {"strategy": text, "source": text}
    writer = placement_format(fmt)
    if p.topology.excluded_gpus and fmt not in HOLDS_EMPTY_SLOTS:
        with pytest.raises(EplbError, match="cannot hold empty slots"):
            writer.write(p, extra, "out")
        return
    if fmt in SWAPS_TRIVIAL_ROWS and p.topology.experts == 1 and max(p.ids) + 1 > p.layers:
        with pytest.raises(EplbError, match="with one expert a planned layer and a dense one are the same row"):
            writer.write(p, extra, "out")
        return
    data = writer.write(p, extra, "out")
    back, meta = read_placement_source(Source.of_bytes(data, "mem", "placement file"), input_format=fmt,
                                       defaults={"gpus": p.topology.gpus})
    if fmt in SWAPS_TRIVIAL_ROWS:
        trivial = torch.arange(p.topology.slots) % p.topology.experts
        swapped = trivial.clone()
        if p.topology.experts > 1:
            swapped[[0, 1]] = trivial[[1, 0]]
        same = (back.phy2log == p.phy2log).all(1)
        moved = (p.phy2log == trivial).all(1) & (back.phy2log == swapped).all(1)
        assert bool((same | moved).all()), "only a trivial row may change, by its first two slots"
    else:
        assert torch.equal(back.phy2log, p.phy2log)
    assert back.topology.gpus == p.topology.gpus and back.topology.slots == p.topology.slots
    if fmt in KEEPS_TOPOLOGY:
        assert back.topology == p.topology and meta["strategy"] == text
    if ids is not None and fmt in KEEPS_LAYER_IDS:
        assert meta["layer_ids"] == ids


@pytest.mark.parametrize("ids, needle", [([-1, 0, 1, 2], r"layer_ids\[0\] is -1"), ([0, 2, 1, 3], "must increase"),
                                         (["0", 1, 2, 3], r"layer_ids\[0\] is '0'"), ([0, 1, 2, 2.5], "is 2.5"),
                                         ("[0, 1]", "must be a non-empty list")])
def test_writers_refuse_layer_ids_no_reader_accepts(ids: object, needle: str, tmp_path: Path) -> None:
    """Negative, unordered, text or fractional layer ids are refused before anything is written."""
    p = Placement(torch.tensor([[0, 1]] * 4), resolve(2, 1, slots=2)).validate()
    with pytest.raises(EplbError, match=needle):
        save_placement(p, str(tmp_path / "p.yaml"), extra={"layer_ids": ids})
    assert list(tmp_path.iterdir()) == []


def test_yaml_is_strict(tmp_path: Path) -> None:
    """Duplicate keys, a layer given as a number and as text, aliases that explode: one line each."""
    cases = {
        "dup.yaml": (b"num_slots: 2\nnum_slots: 3\ninitial_global_assignments:\n  0: [0, 1]\n",
                     "line 2: key 'num_slots' appears twice"),
        "mixed.yaml": (b"num_slots: 2\ninitial_global_assignments:\n  1: [0, 1]\n  '1': [1, 0]\n", "layer 1 twice"),
        "deep.yaml": (b"num_slots: 2\ninitial_global_assignments:\n  0: " + b"[" * 5000 + b"]" * 5000 + b"\n",
                      "nested too deeply"),
    }
    for name, (content, needle) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(EplbError, match=needle):
            load_placement(str(path), defaults={"gpus": 1})
    merged = tmp_path / "merge.yaml"  # YAML merge keys may repeat a key on purpose: the explicit one wins
    merged.write_bytes(b"base: &b {num_slots: 9}\nnum_slots: 2\n<<: *b\ninitial_global_assignments:\n  0: [0, 1]\n")
    assert load_placement(str(merged), defaults={"gpus": 1}).topology.slots == 2


def test_vllm_ascend_layers_are_read_in_entry_order_with_increasing_ids(tmp_path: Path) -> None:
    """vLLM-Ascend reads the entries by MoE-layer counter, so eplb does too, and layer ids that do not increase
    with the entries are refused rather than reordered."""
    doc = {"moe_layer_count": 2, "layer_list": [
        {"layer_id": 7, "device_count": 1, "device_list": [{"device_id": 0, "device_expert": [1, 0]}]},
        {"layer_id": 3, "device_count": 1, "device_list": [{"device_id": 0, "device_expert": [0, 1]}]}]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(EplbError, match=r"layer_list\[1\].layer_id is 3 after 7"):
        read_placement(str(path))
    doc["layer_list"][0]["layer_id"], doc["layer_list"][1]["layer_id"] = 3, 7
    path.write_text(json.dumps(doc))
    p, meta = read_placement(str(path))
    assert p.phy2log.tolist() == [[1, 0], [0, 1]] and meta["layer_ids"] == [3, 7]
    yaml_path = tmp_path / "a.yaml"
    save_placement(p, str(yaml_path), extra={"layer_ids": meta["layer_ids"]})
    assert torch.equal(load_placement(str(yaml_path), defaults={"gpus": 1}).phy2log, p.phy2log)
