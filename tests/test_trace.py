"""The trace model's load warnings, and --strict and --quiet on every command that warns."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SMALL, run

from eplb_cli.cli import app
from eplb_cli.errors import EplbError
from eplb_cli.trace import load_warnings

WARN = ROOT / "tests" / "corpus" / "warn" / "zero-layer-3-windows.json"

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
    code, _, err = run(capsys, *argv(command, SMALL, placement, "--strict"))
    assert code == 0 and err == ""


@pytest.mark.parametrize("command", list(WARNING_COMMANDS))
def test_json_output_stays_one_document_with_warnings(command: str, placement: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv(command, WARN, placement, "--json"))
    assert code == 0
    json.loads(out)
    assert "warning" in err


def test_every_command_with_warnings_has_strict_and_quiet() -> None:
    """A command whose code calls the warning helper must offer both flags."""
    warning = [cmd.callback for cmd in app.registered_commands if "_warner(" in inspect.getsource(cmd.callback)]
    assert {f.__name__ for f in warning} == set(WARNING_COMMANDS)
    for func in warning:
        params = inspect.signature(func).parameters
        assert "strict" in params and "quiet" in params, func.__name__


@pytest.mark.parametrize("value", [1.7e308, 2.0**63, 1e30])
def test_loads_beyond_int64_counts_are_refused(value: float) -> None:
    """Finite but huge: sums of such loads overflow to inf in the planner, so they are refused up front."""
    from eplb_cli.trace import Trace

    with pytest.raises(EplbError, match=r"^t: load holds .* at or beyond 2\*\*63"):
        Trace(torch.tensor([[value, 1.0]], dtype=torch.float64), "t")
    Trace(torch.tensor([[2.0**62, 1.0]], dtype=torch.float64), "t")
