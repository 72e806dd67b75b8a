"""The checks that run before torch loads: what they catch, and that help, version and flag errors never import torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, SMALL

from eplb_cli import validation
from eplb_cli.errors import EplbError


def modules_after(args: list[str], cwd: Path = ROOT) -> tuple[int, str, set[str]]:
    """Run ``eplb ARGS`` in a fresh interpreter; return its exit code, stderr and the modules it imported."""
    probe = ("import sys, json\nfrom eplb_cli.cli import main\ncode = main(sys.argv[1:])\n"
             "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\nsys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, COLUMNS="80"))
    *lines, modules = proc.stderr.strip().splitlines()
    return proc.returncode, "\n".join(lines), set(json.loads(modules))


@pytest.mark.parametrize("args, code", [
    (["--help"], 0),
    (["--version"], 0),
    (["plan", "--help"], 0),
    (["convert", "--help"], 0),
    ([], 2),
    (["plan", str(SMALL), "--gpus", "0"], 2),
    (["plan", str(SMALL), "--gpus", "12", "--nodes", "5"], 2),
    (["plan", "missing.json", "--gpus", "8"], 2),
    (["plan", str(SMALL), "--gpus", "4", "-o", "out.txt"], 2),
    (["plan", str(SMALL), "--gpus", "4", "--policy", "fancy"], 2),
    (["plan", str(SMALL), "--gpus", "4", "--windows", "a:b"], 2),
    (["plan", str(SMALL), "--gpus", "4", "--device", "tpu"], 2),
    (["plan", str(SMALL), "--gpus", "4", "--max-moves", "3"], 2),
    (["evaluate", "missing.json", str(SMALL)], 2),
    (["evaluate", str(SMALL), str(SMALL), "--max-imbalance", "0.5"], 2),
    (["replay", str(SMALL), "--gpus", "4", "--every", "0"], 2),
    (["compare", str(SMALL), "--gpus", "4", "--repeat", "0"], 2),
    (["inspect", str(SMALL), "--top", "-1"], 2),
    (["convert", str(SMALL), "out.bad", "--format", "nope"], 2),
    (["generate", "out.txt"], 2),
    (["plan", str(SMALL), "--gpus", "4", "--bogus"], 2),
])
def test_help_version_and_flag_errors_never_import_torch(args: list[str], code: int) -> None:
    got, err, modules = modules_after(args)
    assert got == code, err
    assert "torch" not in modules and "numpy" not in modules and "numba" not in modules, args
    assert "rich" not in modules, "typer's rich help renderer costs ~0.5 s of imports"
    if code == 2:
        assert err.startswith("eplb: error: ") and len(err.splitlines()) == 1, err


def test_a_good_run_does_import_torch(tmp_path: Path) -> None:
    """The probe can fail: a command that plans loads torch."""
    got, err, modules = modules_after(["plan", str(SMALL), "--gpus", "4", "-s", "fast", "-q"], cwd=tmp_path)
    assert got == 0, err
    assert "torch" in modules and "numba" in modules


def test_cluster_checks_need_no_model() -> None:
    with pytest.raises(EplbError, match=r"gpus=12 do not divide over 5 nodes: use nodes=1, 2, 3, 4, 6 or 12"):
        validation.cluster(12, 5)
    with pytest.raises(EplbError, match="pass only one"):
        validation.cluster(4, slots=8, redundant=4)
    with pytest.raises(EplbError, match="exclude_gpus=9"):
        validation.cluster(4, exclude_gpus="1,9")
    validation.cluster(32, 4, slots=288, groups=8, policy="hierarchical", exclude_gpus="3")


def test_option_checks(tmp_path: Path) -> None:
    with pytest.raises(EplbError, match=r"windows=1:x: A and B must be integers"):
        validation.windows_spec("1:x")
    validation.windows_spec("-3:")
    for good in ("cpu", "cuda", "cuda:1", "CPU"):
        validation.device_name(good)
    for bad, needle in (("tpu", "not a torch device"), ("cuda:x", "not a torch device"), ("mps", "only cpu and cuda")):
        with pytest.raises(EplbError, match=needle):
            validation.device_name(bad)
    with pytest.raises(EplbError, match=r"max_moves needs previous"):
        validation.plan_options(str(SMALL), max_moves=4)
    with pytest.raises(EplbError, match=r"x\.txt: unknown placement extension"):
        validation.plan_options(str(SMALL), output=str(tmp_path / "x.txt"))
    validation.plan_options(str(SMALL), output=str(tmp_path / "x.txt"), fmt="vllm")
    (tmp_path / "there.json").write_text("{}")
    with pytest.raises(EplbError, match="file exists"):
        validation.plan_options(str(SMALL), output=str(tmp_path / "there.json"))
    with pytest.raises(EplbError, match=r"strategies: give at least one"):
        validation.compare_options(str(SMALL), " , ")
    assert validation.compare_options(str(SMALL), "fast, balanced") == ["fast", "balanced"]


def test_plot_hint_names_the_install_that_works() -> None:
    assert validation.plot_hint() in (f"pip install -e '{ROOT}[plot]'", "pip install -e '.[plot]'")
    probe = ("import pathlib, eplb_cli.validation as v\n"
             "pathlib.Path.is_file = lambda self: False\nprint(v.plot_hint())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "pip install 'eplb-cli[plot]'"


@pytest.mark.parametrize("args, needle", [
    (["plan", str(SMALL), "--gpus", "4", "--scenarios", "2"], "--scenarios needs --robust"),
    (["plan", str(SMALL), "--gpus", "4", "--robust", "--scenarios", "0"], "--scenarios 0"),
    (["replay", str(SMALL), "--gpus", "4", "--robust", "--robust-tolerance", "-1"], "--robust-tolerance -1.0"),
    (["replay", str(SMALL), "--gpus", "4", "--dispatch", "fair"], "--dispatch fair"),
    (["evaluate", str(SMALL), str(SMALL), "--dispatch", "LP"], "--dispatch LP"),
    (["compare", str(SMALL), "--gpus", "4", "--dispatch", "fair"], "--dispatch fair"),
])
def test_robust_and_dispatch_flag_errors_never_import_torch(args: list[str], needle: str) -> None:
    got, err, modules = modules_after(args)
    assert got == 2 and err.startswith("eplb: error: ") and needle in err, err
    assert "torch" not in modules, args


def test_robust_and_dispatch_checks() -> None:
    assert validation.dispatch_mode("lp") == "lp" and validation.dispatch_mode("even") == "even"
    with pytest.raises(EplbError, match=r"^dispatch=fair: use one of even, lp$"):
        validation.dispatch_mode("fair")
    validation.robust_options(False)
    validation.robust_options(True, 1, 0.0)
    with pytest.raises(EplbError, match=r"^scenarios needs robust=True"):
        validation.robust_options(False, scenarios=3)
    with pytest.raises(EplbError, match=r"^scenarios=0: must be >= 1$"):
        validation.robust_options(True, scenarios=0)
    for bad in (-0.01, float("nan")):
        with pytest.raises(EplbError, match=r"^robust_tolerance=.*must be >= 0$"):
            validation.robust_options(True, robust_tolerance=bad)
    with pytest.raises(EplbError, match="dispatch=x"):
        validation.replay_options(str(SMALL), dispatch="x")
    with pytest.raises(EplbError, match="scenarios needs robust"):
        validation.plan_options(str(SMALL), scenarios=2)
