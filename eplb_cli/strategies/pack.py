"""Packers: put m weighted items into ``bins`` bins with exactly ``cap = m / bins`` items each.

Every packer takes weights [B, m] and returns ``bin_of_item`` [B, m] int64,
batched over rows (layers, layers x nodes, or layers x restarts). With
``slots=True`` it returns ``slot_of_item`` instead: a permutation of
``range(m)`` where bin ``b`` owns slots ``b*cap .. b*cap+cap-1``, which also
fixes each item's position inside its bin (so callers need no extra sort; CPU
sorts cost ~10 us per row). With ``presorted=True`` the caller promises the
weights are already in decreasing order, and the packers skip their sort.

No packer loops over rows; :func:`lpt` loops over items (its greedy order is
inherently sequential), :func:`rounds` over runs of ``bins`` items and
:func:`kk` over merges (``cap`` or ``cap - 1`` steps).
"""

from __future__ import annotations

import math

import torch

from .base import torch_seed
from .refine import dedupe, to_slots
from .sorting import argsort_rows

PACKERS = ("lpt", "rounds", "snake", "kk", "restarts", "diverse")


def _cap(w: torch.Tensor, bins: int) -> int:
    m = w.shape[1]
    if bins < 1 or m % bins:
        raise ValueError(f"cannot pack {m} items into {bins} bins of equal count")
    return m // bins


