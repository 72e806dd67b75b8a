"""`eplb convert`: traces and placements through every format and back, pipes, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, SMALL, run
from safetensors.torch import save_file

from eplb_cli.formats import load_placement, read_trace, save_placement
from eplb_cli.placement import Placement
from eplb_cli.topology import resolve

PHY2LOG = torch.tensor([[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                        [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]])




def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("eplb: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def placement_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.safetensors"
    save_placement(Placement(PHY2LOG, resolve(12, 8, 2, slots=16, groups=4)).validate(), str(path))
    return path


def test_trace_round_trip_through_every_writer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = [("a.csv", None), ("b.csv", "csv-wide"), ("c.json", "vllm"), ("d.json", None), ("e.safetensors", None)]
    src = SMALL
    for name, fmt in steps:
        args = ["convert", src, tmp_path / name] + (["--format", fmt] if fmt else [])
        code, out, err = run(capsys, *args)
        assert code == 0 and out == "" and f"wrote {tmp_path / name}" in err
        src = tmp_path / name
    assert torch.equal(read_trace(src).load, read_trace(SMALL).load)
    assert "logical_count" in (tmp_path / "d.json").read_text()


@pytest.fixture
def trtllm_folder(tmp_path: Path) -> Path:
    """TensorRT-LLM's expert statistics: meta_info.json + rank{r}.safetensors keyed "{iter}_{layer}" (layers 3, 4)."""
    folder = tmp_path / "expert_statistic"
    folder.mkdir()
    (folder / "meta_info.json").write_text(json.dumps({"num_experts": 4, "num_experts_per_token": 2}))
    save_file({"100_3": torch.tensor([1, 2, 3, 4]), "100_4": torch.tensor([4, 3, 2, 1]),
               "101_3": torch.tensor([0, 1, 0, 1]), "101_4": torch.tensor([2, 2, 2, 2])}, str(folder / "rank0.safetensors"))
    save_file({"100_3": torch.tensor([1, 1, 1, 1]), "100_4": torch.tensor([0, 0, 0, 0]),
               "101_3": torch.tensor([0, 0, 0, 0]), "101_4": torch.tensor([0, 0, 0, 1])}, str(folder / "rank1.safetensors"))
    return folder


def test_plan_writes_trtllm_yaml_keyed_by_the_traced_layer_ids(trtllm_folder: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "moe_load_balancer.yaml"
    assert run(capsys, "plan", trtllm_folder, "--gpus", 2, "--slots", 6, "-o", out, "-q")[0] == 0
    assert sorted(yaml.safe_load(out.read_text())["initial_global_assignments"]) == [3, 4]


def test_trtllm_statistics_folder_to_a_trace_file(trtllm_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = trtllm_folder
    code, out, _ = run(capsys, "convert", folder, tmp_path / "t.json", "--json")
    assert code == 0
    assert json.loads(out) == {"kind": "trace", "input": str(folder), "output": str(tmp_path / "t.json"),
                               "format": "sglang", "windows": 2, "layers": 2, "experts": 4}
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["logical_count"][0] == [[2, 3, 4, 5], [4, 3, 2, 1]]


def test_placement_round_trip_through_every_format(placement_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    chain = [("p.yaml", []), ("p.csv", ["--gpus", 8, "--nodes", 2, "--groups", 4]), ("a.json", ["--format", "vllm-ascend"]),
             ("p.pt", ["--nodes", 2]), ("p.json", ["--gpus", 8]), ("z.safetensors", ["--gpus", 8, "--nodes", 2, "--groups", 4])]
    src = placement_file
    for name, extra in chain:
        code, _, err = run(capsys, "convert", src, tmp_path / name, *extra)
        assert code == 0, err
        src = tmp_path / name
    back = load_placement(str(src))
    assert torch.equal(back.phy2log, PHY2LOG) and back.topology == load_placement(str(placement_file)).topology


def test_placement_json_summary_and_layer_ids_survive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml_in = tmp_path / "lb.yaml"
    yaml_in.write_text("num_slots: 4\ninitial_global_assignments:\n  3: [0, 1, 2, 0]\n  4: [2, 1, 0, 1]\n")
    code, out, _ = run(capsys, "convert", yaml_in, tmp_path / "p.safetensors", "--gpus", 2, "--json")
    assert code == 0
    assert json.loads(out) == {"kind": "placement", "input": str(yaml_in), "input_format": "trtllm",
                               "output": str(tmp_path / "p.safetensors"), "format": "safetensors", "layers": 2,
                               "layer_ids": [3, 4], "experts": 3, "slots": 4, "gpus": 2, "nodes": 1, "engine": None}
    assert run(capsys, "convert", tmp_path / "p.safetensors", tmp_path / "again.yml")[0] == 0
    assert "  3: [0, 1, 2, 0]\n  4: [2, 1, 0, 1]" in (tmp_path / "again.yml").read_text()


def test_stdin_and_stdout(placement_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, "convert", placement_file, "-", "--format", "sglang")
    assert code == 0 and json.loads(out) == {"physical_to_logical_map": PHY2LOG.tolist()}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(out.encode())))
    assert run(capsys, "convert", "-", tmp_path / "p.csv", "--gpus", 8)[0] == 0
    assert load_placement(str(tmp_path / "p.csv")).topology.gpus == 8
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"layer,expert,load\n0,0,3\n0,1,1\n")))
    code, out, _ = run(capsys, "convert", "-", "-", "--format", "vllm")
    assert code == 0 and json.loads(out) == {"load_history": [{"logical_expert_load": [[3, 1]]}]}


