"""Scenario-robust planning: the objective never rises, the forecast cap holds, swaps keep counts and nodes."""

import itertools

import numpy as np
import pytest
import torch

from eplb_cli.errors import EplbError
from eplb_cli.metrics import node_loads
from eplb_cli.placement import Placement, replica_counts
from eplb_cli.planning.forecast import parse_forecast
from eplb_cli.planning.replay import replay
from eplb_cli.planning.robust import (
    _best,
    _swap_all,
    _swap_gain,
    _top3,
    keep_gain,
    robust_rebalance,
    robust_swaps,
    scenario_gpu_loads,
    scenario_objective,
    scenario_weights,
)
from eplb_cli.strategies import get_strategy, plan
from eplb_cli.topology import resolve
from eplb_cli.trace import Trace


def noisy_windows(gen, windows, layers, experts, sigma=1.0, noise=0.8):
    """Windows scattered around a skewed popularity: log-normal base times log-normal noise per window."""
    base = torch.exp(sigma * torch.randn(layers, experts, generator=gen, dtype=torch.float64))
    scatter = torch.exp(noise * torch.randn(windows, layers, experts, generator=gen, dtype=torch.float64))
    return (100 * base * scatter).round()


def forecast_gpu_max(placement, load):
    return scenario_gpu_loads(placement, load.unsqueeze(0)).squeeze(1).max(dim=1).values


CASES = [
    # (experts, gpus, nodes, slots, groups, policy, excluded)
    (12, 4, 1, 16, 1, "global", ()),
    (16, 8, 2, 24, 4, "hierarchical", ()),
    (10, 5, 1, 15, 1, "global", (2,)),
    (24, 6, 3, 30, 1, "global", ()),
]