def _rank(w: torch.Tensor, presorted: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights in decreasing order (stable: equal weights keep item order) and that order (None if presorted)."""
    if presorted:
        return w, None
    order = argsort_rows(w, descending=True)
    return w.gather(1, order), order


def _finish(order: torch.Tensor | None, slot_of_rank: torch.Tensor, cap: int, slots: bool) -> torch.Tensor:
    """Map slots of the sorted positions back to the items; return slots or bins."""
    place = slot_of_rank if order is None else torch.empty_like(order).scatter_(1, order, slot_of_rank)
    return place if slots else torch.div(place, cap, rounding_mode="floor")


def _by_lap(bin_of_rank: torch.Tensor, bins: int) -> torch.Tensor:
    """Slots for a packing that gives each bin one item of every run of ``bins`` sorted items (snake, rounds, kk)."""
    m = bin_of_rank.shape[1]
    lap = torch.div(torch.arange(m, device=bin_of_rank.device), bins, rounding_mode="floor")
    return bin_of_rank * (m // bins) + lap


def _snake_ranked(ws: torch.Tensor, bins: int) -> torch.Tensor:
    rows, m = ws.shape
    rank = torch.arange(m, device=ws.device)
    pos = rank % bins
    lap = torch.div(rank, bins, rounding_mode="floor")
    return torch.where(lap % 2 == 1, bins - 1 - pos, pos).expand(rows, m)


def snake(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """Zig-zag: sorted items dealt to bins 0..bins-1, then bins-1..0, and so on. Fast, weak on skew."""
    cap = _cap(w, bins)
    ws, order = _rank(w, presorted)
    return _finish(order, _by_lap(_snake_ranked(ws, bins), bins), cap, slots)


def _lpt_ranked(ws: torch.Tensor, bins: int) -> torch.Tensor:
    """Exact LPT on sorted rows, several items per step.

    One step sorts the bins by load (stable, so ties go to the lower index)
    and deals the next items to the sorted bins in turn for as long as that is
    what LPT itself would do: item k of the run goes to the k-th lightest bin
    only when every earlier item of the run left its bin strictly heavier than
    that one (a bin that the run fills drops out). The first item always
    qualifies, and on real loads a run covers about one item per bin, so a
    row takes about ``cap`` steps instead of ``m``. Zero-weight items, which
    LPT piles onto the lightest open bin until it is full, are dealt in one
    go at the end.
    """
    rows, m = ws.shape
    cap = m // bins
    dev = ws.device
    if cap == 1:
        return torch.arange(m, device=dev).expand(rows, m)
    load = torch.zeros(rows, bins, dtype=ws.dtype, device=dev)
    count = torch.zeros(rows, bins, dtype=torch.int64, device=dev)
    ptr = torch.zeros(rows, 1, dtype=torch.int64, device=dev)
    positive = (ws > 0).sum(1, keepdim=True)
    padded = torch.cat([ws, torch.zeros(rows, bins, dtype=ws.dtype, device=dev)], 1)
    deal = torch.zeros(rows, m + 1, dtype=torch.int64, device=dev)
    span = torch.arange(bins, device=dev)
    fence = torch.full((rows, 1), math.inf, dtype=ws.dtype, device=dev)
    while bool((ptr < positive).any()):
        lo, order = load.sort(dim=1, stable=True)
        idx = ptr + span
        x = padded.gather(1, idx)
        after = (lo + x).masked_fill_(count.gather(1, order) >= cap - 1, math.inf)
        before = torch.cat([fence, after[:, :-1]], 1).cummin(1).values
        run = ((before > lo) & (idx < positive)).long().cumprod(1)
        deal.scatter_(1, torch.where(run > 0, idx, m), order)
        load.scatter_add_(1, order, x * run)
        count.scatter_add_(1, order, run)
        load.masked_fill_(count == cap, math.inf)
        ptr += run.sum(1, keepdim=True)
    # The zero-weight tail fills open bins in (load, index) order, each up to its cap.
    order = load.sort(dim=1, stable=True).indices
    room = (cap - count).gather(1, order)
    starts = room.cumsum(1)[:, :-1]
    marks = torch.zeros(rows, m + 1, dtype=torch.int64, device=dev)
    marks.scatter_add_(1, (ptr + starts).clamp_(max=m), torch.ones_like(starts))
    nth = marks.cumsum(1)[:, :m].clamp_(max=bins - 1)
    tail = torch.arange(m, device=dev) >= ptr
    return torch.where(tail, order.gather(1, nth), deal[:, :m])


def lpt(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """Greedy LPT: largest item first, to the lightest bin that still has room (lowest index on ties).

    The rule of DeepSeek's ``balanced_packing``; one step per item, batched over rows.
    """
    cap = _cap(w, bins)
    ws, order = _rank(w, presorted)
    return _finish(order, to_slots(_lpt_ranked(ws, bins), bins), cap, slots)


def _rounds_ranked(ws: torch.Tensor, bins: int) -> torch.Tensor:
    rows, m = ws.shape
    load = torch.zeros(rows, bins, dtype=ws.dtype, device=ws.device)
    deal = []
    for lap in range(m // bins):
        lightest = argsort_rows(load)
        load.scatter_add_(1, lightest, ws[:, lap * bins : (lap + 1) * bins])
        deal.append(lightest)
    return torch.cat(deal, 1)


def rounds(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """LPT by rounds: each run of ``bins`` sorted items goes one per bin, largest to the lightest bin.

    ``cap`` steps of two ops each instead of LPT's one step per item; on the
    moderately skewed loads of real traces it matches LPT exactly (LPT's own
    choices fall into such rounds), on very heavy tails it is somewhat worse.
    """
    cap = _cap(w, bins)
    ws, order = _rank(w, presorted)
    return _finish(order, _by_lap(_rounds_ranked(ws, bins), bins), cap, slots)


def _kk_ranked(ws: torch.Tensor, bins: int) -> torch.Tensor:
    rows, m = ws.shape
    cap = m // bins
    rank = torch.arange(m, device=ws.device)
    if cap == 1 or bins == 1:
        return (rank % bins).expand(rows, m)
    sums = ws.reshape(rows, cap, bins).clone()
    flat = sums.view(rows, m)
    lo, hi = torch.aminmax(sums, dim=2)
    spread = hi - lo
    label = rank.expand(rows, m).clone()
    sign = torch.tensor([1.0, -1.0], dtype=ws.dtype, device=ws.device).view(1, 2, 1)
    dead = torch.tensor(-math.inf, dtype=ws.dtype, device=ws.device).expand(rows, 1)
    for _ in range(cap - 1):
        pair = spread.topk(2, dim=1).indices
        both = sums.gather(1, pair.unsqueeze(2).expand(rows, 2, bins))
        slot = (both * sign).sort(dim=2, descending=True, stable=True).indices
        merged = both.gather(2, slot).sum(1)
        base = pair * bins
        keep = slot[:, 0] + base[:, :1]
        flat.scatter_(1, keep, merged)
        label.scatter_(1, slot[:, 1] + base[:, 1:], keep)
        lo, hi = torch.aminmax(merged, dim=1, keepdim=True)
        spread.scatter_(1, pair, torch.cat([hi - lo, dead], 1))
    for _ in range(math.ceil(math.log2(cap)) + 1):
        label = label.gather(1, label)
    return label % bins


def kk(w: torch.Tensor, bins: int, *, slots: bool = False, presorted: bool = False) -> torch.Tensor:
    """Balanced Karmarkar-Karp (largest differencing with equal cardinality).

    Sorted items in runs of ``bins`` form partial solutions (one item per bin);
    repeatedly the two partials with the largest spread (max - min bin sum; a
    tie goes whichever way ``topk`` takes it, deterministically) are merged,
    heaviest bin of one with lightest bin of the other, until one is left.
    Each merge is a handful of batched ops; bin labels of an absorbed partial
    are forwarded to the survivor's and resolved at the end by pointer doubling.
    """
    cap = _cap(w, bins)
    ws, order = _rank(w, presorted)
    # Every starting run gives each final bin exactly one item: its run index is its position.
    return _finish(order, _by_lap(_kk_ranked(ws, bins), bins), cap, slots)


_RANKED = {"lpt": _lpt_ranked, "rounds": _rounds_ranked, "snake": _snake_ranked, "kk": _kk_ranked}


def _slots_of(bin_of_rank: torch.Tensor, bins: int, base: str) -> torch.Tensor:
    return to_slots(bin_of_rank, bins) if base == "lpt" else _by_lap(bin_of_rank, bins)


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
    """Best of ``count`` randomised runs of ``base`` (``kk``, ``rounds`` or ``lpt``), batched as B * count rows.

    Run 0 packs the true weights, so the result is never worse than ``base``.
    Run r > 0 decides on weights scaled by ``exp(noise * r / count * N(0, 1))``
    (a spread of perturbation strengths), visited in the true weight order, which
    reshuffles near-ties, merge order and pairings; every run is scored on the
    true weights and the lightest busiest bin wins (the earliest run on ties).
    Deterministic for a seed: the noise comes from a ``torch.Generator`` on
    ``w``'s device.
    """
    cap = _cap(w, bins)
    if base not in ("kk", "rounds", "lpt"):
        raise ValueError(f"restarts: base packer {base!r} is not one of kk, rounds, lpt")
    ws, order = _rank(w, presorted)
    rows, m = ws.shape
    if count <= 1 or rows == 0:
        return _finish(order, _slots_of(_RANKED[base](ws, bins), bins, base), cap, slots)
    gen = torch.Generator(device=ws.device)
    gen.manual_seed(torch_seed(seed))
    eps = torch.randn(rows, count, m, generator=gen, dtype=ws.dtype, device=ws.device)
    scale = torch.arange(count, dtype=ws.dtype, device=ws.device).view(1, count, 1) * (noise / count)
    noisy = (ws.unsqueeze(1) * torch.exp(eps * scale)).view(rows * count, m)
    tries = _RANKED[base](noisy, bins)
    wide = ws.unsqueeze(1).expand(rows, count, m).reshape(rows * count, m)
    load = torch.zeros(rows * count, bins, dtype=ws.dtype, device=ws.device).scatter_add_(1, tries, wide)
    best = load.amax(1).view(rows, count).argmin(1)
    chosen = tries.view(rows, count, m).gather(1, best.view(rows, 1, 1).expand(rows, 1, m)).squeeze(1)
    return _finish(order, _slots_of(chosen, bins, base), cap, slots)


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
