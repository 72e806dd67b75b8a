"""Move budgets: the greedy path, plans per layer and in total, and the knapsack against brute force."""

import itertools

import pytest
import torch
from helpers import random_placement
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.api import move_budget as parse_max_moves
from eplb_cli.errors import EplbError
from eplb_cli.metrics import count_moves, gpu_loads
from eplb_cli.placement import Placement, replica_counts
from eplb_cli.planning.budget import MoveBudget, budget_path
from eplb_cli.planning.migration import budgeted, relabel, swap_back
from eplb_cli.strategies import get_strategy, plan
from eplb_cli.topology import resolve


def case(seed, hier=False, layers=4):
    """An old placement, a load it is now unbalanced for, and the plan from scratch for that load, followed."""
    gen = torch.Generator().manual_seed(seed)
    topo = resolve(16, 8, 2, slots=24, groups=2 if hier else 1, policy="hierarchical" if hier else "global")
    old = random_placement(topo, layers, gen)
    load = torch.rand(layers, 16, generator=gen, dtype=torch.float64) ** 3 * 100
    goal = swap_back(old, relabel(old, plan(load, topo, get_strategy("balanced"))), load)
    return old, goal, load


def peaks(p, load):
    return gpu_loads(p, load).max(dim=1).values


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), hier=st.booleans())
def test_path_steps_never_raise_the_peak_and_keep_every_expert(seed, hier):
    old, goal, load = case(seed, hier)
    path = budget_path(old, goal, load)
    before = peaks(old, load)
    for steps in range(path.used.shape[0] + 1):
        p = path._placement(torch.full((old.layers,), steps), torch.zeros(old.layers, dtype=torch.bool)).validate()
        now = peaks(p, load)
        assert bool((now <= before + 1e-9).all())
        assert bool((replica_counts(p.phy2log, 16) >= 1).all())
        before = now
    # Where the target is better than the old placement, the path stops at its busiest GPU, never below.
    better = path.goal_peak < path.peak[0] - 1e-9
    assert bool((before[better] >= path.goal_peak[better] - 1e-9).all())


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), hier=st.booleans(), budget=st.integers(0, 30))
def test_budgets_are_respected_exactly(seed, hier, budget):
    old, goal, load = case(seed, hier)
    per_layer = budgeted(old, goal, load, budget)
    assert bool(((per_layer.phy2log != old.phy2log).sum(dim=1) <= budget).all())
    share = MoveBudget(share=budget / 100)
    total = share.total(old.layers, old.topology.slots)
    in_total = budgeted(old, goal, load, share)
    assert count_moves(old, in_total)["moves"] <= total


def test_budget_zero_is_the_old_placement_and_a_full_budget_the_target():
    old, goal, load = case(3)
    for zero in (0, MoveBudget(share=0.0)):
        assert torch.equal(budgeted(old, goal, load, zero).phy2log, old.phy2log)
    assert torch.equal(budgeted(old, goal, load, old.topology.slots).phy2log, goal.phy2log)


def test_a_copy_moves_load_in_one_move_by_hand():
    # 3 experts on 2 GPUs x 2 slots. Old: GPU0 {0, 1} = 10 + 1, GPU1 {2, 2} = 0.5 + 0.5. Writing expert 0 over one
    # replica of expert 2 gives 0 two replicas: GPU0 5 + 1, GPU1 5 + 1 (the target's balance, with one move of its
    # three). No swap gets the peak below 10.5.
    topo = resolve(3, 2, slots=4, policy="global")
    old = Placement(torch.tensor([[0, 1, 2, 2]]), topo).validate()
    target = Placement(torch.tensor([[1, 0, 2, 0]]), topo).validate()
    load = torch.tensor([[10.0, 1.0, 1.0]], dtype=torch.float64)
    one = budgeted(old, target, load, 1)
    assert gpu_loads(one, load).tolist() == [[6.0, 6.0]]
    assert count_moves(old, one)["moves"] == 1
    # A target that stays above that (GPU1 {0, 0} = 10) is also where the path stops: never below the target.
    high = Placement(torch.tensor([[2, 1, 0, 0]]), topo).validate()
    assert gpu_loads(budgeted(old, high, load, 1), load).max() >= 10.0


def offers_by_brute_force(path, old, load):
    """Each layer's (moves, imbalance) for every prefix of its path and its whole target, scored from scratch."""
    mean = load.sum(dim=1) / old.topology.gpus
    layers, offers = old.layers, []
    for layer in range(layers):
        mine = []
        for steps in range(path.used.shape[0] + 1):
            taken = torch.zeros(layers, dtype=torch.long)
            taken[layer] = steps
            p = path._placement(taken, torch.zeros(layers, dtype=torch.bool))
            mine.append((int((p.phy2log[layer] != old.phy2log[layer]).sum()), float(peaks(p, load)[layer] / mean[layer])))
        whole = torch.zeros(layers, dtype=torch.bool)
        whole[layer] = True
        p = path._placement(torch.zeros(layers, dtype=torch.long), whole)
        mine.append((int((p.phy2log[layer] != old.phy2log[layer]).sum()), float(peaks(p, load)[layer] / mean[layer])))
        offers.append(mine)
    return offers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_share_budget_is_the_best_choice_of_offers(seed):
    old, goal, load = case(seed, layers=3)
    path = budget_path(old, goal, load)
    offers = offers_by_brute_force(path, old, load)
    mean = load.sum(dim=1) / old.topology.gpus
    for total in (0, 3, 7, 12, 20):
        best = min(sum(o[1] for o in combo) for combo in itertools.product(*offers) if sum(o[0] for o in combo) <= total)
        got = path.within(total)
        assert count_moves(old, got)["moves"] <= total
        value = float((peaks(got, load) / mean).sum())
        assert value <= best + 1e-9


def test_parse_max_moves():
    assert parse_max_moves("64") == MoveBudget(per_layer=64)
    assert parse_max_moves(" 5% ") == MoveBudget(share=0.05)
    assert MoveBudget(share=0.05).total(58, 288) == 835
    assert MoveBudget(per_layer=3).total(58, 288) == 174
    for bad in ("-1", "x", "101%", "%", "1.5"):
        with pytest.raises(EplbError, match="max_moves="):
            parse_max_moves(bad)
