"""Replaying a trace: the schedule, batched served scoring, forecasts against the oracle, moves."""


import pytest
import torch
from helpers import SMALL

from eplb_cli.errors import EplbError
from eplb_cli.formats import read_trace
from eplb_cli.metrics import ServedTally, gpu_loads, live_gpus, score, window_gpu_loads
from eplb_cli.planning.forecast import parse_forecast
from eplb_cli.planning.replay import parse_bytes, rebalance_windows, replay
from eplb_cli.strategies import get_strategy, plan
from eplb_cli.topology import resolve
from eplb_cli.trace import Trace

SUMMARY_KEYS = {"served_gpu_imbalance", "served_balancedness", "moves", "moves_intra_node", "moves_inter_node",
                "in_sample_gpu_imbalance", "rebalances", "served_windows", "forecast", "every", "history"}
REBALANCE_KEYS = {"window", "served_until", "history_from", "in_sample_gpu_imbalance", "served_gpu_imbalance",
                  "served_balancedness", "moves", "moves_intra_node", "moves_inter_node", "bytes_moved"}


def drifting_trace(windows=8, layers=2, experts=8):
    """A hot expert that moves to the next expert id every window: last window's plan is always wrong."""
    load = torch.ones(windows, layers, experts, dtype=torch.float64)
    for w in range(windows):
        load[w, :, w % experts] = 40.0
    return Trace(load, "<drift>")


def test_schedule():
    assert rebalance_windows(6, 1) == [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert rebalance_windows(7, 3) == [(3, 6), (6, 7)]
    assert rebalance_windows(7, 2, start=1) == [(1, 3), (3, 5), (5, 7)]
    for args, needle in (((6, 0), "every=0"), ((6, 6), "none is left"), ((6, 2, 0), "start=0")):
        with pytest.raises(EplbError, match=needle):
            rebalance_windows(*args)


def test_windows_scored_at_once_match_one_by_one():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, 2, groups=4)
    p = plan(tr.load[0], topo, get_strategy("deepseek"))
    batched = window_gpu_loads(p, tr.load)
    for w in range(tr.windows):
        assert torch.allclose(batched[w], gpu_loads(p, tr.load[w]))


def test_tally_agrees_with_score_on_one_window():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, 2, groups=4)
    p = plan(tr.load[0], topo, get_strategy("deepseek"))
    s = score(p, tr.load[1]).summary()
    t = ServedTally().add(window_gpu_loads(p, tr.load[1:2]), live_gpus(topo))
    assert abs(t.imbalance - s["gpu_imbalance"]) < 1e-12
    assert abs(t.balancedness - s["balancedness"]) < 1e-12
    assert abs(t.worst - s["gpu_imbalance_worst"]) < 1e-12


def test_replay_dict_has_the_keys():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, 2, groups=4)
    res = replay(tr, topo, every=2, forecast=parse_forecast("mean"), strategy="deepseek", expert_bytes=1000)
    doc = res.to_dict()
    assert set(doc) == {"rebalances", "summary"}
    assert SUMMARY_KEYS <= doc["summary"].keys()
    assert len(doc["rebalances"]) == 2 and REBALANCE_KEYS <= doc["rebalances"][0].keys()
    first, second = doc["rebalances"]
    assert first["moves"] is None and second["moves"] is not None
    assert second["bytes_moved"] == second["moves"] * 1000
    assert doc["summary"]["moves"] == second["moves"]
    assert (first["window"], first["served_until"], second["window"], second["served_until"]) == (2, 4, 4, 6)


def test_oracle_never_worse_than_last_on_a_drifting_trace():
    tr = drifting_trace()
    topo = resolve(tr.experts, 4, slots=12, policy="global")
    got = {}
    for spec in ("last", "mean", "oracle"):
        got[spec] = replay(tr, topo, every=1, forecast=parse_forecast(spec), strategy="deepseek").summary
    assert got["oracle"]["served_balancedness"] >= got["last"]["served_balancedness"]
    assert got["oracle"]["served_balancedness"] >= got["mean"]["served_balancedness"]
    assert got["oracle"]["served_gpu_imbalance"] <= got["last"]["served_gpu_imbalance"]
    # On its own windows the oracle is in-sample.
    assert abs(got["oracle"]["in_sample_gpu_imbalance"] - got["oracle"]["served_gpu_imbalance"]) < 1e-12


def test_migration_aware_moves_less_at_no_in_sample_cost():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, 2, groups=4)
    fc = parse_forecast("last")
    aware = replay(tr, topo, every=1, forecast=fc, strategy="deepseek")
    blind = replay(tr, topo, every=1, forecast=fc, strategy="deepseek", migration_aware=False)
    assert aware.summary["moves"] <= blind.summary["moves"]
    for a, b in zip(aware.rebalances, blind.rebalances):
        assert a.in_sample_gpu_imbalance <= b.in_sample_gpu_imbalance + 1e-12
    capped = replay(tr, topo, every=1, forecast=fc, strategy="deepseek", max_moves=1)
    assert all(r.moves is None or r.moves <= tr.layers for r in capped.rebalances)


def test_replay_with_an_excluded_gpu():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, slots=24, policy="global", exclude_gpus=[2])
    res = replay(tr, topo, every=2, forecast=parse_forecast("last"), strategy="deepseek")
    assert bool((res.placement.phy2log[:, 12:18] == -1).all())
    res.placement.validate()


