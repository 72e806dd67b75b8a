import csv
import io
import json

import torch
from helpers import SMALL

from eplb_cli.cli import main
from eplb_cli.formats import read_trace
from eplb_cli.metrics import score
from eplb_cli.planning.compare import compare, out_of_sample
from eplb_cli.strategies import get_strategy, plan
from eplb_cli.topology import resolve
from eplb_cli.trace import Trace


def drifting_trace() -> Trace:
    g = torch.Generator().manual_seed(5)
    return Trace(torch.randint(0, 100, (3, 4, 12), generator=g).double())


def test_out_of_sample_plans_on_t_and_scores_on_t_plus_1():
    tr = drifting_trace()
    topo = resolve(12, 4, slots=16)
    got = out_of_sample(tr, topo, "deepseek")
    ratios, means, maxes = [], 0.0, 0.0
    for t in range(2):  # by hand: one plan per window
        p = plan(tr.load[t], topo, get_strategy("deepseek"))
        gpu = score(p, tr.load[t + 1]).gpu_load
        ratios += (gpu.max(-1).values / gpu.mean(-1)).tolist()
        means += float(gpu.mean(-1).sum())
        maxes += float(gpu.max(-1).values.sum())
    assert got["oos_pairs"] == 2
    assert abs(got["oos_gpu_imbalance"] - sum(ratios) / len(ratios)) < 1e-12
    assert abs(got["oos_balancedness"] - means / maxes) < 1e-12


def test_single_window_has_no_out_of_sample():
    tr = Trace(drifting_trace().load[:1])
    assert out_of_sample(tr, resolve(12, 4, slots=16), "deepseek") is None


def test_moves_are_relative_to_the_first_strategy():
    tr = drifting_trace()
    rows = compare(tr, resolve(12, 4, slots=16), ["deepseek", "deepseek"], repeat=1)
    assert rows[0].moves is None and rows[1].moves == 0
    assert len(rows[0].runtimes_ms) == 1


def test_cli_json_rows_have_plan_keys(capsys):
    code = main(["compare", str(SMALL), "--gpus", "4", "--strategies", "deepseek", "--repeat", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["strategy"] for r in rows] == ["deepseek"]
    for key in ("gpu_imbalance", "gap", "runtime_ms", "oos_gpu_imbalance", "oos_balancedness", "slots", "gpus"):
        assert key in rows[0]


def test_cli_csv_and_markdown(capsys):
    assert main(["compare", str(SMALL), "--gpus", "4", "--strategies", "deepseek", "--repeat", "1", "--csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert parsed[0]["strategy"] == "deepseek" and float(parsed[0]["gpu_imbalance"]) >= 1.0
    assert main(["compare", str(SMALL), "--gpus", "4", "--strategies", "deepseek", "--repeat", "1", "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| strategy")


def test_cli_rejects_bad_strategy_list(capsys):
    code = main(["compare", str(SMALL), "--gpus", "4", "--strategies", "deepseek,nope"])
    err = capsys.readouterr().err
    assert code == 2 and "--strategy nope" in err and err.count("\n") == 1


def test_lp_dispatch_scores_no_worse_than_even():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, slots=20)
    even = compare(tr, topo, ["deepseek"], repeat=1)[0]
    lp = compare(tr, topo, ["deepseek"], repeat=1, dispatch="lp")[0]
    assert torch.equal(even.placement.phy2log, lp.placement.phy2log)
    assert lp.summary["gpu_imbalance"] <= even.summary["gpu_imbalance"] + 1e-12
    assert lp.summary["lower_bound"] == even.summary["lower_bound"]
    assert lp.oos["oos_balancedness"] >= even.oos["oos_balancedness"] - 1e-12
    assert out_of_sample(tr, topo, "deepseek", dispatch="lp")["oos_pairs"] == even.oos["oos_pairs"]
