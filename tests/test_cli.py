"""End-to-end tests of the `eplb` command: outputs, exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest
import torch
from helpers import COMMANDS, SMALL, run
from safetensors.torch import save_file

from eplb_cli.formats import load_placement

PLAN_KEYS = {
    "strategy", "policy", "layers", "experts", "slots", "gpus", "nodes", "groups", "gpu_imbalance",
    "gpu_imbalance_worst", "node_imbalance", "balancedness", "lower_bound", "gap", "runtime_ms",
    "skipped_layers", "output",
}




def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("eplb: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def test_plan_prints_summary_and_tables(capsys):
    code, out, err = run(capsys, "plan", SMALL, "--gpus", 4, "--nodes", 2)
    assert code == 0, err
    for needle in ("GPU imbalance", "node imbalance", "balancedness", "lower bound", "Per node", "Per GPU", "runtime"):
        assert needle in out


def test_plan_json_has_contract_keys(capsys):
    code, out, _ = run(capsys, "plan", SMALL, "--gpus", 4, "--json")
    assert code == 0
    doc = json.loads(out)
    assert PLAN_KEYS <= doc.keys()
    assert doc["slots"] == 20 and doc["gpus"] == 4 and doc["experts"] == 16
    assert doc["gpu_imbalance"] >= doc["lower_bound"] - 1e-9
    assert doc["gap"] >= -1e-9


def test_plan_layer_view_lists_experts(capsys):
    code, out, _ = run(capsys, "plan", SMALL, "--gpus", 4, "--layer", 1)
    assert code == 0
    assert "Layer 1" in out and "experts" in out


def test_plan_writes_and_reloads(tmp_path, capsys):
    out_file = tmp_path / "p.safetensors"
    code, _, _ = run(capsys, "plan", SMALL, "--gpus", 4, "-o", out_file, "--strategy", "deepseek")
    assert code == 0
    p = load_placement(str(out_file))
    assert p.topology.gpus == 4 and p.phy2log.shape == (4, 20)
    code, _, err = run(capsys, "plan", SMALL, "--gpus", 4, "-o", out_file)
    assert_one_line_error(code, err, str(out_file), "--force")
    code, _, _ = run(capsys, "plan", SMALL, "--gpus", 4, "-o", out_file, "--force")
    assert code == 0


def test_json_output_is_sglang_form(tmp_path, capsys):
    out_file = tmp_path / "p.json"
    assert run(capsys, "plan", SMALL, "--gpus", 4, "-o", out_file)[0] == 0
    doc = json.loads(out_file.read_text())
    assert len(doc["physical_to_logical_map"]) == 4 and len(doc["physical_to_logical_map"][0]) == 20


def test_windows_select_changes_the_load(capsys):
    a = json.loads(run(capsys, "plan", SMALL, "--gpus", 4, "--json", "--windows", "0:1")[1])
    b = json.loads(run(capsys, "plan", SMALL, "--gpus", 4, "--json", "--windows", "1:2")[1])
    assert a["gpu_imbalance"] != b["gpu_imbalance"]


@pytest.fixture
def nan_trace(tmp_path):
    path = tmp_path / "nan.safetensors"
    load = torch.ones(2, 8)
    load[1, 3] = float("nan")
    save_file({"load": load}, str(path))
    return path


@pytest.mark.parametrize(
    "args, needles",
    [
        (["plan", "missing.safetensors", "--gpus", 4], ["missing.safetensors"]),
        (["plan", SMALL, "--gpus", 3, "--slots", 20], ["20 slots do not divide over 3 GPUs", "--slots 21"]),
        (["plan", SMALL, "--gpus", 4, "--slots", 10], ["--slots 10", "fewer than the 16 experts"]),
        (["plan", SMALL, "--gpus", 4, "--strategy", "nope"], ["--strategy nope", "eplb strategies"]),
        (["plan", SMALL], ["--gpus"]),
        (["plan", SMALL, "--gpus", "four"], ["--gpus"]),
        (["plan", SMALL, "--gpus", 4, "--windows", "7:9"], ["--windows 7:9"]),
        (["plan", SMALL, "--gpus", 4, "--windows", "a:b"], ["--windows a:b"]),
        (["plan", SMALL, "--gpus", 4, "--layer", 99], ["--layer 99"]),
        (["plan", SMALL, "--gpus", 4, "--policy", "fancy"], ["--policy fancy"]),
        (["plan", SMALL, "--gpus", 4, "--device", "cuda:0"] if not torch.cuda.is_available() else ["plan", SMALL, "--gpus", 4, "--device", "tpu"], ["--device"]),
        (["plan", SMALL, "--gpus", 4, "-o", "/nonexistent-dir/p.json"], ["/nonexistent-dir"]),
        (["plan", SMALL, "--gpus", 4, "-o", "p.txt"], ["p.txt", "extension"]),
        (["frobnicate"], ["frobnicate"]),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, args, needles):
    code, _out, err = run(capsys, *args)
    assert_one_line_error(code, err, *needles)


def test_nan_trace_rejected_and_nothing_written(tmp_path, capsys, nan_trace):
    out_file = tmp_path / "never.json"
    code, _, err = run(capsys, "plan", nan_trace, "--gpus", 2, "-o", out_file)
    assert_one_line_error(code, err, str(nan_trace), "NaN")
    assert not out_file.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["nan.safetensors"]


def test_zero_layers_warn_or_fail_under_strict(tmp_path, capsys):
    path = tmp_path / "dense.safetensors"
    load = torch.rand(3, 8, generator=torch.Generator().manual_seed(0)) * 10
    load[0] = 0
    save_file({"load": load}, str(path))
    code, out, err = run(capsys, "plan", path, "--gpus", 2, "--json")
    assert code == 0 and "1 layer(s) with no load" in err
    assert json.loads(out)["skipped_layers"] == 1
    code, _, err = run(capsys, "plan", path, "--gpus", 2, "--strict")
    assert_one_line_error(code, err, "--strict", "no load")
    code, out, err = run(capsys, "plan", path, "--gpus", 2, "--quiet")
    assert code == 0 and out == "" and err == ""


def test_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eplb_cli", "plan", str(tmp_path / "nope.csv"), "--gpus", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_strategies_lists_the_baseline(capsys):
    code, out, _ = run(capsys, "strategies")
    assert code == 0 and "deepseek" in out


def test_generate_is_deterministic(tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for path in (a, b):
        assert run(capsys, "generate", path, "--layers", 3, "--experts", 8, "--windows", 2, "--seed", 7)[0] == 0
    assert a.read_bytes() == b.read_bytes()
    code, _, err = run(capsys, "generate", a, "--layers", 0)
    assert_one_line_error(code, err, "--layers 0")


def test_every_command_is_registered() -> None:
    """A subcommand that disappears fails here (tests elsewhere assume every one exists)."""
    from eplb_cli.cli import app

    assert {c.name or c.callback.__name__ for c in app.registered_commands} == COMMANDS


def test_library_errors_are_spelled_as_flags(capsys) -> None:
    """The library names its parameters (slots=320); the CLI renders the same error with its flags."""
    from eplb_cli.errors import EplbError
    from eplb_cli.topology import resolve

    with pytest.raises(EplbError, match="use slots=320 or redundant=64"):
        resolve(256, 64, slots=288)
    code, _, err = run(capsys, "plan", SMALL, "--gpus", "0")
    assert code == 2 and err.strip() == "eplb: error: --gpus 0: needs at least one GPU"
    code, _, err = run(capsys, "plan", SMALL, "--gpus", "4", "--exclude-gpus", "0,1,2,3")
    assert code == 2 and "--exclude-gpus removes every GPU" in err


# ---------------------------------------------------------------- the command line as people type it


def help_text(*args: str, columns: int = 80) -> str:
    import os

    proc = subprocess.run([sys.executable, "-m", "eplb_cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS=str(columns)), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_version_and_bare_eplb(capsys) -> None:
    from eplb_cli import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"eplb {__version__}" and __version__ != "0+unknown"
    code, out, err = run(capsys)
    assert code == 2 and "Usage: eplb" in out and "plan" in out
    assert err.strip() == "eplb: error: no command given; pick one of the commands above, e.g. eplb plan TRACE --gpus 8"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_fits_80_columns_with_every_option_whole(command: str) -> None:
    import typer.main

    from eplb_cli.cli import app

    text = help_text(command, "--help")
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "<bool>" not in text
    names = [o for p in typer.main.get_command(app).commands[command].params for o in p.opts if o.startswith("-")]
    assert names or command == "strategies"
    words = set(text.replace(",", " ").split())
    for name in names:
        assert name in words, (command, name)


def test_plot_help_shows_the_extra(capsys) -> None:
    from eplb_cli.validation import plot_hint

    text = " ".join(help_text("plan", "--help", columns=200).split())
    assert plot_hint() in text and "[plot]" in text


def test_strategies_fit_100_columns() -> None:
    text = help_text("strategies", columns=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "balanced" in text and "dhondt+kk+lpt+swap" in text


def test_policy_fallback_names_groups(tmp_path, capsys) -> None:
    bare = tmp_path / "nogroups.safetensors"
    save_file({"load": torch.rand(2, 3, 16) + 0.1}, str(bare))
    code, out, _ = run(capsys, "plan", bare, "--gpus", 4, "--nodes", 2, "-s", "fast")
    assert code == 0 and "the trace records no expert groups" in out and "--groups" in out
    code, out, _ = run(capsys, "plan", bare, "--gpus", 4, "--nodes", 2, "-s", "fast", "--groups", 1)
    assert code == 0 and "records no expert groups" not in out
    code, out, _ = run(capsys, "plan", bare, "--gpus", 4, "--nodes", 2, "-s", "fast", "--groups", 2)
    assert code == 0 and "hierarchical (2 groups over 2 nodes)" in out


def test_standard_input_is_named_dash(capsys, monkeypatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = run(capsys, "plan", "-", "--gpus", 4)
    assert code == 2 and err.startswith("eplb: error: -: standard input is empty")
@pytest.mark.parametrize(
    "args, needle",
    [
        (["replay", SMALL, "--gpus", 4, "--threads", 10**11], "--threads 100000000000: must be between 1 and 1024"),
        (["replay", SMALL, "--gpus", 4, "--expert-bytes", "1e308MiB"], "more than 2**63 bytes"),
        (["plan", SMALL, "--gpus", 4, "--windows", "x" * 100_000], "--windows xxx"),
        (["plan", SMALL, "--gpus", 10**100], "--gpus 1000"),
        (["plan", SMALL, "--gpus", 4, "--nodes", 10**100], "--nodes 1000"),
        (["plan", SMALL, "--gpus", 4, "--redundant", 10**100], "--redundant 1000"),
    ],
)
def test_out_of_range_flags_are_short_one_line_errors(capsys, args, needle):
    """Numbers and text no flag can hold: exit 2 (never 3), one line of at most 300 characters."""
    code, _out, err = run(capsys, *args)
    assert_one_line_error(code, err, needle)
    assert len(err.strip()) <= 300


def test_generate_takes_any_integer_seed(tmp_path, capsys):
    for seed in (-1, 2**64, 10**30):
        out = tmp_path / f"t{seed}.csv"
        code, _out, err = run(capsys, "generate", out, "--layers", 2, "--experts", 4, "--windows", 2, "--seed", seed)
        assert code == 0, err


def test_every_message_is_cut_to_one_line_of_300_characters(monkeypatch, capsys):
    """The last resort in main(): whatever a message holds (newlines, megabytes), one line of at most 300."""
    from eplb_cli import api
    from eplb_cli.errors import EplbError

    def loud(*args, **kwargs):
        raise EplbError("first line\nsecond line " + "y" * 5000)

    monkeypatch.setattr(api, "inspect_file", loud)
    code, _out, err = run(capsys, "inspect", SMALL)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("eplb: error: first line second line yyy") and len(err.strip()) == 300


def test_memory_advice_only_when_memory_is_the_cause():
    from eplb_cli.cli import _memory_message

    huge = RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                        f"{1 << 60} bytes. Error code 12 (Cannot allocate memory)")
    assert "a size or id in it is probably wrong" in _memory_message(huge)
    assert "--windows" not in _memory_message(huge)
    small = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4096 bytes.")
    assert "--windows" in _memory_message(small) and "--windows" in _memory_message(None)
