"""D'Hondt replica counts against a brute-force greedy, the replica expansion, and the fix-up move."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.strategies.replicate import dhondt, expand, fixup, handed_over, thinned

SETTINGS = settings(max_examples=50, deadline=None)


def plain_greedy(w: list[float], slots: int) -> list[int]:
    """Next replica to argmax w / count, lowest index on ties (no special case for all-zero rows)."""
    counts = [1] * len(w)
    for _ in range(slots - len(w)):
        q = [x / c for x, c in zip(w, counts)]
        counts[q.index(max(q))] += 1
    return counts


def greedy(w: list[float], slots: int) -> list[int]:
    """:func:`plain_greedy`, with an all-zero row counted as uniform (as D'Hondt does)."""
    return plain_greedy([1.0] * len(w) if sum(w) <= 0 else w, slots)


load_value = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0, 6.0]),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def load_rows(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    n = draw(st.integers(1, 12))
    rows = draw(st.integers(1, 4))
    slots = n + draw(st.integers(0, 30))
    w = draw(st.lists(st.lists(load_value, min_size=n, max_size=n), min_size=rows, max_size=rows))
    return torch.tensor(w, dtype=torch.float64), slots


@SETTINGS
@given(load_rows())
def test_dhondt_equals_greedy(case: tuple[torch.Tensor, int]) -> None:
    w, slots = case
    got = dhondt(w, slots)
    assert got.dtype == torch.int64
    assert got.tolist() == [greedy(row, slots) for row in w.tolist()]


@SETTINGS
@given(
    st.integers(1, 300),
    st.integers(0, 400),
    st.integers(1, 8),
    st.floats(0.1, 3.0),
    st.floats(0.0, 0.5),
    st.integers(0, 2**16),
)
def test_dhondt_valid_and_optimal_at_scale(
    n: int, extra: int, rows: int, sigma: float, zeros: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.exp(sigma * torch.randn(rows, n, generator=gen, dtype=torch.float64))
    w = torch.where(torch.rand(rows, n, generator=gen, dtype=torch.float64) < zeros, 0.0, w)
    counts = dhondt(w, n + extra)
    assert (counts >= 1).all()
    assert (counts.sum(1) == n + extra).all()
    # Optimality certificate: no expert's next replica would have been a better pick than
    # the worst one taken (max over e of w/c must not exceed min over taken quotients).
    live = w.sum(1) > 0
    taken = torch.where(counts > 1, w / (counts - 1).clamp(min=1), torch.inf)
    assert ((w / counts).amax(1)[live] <= taken.amin(1)[live] * (1 + 1e-12)).all()


def test_dhondt_zero_rows_spread_round_robin() -> None:
    counts = dhondt(torch.zeros(2, 4, dtype=torch.float64), 10)
    assert counts.tolist() == [[3, 3, 2, 2], [3, 3, 2, 2]]


def test_dhondt_survives_subnormal_loads() -> None:
    """Quotients of the smallest doubles underflow to zero; counts must still sum to the slots."""
    for row, slots in (([4.9407e-324], 3), ([4.9407e-324, 1e-320, 0.0], 9)):
        w = torch.tensor([row], dtype=torch.float64)
        assert dhondt(w, slots).tolist() == [greedy(row, slots)]


def test_dhondt_no_redundant_slots_and_one_expert() -> None:
    w = torch.tensor([[5.0, 0.0, 1.0]], dtype=torch.float64)
    assert dhondt(w, 3).tolist() == [[1, 1, 1]]
    assert dhondt(torch.tensor([[2.0]], dtype=torch.float64), 7).tolist() == [[7]]


def test_dhondt_deepseek_readme_layer() -> None:
    """A hot expert takes several replicas; the count is the greedy one."""
    w = torch.tensor([[90.0, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86, 28, 42, 35, 11]], dtype=torch.float64)
    assert dhondt(w, 24).tolist() == [greedy(w[0].tolist(), 24)]


@SETTINGS
@given(load_rows(), st.integers(1, 5))
def test_thinned_is_dhondt_with_the_heaviest_expert_held_back(case: tuple[torch.Tensor, int], most: int) -> None:
    w, slots = case
    counts = dhondt(w, slots)
    got = thinned(w, counts, most)
    assert got.shape == (w.shape[0], most, w.shape[1])
    for row, (loads, base) in enumerate(zip(w.tolist(), counts.tolist())):
        if sum(loads) <= 0:
            continue  # D'Hondt spreads an all-zero row round-robin; nothing to thin there
        top = loads.index(max(loads))
        for d in range(1, most + 1):
            if base[top] <= d or len(loads) == 1:
                assert got[row, d - 1].tolist() == base
                continue
            kept = base[top] - d
            others = plain_greedy(loads[:top] + loads[top + 1 :], slots - kept)
            assert got[row, d - 1].tolist() == [*others[:top], kept, *others[top:]]


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=10), st.integers(1, 3))
def test_expand_lists_each_column_count_times(counts: list[int], rows: int) -> None:
    c = torch.tensor([counts] * rows)
    got = expand(c, sum(counts))
    want = [e for e, k in enumerate(counts) for _ in range(k)]
    assert got.tolist() == [want] * rows