@pytest.mark.parametrize("experts,gpus,nodes,slots,groups,policy,excluded", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_never_rises_and_the_forecast_cap_holds(experts, gpus, nodes, slots, groups, policy, excluded, seed):
    gen = torch.Generator().manual_seed(seed)
    topo = resolve(experts, gpus, nodes, slots=slots, groups=groups, policy=policy, exclude_gpus=list(excluded))
    windows = noisy_windows(gen, 9, 3, experts)
    forecast = windows.mean(dim=0)
    start = plan(forecast, topo, get_strategy("balanced"))
    for tolerance in (0.0, 0.05, 10.0):
        out = robust_swaps(start, windows, forecast, tolerance=tolerance).validate()
        assert torch.all(scenario_objective(out, windows) <= scenario_objective(start, windows) * (1 + 1e-12))
        cap = (1 + tolerance) * forecast_gpu_max(start, forecast)
        assert torch.all(scenario_gpu_loads(out, forecast.unsqueeze(0)).squeeze(1).max(dim=1).values <= cap * (1 + 1e-12))
        assert torch.equal(replica_counts(out.phy2log, experts), replica_counts(start.phy2log, experts))
        assert torch.equal(out.phy2log < 0, start.phy2log < 0)
        if policy == "hierarchical":  # swaps stay in their node: every node keeps its load in every scenario
            before = node_loads(scenario_gpu_loads(start, windows).reshape(-1, gpus), topo)
            after = node_loads(scenario_gpu_loads(out, windows).reshape(-1, gpus), topo)
            assert torch.allclose(before, after, rtol=1e-12, atol=1e-9)


def test_a_generous_tolerance_lowers_the_objective_on_noisy_windows():
    gen = torch.Generator().manual_seed(5)
    topo = resolve(32, 8, slots=40, policy="global")
    windows = noisy_windows(gen, 30, 4, 32)
    forecast = windows.mean(dim=0)
    start = plan(forecast, topo, get_strategy("balanced"))
    out = robust_swaps(start, windows, forecast, tolerance=0.05)
    assert float(scenario_objective(out, windows).sum()) < float(scenario_objective(start, windows).sum()) * 0.999


def all_pairings(experts):
    """Every way to put 2k single-replica experts on two GPUs of k slots (GPU 0 holds expert 0)."""
    k = experts // 2
    for first in itertools.combinations(range(1, experts), k - 1):
        left = [0, *first]
        yield left + [e for e in range(experts) if e not in left]


@pytest.mark.parametrize("seed", range(6))
def test_two_gpus_reach_the_brute_force_optimum(seed):
    """On 2 GPUs every placement is one swap from any other (GPUs being interchangeable), and every swap is
    scored exactly, so from the worst placement the robust step reaches the best of all of them."""
    gen = torch.Generator().manual_seed(seed)
    topo = resolve(6, 2, slots=6, policy="global")
    windows = noisy_windows(gen, 5, 1, 6, noise=1.2)
    objective = {tuple(p): float(scenario_objective(Placement(torch.tensor([p]), topo), windows))
                 for p in all_pairings(6)}
    worst = max(objective, key=lambda p: (objective[p], p))
    out = robust_swaps(Placement(torch.tensor([worst]), topo), windows, windows.mean(dim=0), tolerance=1e9)
    assert float(scenario_objective(out, windows)) <= min(objective.values()) * (1 + 1e-4)


def test_weights_follow_the_forecast():
    assert torch.equal(scenario_weights(parse_forecast("last"), 4), torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(scenario_weights(parse_forecast("mean"), 4), torch.full((4,), 0.25, dtype=torch.float64))
    w = scenario_weights(parse_forecast("ema:0.5"), 4)
    assert torch.allclose(w, torch.tensor([0.125, 0.125, 0.25, 0.5], dtype=torch.float64))
    assert torch.allclose(scenario_weights(parse_forecast("mean"), 4, cap=2), torch.tensor([0, 0, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(EplbError, match="oracle"):
        scenario_weights(parse_forecast("oracle"), 4)
    with pytest.raises(EplbError, match="scenarios=0"):
        scenario_weights(parse_forecast("mean"), 4, cap=0)


def test_weighted_objective_is_the_weighted_mean_of_each_busiest_gpu():
    gen = torch.Generator().manual_seed(3)
    topo = resolve(8, 4, slots=8, policy="global")
    windows = noisy_windows(gen, 3, 2, 8)
    p = plan(windows.mean(0), topo, get_strategy("deepseek"))
    peaks = scenario_gpu_loads(p, windows).max(dim=2).values  # [L, H]
    w = torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)
    assert torch.allclose(scenario_objective(p, windows, w), (peaks[:, 0] + 3 * peaks[:, 2]) / 4)
    # Only the newest window weighs: the robust objective is that window's busiest GPU.
    out = robust_swaps(p, windows, windows[-1], weights=torch.tensor([0.0, 0.0, 1.0]), tolerance=1e9)
    assert torch.all(forecast_gpu_max(out, windows[-1]) <= forecast_gpu_max(p, windows[-1]) * (1 + 1e-12))


@pytest.mark.parametrize("policy,nodes,groups", [("global", 1, 1), ("hierarchical", 2, 4)])
def test_follow_step_keeps_the_robust_gain(policy, nodes, groups):
    gen = torch.Generator().manual_seed(11)
    topo = resolve(16, 8, nodes, slots=24, groups=groups, policy=policy)
    history = noisy_windows(gen, 12, 4, 16)
    old = plan(history[:6].mean(0), topo, get_strategy("balanced"))
    forecast = history.mean(0)
    planned = plan(forecast, topo, get_strategy("balanced"))
    robust = robust_swaps(planned, history, forecast)
    kept = keep_gain(old, robust, history, forecast, reference=planned)
    assert torch.all(scenario_objective(kept, history) <= scenario_objective(robust, history) * (1 + 1e-12))
    cap = 1.05 * forecast_gpu_max(planned, forecast)
    assert torch.all(forecast_gpu_max(kept, forecast) <= cap * (1 + 1e-12))
    budget = keep_gain(old, robust, history, forecast, reference=planned, max_moves=3)
    assert int((budget.phy2log != old.phy2log).sum(dim=1).max()) <= 3


def test_robust_rebalance_without_a_served_placement_is_the_robust_plan():
    gen = torch.Generator().manual_seed(4)
    topo = resolve(12, 4, slots=16, policy="global")
    history = noisy_windows(gen, 6, 2, 12)
    forecast = history.mean(0)
    planned = plan(forecast, topo, get_strategy("balanced"))
    out = robust_rebalance(planned, None, history, forecast, parse_forecast("mean"))
    assert torch.equal(out.phy2log, robust_swaps(planned, history, forecast).phy2log)


def test_replay_robust_reports_and_never_plans_from_the_future():
    gen = torch.Generator().manual_seed(8)
    load = noisy_windows(gen, 10, 3, 16)
    topo = resolve(16, 4, slots=20, policy="global")
    res = replay(Trace(load, "<noisy>"), topo, every=2, forecast=parse_forecast("mean"), robust=True, scenarios=3)
    s = res.summary
    assert s["robust"] is True and s["scenarios"] == 3 and s["robust_tolerance"] == 0.05
    assert s["served_gpu_imbalance_p50"] <= s["served_gpu_imbalance_p95"] <= s["served_gpu_imbalance_p99"]
    assert s["served_gpu_imbalance_p99"] <= s["served_gpu_imbalance_worst_window"] <= s["served_gpu_imbalance_worst"]
    # Windows after a rebalance change nothing about it: the same plans serve windows 2-5 on a shorter trace.
    short = replay(Trace(load[:6], "<short>"), topo, every=2, forecast=parse_forecast("mean"), robust=True, scenarios=3)
    for a, b in zip(short.rebalances, res.rebalances):
        assert a.served_gpu_imbalance == b.served_gpu_imbalance and a.moves == b.moves
    for bad, needle in (({"forecast": parse_forecast("oracle"), "robust": True}, "oracle"),
                        ({"forecast": parse_forecast("mean"), "scenarios": 2}, "scenarios needs robust"),
                        ({"forecast": parse_forecast("mean"), "robust": True, "robust_tolerance": -1}, "robust_tolerance=-1")):
        with pytest.raises(EplbError, match=needle):
            replay(Trace(load, "<noisy>"), topo, every=2, **bad)


def test_bad_shapes_and_tolerance():
    topo = resolve(8, 4, slots=8, policy="global")
    p = plan(torch.ones(2, 8), topo, get_strategy("deepseek"))
    with pytest.raises(EplbError, match="scenarios"):
        robust_swaps(p, torch.ones(3, 2, 7), torch.ones(2, 8))
    with pytest.raises(EplbError, match="forecast"):
        robust_swaps(p, torch.ones(3, 2, 8), torch.ones(2, 7))
    with pytest.raises(EplbError, match=r"tolerance=-0\.1"):
        robust_swaps(p, torch.ones(3, 2, 8), torch.ones(2, 8), tolerance=-0.1)


@pytest.mark.parametrize("strategy", ["deepseek", "fast", "balanced", "thorough", "diverse"])
def test_every_strategy_plan_can_be_made_robust(strategy):
    gen = torch.Generator().manual_seed(21)
    topo = resolve(32, 8, 2, slots=40, groups=4, policy="hierarchical")
    history = noisy_windows(gen, 16, 3, 32)
    forecast = history.mean(0)
    planned = plan(forecast, topo, get_strategy(strategy))
    out = robust_rebalance(planned, None, history, forecast, parse_forecast("mean")).validate()
    before, after = scenario_objective(planned, history), scenario_objective(out, history)
    assert torch.all(after <= before * (1 + 1e-12)) and float(after.sum()) < float(before.sum())
    assert torch.all(forecast_gpu_max(out, forecast) <= 1.05 * forecast_gpu_max(planned, forecast) * (1 + 1e-12))


def test_best_is_a_stable_partial_sort():
    gen = torch.Generator().manual_seed(2)
    for n, count in ((1, 1), (7, 3), (40, 40), (200, 16)):
        values = torch.randint(0, 6, (n,), generator=gen).to(torch.float64).numpy()
        values[::5] = np.inf
        for largest in (False, True):
            expect = np.argsort(-values if largest else values, kind="stable")[:count]
            assert np.array_equal(_best(values, count, largest), expect)


def kernel_state(phy2log, load, experts, k):
    """The kernel's arrays for placement ``phy2log`` [L, S] and load [H, L, E], recomputed plainly (numpy loops)."""
    layers, slots = phy2log.shape
    windows = load.shape[0]
    key = np.where(phy2log >= 0, phy2log, experts).astype(np.int64)
    share = np.zeros((layers, experts + 1, windows))
    for layer in range(layers):
        for e in range(experts):
            count = max(int((phy2log[layer] == e).sum()), 1)
            share[layer, e] = load[:, layer, e] / count
    gt = np.zeros((layers, slots // k, windows))
    for layer in range(layers):
        for s in range(slots):
            gt[layer, s // k] += share[layer, key[layer, s]]
    return key, share, gt


@pytest.mark.parametrize("gpus", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_swap_gain_is_the_recomputed_drop_of_the_summed_busiest_gpu(gpus, seed):
    gen = torch.Generator().manual_seed(seed)
    experts, k = 2 * gpus, 3
    topo = resolve(experts, gpus, slots=gpus * k, policy="global")
    load = noisy_windows(gen, 6, 1, experts)
    phy2log = plan(load.mean(0), topo, get_strategy("balanced")).phy2log.numpy()
    key, share, gt = kernel_state(phy2log, load.numpy(), experts, k)
    depth = min(3, gpus)
    top_idx, top_val = np.empty((depth, 6), dtype=np.int64), np.empty((depth, 6))
    _top3(gt[0], top_idx, top_val)
    assert np.array_equal(top_val[0], gt[0].max(axis=0))
    cols = np.arange(6)
    for si, sj in itertools.combinations(range(gpus * k), 2):
        if si // k == sj // k:
            continue
        d = np.empty(6)
        gain = _swap_gain(gt[0], top_idx, top_val, share[0], key[0, si], key[0, sj], si // k, sj // k, cols, d)
        swapped = phy2log.copy()
        swapped[0, si], swapped[0, sj] = phy2log[0, sj], phy2log[0, si]
        _, _, after = kernel_state(swapped, load.numpy(), experts, k)
        assert gain == pytest.approx(gt[0].max(axis=0).sum() - after[0].max(axis=0).sum(), abs=1e-9)
        assert np.allclose(d, after[0, si // k] - gt[0, si // k])


@pytest.mark.parametrize("seed", range(4))
def test_kernel_keeps_its_loads_equal_to_a_recomputation(seed):
    """After every layer's swaps, the loads the kernel updated in place are those of its final placement."""
    gen = torch.Generator().manual_seed(seed)
    experts, gpus, k, windows = 24, 6, 5, 40
    topo = resolve(experts, gpus, slots=gpus * k, policy="global")
    load = noisy_windows(gen, windows, 3, experts)
    start = plan(load.mean(0), topo, get_strategy("balanced")).phy2log.numpy()
    key, share, gt = kernel_state(start, load.numpy(), experts, k)
    fshare = share.mean(axis=2)
    gf = gt.mean(axis=2)
    before = gt.max(axis=1).sum(axis=1)
    gpu_ok = ~np.eye(gpus, dtype=np.bool_)
    _swap_all(key, gt, gf, np.full(3, np.inf), share, fshare, gpu_ok, k, 4, gpus * k)
    out = np.where(key < experts, key, -1)
    _, _, fresh = kernel_state(out, load.numpy(), experts, k)
    assert np.allclose(gt, fresh, rtol=1e-12, atol=1e-9)
    assert np.allclose(gf, fresh.mean(axis=2), rtol=1e-12, atol=1e-9)
    assert np.all(fresh.max(axis=1).sum(axis=1) <= before * (1 + 1e-12))
    assert (out != start).any()
