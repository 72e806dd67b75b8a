"""Migration-aware planning: free relabelling, swap-back and the move budget."""


import torch
from helpers import random_placement
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.metrics import count_moves, gpu_loads, node_loads, score
from eplb_cli.placement import Placement, replica_counts
from eplb_cli.planning.migration import budgeted, follow, keep_slots, relabel, stay_matrix, swap_back
from eplb_cli.topology import resolve


def shuffle_gpus(p, gen, within_nodes=False):
    """The same placement with GPUs renamed (within nodes if asked) and slots shuffled on each GPU."""
    topo = p.topology
    layers, k = p.layers, topo.slots_per_gpu
    out = torch.empty_like(p.phy2log).view(layers, topo.gpus, k)
    src = p.phy2log.view(layers, topo.gpus, k)
    for l in range(layers):
        if within_nodes:
            nodes = torch.randperm(topo.nodes, generator=gen)
            perm = torch.cat([n * topo.gpus_per_node + torch.randperm(topo.gpus_per_node, generator=gen) for n in nodes])
        else:
            perm = torch.randperm(topo.gpus, generator=gen)
        for g in range(topo.gpus):
            out[l, g] = src[l, perm[g]][torch.randperm(k, generator=gen)]
    return Placement(out.view(layers, -1), topo).validate()


def gpu_multisets(p):
    """Per layer, the sorted list of each GPU's sorted experts (GPU names forgotten)."""
    topo = p.topology
    rows = torch.sort(p.phy2log.view(p.layers, topo.gpus, -1), dim=2).values.tolist()
    return [sorted(map(tuple, layer)) for layer in rows]


# ---------------------------------------------------------------- relabelling


def test_moves_counted_by_hand():
    # 1 layer, 4 experts, 6 slots on 3 GPUs in one node.
    topo = resolve(4, 3, slots=6, policy="global")
    old = Placement(torch.tensor([[0, 1, 2, 3, 0, 2]]), topo).validate()
    # The same GPUs' contents, GPUs 0 and 1 swapped and slots flipped: every slot changes...
    new = Placement(torch.tensor([[3, 2, 1, 0, 2, 0]]), topo).validate()
    assert count_moves(old, new) == {"moves": 6, "moves_intra_node": 6, "moves_inter_node": 0}
    # ...but relabelling GPUs and keeping slots moves nothing.
    assert count_moves(old, relabel(old, new))["moves"] == 0
    assert torch.equal(relabel(old, new).phy2log, old.phy2log)
    # GPU 2 now holds {1, 3} instead of {0, 2}: two replicas move, and only those two.
    new2 = Placement(torch.tensor([[2, 3, 0, 1, 1, 3]]), topo).validate()
    r = relabel(old, new2)
    assert r.phy2log.tolist() == [[0, 1, 2, 3, 1, 3]]
    assert count_moves(old, r)["moves"] == 2


def test_intra_and_inter_node_by_hand():
    # 2 nodes x 2 GPUs x 1 slot, 4 experts; expert 3 is copied within node 1, expert 0 crosses nodes.
    topo = resolve(4, 4, 2, slots=4, policy="global")
    old = Placement(torch.tensor([[0, 1, 2, 3]]), topo).validate()
    new = Placement(torch.tensor([[1, 1, 0, 3]]), topo)
    m = count_moves(old, new)
    assert m == {"moves": 2, "moves_intra_node": 1, "moves_inter_node": 1}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), gpus=st.sampled_from([2, 4, 8]), per=st.integers(1, 4),
       hier=st.booleans())
def test_relabelling_never_changes_imbalance(seed, gpus, per, hier):
    gen = torch.Generator().manual_seed(seed)
    nodes = 2 if gpus >= 4 else 1
    experts = max(gpus * per - gpus // 2, 1)
    groups = nodes if hier and experts % nodes == 0 else 1
    policy = "hierarchical" if groups > 1 else "global"
    topo = resolve(experts, gpus, nodes, slots=gpus * per, groups=groups, policy=policy)
    old, new = random_placement(topo, 3, gen), random_placement(topo, 3, gen)
    load = torch.rand(3, experts, generator=gen, dtype=torch.float64) * 100
    r = relabel(old, new)
    a, b = score(new, load).summary(), score(r, load).summary()
    assert abs(a["gpu_imbalance"] - b["gpu_imbalance"]) < 1e-12
    assert abs(a["balancedness"] - b["balancedness"]) < 1e-12
    if topo.hierarchical:
        assert abs(a["node_imbalance"] - b["node_imbalance"]) < 1e-12
    assert gpu_multisets(r) == gpu_multisets(new)
    assert count_moves(old, r)["moves"] <= count_moves(old, new)["moves"]
    # A renamed copy of the old placement relabels back to it exactly.
    back = relabel(old, shuffle_gpus(old, gen, within_nodes=topo.hierarchical))
    assert torch.equal(back.phy2log, old.phy2log)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), gpus=st.integers(1, 6), per=st.integers(1, 5), experts=st.integers(1, 6))
