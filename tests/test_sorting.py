"""Row sorts: the NumPy fast path orders exactly like torch's sort."""

from __future__ import annotations

import torch

from eplb_cli.strategies.sorting import sort_ints


def test_sort_ints() -> None:
    gen = torch.Generator().manual_seed(1)
    key = torch.stack([torch.randperm(500, generator=gen) * 3 for _ in range(4)])
    assert torch.equal(sort_ints(key), torch.sort(key, dim=1).values)
    assert torch.equal(sort_ints(key[:, :10]), torch.sort(key[:, :10], dim=1).values)
