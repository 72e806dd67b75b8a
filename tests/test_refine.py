"""Swap refinement and duplicate repair: valid packings, never worse, locally optimal when converged."""

from __future__ import annotations

import itertools

import torch
from helpers import random_weights
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.strategies import pack
from eplb_cli.strategies.refine import (
    RESPLIT_CAP,
    RESPLIT_PARTNERS,
    dedupe,
    invert,
    swap,
    to_slots,
)

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def packed(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int]:
    bins = draw(st.integers(1, 7))
    cap = draw(st.integers(1, 5))
    rows = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    kind = draw(st.sampled_from(["lognormal", "ties", "zeros"]))
    gen = torch.Generator().manual_seed(seed)
    w = random_weights(gen, (rows, bins * cap), kind, sigma=1.2, ties=4)
    start = torch.stack([torch.randperm(bins * cap, generator=gen) for _ in range(rows)]) // cap
    return w, start, bins


def loads(w: torch.Tensor, bin_of: torch.Tensor, bins: int) -> torch.Tensor:
    return torch.zeros(w.shape[0], bins, dtype=torch.float64).scatter_add_(1, bin_of, w)


def duplicates(experts: torch.Tensor, bin_of: torch.Tensor, bins: int) -> list[int]:
    return [len(r) - len(set(r)) for r in (experts * bins + bin_of).tolist()]


def assert_valid(bin_of: torch.Tensor, bins: int, cap: int) -> None:
    counts = torch.zeros(bin_of.shape[0], bins, dtype=torch.int64).scatter_add_(1, bin_of, torch.ones_like(bin_of))
    assert (counts == cap).all()


def test_to_slots_and_invert() -> None:
    bin_of = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]])
    place = to_slots(bin_of, 2)
    assert place.tolist() == [[2, 0, 3, 1], [0, 1, 2, 3]]
    assert torch.equal(invert(invert(place)), place)
    assert torch.equal(place // 2, bin_of)


@SETTINGS
@given(packed())
def test_swap_valid_and_never_worse(case: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    w, start, bins = case
    cap = w.shape[1] // bins
    out = swap(w, start, bins, 50)
    assert_valid(out, bins, cap)
    assert (loads(w, out, bins).amax(1) <= loads(w, start, bins).amax(1)).all()
    slots = swap(w, to_slots(start, bins), bins, 50, slots=True)
    assert torch.equal(slots // cap, out)


@SETTINGS
@given(packed())
def test_converged_swap_leaves_no_improving_swap(case: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    w, start, bins = case
    out = swap(w, start, bins, 10_000)
    for row in range(w.shape[0]):
        ld = loads(w[row : row + 1], out[row : row + 1], bins)[0].tolist()
        hot = max(range(bins), key=lambda b: (ld[b], -b))
        mine = [i for i in range(w.shape[1]) if out[row, i] == hot]
        for i in mine:
            for j in range(w.shape[1]):
                other = int(out[row, j])
                if other == hot:
                    continue
                d = float(w[row, j] - w[row, i])
                assert max(ld[hot] + d, ld[other] - d) >= ld[hot] * (1 - 1e-9)


@SETTINGS
@given(packed())
def test_swap_with_experts_adds_no_duplicates(case: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    w, start, bins = case
    experts = torch.arange(w.shape[1]).expand_as(w) % max(1, w.shape[1] // 2)
    out = swap(w, start, bins, 50, experts=experts)
    assert_valid(out, bins, w.shape[1] // bins)
    assert (loads(w, out, bins).amax(1) <= loads(w, start, bins).amax(1)).all()
    assert all(a <= b for a, b in zip(duplicates(experts, out, bins), duplicates(experts, start, bins)))


@SETTINGS
@given(packed())
def test_dedupe_valid_and_removes_duplicates(case: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    w, start, bins = case
    m = w.shape[1]
    experts = torch.arange(m).expand_as(w) % max(1, m // 2)
    out = dedupe(w, start, bins, experts)
    assert_valid(out, bins, m // bins)
    before, after = duplicates(experts, start, bins), duplicates(experts, out, bins)
    assert all(a <= b for a, b in zip(after, before))
    if bins >= 2 and m // bins >= 2:
        # Every expert has at most 2 replicas here, so with >= 2 bins a swap can always split them.
        assert after == [0] * len(after)


def test_swap_improves_kk_on_skewed_items() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.exp(torch.randn(8, 72, generator=gen, dtype=torch.float64))
    start = pack.kk(w, 8)
    out = swap(w, start, 8, 64)
    assert loads(w, out, 8).amax(1).sum() < loads(w, start, 8).amax(1).sum()


def best_pair_split(items: list[float]) -> float:
    """Brute force: the lowest larger half over all splits of the pool into two equal halves."""
    half = len(items) // 2
    total = sum(items)
    return min(max(s, total - s) for s in (sum(c) for c in itertools.combinations(items, half)))


@SETTINGS
@given(st.integers(3, RESPLIT_CAP - 1), st.integers(0, 2**16), st.sampled_from(["lognormal", "ties"]))
def test_swap_splits_two_coarse_bins_exactly(cap: int, seed: int, kind: str) -> None:
    """With two bins of 3+ items, the re-split step makes the packing an optimal equal-size partition."""
    gen = torch.Generator().manual_seed(seed)
    w = random_weights(gen, (1, 2 * cap), kind, sigma=1.5, ties=5)
    start = (torch.randperm(2 * cap, generator=gen) // cap).unsqueeze(0)
    out = swap(w, start, 2, 8)
    assert_valid(out, 2, cap)
    assert float(loads(w, out, 2).amax()) <= best_pair_split(w[0].tolist()) * (1 + 1e-12)


@SETTINGS
@given(packed())
def test_converged_swap_leaves_no_improving_resplit(case: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    """No re-split of the busiest bin with any other bin beats it (all bins are partners up to 8 bins)."""
    w, start, bins = case
    cap = w.shape[1] // bins
    if not 3 <= cap <= RESPLIT_CAP or bins - 1 > RESPLIT_PARTNERS:
        return
    out = swap(w, start, bins, 10_000)
    for row in range(w.shape[0]):
        ld = loads(w[row : row + 1], out[row : row + 1], bins)[0].tolist()
        hot = max(range(bins), key=lambda b: (ld[b], -b))
        mine = [float(w[row, i]) for i in range(w.shape[1]) if out[row, i] == hot]
        for other in range(bins):
            if other != hot:
                theirs = [float(w[row, i]) for i in range(w.shape[1]) if out[row, i] == other]
                assert best_pair_split(mine + theirs) >= ld[hot] * (1 - 1e-9)