def test_stay_matrix_against_counting(seed, gpus, per, experts):
    # Few experts and many slots per GPU: several copies of an expert on a GPU, and some empty (-1) slots.
    gen = torch.Generator().manual_seed(seed)
    topo = resolve(experts, gpus, slots=gpus * per, policy="global") if gpus * per >= experts else None
    if topo is None:
        return
    rows = [torch.randint(-1, experts, (2, gpus * per), generator=gen) for _ in range(2)]
    old, new = (Placement(r, topo) for r in rows)
    got = stay_matrix(old, new)
    for layer in range(2):
        for h in range(gpus):
            for g in range(gpus):
                a = rows[1][layer, h * per:(h + 1) * per].tolist()
                b = rows[0][layer, g * per:(g + 1) * per].tolist()
                want = sum(min(a.count(e), b.count(e)) for e in range(experts))
                assert got[layer, h, g] == want


def _keep_slots_by_hand(old_row: list[int], new_row: list[int]) -> list[int]:
    """The rule of keep_slots for one GPU: the r-th copy of e goes to old's r-th copy of e, the rest in order."""
    out: list[int | None] = [None] * len(new_row)
    rest = []
    for i, e in enumerate(new_row):
        r = new_row[:i].count(e)
        spots = [j for j, x in enumerate(old_row) if x == e and e >= 0]
        if r < len(spots):
            out[spots[r]] = e
        else:
            rest.append(e)
    free = [j for j in range(len(out)) if out[j] is None]
    for j, e in zip(free, rest):
        out[j] = e
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), gpus=st.integers(1, 5), per=st.integers(1, 6), experts=st.integers(1, 5))
def test_keep_slots_against_the_rule(seed, gpus, per, experts):
    gen = torch.Generator().manual_seed(seed)
    old, new = (torch.randint(-1, experts, (3, gpus * per), generator=gen) for _ in range(2))
    got = keep_slots(old, new, per)
    for layer in range(3):
        for g in range(gpus):
            part = slice(g * per, (g + 1) * per)
            want = _keep_slots_by_hand(old[layer, part].tolist(), new[layer, part].tolist())
            assert got[layer, part].tolist() == want
            # As many replicas as the two GPUs share keep their slot.
            shared = sum(min(old[layer, part].tolist().count(e), new[layer, part].tolist().count(e))
                         for e in range(experts))
            assert (got[layer, part] == old[layer, part]).logical_and(old[layer, part] >= 0).sum() == shared


def _gpu1_fails(gen: torch.Generator) -> tuple[Placement, Placement]:
    """A random 4-GPU placement and a new one for the same 12 experts with GPU 1 excluded (its slots -1)."""
    full = resolve(12, 4, slots=16, policy="global")
    old = random_placement(full, 2, gen)
    topo = resolve(12, 4, slots=16, policy="global", exclude_gpus=[1])
    rows = random_placement(resolve(12, 3, slots=12, policy="global"), 2, gen).phy2log
    new_rows = torch.full((2, 16), -1, dtype=torch.int64)
    new_rows[:, [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]] = rows
    return old, Placement(new_rows, topo).validate()


def test_relabel_keeps_excluded_gpus_in_place():
    gen = torch.Generator().manual_seed(3)
    old, new = _gpu1_fails(gen)
    r = relabel(old, new)
    r.validate()
    assert bool((r.phy2log[:, 4:8] == -1).all())


# ---------------------------------------------------------------- swap-back and the move budget


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), hier=st.booleans())
def test_swap_back_keeps_balance_and_counts(seed, hier):
    gen = torch.Generator().manual_seed(seed)
    topo = resolve(16, 8, 2, slots=24, groups=2 if hier else 1, policy="hierarchical" if hier else "global")
    old, new = random_placement(topo, 4, gen), random_placement(topo, 4, gen)
    load = torch.rand(4, 16, generator=gen, dtype=torch.float64) * 100
    r = relabel(old, new)
    s = swap_back(old, r, load).validate()
    assert torch.equal(replica_counts(s.phy2log, 16), replica_counts(new.phy2log, 16))
    before, after = gpu_loads(new, load), gpu_loads(s, load)
    assert bool((after.max(dim=1).values <= before.max(dim=1).values * (1 + 1e-9)).all())
    if hier:
        assert torch.allclose(node_loads(after, topo), node_loads(gpu_loads(r, load), topo))
    assert count_moves(old, s)["moves"] <= count_moves(old, r)["moves"]


