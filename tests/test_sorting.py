"""Row sorts: the NumPy fast path orders exactly like torch's stable sort, ties and signs included."""

from __future__ import annotations

import pytest
import torch

from eplb_cli.strategies.sorting import PACKED_MIN, argsort_rows, sort_ints


@pytest.mark.parametrize("m", [5, PACKED_MIN, 256, 1000])
@pytest.mark.parametrize("descending", [False, True])
def test_argsort_rows_matches_stable_torch_sort(m: int, descending: bool) -> None:
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(7, m, generator=gen, dtype=torch.float64) * 1e3
    x[0] = torch.randint(0, 4, (m,), generator=gen).double()  # many exact ties
    x[1, : m // 2] = 0.0
    x[1, m // 2 :] = -0.0  # the two zeros are equal
    x[2, ::2] = torch.inf
    x[3] = torch.exp(torch.randn(m, generator=gen, dtype=torch.float64) * 30)  # huge and subnormal-ish spread
    want = torch.sort(x, dim=1, descending=descending, stable=True).indices
    assert torch.equal(argsort_rows(x, descending=descending), want)


def test_argsort_rows_treats_last_bit_neighbours_as_ties() -> None:
    """The documented precision: values a few ulps apart keep column order, like equal values."""
    x = torch.full((1, 300), 1.0, dtype=torch.float64)
    x[0, 10] = torch.nextafter(torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    order = argsort_rows(x, descending=True)
    assert torch.equal(order[0], torch.arange(300))
    assert torch.sort(x, dim=1, descending=True, stable=True).indices[0, 0] == 10


def test_sort_ints() -> None:
    gen = torch.Generator().manual_seed(1)
    key = torch.stack([torch.randperm(500, generator=gen) * 3 for _ in range(4)])
    assert torch.equal(sort_ints(key), torch.sort(key, dim=1).values)
    assert torch.equal(sort_ints(key[:, :10]), torch.sort(key[:, :10], dim=1).values)
