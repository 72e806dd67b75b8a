"""Small builders shared by several test modules (pytest puts this folder on the import path)."""

from __future__ import annotations

import torch


def random_weights(gen: torch.Generator, shape: tuple[int, ...], kind: str, *, sigma: float, ties: int) -> torch.Tensor:
    """float64 item weights of one ``kind``: ``lognormal`` (spread ``sigma``), ``ties`` (integers
    0 .. ``ties`` - 1, so many equal values) or ``zeros``."""
    if kind == "lognormal":
        return torch.exp(sigma * torch.randn(shape, generator=gen, dtype=torch.float64))
    if kind == "ties":
        return torch.randint(0, ties, shape, generator=gen).double()
    return torch.zeros(shape, dtype=torch.float64)