def test_swap_back_finds_the_free_swap():
    # Old: GPU0 {0, 1}, GPU1 {2, 3}. New: GPU0 {0, 2}, GPU1 {1, 3}; experts 1 and 2 weigh the same, so
    # swapping them back costs no balance and keeps all four replicas in place.
    topo = resolve(4, 2, slots=4, policy="global")
    old = Placement(torch.tensor([[0, 1, 2, 3]]), topo).validate()
    new = Placement(torch.tensor([[0, 2, 1, 3]]), topo).validate()
    load = torch.tensor([[5.0, 2.0, 2.0, 5.0]], dtype=torch.float64)
    assert count_moves(old, relabel(old, new))["moves"] == 2
    assert count_moves(old, swap_back(old, relabel(old, new), load))["moves"] == 0
    # When the swap would raise the busiest GPU (6 -> 9) it is refused.
    heavy = torch.tensor([[5.0, 4.0, 1.0, 1.0]], dtype=torch.float64)
    assert count_moves(old, swap_back(old, relabel(old, new), heavy))["moves"] == 2


def _counts_on_gpu(row, k, gpu):
    """Expert -> copies on ``gpu`` of one layer's phy2log list."""
    out = {}
    for e in row[gpu * k:(gpu + 1) * k]:
        out[e] = out.get(e, 0) + 1
    return out


def _allowed_swaps_left(old_row, out_row, load_row, cap, topo):
    """Brute force: (g, h, x, y) swaps of the kind swap_back takes that still fit the cap on ``out_row``.

    g lacks a copy of y that h holds in excess, g holds x in excess; trading x for y fits both GPUs.
    """
    k, e = topo.slots_per_gpu, topo.experts
    counts = [0] * e
    for v in out_row:
        counts[v] += 1
    share = [load_row[v] / counts[v] for v in range(e)]
    loads = [sum(share[v] for v in out_row[g * k:(g + 1) * k]) for g in range(topo.gpus)]
    now = [_counts_on_gpu(out_row, k, g) for g in range(topo.gpus)]
    then = [_counts_on_gpu(old_row, k, g) for g in range(topo.gpus)]
    part = [g // topo.gpus_per_node if topo.hierarchical else 0 for g in range(topo.gpus)]
    left = []
    for g in range(topo.gpus):
        for h in range(topo.gpus):
            if g == h or part[g] != part[h]:
                continue
            for y in range(e):
                if not (now[g].get(y, 0) < then[g].get(y, 0) and now[h].get(y, 0) > then[h].get(y, 0)):
                    continue
                for x in range(e):
                    if now[g].get(x, 0) <= then[g].get(x, 0):
                        continue
                    d = share[y] - share[x]
                    if loads[g] + d <= cap and loads[h] - d <= cap:
                        left.append((g, h, x, y))
    return left


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), hier=st.booleans(), integer=st.booleans())
def test_swap_back_leaves_no_allowed_swap_against_brute_force(seed, hier, integer):
    gen = torch.Generator().manual_seed(seed)
    topo = resolve(6, 4, 2, slots=12, groups=2 if hier else 1, policy="hierarchical" if hier else "global")
    old, new = random_placement(topo, 3, gen), random_placement(topo, 3, gen)
    load = torch.rand(3, 6, generator=gen, dtype=torch.float64) * 10
    if integer:  # ties and equal shares, where free swaps exist
        load = load.floor()
    r = relabel(old, new)
    s = swap_back(old, r, load, min_gain=0.0).validate()
    assert torch.equal(replica_counts(s.phy2log, 6), replica_counts(new.phy2log, 6))
    before, after = gpu_loads(new, load), gpu_loads(s, load)
    cap = before.max(dim=1).values
    assert bool((after <= (cap * (1 + 1e-9)).unsqueeze(1)).all())
    if hier:
        assert torch.allclose(node_loads(after, topo), node_loads(gpu_loads(r, load), topo))
    k = topo.slots_per_gpu
    for layer in range(3):
        old_row, out_row = old.phy2log[layer].tolist(), s.phy2log[layer].tolist()
        # Within each GPU every replica the old placement had there sits in its old slot.
        for g in range(topo.gpus):
            now, then = _counts_on_gpu(out_row, k, g), _counts_on_gpu(old_row, k, g)
            same = sum(a == b for a, b in zip(out_row[g * k:(g + 1) * k], old_row[g * k:(g + 1) * k]))
            assert same == sum(min(c, then.get(v, 0)) for v, c in now.items())
        # Cap as swap_back computes it: the busiest GPU of the relabelled plan plus 1e-9 relative.
        c = float(cap[layer])
        c = c + 1e-9 * max(c, 1.0)
        assert _allowed_swaps_left(old_row, out_row, load[layer].tolist(), c, topo) == []


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(0, 6))
def test_budget_caps_moves_per_layer(seed, budget):
    gen = torch.Generator().manual_seed(seed)
    topo = resolve(16, 4, slots=20, policy="global")
    old, new = random_placement(topo, 3, gen), random_placement(topo, 3, gen)
    load = torch.rand(3, 16, generator=gen, dtype=torch.float64) * 100
    goal = relabel(old, new)
    out = budgeted(old, goal, load, budget).validate()
    assert bool(((out.phy2log != old.phy2log).sum(dim=1) <= budget).all())
    # Each change taken lowered the busiest GPU (or the spread below it), so the peak never rises, except
    # in a layer that took its whole target because it fits the budget (that target need not be lighter here).
    whole = (out.phy2log == goal.phy2log).all(dim=1)
    rose = gpu_loads(out, load).max(dim=1).values > gpu_loads(old, load).max(dim=1).values + 1e-9
    assert not bool((rose & ~whole).any())
    assert bool((~whole | ((goal.phy2log != old.phy2log).sum(dim=1) <= budget)).all())
    assert torch.equal(replica_counts(out.phy2log, 16) >= 1, torch.ones(3, 16, dtype=torch.bool))


