"""Warnings, --strict and --quiet on every command that warns; the memory and device checks."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from eplb_cli import checks
from eplb_cli.checks import available_memory, check_device, check_memory, load_warnings
from eplb_cli.cli import app, main
from eplb_cli.errors import EplbError

ROOT = Path(__file__).resolve().parents[1]
WARN = ROOT / "tests" / "corpus" / "warn" / "zero-layer-3-windows.json"
SMALL = ROOT / "traces" / "small.safetensors"

WARNING_COMMANDS: dict[str, list[str]] = {
    "plan": ["{trace}", "--gpus", "2", "--strategy", "deepseek"],
    "compare": ["{trace}", "--gpus", "2", "--strategies", "deepseek", "--repeat", "1"],
    "evaluate": ["{placement}", "{trace}"],
    "replay": ["{trace}", "--gpus", "2", "--strategy", "deepseek"],
}
"""Commands that warn about their input, with arguments that make them run on a 2-layer, 4-expert trace."""


@pytest.fixture(scope="module")
def placement(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SGLang placement for WARN's 2 layers x 4 experts on 2 GPUs (6 slots)."""
    path = tmp_path_factory.mktemp("warn") / "p.json"
    path.write_text(json.dumps({"physical_to_logical_map": [[0, 1, 2, 3, 0, 1]] * 2}))
    return path


def argv(command: str, trace: Path, placement: Path, *extra: str) -> list[str]:
    values = {"{trace}": str(trace), "{placement}": str(placement)}
    args = [values.get(a, a) for a in WARNING_COMMANDS[command]]
    if command == "evaluate":
        args.append("--gpus=2")
    return [command, *args, *extra]


def commands() -> set[str]:
    return {c.name or c.callback.__name__ for c in app.registered_commands}


def present() -> list[str]:
    return [c for c in WARNING_COMMANDS if c in commands()]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_load_warnings_name_layers_and_cold_experts() -> None:
    load = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [3.0, 3.0, 3.0]])
    messages = load_warnings(load)
    assert len(messages) == 2
    assert messages[0].startswith("1 layer(s) with no load") and messages[0].endswith(": 0")
    assert messages[1].startswith("1 expert(s) in loaded layers received no tokens")
    assert load_warnings(torch.ones(2, 3)) == []
    many = torch.zeros(12, 2)
    many[11] = 1
    assert load_warnings(many)[0].endswith("0,1,2,3,4,5,6,7,...")


def test_all_zero_load_is_an_error_naming_the_source() -> None:
    with pytest.raises(EplbError, match=r"^t\.csv: every layer has zero load"):
        load_warnings(torch.zeros(2, 3), "t.csv")
    with pytest.raises(EplbError, match=r"^every layer has zero load"):
        load_warnings(torch.zeros(2, 3))


@pytest.mark.parametrize("command", list(WARNING_COMMANDS))
def test_warnings_quiet_and_strict(command: str, placement: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Default: the result plus one warning line naming the file; --quiet: no warning; --strict: exit 2."""
    if command not in commands():
        pytest.skip(f"eplb {command} is not in this checkout yet")
    warning = f"{WARN}: 1 layer(s) with no load (dense layers?) placed trivially and left out of the figures: 0"
    code, out, err = run(capsys, *argv(command, WARN, placement))
    assert code == 0, err
    assert out
    assert [line for line in err.splitlines() if line] == [f"eplb: warning: {warning}"]
    code, out, err = run(capsys, *argv(command, WARN, placement, "--quiet"))
    assert code == 0 and err == ""
    code, out, err = run(capsys, *argv(command, WARN, placement, "--strict"))
    assert code == 2 and out == ""
    assert err.strip() == f"eplb: error: {warning} (--strict)"


@pytest.mark.parametrize("command", ["plan", "compare", "replay"])
def test_strict_passes_a_clean_trace(command: str, placement: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if command not in commands():
        pytest.skip(f"eplb {command} is not in this checkout yet")
    code, _, err = run(capsys, *argv(command, SMALL, placement, "--strict"))
    assert code == 0 and err == ""


@pytest.mark.parametrize("command", list(WARNING_COMMANDS))
def test_json_output_stays_one_document_with_warnings(command: str, placement: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    if command not in commands():
        pytest.skip(f"eplb {command} is not in this checkout yet")
    code, out, err = run(capsys, *argv(command, WARN, placement, "--json"))
    assert code == 0
    json.loads(out)
    assert "warning" in err


def test_every_command_with_warnings_has_strict_and_quiet() -> None:
    """A command whose code calls the warning helper must offer both flags."""
    warning = [cmd.callback for cmd in app.registered_commands if "_warn(" in inspect.getsource(cmd.callback)]
    assert {f.__name__ for f in warning} >= {"plan"}
    for func in warning:
        params = inspect.signature(func).parameters
        assert "strict" in params and "quiet" in params, func.__name__


def test_check_memory_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "available_memory", lambda: 3 << 30)
    check_memory("t.safetensors", 2 << 30)
    with pytest.raises(EplbError) as info:
        check_memory("t.safetensors", 5 << 30)
    assert str(info.value).startswith(
        "t.safetensors: needs about 5.0 GiB to load but only 3.0 GiB is available; use --windows A:B")
    monkeypatch.setattr(checks, "available_memory", lambda: 300 << 20)
    with pytest.raises(EplbError, match="needs about 1.0 GiB to load but only 300.0 MiB is available"):
        check_memory("t.json", 1 << 30)
    monkeypatch.setattr(checks, "available_memory", lambda: None)
    check_memory("t.json", 1 << 60)


def test_available_memory_is_plausible() -> None:
    avail = available_memory()
    assert avail is None or 0 < avail < 1 << 50


def write_cgroup(tmp_path: Path, line: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "cgroup"
    proc.write_text(line + "\n")
    root = tmp_path / "sys"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


def test_cgroup_v2_limit_counts_reclaimable_cache(tmp_path: Path) -> None:
    proc, root = write_cgroup(tmp_path, "0::/job", {
        "job/memory.max": "1073741824\n", "job/memory.current": "805306368\n",
        "job/memory.stat": "anon 1\ninactive_file 134217728\n",
    })
    assert checks._cgroup_headroom(proc, root) == (1 << 30) - (768 << 20) + (128 << 20)
    (root / "job" / "memory.max").write_text("max\n")
    assert checks._cgroup_headroom(proc, root) is None


def test_cgroup_v1_limit_and_unlimited(tmp_path: Path) -> None:
    proc, root = write_cgroup(tmp_path, "4:memory:/elsewhere", {
        "memory/memory.limit_in_bytes": "2147483648\n", "memory/memory.usage_in_bytes": "1073741824\n",
    })
    assert checks._cgroup_headroom(proc, root) == 1 << 30
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert checks._cgroup_headroom(proc, root) is None
    assert checks._cgroup_headroom(tmp_path / "missing", root) is None


def test_check_device() -> None:
    check_device("cpu")
    for bad, needle in (("meta", "only cpu and cuda"), ("banana", "not a torch device")):
        with pytest.raises(EplbError, match=needle):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(EplbError, match="no CUDA device"):
            check_device("cuda")