def _bin_loads(
    w: torch.Tensor, counts: torch.Tensor, expert: torch.Tensor, bin_of: torch.Tensor, bins: int
) -> torch.Tensor:
    per = (w / counts).gather(1, expert)
    return torch.zeros(w.shape[0], bins, dtype=torch.float64).scatter_add_(1, bin_of, per)


@SETTINGS
@given(
    st.integers(2, 6), st.integers(1, 5), st.integers(1, 4), st.floats(0.2, 3.0), st.integers(0, 2**16), st.booleans()
)
def test_fixup_never_worse_and_keeps_counts_valid(
    bins: int, cap: int, rows: int, sigma: float, seed: int, spread: bool
) -> None:
    slots = bins * cap
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, slots + 1, (1,), generator=gen))
    w = torch.exp(sigma * torch.randn(rows, n, generator=gen, dtype=torch.float64))
    counts = dhondt(w, slots)
    expert = expand(counts, slots)
    bin_of = torch.randperm(slots, generator=gen).expand(rows, slots) // cap
    before = _bin_loads(w, counts, expert, bin_of, bins).amax(1)
    dups = [len(r) - len(set(r)) for r in (expert * bins + bin_of).tolist()]
    new_counts, new_expert, moved = fixup(w, counts, expert, bin_of, bins, spread=spread)
    after = _bin_loads(w, new_counts, new_expert, bin_of, bins).amax(1)
    assert (after <= before * (1 + 1e-12)).all()
    assert (after[moved] < before[moved]).all()
    assert (new_counts >= 1).all() and (new_counts.sum(1) == slots).all()
    recount = torch.zeros_like(new_counts).scatter_add_(1, new_expert, torch.ones_like(new_expert))
    assert torch.equal(recount, new_counts)
    if spread:
        after_dups = [len(r) - len(set(r)) for r in (new_expert * bins + bin_of).tolist()]
        assert all(a <= b for a, b in zip(after_dups, dups))