def test_a_real_process_reads_a_pipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The writing end runs in-process (see test_stdin_and_stdout); the reading end is a real `eplb` on a pipe."""
    assert run(capsys, "convert", SMALL, tmp_path / "t.csv")[0] == 0
    out = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, "-m", "eplb_cli", "convert", "-", str(out)],
                          input=(tmp_path / "t.csv").read_bytes(), capture_output=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr
    assert torch.equal(read_trace(out).load, read_trace(SMALL).load)


@pytest.mark.parametrize("args, needles", [
    (["convert", "missing.json", "OUT/x.json"], ["missing.json"]),
    (["convert", "PLACEMENT", "OUT/x.txt"], ["x.txt", "extension"]),
    (["convert", str(SMALL), "OUT/x.yaml"], ["x.yaml", "trace format"]),
    (["convert", "PLACEMENT", "OUT/x.json", "--format", "nope"], ["--format nope"]),
    (["convert", "PLACEMENT", "-", "--json"], ["--json"]),
    (["convert", "PLACEMENT", "OUT/x.json", "--gpus", "0"], ["--gpus 0"]),
    (["convert", "YAML", "OUT/x.csv"], ["lb.yaml", "--gpus", "4 slots: fits 1, 2 or 4 GPUs"]),
    (["convert", "YAML", "OUT/x.json", "--gpus", "3"], ["lb.yaml", "do not divide over 3 GPUs"]),
    (["convert", "GARBAGE", "OUT/x.json"], ["bad.csv"]),
    (["convert", str(SMALL), "OUT/x.csv", "--input-format", "vllm"], ["small.safetensors"]),
])
def test_bad_input_exit_2_nothing_written(args: list[str], needles: list[str], placement_file: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (tmp_path / "lb.yaml").write_text("num_slots: 4\ninitial_global_assignments:\n  3: [0, 1, 2, 0]\n")
    (tmp_path / "bad.csv").write_text("nothing,here\n1,2\n")
    names = {"PLACEMENT": str(placement_file), "YAML": str(tmp_path / "lb.yaml"), "GARBAGE": str(tmp_path / "bad.csv")}
    argv = [names.get(a, a.replace("OUT/", f"{out_dir}/")) for a in args]
    code, out, err = run(capsys, *argv)
    one_line_error(code, err, *needles)
    assert out == "" and list(out_dir.iterdir()) == []


def test_existing_output_needs_force(placement_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "p.json"
    target.write_text("keep me")
    code, _, err = run(capsys, "convert", placement_file, target)
    one_line_error(code, err, str(target), "--force")
    assert target.read_text() == "keep me"
    assert run(capsys, "convert", placement_file, target, "--force")[0] == 0
    assert "physical_to_logical_map" in target.read_text()


def test_formats_without_topology_convert_without_gpus(placement_file: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """SGLang JSON to .pt and to YAML record no GPU count, so none is asked for; CSV records one, so it is."""
    src = tmp_path / "p.json"
    assert run(capsys, "convert", placement_file, src)[0] == 0
    for name in ("p.pt", "p.yaml", "v.json"):
        args = ["--format", "vllm"] if name == "v.json" else []
        code, _, err = run(capsys, "convert", src, tmp_path / name, *args)
        assert code == 0, err
        assert torch.equal(load_placement(str(tmp_path / name), defaults={"gpus": 8}).phy2log, PHY2LOG)
    code, _, err = run(capsys, "convert", src, tmp_path / "p.csv")
    assert code == 2 and "pass --gpus" in err and "16 slots: fits 1, 2, 4, 8 or 16 GPUs" in err
    assert not (tmp_path / "p.csv").exists()