def test_bad_arguments():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4)
    fc = parse_forecast("last")
    with pytest.raises(EplbError, match="history=0"):
        replay(tr, topo, every=1, forecast=fc, history=0)
    with pytest.raises(EplbError, match="max_moves=-1"):
        replay(tr, topo, every=1, forecast=fc, max_moves=-1)
    with pytest.raises(EplbError, match="migration_aware"):
        replay(tr, topo, every=1, forecast=fc, max_moves=2, migration_aware=False)


@pytest.mark.parametrize("text, value", [("1000", 1000), ("42MiB", 42 << 20), ("1.5GB", 1_500_000_000), ("2 kib", 2048)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "x", "-3", "4 parsecs", "inf"])
def test_parse_bytes_rejects(text):
    with pytest.raises(EplbError, match="expert_bytes"):
        parse_bytes(text)


def test_min_gain_skips_rebalances_and_counts_what_they_would_have_done():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, 2, groups=4)
    fc = parse_forecast("last")
    always = replay(tr, topo, every=1, forecast=fc, strategy="deepseek", min_gain=-1e9)
    plain = replay(tr, topo, every=1, forecast=fc, strategy="deepseek")
    assert always.summary["skipped"] == 0 and always.summary["moves"] == plain.summary["moves"]
    assert always.summary["served_balancedness_if_taken"] == always.summary["served_balancedness"]
    # The gain is the relative drop of the GPU imbalance on the forecast: recompute it for the second rebalance.
    second = always.rebalances[1]
    served_before = always.rebalances[0]
    assert second.forecast_gain is not None and served_before.forecast_gain is None
    never = replay(tr, topo, every=1, forecast=fc, strategy="deepseek", min_gain=0.999)
    assert never.summary["skipped"] == len(never.rebalances) - 1
    assert never.summary["moves"] == 0 and never.summary["moves_saved"] > 0
    assert all(r.moves == 0 for r in never.rebalances[1:])
    # Skipping every rebalance serves the first plan throughout.
    first = plan(tr.load[0], topo, get_strategy("deepseek"))
    assert torch.equal(never.placement.phy2log, first.phy2log)


def test_forecast_gain_by_hand():
    # Two windows planned separately: the gain of the second rebalance is 1 - imbalance(new) / imbalance(served),
    # both on its forecast (window 1 under "last").
    tr = drifting_trace(windows=3)
    topo = resolve(tr.experts, 4, slots=12, policy="global")
    res = replay(tr, topo, every=1, forecast=parse_forecast("last"), strategy="deepseek", min_gain=-1.0,
                 migration_aware=False)
    live = live_gpus(topo)
    strat = get_strategy("deepseek")
    served, new = plan(tr.load[0], topo, strat), plan(tr.load[1], topo, strat)
    now = ServedTally().add(window_gpu_loads(served, tr.load[1:2]), live).imbalance
    then = ServedTally().add(window_gpu_loads(new, tr.load[1:2]), live).imbalance
    assert res.rebalances[1].forecast_gain == pytest.approx(1.0 - then / now)
    assert res.rebalances[1].forecast_gain > 0.1  # the hot expert moved: the old plan is badly off


def test_share_budget_in_replay():
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, 2, groups=4)
    from eplb_cli.planning.budget import MoveBudget

    res = replay(tr, topo, every=1, forecast=parse_forecast("last"), strategy="deepseek", max_moves=MoveBudget(share=0.1))
    cap = int(0.1 * tr.layers * topo.slots)
    assert all(r.moves is None or r.moves <= cap for r in res.rebalances)
    assert res.summary["max_moves"] == "10%" and res.summary["max_moves_scope"] == "of all slots, in total"


def test_intervals_serve_the_same_windows_and_report_progress():
    from eplb_cli.planning.replay import replay_intervals
    from eplb_cli.validation import intervals as parse_intervals

    assert parse_intervals("1,2, 4") == [1, 2, 4]
    for bad in ("0", "1,1", "x", "2,-1", ""):
        with pytest.raises(EplbError, match="every="):
            parse_intervals(bad)
    tr = read_trace(SMALL)
    topo = resolve(tr.experts, 4, 2, groups=4)
    calls = []
    results = replay_intervals(tr, topo, [1, 2], forecast=parse_forecast("last"), strategy="deepseek",
                               progress=lambda done, total: calls.append((done, total)))
    assert [r.summary["every"] for r in results] == [1, 2]
    assert {r.summary["start"] for r in results} == {2}
    assert {r.summary["served_windows"] for r in results} == {tr.windows - 2}
    total = sum(len(r.rebalances) for r in results)
    assert calls == [(i, total) for i in range(1, total + 1)]
@pytest.mark.parametrize("text", ["1e308MiB", "9223372036854775808", "1e19"])
def test_parse_bytes_rejects_sizes_no_expert_has(text):
    with pytest.raises(EplbError, match=r"more than 2\*\*63 bytes"):
        parse_bytes(text)


@pytest.mark.parametrize("threads", [0, -1, 1025, 10**11])
def test_threads_out_of_range(threads):
    tr = read_trace(SMALL)
    with pytest.raises(EplbError, match=f"threads={threads}: must be between 1 and 1024"):
        replay(tr, resolve(tr.experts, 4), every=1, forecast=parse_forecast("last"), threads=threads)


def test_progress_counts_every_rebalance():
    tr = read_trace(SMALL)
    calls: list[tuple[int, int]] = []
    res = replay(tr, resolve(tr.experts, 4), every=2, forecast=parse_forecast("last"), strategy="deepseek",
                 progress=lambda done, total: calls.append((done, total)))
    assert len(res.rebalances) == 2 and calls == [(1, 2), (2, 2)]