def test_fixup_thins_a_dominant_expert() -> None:
    """One expert carries most of the load: giving it a cold expert's replica lowers the busiest GPU."""
    w = torch.tensor([[100.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    counts = torch.tensor([[2, 2, 1, 1]])
    expert = expand(counts, 6)
    bin_of = torch.tensor([[0, 1, 2, 0, 1, 2]])
    before = _bin_loads(w, counts, expert, bin_of, 3).amax(1)
    counts2, expert2, moved = fixup(w, counts, expert, bin_of, 3)
    assert moved.tolist() == [True]
    assert counts2.tolist() == [[3, 1, 1, 1]]
    assert _bin_loads(w, counts2, expert2, bin_of, 3).amax(1) < before


def _best_fixup_by_brute_force(w: list[float], counts: list[int], expert: list[int], bin_of: list[int], bins: int,
                               spread: bool) -> float | None:
    """The lowest busiest-bin load any single allowed hand-over reaches, recomputing every bin (None: no move)."""
    def peak(c: list[int], ex: list[int]) -> float:
        load = [0.0] * bins
        for s, e in enumerate(ex):
            load[bin_of[s]] += w[e] / c[e]
        return max(load)

    before = peak(counts, expert)
    load = [0.0] * bins
    for s, e in enumerate(expert):
        load[bin_of[s]] += w[e] / counts[e]
    hot = load.index(max(load))
    on_hot = [(w[e] / counts[e], -s, e) for s, e in enumerate(expert) if bin_of[s] == hot]
    recv = max(on_hot)[2]
    best = None
    for s, d in enumerate(expert):
        if d == recv or counts[d] < 2:
            continue
        if spread and any(expert[t] == recv and bin_of[t] == bin_of[s] for t in range(len(expert))):
            continue
        c = list(counts)
        c[d] -= 1
        c[recv] += 1
        ex = list(expert)
        ex[s] = recv
        after = peak(c, ex)
        best = after if best is None else min(best, after)
    return best if best is not None and best < before * (1 - 1e-12) else None


@SETTINGS
@given(st.integers(2, 7), st.integers(1, 5), st.floats(0.2, 3.0), st.integers(0, 2**16), st.booleans())
def test_fixup_finds_the_best_single_hand_over(bins: int, cap: int, sigma: float, seed: int, spread: bool) -> None:
    slots = bins * cap
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, slots + 1, (1,), generator=gen))
    w = torch.exp(sigma * torch.randn(2, n, generator=gen, dtype=torch.float64))
    counts = dhondt(w, slots)
    expert = expand(counts, slots)
    bin_of = torch.randperm(slots, generator=gen).expand(2, slots) // cap
    new_counts, new_expert, moved = fixup(w, counts, expert, bin_of, bins, spread=spread)
    after = _bin_loads(w, new_counts, new_expert, bin_of, bins).amax(1)
    for row in range(2):
        want = _best_fixup_by_brute_force(w[row].tolist(), counts[row].tolist(), expert[row].tolist(),
                                          bin_of[row].tolist(), bins, spread)
        assert bool(moved[row]) == (want is not None)
        if want is not None:
            assert abs(float(after[row]) - want) <= 1e-9 * want


def test_handed_over_by_hand() -> None:
    # Counts 3, 2, 1, 1, 1: donors by w / (count - 1): expert 1 (4 / 1 = 4) before expert 0 (30 / 2 = 15);
    # receivers by load: expert 4 (1) before expert 3 (2).
    w = np.array([[30.0, 4.0, 9.0, 2.0, 1.0]])
    counts = np.array([[3, 2, 1, 1, 1]])
    got = handed_over(w, counts, 2, 2)
    assert got.tolist() == [[[3, 1, 1, 1, 2], [3, 1, 1, 2, 1], [2, 2, 1, 1, 2], [2, 2, 1, 2, 1]]]


def test_handed_over_repeats_counts_where_no_pair_exists() -> None:
    # One donor only (expert 0) and two receivers: the second donor's candidates repeat the counts.
    w = np.array([[10.0, 3.0, 2.0]])
    counts = np.array([[2, 1, 1]])
    got = handed_over(w, counts, 2, 2)
    assert got.tolist() == [[[1, 1, 2], [1, 2, 1], [2, 1, 1], [2, 1, 1]]]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12), extra=st.integers(0, 12))
def test_handed_over_keeps_counts_valid(seed: int, n: int, extra: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.exp(torch.randn(3, n, generator=gen, dtype=torch.float64))
    counts = dhondt(w, n + extra).numpy()
    got = handed_over(w.numpy(), counts, 3, 2)
    assert got.shape == (3, min(3, n) * min(2, n), n)
    assert (got.sum(2) == counts.sum(1)[:, None]).all() and (got >= 1).all()
    moved = np.abs(got - counts[:, None, :]).sum(2)
    assert set(np.unique(moved)) <= {0, 2}
