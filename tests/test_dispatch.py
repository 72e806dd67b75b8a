"""Token dispatch: the LP (min-max) split against brute force and an LP solver, and its invariants."""

import itertools

import pytest
import torch

from eplb_cli.dispatch import check_dispatch, dispatch_gpu_loads, lp_gpu_loads, lp_score, lp_split
from eplb_cli.errors import EplbError
from eplb_cli.metrics import gpu_loads, score, window_gpu_loads
from eplb_cli.placement import Placement
from eplb_cli.strategies import get_strategy, plan
from eplb_cli.topology import resolve


def random_case(gen, gpus, per_gpu, experts, layers=3):
    """Random placements (every expert at least once, extra replicas anywhere) and log-normal integer loads."""
    slots = gpus * per_gpu
    rows = []
    for _ in range(layers):
        ids = torch.cat([torch.arange(experts), torch.randint(0, experts, (slots - experts,), generator=gen)])
        rows.append(ids[torch.randperm(slots, generator=gen)])
    topo = resolve(experts, gpus, slots=slots, policy="global")
    load = torch.exp(2 * torch.randn(layers, experts, generator=gen, dtype=torch.float64)).round()
    return Placement(torch.stack(rows), topo), load


def subset_optimum(phy2log: torch.Tensor, load: torch.Tensor, gpus: int, per_gpu: int) -> float:
    """Brute force: the least busiest GPU is the max over GPU sets U of (load of experts held only in U) / |U|."""
    holders = [set() for _ in range(load.shape[0])]
    for slot, e in enumerate(phy2log.tolist()):
        if e >= 0:
            holders[e].add(slot // per_gpu)
    best = 0.0
    for size in range(1, gpus + 1):
        for subset in itertools.combinations(range(gpus), size):
            inside = set(subset)
            best = max(best, sum(float(load[e]) for e, h in enumerate(holders) if h and h <= inside) / size)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_lp_matches_the_subset_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    gpus = int(torch.randint(2, 7, (1,), generator=gen))
    per_gpu = int(torch.randint(1, 4, (1,), generator=gen))
    experts = int(torch.randint(1, gpus * per_gpu + 1, (1,), generator=gen))
    p, load = random_case(gen, gpus, per_gpu, experts)
    got = lp_gpu_loads(p, load)
    for layer in range(load.shape[0]):
        best = subset_optimum(p.phy2log[layer], load[layer], gpus, per_gpu)
        assert float(got[layer].max()) == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert torch.allclose(got.sum(dim=1), load.sum(dim=1))


@pytest.mark.parametrize("seed", range(12))
def test_lp_matches_an_lp_solver(seed):
    linprog = pytest.importorskip("scipy.optimize").linprog
    gen = torch.Generator().manual_seed(100 + seed)
    p, load = random_case(gen, 4, 3, 9, layers=1)
    holds = torch.zeros(9, 4, dtype=torch.bool)
    for slot, e in enumerate(p.phy2log[0].tolist()):
        holds[e, slot // 3] = True
    edges = holds.nonzero().tolist()  # variables: tokens of expert e on GPU g, then T
    n = len(edges) + 1
    a_eq = [[1.0 if (i < len(edges) and edges[i][0] == e) else 0.0 for i in range(n)] for e in range(9)]
    a_ub = [[1.0 if (i < len(edges) and edges[i][1] == g) else (-1.0 if i == n - 1 else 0.0) for i in range(n)]
            for g in range(4)]
    res = linprog([0.0] * (n - 1) + [1.0], A_ub=a_ub, b_ub=[0.0] * 4, A_eq=a_eq, b_eq=load[0].tolist(),
                  bounds=[(0, None)] * n, method="highs")
    assert res.status == 0
    assert float(lp_gpu_loads(p, load)[0].max()) == pytest.approx(res.fun, rel=1e-7, abs=1e-7)


def test_split_is_feasible_and_never_worse_than_even():
    gen = torch.Generator().manual_seed(7)
    p, load = random_case(gen, 5, 3, 11, layers=4)
    split = lp_split(p, load)  # [L, E, G]
    holds = torch.zeros_like(split, dtype=torch.bool)
    for layer in range(4):
        for slot, e in enumerate(p.phy2log[layer].tolist()):
            holds[layer, e, slot // 3] = True
    assert bool((split >= -1e-12).all()) and bool((split[~holds].abs() < 1e-12).all())
    assert torch.allclose(split.sum(dim=2), load)
    lp = lp_gpu_loads(p, load)
    assert torch.allclose(split.sum(dim=1), lp)
    assert bool((lp.max(dim=1).values <= gpu_loads(p, load).max(dim=1).values + 1e-9).all())


def test_one_gpu_per_expert_leaves_nothing_to_split():
    topo = resolve(8, 4, slots=12, policy="global")
    # Experts 0-3 have three replicas each, all on one GPU: the LP split is the even one.
    p = Placement(torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]]), resolve(4, 4, slots=12, policy="global"))
    load = torch.tensor([[9.0, 1.0, 5.0, 2.0]])
    assert torch.allclose(lp_gpu_loads(p, load), gpu_loads(p, load).to(torch.float64))
    q = plan(torch.rand(2, 8, generator=torch.Generator().manual_seed(0)), topo, get_strategy("deepseek"))
    load = torch.rand(3, 2, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(dispatch_gpu_loads(q, load, "even"), window_gpu_loads(q, load))
    assert dispatch_gpu_loads(q, load, "lp").shape == (3, 2, 4)


def test_a_hot_expert_on_two_gpus_evens_them_out():
    topo = resolve(3, 2, slots=4, policy="global")
    p = Placement(torch.tensor([[0, 1, 0, 2]]), topo)  # expert 0 on both GPUs
    load = torch.tensor([[10.0, 2.0, 3.0]])
    assert gpu_loads(p, load).tolist() == [[7.0, 8.0]]
    assert torch.allclose(lp_gpu_loads(p, load), torch.tensor([[7.5, 7.5]], dtype=torch.float64))
    assert torch.allclose(lp_split(p, load)[0, 0], torch.tensor([5.5, 4.5], dtype=torch.float64))


def test_excluded_gpus_carry_nothing_and_lp_score_is_consistent():
    topo = resolve(10, 5, slots=15, policy="global", exclude_gpus=[1])
    load = torch.exp(torch.randn(3, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    p = plan(load, topo, get_strategy("balanced"))
    sc = lp_score(p, load)
    assert bool((sc.gpu_load[:, 1] == 0).all())
    assert torch.allclose(sc.slot_load.view(3, 5, 3).sum(dim=2), sc.gpu_load)
    even = score(p, load).summary()
    lp = sc.summary()
    assert lp["gpu_imbalance"] <= even["gpu_imbalance"] + 1e-12
    assert lp["lower_bound"] == pytest.approx(even["lower_bound"])
    assert lp["gap"] >= -1e-9


def test_hierarchical_placements_keep_load_in_their_node():
    topo = resolve(16, 8, 2, slots=24, groups=4, policy="hierarchical")
    load = torch.exp(torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    p = plan(load.mean(0), topo, get_strategy("balanced"))
    even, lp = window_gpu_loads(p, load), lp_gpu_loads(p, load)
    assert torch.allclose(even.view(4, 3, 2, 4).sum(dim=3), lp.view(4, 3, 2, 4).sum(dim=3))


def test_check_dispatch():
    assert check_dispatch("lp") == "lp"
    with pytest.raises(EplbError, match="dispatch=fair"):
        check_dispatch("fair")
