import json

import pytest
import torch

from eplb_cli.errors import EplbError
from eplb_cli.formats import load_placement, save_placement
from eplb_cli.placement import Placement, slots_of_experts
from eplb_cli.topology import resolve

PHY2LOG = torch.tensor([[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1], [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]])


def small() -> Placement:
    return Placement(PHY2LOG, resolve(12, 8, 2, slots=16, groups=4)).validate()


def test_derived_tensors_are_consistent():
    p = small()
    assert p.logcnt.sum(1).tolist() == [16, 16]
    l2p = p.log2phy
    assert l2p.shape == (2, 12, int(p.logcnt.max()))
    for layer in range(2):
        for e in range(12):
            slots = [s for s in l2p[layer, e].tolist() if s >= 0]
            assert slots == [s for s in range(16) if PHY2LOG[layer, s] == e]


def test_log2phy_skips_empty_slots():
    phy = torch.tensor([[0, -1, 1, 0]])
    assert slots_of_experts(phy, 2).tolist() == [[[0, 3], [2, -1]]]


@pytest.mark.parametrize("ext", ["safetensors", "json"])
def test_round_trip(tmp_path, ext):
    p = small()
    path = tmp_path / f"p.{ext}"
    save_placement(p, str(path))
    # SGLang's JSON holds only the map (SGLang passes every key to init_by_mapping): topology comes from flags.
    defaults = {"gpus": 8, "nodes": 2, "groups": 4} if ext == "json" else None
    q = load_placement(str(path), defaults=defaults)
    assert torch.equal(q.phy2log, p.phy2log)
    assert q.topology == p.topology


def test_sglang_json_has_engine_key(tmp_path):
    path = tmp_path / "p.json"
    save_placement(small(), str(path))
    doc = json.loads(path.read_text())
    assert doc["physical_to_logical_map"] == PHY2LOG.tolist()


def test_no_overwrite_without_force(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("old")
    with pytest.raises(EplbError, match="pass force=True"):
        save_placement(small(), str(path))
    assert path.read_text() == "old"
    save_placement(small(), str(path), force=True)
    assert "physical_to_logical_map" in path.read_text()


def test_foreign_sglang_json_needs_gpus(tmp_path):
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps({"physical_to_logical_map": PHY2LOG.tolist()}))
    with pytest.raises(EplbError, match="pass gpus"):
        load_placement(str(path))
    q = load_placement(str(path), defaults={"gpus": 8, "experts": 12})
    assert q.topology.slots == 16 and q.topology.gpus == 8


@pytest.mark.parametrize(
    "phy2log, needle",
    [
        ([[0, 1, 2, 99]], "out of range"),
        ([[0, 0, 1, 1]], "has no replica"),
        ([[0, -1, 1, 2]], "only allowed on excluded"),
    ],
)
def test_corrupt_placements_rejected(tmp_path, phy2log, needle):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"physical_to_logical_map": phy2log, "experts": 3, "gpus": 2, "slots": 4}))
    with pytest.raises(EplbError, match=needle):
        load_placement(str(path))


def test_unreadable_files(tmp_path):
    for name, data in [("t.json", b"{not json"), ("t.safetensors", b"\x00\x01garbage"), ("x.json", b'{"a": 1}')]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(EplbError) as err:
            load_placement(str(path))
        assert str(path) in str(err.value)
    with pytest.raises(EplbError, match="no such placement"):
        load_placement(str(tmp_path / "missing.json"))
    with pytest.raises(EplbError, match="unknown placement extension"):
        load_placement(str(tmp_path / "t.json").replace(".json", ".yamlx"))


def test_stored_logcnt_must_agree(tmp_path):
    from safetensors.torch import save_file

    p = small()
    meta = {k: json.dumps(v) for k, v in p.topology.as_dict().items()}
    bad = p.logcnt.clone()
    bad[0, 0] += 1
    path = tmp_path / "p.safetensors"
    save_file({"phy2log": p.phy2log, "logcnt": bad}, str(path), metadata=meta)
    with pytest.raises(EplbError, match="disagrees"):
        load_placement(str(path))


def test_excluded_gpus_round_trip(tmp_path):
    topo = resolve(4, 3, slots=6, exclude_gpus=[1])
    p = Placement(torch.tensor([[0, 1, -1, -1, 2, 3]]), topo).validate()
    path = tmp_path / "p.safetensors"
    save_placement(p, str(path))
    assert load_placement(str(path)).topology.excluded_gpus == (1,)
