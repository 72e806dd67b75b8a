"""Local search on a packing: moves that lighten the busiest bin, and swaps that split duplicates.

When bins hold few items (3 to :data:`RESPLIT_CAP`), a move may also be an
exact re-split: the busiest bin and a light partner pool their items and are
refilled by the best equal-size split of the pool, which finds the
two-for-two and three-for-three exchanges single swaps miss.

Both work on the *slot* form of a packing: ``slot_of_item`` [B, m] is a
permutation of ``range(m)`` and bin ``b`` owns slots ``b*cap .. b*cap+cap-1``
(``cap = m / bins``); a move exchanges slots' items, so bin sizes never
change. :func:`to_slots` turns a plain ``bin_of_item`` into that form. The
loops are compiled (:func:`.kernels.refine`, :func:`.kernels.dedupe`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .arrays import as_floats, as_ints, kernels, to_tensor
from .sorting import sort_ints

RESPLIT_CAP = 6
"""Bins of 3 to this many items also try re-splits (beyond, single swaps find nearly as much)."""
RESPLIT_PARTNERS = 8
"""Re-splits pair the busiest bin with this many of the lightest bins."""


def to_slots(bin_of_item: torch.Tensor, bins: int) -> torch.Tensor:
    """Slot of each item for a ``bin_of_item`` [B, m]: within a bin, items keep their index order."""
    m = bin_of_item.shape[1]
    shift = max(1, (m - 1).bit_length())
    key = (bin_of_item << shift) | torch.arange(m, device=bin_of_item.device)
    return invert(sort_ints(key) & ((1 << shift) - 1))


def invert(perm: torch.Tensor) -> torch.Tensor:
    """Inverse of each row's permutation."""
    idx = torch.arange(perm.shape[1], device=perm.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(1, perm, idx)


def swap(
    w: torch.Tensor,
    assign: torch.Tensor,
    bins: int,
    max_iters: int = 64,
    *,
    experts: torch.Tensor | None = None,
    slots: bool = False,
    floor: torch.Tensor | None = None,
    sweeps: int = 0,
) -> torch.Tensor:
    """Best-improving moves between the busiest bin and any other, until none helps (per row).

    ``assign`` is ``bin_of_item`` [B, m] (or ``slot_of_item`` with
    ``slots=True``; the result then has the same form). Each iteration, per
    row, finds the swap of an item on the busiest bin with an item on another
    bin that minimises the larger of the two bins' new loads (and, for bins of
    3 to :data:`RESPLIT_CAP` items, the best re-split with one of the
    :data:`RESPLIT_PARTNERS` lightest bins), and makes it only when that is
    below the busiest bin's old load, so that bin gets strictly lighter and
    the loop ends. With ``experts`` [B, m] (expert of each item), swaps that
    would put two replicas of one expert on one bin are skipped (and no
    re-splits are tried). Rows whose busiest bin is at or below ``floor`` [B]
    are left alone (the caller only needs them that low). ``sweeps`` rounds
    of moves between the busiest and the lightest bins, half the bins at a
    time, come first (see :func:`.kernels.refine`).
    """
    rows, m = w.shape
    cap = m // bins
    place = assign if slots else to_slots(assign, bins)
    if bins < 2 or rows == 0 or (max_iters <= 0 and sweeps <= 0):
        return place if slots else assign
    ex = np.zeros((0, 0), np.int64) if experts is None else as_ints(experts)
    low = np.full(rows, -math.inf) if floor is None else as_floats(floor)
    resplit = experts is None and 3 <= cap <= RESPLIT_CAP
    out = kernels().refine_rows(as_floats(w), as_ints(place), bins, max_iters, ex, low, resplit, RESPLIT_PARTNERS,
                                sweeps)
    place = to_tensor(out, w.device)
    return place if slots else torch.div(place, cap, rounding_mode="floor")


def dedupe(
    w: torch.Tensor,
    assign: torch.Tensor,
    bins: int,
    experts: torch.Tensor,
    max_iters: int | None = None,
    *,
    slots: bool = False,
) -> torch.Tensor:
    """Split replicas of one expert that share a bin, by swaps that hurt balance least.

    Per row and iteration, the first slot whose expert also sits elsewhere on
    its bin is swapped with the item, on another bin, that creates no new
    duplicate and leaves the lighter larger-of-the-two-bins load. Rows with no
    duplicate left, or no legal swap, stop; a duplicate is kept only when no
    single swap can split it (e.g. an expert with more replicas than bins).
    """
    rows, m = w.shape
    cap = m // bins
    place = assign if slots else to_slots(assign, bins)
    if bins < 2 or cap < 2 or rows == 0:
        return place if slots else assign
    iters = max_iters if max_iters is not None else m
    out = kernels().dedupe_rows(as_floats(w), as_ints(place), bins, as_ints(experts), iters)
    place = to_tensor(out, w.device)
    return place if slots else torch.div(place, cap, rounding_mode="floor")
