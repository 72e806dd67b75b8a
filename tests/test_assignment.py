"""The batched assignment solver: exact on every small case, and on permutations at scale."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.planning.assignment import max_weight_assignment


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), b=st.integers(1, 3), seed=st.integers(0, 10_000), top=st.integers(1, 5))
def test_assignment_is_exact(n, b, seed, top):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(0, top + 1, (b, n, n), generator=gen).to(torch.float64)
    col = max_weight_assignment(w)
    for k in range(b):
        assert sorted(col[k].tolist()) == list(range(n))
        got = float(w[k, torch.arange(n), col[k]].sum())
        best = max(sum(float(w[k, i, p[i]]) for i in range(n)) for p in itertools.permutations(range(n)))
        assert got == best


def test_assignment_recovers_a_permutation():
    gen = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(40, generator=gen) for _ in range(5)])
    w = torch.zeros(5, 40, 40, dtype=torch.float64)
    w.scatter_(2, perm.unsqueeze(2), 3.0)
    assert torch.equal(max_weight_assignment(w), perm)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 80), seed=st.integers(0, 10_000), integral=st.booleans())
def test_assignment_matches_scipy_at_scale(n, seed, integral):
    """Against SciPy's solver on GPU-count sizes: the same optimum (ties may pick another matching)."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 4, (3, n, n), generator=gen).double() if integral else torch.rand(3, n, n, generator=gen, dtype=torch.float64)
    col = max_weight_assignment(w)
    for k in range(3):
        assert sorted(col[k].tolist()) == list(range(n))
        rows, cols = scipy_optimize.linear_sum_assignment(w[k].numpy(), maximize=True)
        best = float(w[k].numpy()[rows, cols].sum())
        assert abs(float(w[k, torch.arange(n), col[k]].sum()) - best) <= 1e-9 * max(1.0, best)


def test_assignment_rejects_non_square_batches():
    with pytest.raises(ValueError, match=r"\[B, n, n\]"):
        max_weight_assignment(torch.zeros(2, 3, 4))