def test_budget_zero_keeps_old_and_large_budget_takes_the_plan():
    gen = torch.Generator().manual_seed(5)
    topo = resolve(16, 4, slots=20, policy="global")
    old, new = random_placement(topo, 3, gen), random_placement(topo, 3, gen)
    load = torch.rand(3, 16, generator=gen, dtype=torch.float64)
    goal = swap_back(old, relabel(old, new), load)
    assert torch.equal(budgeted(old, goal, load, 0).phy2log, old.phy2log)
    assert torch.equal(budgeted(old, goal, load, 20).phy2log, goal.phy2log)
    assert torch.equal(follow(old, new, load, 20).phy2log, goal.phy2log)


def test_newly_failed_gpu_forces_its_moves():
    # The old placement used GPU 1; the new topology excludes it. Its experts must move even with budget 0.
    gen = torch.Generator().manual_seed(8)
    old, new = _gpu1_fails(gen)
    load = torch.rand(2, 12, generator=gen, dtype=torch.float64)
    for budget in (0, 3, None):
        out = follow(old, new, load, budget).validate()
        assert bool((out.phy2log[:, 4:8] == -1).all())
        assert bool((replica_counts(out.phy2log, 12) >= 1).all())


def test_budget_lowers_the_peak_by_hand():
    # 2 GPUs x 2 slots, 4 experts. Old: GPU0 {0, 1} = 10, GPU1 {2, 3} = 2; one swap of 1 and 2 gives 6 / 6.
    topo = resolve(4, 2, slots=4, policy="global")
    # The target moves all four replicas; a budget of 2 buys the one swap that matters.
    old = Placement(torch.tensor([[0, 1, 2, 3]]), topo).validate()
    target = Placement(torch.tensor([[3, 2, 1, 0]]), topo).validate()
    load = torch.tensor([[5.0, 5.0, 1.0, 1.0]], dtype=torch.float64)
    out = budgeted(old, target, load, 2)
    assert gpu_loads(out, load).tolist() == [[6.0, 6.0]]
    assert count_moves(old, out)["moves"] == 2
    # One move is not enough for a swap, and no single move can leave an expert without a replica.
    assert torch.equal(budgeted(old, target, load, 1).phy2log, old.phy2log)


def test_swap_back_returns_when_nothing_moved():
    gen = torch.Generator().manual_seed(11)
    topo = resolve(16, 4, slots=20, policy="global")
    old = random_placement(topo, 3, gen)
    load = torch.rand(3, 16, generator=gen, dtype=torch.float64)
    for min_gain in (0.0, 0.005):
        assert torch.equal(swap_back(old, old, load, min_gain).phy2log, old.phy2log)
