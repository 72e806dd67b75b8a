"""Packers: put m weighted items into ``bins`` bins with exactly ``cap = m / bins`` items each.

Every packer takes weights [B, m] and returns ``bin_of_item`` [B, m] int64,
row by row (layers, layers x nodes). With ``slots=True`` it returns
``slot_of_item`` instead: a permutation of ``range(m)`` where bin ``b`` owns
slots ``b*cap .. b*cap+cap-1``, which also fixes each item's position inside
its bin. With ``presorted=True`` the caller promises the weights are already
in decreasing order, and the packers skip their sort. The loops themselves
are compiled (:mod:`.kernels`); these functions convert tensors and check
shapes.
"""

from __future__ import annotations

import numpy as np
import torch

from .arrays import as_floats, kernels, to_tensor
from .base import torch_seed
from .refine import dedupe

PACKERS = ("lpt", "rounds", "snake", "kk", "restarts", "diverse")


def _cap(w: torch.Tensor, bins: int) -> int:
    m = w.shape[1]
    if bins < 1 or m % bins:
        raise ValueError(f"cannot pack {m} items into {bins} bins of equal count")
    return m // bins


def _packed(
    name: str, w: torch.Tensor, bins: int, slots: bool, presorted: bool,
    mult: np.ndarray | None = None, base: str = "kk",
) -> torch.Tensor:
    """Run packer ``name`` on every row of ``w``; slots or bins of each item, on ``w``'s device."""
    cap = _cap(w, bins)
    arr = as_floats(w)
    rows, m = arr.shape
    if mult is None:
        mult = np.empty((rows, 0, m), np.float64)
    place = kernels().pack_rows(PACKERS.index(name), arr, bins, presorted, mult, PACKERS.index(base))
    out = to_tensor(place, w.device)
    return out if slots else torch.div(out, cap, rounding_mode="floor")


def snake(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """Zig-zag: sorted items dealt to bins 0..bins-1, then bins-1..0, and so on. Fast, weak on skew."""
    return _packed("snake", w, bins, slots, presorted)


def lpt(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """Greedy LPT: largest item first, to the lightest bin that still has room (lowest index on ties).

    The rule of DeepSeek's ``balanced_packing``.
    """
    return _packed("lpt", w, bins, slots, presorted)


def rounds(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """LPT by rounds: each run of ``bins`` sorted items goes one per bin, largest to the lightest bin.

    On the moderately skewed loads of real traces it matches LPT (LPT's own
    choices fall into such rounds); on very heavy tails it is somewhat worse.
    """
    return _packed("rounds", w, bins, slots, presorted)


def kk(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """Balanced Karmarkar-Karp (largest differencing with equal cardinality).

    Sorted items in runs of ``bins`` form partial solutions (one item per bin);
    repeatedly the two partials with the largest spread (max - min bin sum;
    ties: the lower run) are merged, heaviest bin of one with lightest bin of
    the other, until one is left.
    """
    return _packed("kk", w, bins, slots, presorted)


def multipliers(rows: int, count: int, m: int, seed: int, noise: float = 0.1) -> np.ndarray:
    """Weight multipliers [rows, count, m] of the restarts' runs: ``exp(noise * r / count * N(0, 1))``.

    Run 0 gets all ones (the plain packing), later runs stronger noise.
    Deterministic for a seed: the normals come from a CPU ``torch.Generator``.
    """
    gen = torch.Generator()
    gen.manual_seed(torch_seed(seed))
    eps = torch.randn(rows, count, m, generator=gen, dtype=torch.float64)
    scale = torch.arange(count, dtype=torch.float64).view(1, count, 1) * (noise / count)
    return torch.exp(eps * scale).numpy()


def restarts(
    w: torch.Tensor,
    bins: int,
    count: int = 64,
    *,
    seed: int = 0,
    base: str = "kk",
    noise: float = 0.1,
    slots: bool = False,
    presorted: bool = False,
) -> torch.Tensor:
    """Best of ``count`` randomised runs of ``base`` (``kk``, ``rounds`` or ``lpt``) per row.

    Run 0 packs the true weights, so the result is never worse than ``base``.
    Run r > 0 decides on weights scaled by :func:`multipliers` (a spread of
    perturbation strengths), visited in the true weight order, which
    reshuffles near-ties, merge order and pairings; every run is scored on the
    true weights and the lightest busiest bin wins (the earliest run on ties).
    """
    _cap(w, bins)
    if base not in ("kk", "rounds", "lpt"):
        raise ValueError(f"restarts: base packer {base!r} is not one of kk, rounds, lpt")
    rows, m = w.shape
    mult = multipliers(rows, count, m, seed, noise) if count > 1 else None
    return _packed("restarts", w, bins, slots, presorted, mult, base)


def diverse(
    w: torch.Tensor,
    bins: int,
    experts: torch.Tensor,
    *,
    max_iters: int | None = None,
    slots: bool = False,
    presorted: bool = False,
) -> torch.Tensor:
    """:func:`kk`, then repair swaps so no bin holds two replicas of one expert when a swap can avoid it.

    ``experts`` [B, m] is the expert of each item. Near-equal items are where
    balance is indifferent, so each repair takes, among swaps that create no new
    duplicate, the one whose two bins end lightest (see :func:`refine.dedupe`).
    """
    place = kk(w, bins, slots=True, presorted=presorted)
    place = dedupe(w, place, bins, experts, max_iters=max_iters, slots=True)
    return place if slots else torch.div(place, _cap(w, bins), rounding_mode="floor")
