"""The Python API: DeepSeek's rebalance_experts contract, parity with `eplb plan`, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SMALL

import eplb_cli
from eplb_cli.cli import main

README_WEIGHT = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                 [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]
README_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                  [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]


def test_reproduces_deepseek_readme_example() -> None:
    """DeepSeek's README: 16 replicas, 4 groups, 2 nodes, 8 GPUs."""
    weight = torch.tensor(README_WEIGHT)
    phy2log, log2phy, logcnt = eplb_cli.rebalance_experts(weight, 16, 4, 2, 8, strategy="deepseek")
    assert phy2log.tolist() == README_PHY2LOG
    assert phy2log.dtype == log2phy.dtype == logcnt.dtype == torch.int64
    assert log2phy.shape == (2, 12, 16 - 12 + 1)
    expected_cnt = torch.zeros(2, 12, dtype=torch.int64).scatter_add_(1, phy2log, torch.ones_like(phy2log))
    assert torch.equal(logcnt, expected_cnt) and logcnt.sum(1).tolist() == [16, 16]
    for layer in range(2):
        for expert in range(12):
            slots = log2phy[layer, expert]
            assert slots[: logcnt[layer, expert]].tolist() == (phy2log[layer] == expert).nonzero().flatten().tolist()
            assert (slots[logcnt[layer, expert]:] == -1).all()


@pytest.mark.parametrize("strategy, groups, nodes", [("deepseek", None, 2), ("balanced", None, 2), ("balanced", 1, 1)])
def test_api_returns_exactly_what_plan_writes(strategy: str, groups: int | None, nodes: int, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.safetensors"
    args = ["plan", str(SMALL), "--gpus", "4", "--nodes", str(nodes), "-o", str(out), "-q"]
    args += ["--strategy", strategy] if strategy != "balanced" else []
    args += ["--groups", str(groups)] if groups else []
    assert main(args) == 0, capsys.readouterr().err
    written = eplb_cli.load_placement(str(out))
    trace = eplb_cli.load_trace(str(SMALL))
    kwargs = {"strategy": strategy} if strategy != "balanced" else {}
    phy2log, log2phy, logcnt = eplb_cli.rebalance_experts(
        trace.total(), written.topology.slots, groups or trace.groups, nodes, 4, **kwargs)
    assert torch.equal(phy2log, written.phy2log)
    assert torch.equal(logcnt, written.logcnt)
    assert torch.equal(log2phy[:, :, : written.log2phy.shape[2]], written.log2phy)


def test_plan_load_and_evaluate_agree_with_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(SMALL), "--gpus", "4", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    trace = eplb_cli.load_trace(str(SMALL))
    topo = eplb_cli.resolve(trace.experts, gpus=4, groups=trace.groups)
    result = eplb_cli.plan_load(trace.total(), topo)
    assert isinstance(result.placement, eplb_cli.Placement) and isinstance(topo, eplb_cli.Topology)
    summary = eplb_cli.evaluate(result.placement, trace).summary()
    assert summary == result.score.summary()
    assert summary["gpu_imbalance"] == pytest.approx(shown["gpu_imbalance"], abs=1e-6)


def test_public_names_resolve() -> None:
    for name in eplb_cli.__all__:
        assert getattr(eplb_cli, name) is not None, name
    assert callable(eplb_cli.read_trace) and callable(eplb_cli.inspect_trace)
    with pytest.raises(AttributeError):
        eplb_cli.no_such_name  # noqa: B018


def test_import_is_light() -> None:
    code = ("import sys, eplb_cli; heavy = {'pandas', 'matplotlib', 'tabulate', 'yaml', 'typer', 'numba'};"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_robust_and_dispatch_from_python() -> None:
    """The Python route to --robust and --dispatch: the same plans and figures as the CLI, errors named as parameters."""
    from eplb_cli.api import RobustOptions, plan_trace, replay_trace, robust_plan
    from eplb_cli.planning.robust import scenario_objective

    cluster = eplb_cli.ClusterOptions(gpus=4, nodes=2)
    plain = plan_trace(str(SMALL), cluster, strategy="deepseek", alternative=False)
    rep = plan_trace(str(SMALL), cluster, strategy="deepseek", alternative=False, robust=RobustOptions(scenarios=3))
    trace = rep.trace
    assert plain.result.robust is None and rep.result.robust is not None and rep.result.robust["scenarios"] == 3
    # The robust plan is the plan_load result made robust on the last 3 windows: never worse on them, per layer.
    again = robust_plan(eplb_cli.plan_load(trace.total(), rep.topology, "deepseek"), trace.load, trace.total(),
                        RobustOptions(scenarios=3))
    assert torch.equal(again.placement.phy2log, rep.result.placement.phy2log)
    last = trace.load[-3:]
    assert (scenario_objective(again.placement, last) <= scenario_objective(plain.result.placement, last) + 1e-9).all()
    with pytest.raises(eplb_cli.EplbError, match=r"^scenarios=0: must be >= 1$"):
        plan_trace(str(SMALL), cluster, robust=RobustOptions(scenarios=0))
    with pytest.raises(eplb_cli.EplbError, match=r"^robust: the oracle forecast"):
        replay_trace(str(SMALL), cluster, robust=RobustOptions(), forecast="oracle")
    with pytest.raises(eplb_cli.EplbError, match=r"^max_moves needs previous"):
        robust_plan(plain.result, trace.load, trace.total(), max_moves=3)
    replayed = replay_trace(str(SMALL), cluster, every=2, forecast="mean", robust=RobustOptions(robust_tolerance=0.1),
                            dispatch="lp")
    s = replayed.result.summary
    assert (s["robust"], s["scenarios"], s["robust_tolerance"], s["dispatch"]) == (True, None, 0.1, "lp")
    with pytest.raises(eplb_cli.EplbError, match=r"^dispatch=fair"):
        replay_trace(str(SMALL), cluster, dispatch="fair")


def test_evaluate_and_compare_take_dispatch(tmp_path: Path) -> None:
    from eplb_cli.api import compare_strategies, evaluate_placement, plan_trace
    from eplb_cli.dispatch import lp_score

    cluster = eplb_cli.ClusterOptions(gpus=4, nodes=2)
    out = tmp_path / "p.safetensors"
    plan_trace(str(SMALL), cluster, strategy="deepseek", output=str(out), alternative=False)
    even = evaluate_placement(str(out), str(SMALL))
    lp = evaluate_placement(str(out), str(SMALL), dispatch="lp")
    assert lp.dispatch == "lp" and even.dispatch == "even"
    assert lp.score.summary() == lp_score(even.placement, even.trace.total()).summary()
    assert lp.score.summary()["gpu_imbalance"] <= even.score.summary()["gpu_imbalance"] + 1e-12
    rows = compare_strategies(str(SMALL), cluster, "deepseek", repeat=1, oos_pairs=0, dispatch="lp")
    assert rows.dispatch == "lp" and rows.rows[0].summary == lp.score.summary()
