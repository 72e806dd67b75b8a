"""Launch settings printed with every engine file that plan -o and convert write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SMALL, run

from eplb_cli.formats.launch import fits, fits_line, layer_span

# traces/small.safetensors: 16 experts; --gpus 4 gives 20 slots, so 4 redundant experts.
EXPECT = {
    "sglang": ("p.json", ["--init-expert-location {out}", "--ep-size 4", "--ep-num-redundant-experts 4",
                          "--ep-dispatch-algorithm dynamic"]),
    "sglang-pt": ("p.pt", ["--init-expert-location {out}", "--ep-size 4", "--ep-num-redundant-experts 4"]),
    "trtllm": ("p.yaml", ["--ep_size 4", "load_balancer: {out}"]),
    "vllm-ascend": ("a.json", ['"expert_map_path": "{out}"', '"num_redundant_experts": 4', "--enable-expert-parallel",
                               "parallel size = 4"]),
    "vllm": ("v.json", ['"initial_expert_map_path": "{out}"', '"num_redundant_experts": 4', "--enable-eplb",
                        "parallel size = 4"]),
}


def test_fits_lists_the_gpu_counts_slots_divide_over() -> None:
    assert fits(288) == [1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 36, 48, 72, 96, 144, 288]
    assert fits_line(20) == "20 slots: fits 1, 2, 4, 5, 10 or 20 GPUs"
    assert layer_span([3, 4, 5]) == "3..5" and layer_span([1, 3]) == "1,3" and layer_span([7]) == "7"


@pytest.mark.parametrize("fmt", sorted(EXPECT))
def test_plan_json_carries_the_engine_settings(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, needles = EXPECT[fmt]
    out = tmp_path / name
    code, stdout, err = run(capsys, "plan", SMALL, "--gpus", 4, "-s", "fast", "-o", out, "--format", fmt, "--json")
    assert code == 0, err
    engine = json.loads(stdout)["engine"]
    assert (engine["ep_size"], engine["slots"], engine["experts"], engine["redundant_experts"]) == (4, 20, 16, 4)
    assert engine["moe_layers"] == 4 and engine["layer_ids"] == "0..3" and engine["file"] == str(out)
    for needle in needles:
        assert needle.format(out=out) in engine["flags"], (fmt, engine["flags"])


def test_plan_prints_the_settings_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    code, stdout, err = run(capsys, "plan", SMALL, "--gpus", 4, "--nodes", 2, "-s", "fast", "-o", out)
    assert code == 0
    assert f"{out} (sglang)" in stdout and "SGLang" not in stdout
    assert f"eplb: SGLang: start SGLang with --init-expert-location {out} --ep-size 4" in err
    assert "--nnodes 2" in err and "dynamic" in err


def test_no_settings_for_eplb_files_or_quiet_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(capsys, "plan", SMALL, "--gpus", 4, "-s", "fast", "-o", tmp_path / "p.safetensors")
    assert code == 0 and "eplb:" not in err
    doc = json.loads(run(capsys, "plan", SMALL, "--gpus", 4, "-s", "fast", "--json")[1])
    assert doc["engine"] is None and doc["output_format"] is None
    code, stdout, err = run(capsys, "plan", SMALL, "--gpus", 4, "-s", "fast", "-o", tmp_path / "q.json", "-q")
    assert code == 0 and stdout == "" and err == ""


def test_convert_without_a_gpu_count_names_the_counts_that_fit(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "p.json"
    assert run(capsys, "plan", SMALL, "--gpus", 4, "-s", "fast", "-o", src, "-q")[0] == 0
    code, stdout, err = run(capsys, "convert", src, tmp_path / "p.pt", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["gpus"] is None and doc["engine"]["ep_size"] is None
    assert "--ep-size G" in doc["engine"]["flags"]
    assert doc["engine"]["notes"][0] == "G: the GPUs the plan was made for; 20 slots: fits 1, 2, 4, 5, 10 or 20 GPUs"
    code, _, err = run(capsys, "convert", src, tmp_path / "p.yaml")
    assert code == 0 and "for any GPU count they divide over" in err and "eplb: TensorRT-LLM: start" in err
