"""The batched assignment solver: exact on every small case, and on permutations at scale."""

import itertools

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
