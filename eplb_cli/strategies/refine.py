"""Local search on a packing: swaps that lighten the busiest bin, and swaps that split duplicates.

Both work on the *slot* form of a packing: ``slot_of_item`` [B, m] is a
permutation of ``range(m)`` and bin ``b`` owns slots ``b*cap .. b*cap+cap-1``
(``cap = m / bins``); a swap exchanges two slots' items, so bin sizes never
change. :func:`to_slots` turns a plain ``bin_of_item`` into that form.
"""

from __future__ import annotations

import math

import torch

_TOL = 1e-12
_CHECK_EVERY = 4


def to_slots(bin_of_item: torch.Tensor, bins: int) -> torch.Tensor:
    """Slot of each item for a ``bin_of_item`` [B, m]: within a bin, items keep their index order."""
    rows, m = bin_of_item.shape
    key = bin_of_item * m + torch.arange(m, device=bin_of_item.device)
    order = key.sort(dim=1, stable=True).indices
    return invert(order)


def invert(perm: torch.Tensor) -> torch.Tensor:
    """Inverse of each row's permutation."""
    idx = torch.arange(perm.shape[1], device=perm.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(1, perm, idx)


def _presence(experts_at: torch.Tensor, bins: int, n: int) -> torch.Tensor:
    """[B, bins * n] count of each expert's replicas per bin (bin-major)."""
    rows, m = experts_at.shape
    cap = m // bins
    where = torch.arange(m, device=experts_at.device) // cap * n + experts_at
    ones = torch.ones_like(experts_at)
    return torch.zeros(rows, bins * n, dtype=torch.int64, device=experts_at.device).scatter_add_(1, where, ones)


def _nearest(
    wt: torch.Tensor, own: torch.Tensor, top: torch.Tensor, other: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best swap per busy bin without a [busy items x all items] tensor.

    For busy bin k (load ``top_k``) and item j (weight ``b``) on a bin with load
    ``other_j``, trading busy item i (weight ``a``) for j leaves the two bins at
    ``max(top_k - a + b, other_j + a - b) = (top_k + other_j) / 2 + |u - a|``
    with ``u = b + (top_k - other_j) / 2``; so the best i for each j is the busy
    item nearest to ``u``, found by one batched searchsorted into the busy
    bin's sorted weights (padded with -inf and +inf, so both neighbours always
    exist). Returns twice the best score, and the source and destination
    slots, each [B, T].
    """
    rows, busy, cap = own.shape
    mine, rank = wt.gather(1, own.view(rows, busy * cap)).view(rows, busy, cap).sort(dim=2)
    edge = torch.full((rows, busy, 1), math.inf, dtype=wt.dtype, device=wt.device)
    fence = torch.cat([-edge, mine, edge], 2)
    # Busy bins' own slots have other = inf: keep u finite there so no inf - inf appears.
    u = torch.add(wt.unsqueeze(1), top.unsqueeze(2) - other.unsqueeze(1), alpha=0.5).clamp_(min=-1e300)
    above = torch.searchsorted(fence, u)
    gap_below = (u - fence.gather(2, above - 1)).abs_()
    gap_above = (fence.gather(2, above) - u).abs_()
    score = torch.minimum(gap_below, gap_above).mul_(2).add_(other.unsqueeze(1)).add_(top.unsqueeze(2))
    best, dst = score.min(2, keepdim=True)
    pick = above.gather(2, dst)
    pick = torch.where(gap_below.gather(2, dst) <= gap_above.gather(2, dst), pick - 1, pick)
    src = own.gather(2, rank.gather(2, (pick - 1).clamp_(0, cap - 1)))
    return best.squeeze(2), src.squeeze(2), dst.squeeze(2)


def _dense(
    wt: torch.Tensor,
    own: torch.Tensor,
    top: torch.Tensor,
    other: torch.Tensor,
    ex: torch.Tensor,
    bins: int,
    busy_bins: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`_nearest`, over every (busy item, other item) pair, skipping pairs that duplicate an expert."""
    rows, busy, cap = own.shape
    m = wt.shape[1]
    n = int(ex.max()) + 1
    here = _presence(ex, bins, n)
    mine = wt.gather(1, own.view(rows, busy * cap)).view(rows, busy, cap, 1)
    mine_ex = ex.gather(1, own.view(rows, busy * cap)).view(rows, busy, cap, 1)
    delta = wt.view(rows, 1, 1, m) - mine
    score = torch.maximum(top.view(rows, busy, 1, 1) + delta, other.view(rows, 1, 1, m) - delta) * 2
    bin_of_slot = torch.arange(m, device=wt.device) // cap
    cell = (bin_of_slot * n).view(1, 1, 1, m) + mine_ex
    clash = here.gather(1, cell.view(rows, busy * cap * m)).view(rows, busy, cap, m) > 0
    theirs = (busy_bins * n).unsqueeze(2) + ex.unsqueeze(1)
    clash |= (here.gather(1, theirs.view(rows, busy * m)) > 0).view(rows, busy, 1, m)
    best, pick = score.masked_fill_(clash, math.inf).view(rows, busy, cap * m).min(2, keepdim=True)
    src = own.gather(2, torch.div(pick, m, rounding_mode="floor"))
    return best.squeeze(2), src.squeeze(2), (pick % m).squeeze(2)


def swap(
    w: torch.Tensor,
    assign: torch.Tensor,
    bins: int,
    max_iters: int = 64,
    *,
    width: int = 1,
    experts: torch.Tensor | None = None,
    slots: bool = False,
) -> torch.Tensor:
    """Best-improving swaps between the busiest bin and any other, until none helps (per row).

    ``assign`` is ``bin_of_item`` [B, m] (or ``slot_of_item`` with
    ``slots=True``; the result then has the same form). Each iteration, per
    row, finds the swap of an item on the busiest bin with an item on another
    bin that minimises the larger of the two bins' new loads, and applies it
    only when that is below the busiest bin's old load, so that bin gets
    strictly lighter and the loop ends. Rows that found nothing are masked off;
    every few iterations one check stops the loop once all rows are done.

    ``width`` > 1 treats the ``width`` busiest bins at once, each against the
    non-busy bins (on a clash over a partner bin the busier bin wins): more
    progress per iteration for proportionally more work per iteration. With
    ``experts`` [B, m] (expert of each item), swaps that would put two replicas
    of one expert on one bin are skipped.
    """
    rows, m = w.shape
    cap = m // bins
    place = assign if slots else to_slots(assign, bins)
    if bins < 2 or rows == 0 or max_iters <= 0:
        return place if slots else assign
    dev = w.device
    busy = max(1, min(width, bins // 2))
    at = invert(place)
    ex = experts.gather(1, at) if experts is not None else None
    bin_of_slot = (torch.arange(m, device=dev) // cap).expand(rows, m)
    span = torch.arange(cap, device=dev)
    earlier = torch.ones(busy, busy, dtype=torch.bool, device=dev).tril_(-1)
    for it in range(max_iters):
        wt = w.gather(1, at)
        load = wt.view(rows, bins, cap).sum(2)
        top, busy_bins = load.topk(busy, dim=1) if busy > 1 else load.max(1, keepdim=True)
        own = (busy_bins * cap).unsqueeze(2) + span
        other = load.scatter(1, busy_bins, math.inf).gather(1, bin_of_slot)
        if ex is None:
            best, src, dst = _nearest(wt, own, top, other)
        else:
            best, src, dst = _dense(wt, own, top, other, ex, bins, busy_bins)
        ok = best < top * (2 - 2 * _TOL)
        if busy > 1:
            partner = torch.div(dst, cap, rounding_mode="floor")
            ok &= ~((partner.unsqueeze(2) == partner.unsqueeze(1)) & ok.unsqueeze(1) & earlier).any(2)
        # A rejected swap becomes a no-op (a slot swapped with itself).
        dst = torch.where(ok, dst, src)
        ia, ib = at.gather(1, src), at.gather(1, dst)
        at.scatter_(1, src, ib).scatter_(1, dst, ia)
        if ex is not None:
            ea, eb = ex.gather(1, src), ex.gather(1, dst)
            ex.scatter_(1, src, eb).scatter_(1, dst, ea)
        if (it + 1) % _CHECK_EVERY == 0 and not bool(ok.any()):
            break
    place = invert(at)
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
    dev = w.device
    at = invert(place)
    wt = w.gather(1, at)
    ex = experts.gather(1, at)
    n = int(experts.max()) + 1
    load = wt.view(rows, bins, cap).sum(2)
    bin_of_slot = torch.arange(m, device=dev) // cap
    # An expert with more replicas than bins must share a bin somewhere: not worth trying.
    stuck = _presence(ex, bins, n).view(rows, bins, n).sum(1).gather(1, ex) > bins
    for it in range(max_iters if max_iters is not None else m):
        here = _presence(ex, bins, n)
        dup = (here.gather(1, bin_of_slot * n + ex) > 1) & ~stuck
        has = dup.any(1, keepdim=True)
        src = dup.long().argmax(1, keepdim=True)
        g = torch.div(src, cap, rounding_mode="floor")
        a, ea = wt.gather(1, src), ex.gather(1, src)
        legal = (here.gather(1, bin_of_slot * n + ea) == 0) & (here.gather(1, g * n + ex) == 0)
        legal &= bin_of_slot != g
        lg = load.gather(1, g)
        lo = load.gather(1, bin_of_slot.expand(rows, m))
        score = torch.maximum(lg - a + wt, lo + a - wt)
        score = torch.where(legal, score, math.inf)
        best, dst = score.min(1, keepdim=True)
        ok = has & (best < math.inf)
        stuck |= (has & ~ok) & (ex == ea) & (bin_of_slot == g)
        b = wt.gather(1, dst)
        wt.scatter_(1, src, torch.where(ok, b, a)).scatter_(1, dst, torch.where(ok, a, b))
        eb = ex.gather(1, dst)
        ex.scatter_(1, src, torch.where(ok, eb, ea)).scatter_(1, dst, torch.where(ok, ea, eb))
        ia, ib = at.gather(1, src), at.gather(1, dst)
        at.scatter_(1, src, torch.where(ok, ib, ia)).scatter_(1, dst, torch.where(ok, ia, ib))
        delta = torch.where(ok, b - a, 0.0)
        load.scatter_add_(1, g, delta).scatter_add_(1, torch.div(dst, cap, rounding_mode="floor"), -delta)
        if (it + 1) % _CHECK_EVERY == 0 and not bool(has.any()):
            break
    place = invert(at)
    return place if slots else torch.div(place, cap, rounding_mode="floor")
