"""The moves-versus-balance frontier: monotone in budget, budgets respected, both ends exact."""

import itertools

import pytest

from eplb_cli.errors import EplbError
from eplb_cli.metrics import count_moves, score
from eplb_cli.placement import Placement
from eplb_cli.planning.frontier import SHARES, frontier
from eplb_cli.planning.migration import follow
from eplb_cli.planning.transfer import Links
from eplb_cli.strategies import get_strategy, plan
from eplb_cli.synthetic import generate
from eplb_cli.topology import resolve


def consecutive(seed: int, hier: bool):
    """Plans of two consecutive windows of a synthetic trace (8 layers x 32 experts, 8 GPUs in 2 nodes, 40 slots)."""
    tr = generate(8, 32, 2, seed=seed, groups=4)
    topo = resolve(32, 8, 2, slots=40, groups=4, policy="hierarchical" if hier else "global")
    strat = get_strategy("balanced")
    return plan(tr.load[0], topo, strat), plan(tr.load[1], topo, strat), tr.load[1]


@pytest.mark.parametrize("seed, hier", [(0, False), (1, True), (2, False), (3, True)])
def test_frontier_is_monotone_and_exact_at_both_ends(seed, hier):
    old, new, load = consecutive(seed, hier)
    rows = frontier(old, new, load)
    assert [r.budget for r in rows] == [f"{100 * s:g}%" for s in SHARES] + ["unlimited"]
    for a, b in itertools.pairwise(rows):
        assert b.gpu_imbalance <= a.gpu_imbalance + 1e-9
    for r in rows[:-1]:
        assert r.moves <= r.max_moves
        assert r.moves == r.moves_intra_node + r.moves_inter_node
    # Budget 0 is the old placement; unlimited is plan --previous without a budget.
    assert rows[0].moves == 0
    assert abs(rows[0].gpu_imbalance - score(old, load).summary()["gpu_imbalance"]) < 1e-12
    followed = follow(old, new, load)
    assert rows[-1].moves == count_moves(old, followed)["moves"]
    assert rows[-1].gpu_imbalance == score(followed, load).summary()["gpu_imbalance"]
    assert rows[-1].gap == 0.0
    assert all(r.gap >= -1e-9 for r in rows)


def test_frontier_rows_carry_bytes_and_time():
    old, new, load = consecutive(5, False)
    links = Links(expert_bytes=1000, nvlink_gbps=1e-6, network_gbps=1e-7)
    for r in frontier(old, new, load, links=links):
        assert r.bytes_moved == r.moves * 1000
        assert (r.transfer_s > 0) == (r.moves > 0)


def test_frontier_needs_matching_placements():
    old, new, load = consecutive(0, False)
    other = Placement(new.phy2log[:, :32], resolve(32, 8, slots=32, policy="global"))
    with pytest.raises(EplbError):
        frontier(old, other, load)
    with pytest.raises(EplbError, match="shares"):
        frontier(old, new, load, shares=(0.5, 2.0))
