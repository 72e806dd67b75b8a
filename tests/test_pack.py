"""Packers: exact bin sizes, slot form, presorted input, LPT against a Python reference, KK and restarts quality."""

from __future__ import annotations

import pytest
import torch
from helpers import random_weights
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.strategies import pack
from eplb_cli.strategies.replicate import dhondt, expand

SETTINGS = settings(max_examples=40, deadline=None)


def max_load(w: torch.Tensor, bin_of: torch.Tensor, bins: int) -> torch.Tensor:
    return torch.zeros(w.shape[0], bins, dtype=torch.float64).scatter_add_(1, bin_of, w).amax(1)


def lpt_reference(w: list[float], bins: int) -> list[int]:
    """DeepSeek's rule, one item at a time: largest first, to the lightest bin with room, lowest index on ties."""
    cap = len(w) // bins
    order = sorted(range(len(w)), key=lambda i: -w[i])
    load, count, out = [0.0] * bins, [0] * bins, [0] * len(w)
    for i in order:
        b = min((b for b in range(bins) if count[b] < cap), key=lambda b: load[b])
        out[i] = b
        load[b] += w[i]
        count[b] += 1
    return out


@st.composite
def packing_case(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    bins = draw(st.integers(1, 8))
    cap = draw(st.integers(1, 6))
    rows = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["lognormal", "ties", "zeros"]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    return random_weights(gen, (rows, bins * cap), kind, sigma=1.5, ties=3), bins


def run(name: str, w: torch.Tensor, bins: int, **kw: object) -> torch.Tensor:
    if name == "restarts":
        return pack.restarts(w, bins, 5, seed=1, **kw)
    if name == "restarts-lpt":
        return pack.restarts(w, bins, 5, seed=1, base="lpt", **kw)
    if name == "diverse":
        experts = torch.arange(w.shape[1]).expand_as(w) // 2
        return pack.diverse(w, bins, experts, **kw)
    return getattr(pack, name)(w, bins, **kw)


NAMES = ["lpt", "rounds", "snake", "kk", "restarts", "restarts-lpt", "diverse"]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(packing_case())
def test_every_bin_gets_exactly_cap_items(name: str, case: tuple[torch.Tensor, int]) -> None:
    w, bins = case
    rows, m = w.shape
    cap = m // bins
    bin_of = run(name, w, bins)
    assert bin_of.dtype == torch.int64 and bin_of.shape == w.shape
    counts = torch.zeros(rows, bins, dtype=torch.int64).scatter_add_(1, bin_of, torch.ones_like(bin_of))
    assert (counts == cap).all()
    place = run(name, w, bins, slots=True)
    assert torch.equal(place.sort(1).values, torch.arange(m).expand(rows, m))
    assert torch.equal(place // cap, bin_of)
    ordered = w.sort(dim=1, descending=True, stable=True).values
    assert torch.equal(run(name, ordered, bins, presorted=True), run(name, ordered, bins))


@SETTINGS
@given(packing_case())
def test_lpt_matches_reference(case: tuple[torch.Tensor, int]) -> None:
    w, bins = case
    got = pack.lpt(w, bins)
    want = torch.tensor([lpt_reference(row, bins) for row in w.tolist()])
    assert torch.equal(max_load(w, got, bins), max_load(w, want, bins))
    assert torch.equal(got, want)


def test_snake_deals_zig_zag() -> None:
    w = torch.tensor([[9.0, 8, 7, 6, 5, 4]], dtype=torch.float64)
    assert pack.snake(w, 3).tolist() == [[0, 1, 2, 2, 1, 0]]
    assert pack.snake(w, 3, slots=True).tolist() == [[0, 2, 4, 5, 3, 1]]


def test_rounds_gives_each_run_largest_to_lightest() -> None:
    w = torch.tensor([[5.0, 4, 3, 3, 1, 0]], dtype=torch.float64)
    assert pack.rounds(w, 2).tolist() == [[0, 1, 1, 0, 1, 0]]
    assert max_load(w, pack.snake(w, 2), 2).tolist() == [9.0]
    assert max_load(w, pack.rounds(w, 2), 2).tolist() == [8.0]


def test_kk_balances_a_textbook_case() -> None:
    w = torch.tensor([[8.0, 7, 6, 5, 4, 3, 2, 1]], dtype=torch.float64)
    bin_of = pack.kk(w, 2)
    assert max_load(w, bin_of, 2).tolist() == [18.0]


def _layers(seed: int, sigma: float, experts: int = 64, slots: int = 72, rows: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.exp(sigma * torch.randn(rows, experts, generator=gen, dtype=torch.float64))
    counts = dhondt(w, slots)
    return (w / counts).gather(1, expand(counts, slots))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.0])
def test_kk_beats_lpt_and_snake_on_average(seed: int, sigma: float) -> None:
    """At the skew of real traces (log-load std ~0.6-0.8); much heavier tails favour LPT before swaps."""
    items = _layers(seed, sigma)
    kk = max_load(items, pack.kk(items, 8), 8).sum()
    assert kk <= max_load(items, pack.lpt(items, 8), 8).sum()
    assert kk <= max_load(items, pack.snake(items, 8), 8).sum()


def test_restarts_never_worse_than_base_and_deterministic() -> None:
    items = _layers(7, 1.0)
    for base in ("kk", "lpt"):
        plain = max_load(items, getattr(pack, base)(items, 8), 8)
        best = pack.restarts(items, 8, 16, seed=3, base=base)
        assert (max_load(items, best, 8) <= plain).all()
        assert torch.equal(best, pack.restarts(items, 8, 16, seed=3, base=base))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.integers(2, 6), st.floats(0.3, 2.0), st.integers(0, 2**16))
def test_diverse_splits_replicas_when_possible(bins: int, cap: int, sigma: float, seed: int) -> None:
    slots = bins * cap
    gen = torch.Generator().manual_seed(seed)
    experts = int(torch.randint(max(1, slots // 3), slots + 1, (1,), generator=gen))
    w = torch.exp(sigma * torch.randn(3, experts, generator=gen, dtype=torch.float64))
    counts = dhondt(w, slots)
    expert = expand(counts, slots)
    items = (w / counts).gather(1, expert)
    bin_of = pack.diverse(items, bins, expert)
    for row in range(3):
        if counts[row].max() <= bins:
            cells = (expert[row] * bins + bin_of[row]).tolist()
            assert len(cells) == len(set(cells))


@pytest.mark.parametrize("bins,cap,kind", [(32, 9, "lognormal"), (8, 9, "heavy"), (16, 5, "zero-tail"), (4, 18, "ties")])
def test_lpt_matches_reference_at_scale(bins: int, cap: int, kind: str) -> None:
    """Wide shapes, where LPT deals runs of many items per step, and tails it piles onto one bin."""
    gen = torch.Generator().manual_seed(bins * cap)
    shape = (6, bins * cap)
    w = torch.exp(torch.randn(shape, generator=gen, dtype=torch.float64) * (4.0 if kind == "heavy" else 1.0))
    if kind == "zero-tail":
        w[:, ::3] = 0
    if kind == "ties":
        w = torch.randint(0, 5, shape, generator=gen).double()
    want = torch.tensor([lpt_reference(row, bins) for row in w.tolist()])
    assert torch.equal(pack.lpt(w, bins), want)
