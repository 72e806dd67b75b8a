"""Local search on a packing: swaps that lighten the busiest bin, and swaps that split duplicates.

When bins hold few items (at most :data:`RESPLIT_CAP`), a swap is generalised
to an exact re-split: the busiest bin and a partner pool their items and are
refilled by the best equal-size split of the pool, which also finds the
two-for-two and three-for-three exchanges single swaps miss.

Both work on the *slot* form of a packing: ``slot_of_item`` [B, m] is a
permutation of ``range(m)`` and bin ``b`` owns slots ``b*cap .. b*cap+cap-1``
(``cap = m / bins``); a swap exchanges two slots' items, so bin sizes never
change. :func:`to_slots` turns a plain ``bin_of_item`` into that form.
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import torch

from .sorting import sort_ints

_TOL = 1e-12
_CHECK_EVERY = 2
_PHASE = 4
RESPLIT_CAP = 6
RESPLIT_PARTNERS = 8
# Multi-bin re-split iterations before the one-bin ones: at 64 GPUs x 5 slots (DeepSeek-V3 traces)
# 12 such iterations leave 35-45% less gap than 4, in less time (1.2 ms each, 0.3 ms for one bin).
_RESPLIT_PHASE = 12


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


def _presence(experts_at: torch.Tensor, bins: int, n: int) -> torch.Tensor:
    """[B, bins * n] count of each expert's replicas per bin (bin-major)."""
    rows, m = experts_at.shape
    cap = m // bins
    where = torch.arange(m, device=experts_at.device) // cap * n + experts_at
    ones = torch.ones_like(experts_at)
    return torch.zeros(rows, bins * n, dtype=torch.int64, device=experts_at.device).scatter_add_(1, where, ones)


def _nearest(
    wt: torch.Tensor, load: torch.Tensor, heavy: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best swap for each of the ``heavy`` busiest bins, each with its own disjoint set of partner bins.

    Bins are ranked by load (ties: lower index first); heavy bin k may trade
    with the bins ranked ``heavy + k``, ``2 * heavy + k``, ... (every one of
    them when ``heavy`` is 1), so the ``heavy`` swaps never touch a common bin
    and can all be applied at once. Trading busy item i (weight ``a``) for
    item j (weight ``b``) on a bin with load ``L`` leaves the two bins at
    ``max(top - a + b, L + a - b) = (top + L) / 2 + |u - a|`` with
    ``u = b + (top - L) / 2``; so the best i for each j is the busy item
    nearest to ``u``, found by one batched searchsorted into the busy bin's
    sorted weights (fenced by -inf and +inf, so both neighbours always exist).
    Returns the best new pair maximum, the busy bin's load, and the source and
    destination slots, each [B, heavy].
    """
    rows, m = wt.shape
    bins = load.shape[1]
    cap = m // bins
    per = bins // heavy - 1
    dev = wt.device
    span = torch.arange(cap, device=dev)
    ranked = load.sort(dim=1, descending=True, stable=True)
    top = ranked.values[:, :heavy].unsqueeze(2)
    hot = ranked.indices[:, :heavy]
    partner = ranked.indices[:, heavy:].reshape(rows, per, heavy).transpose(1, 2)
    own = (hot.unsqueeze(2) * cap + span).view(rows, heavy * cap)
    mine, rank = wt.gather(1, own).view(rows, heavy, cap).sort(dim=2)
    edge = torch.full((rows, heavy, 1), math.inf, dtype=wt.dtype, device=dev)
    fence = torch.cat([-edge, mine, edge], 2)
    cand = (partner.unsqueeze(3) * cap + span).reshape(rows, heavy, per * cap)
    other = ranked.values[:, heavy:].reshape(rows, per, heavy).transpose(1, 2)
    other = other.unsqueeze(3).expand(rows, heavy, per, cap).reshape(rows, heavy, per * cap)
    u = torch.add(wt.gather(1, cand.view(rows, -1)).view_as(other), top - other, alpha=0.5)
    above = torch.searchsorted(fence, u)
    gap_below = (u - fence.gather(2, above - 1)).abs_()
    gap_above = (fence.gather(2, above) - u).abs_()
    score = torch.minimum(gap_below, gap_above).add_(torch.add(other, top).mul_(0.5))
    best, j = score.min(2, keepdim=True)
    pick = above.gather(2, j)
    pick = torch.where(gap_below.gather(2, j) <= gap_above.gather(2, j), pick - 1, pick)
    src = own.view(rows, heavy, cap).gather(2, rank.gather(2, (pick - 1).clamp_(0, cap - 1)))
    return best.squeeze(2), top.squeeze(2), src.squeeze(2), cand.gather(2, j).squeeze(2)


def _nearest_one(
    wt: torch.Tensor, own: torch.Tensor, top: torch.Tensor, others: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_nearest` for one busy bin, whose partners are all other bins: the same search in slot order.

    No candidate gathers are needed: ``others`` [B, bins] holds the bin loads with
    +inf on the busy bin. Returns the best new pair maximum and the source and
    destination slots, each [B, 1].
    """
    rows, m = wt.shape
    bins, cap = others.shape[1], own.shape[1]
    mine, rank = wt.gather(1, own).sort(dim=1)
    edge = torch.full((rows, 1), math.inf, dtype=wt.dtype, device=wt.device)
    fence = torch.cat([-edge, mine, edge], 1).unsqueeze(1)
    # The busy bin's own slots get u = -inf; clamp so that no inf - inf appears.
    u = torch.add(wt.view(rows, bins, cap), (top - others).unsqueeze(2), alpha=0.5).clamp_(min=-1e300)
    u = u.view(rows, 1, m)
    above = torch.searchsorted(fence, u)
    gap_below = (u - fence.gather(2, above - 1)).abs_().view(rows, m)
    gap_above = (fence.gather(2, above) - u).abs_().view(rows, m)
    score = torch.minimum(gap_below, gap_above).view(rows, bins, cap).add_(((others + top) * 0.5).unsqueeze(2))
    best, dst = score.view(rows, m).min(1, keepdim=True)
    pick = above.view(rows, m).gather(1, dst)
    pick = torch.where(gap_below.gather(1, dst) <= gap_above.gather(1, dst), pick - 1, pick)
    src = own.gather(1, rank.gather(1, (pick - 1).clamp_(0, cap - 1)))
    return best, src, dst


def ladder(bins: int) -> list[int]:
    """Busy bins fixed at once in each phase of :func:`swap`: several, then one.

    The first phase takes the largest power of two that divides ``bins`` and
    is at most ``bins / 8`` (so every busy bin keeps at least 7 partner bins),
    the last phase one bin with all others as partners. Measured on the
    DeepSeek-V3 traces at 32 and 64 GPUs: after the same number of iterations
    the busiest GPU ends 20-50% closer to the bound than with one bin per
    iteration throughout.
    """
    k = 1
    while k * 2 <= bins // 8 and bins % (k * 2) == 0:
        k *= 2
    return [k, 1] if k > 1 else [1]


@cache
def _splits(cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every way to split 2 * ``cap`` pooled items into two halves of ``cap``.

    Position 0 (the busy bin's first item) is always in the first half, since a
    split and its mirror give the same pair of loads: C(2cap - 1, cap - 1)
    splits (126 for cap 5, 462 for cap 6). Returns ``pick`` [K, 2cap + 1]
    float64, a 0/1 row per split (1: first half) followed by a 1 for the
    pool's offset column, and ``perm`` [K, 2cap] int64, the pool positions of
    the first half then the second.
    """
    halves = [c for c in itertools.combinations(range(2 * cap), cap) if c[0] == 0]
    perm = torch.tensor([list(c) + [i for i in range(2 * cap) if i not in c] for c in halves])
    pick = torch.zeros(len(halves), 2 * cap + 1, dtype=torch.float64).scatter_(1, perm[:, :cap], 1.0)
    pick[:, -1] = 1.0
    return pick, perm


def _resplit(
    wt: torch.Tensor, load: torch.Tensor, heavy: int, partners: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best re-split of each of the ``heavy`` busiest bins with one of its own light partner bins, per row.

    Bins are ranked by load (equal loads: lower index first); busy bin k may
    pair with the light bins ranked k, k + heavy, ... from the light end (at most ``partners`` of them), so
    the pairs never share a bin and can all be applied at once. The pooled
    items of busy bin h and partner o (pair load P) are split into two bins of
    ``cap`` in every way (:func:`_splits`). A split whose first half weighs F
    leaves the pair at ``max(F, P - F) = P / 2 + |F - P / 2|``, so one matrix
    product of [h's items, o's items, -P / 2] with the split rows scores every
    partner and split. Light partners are tried because a pair can at best
    reach its mean. Returns the best new pair maximum and the busy bin's load
    [B, heavy], the pools' slots [B, heavy * 2cap] (h's, then o's, per busy
    bin) and the slots to read them from (each pool in the order of its best
    split).
    """
    rows, m = wt.shape
    bins = load.shape[1]
    cap = m // bins
    pick, perm = _splits(cap)
    pick, perm = pick.to(wt.device, wt.dtype), perm.to(wt.device)
    per = min(partners, (bins - heavy) // heavy)
    # Busiest first, ties to the lower index (as in the one-bin swaps); the light end read backwards.
    ranked = load.sort(dim=1, descending=True, stable=True)
    top, hot = ranked.values[:, :heavy], ranked.indices[:, :heavy]
    light = ranked.values[:, bins - heavy * per :].flip(1).view(rows, per, heavy).transpose(1, 2)
    other = ranked.indices[:, bins - heavy * per :].flip(1).view(rows, per, heavy).transpose(1, 2)
    span = torch.arange(cap, device=wt.device)
    own = hot.unsqueeze(2) * cap + span  # [B, heavy, cap]
    theirs = (other.unsqueeze(3) * cap + span).reshape(rows, -1)
    half = (light + top.unsqueeze(2)) * 0.5  # [B, heavy, per]
    pool = torch.cat(
        [
            wt.gather(1, own.view(rows, -1)).view(rows, heavy, 1, cap).expand(rows, heavy, per, cap),
            wt.gather(1, theirs).view(rows, heavy, per, cap),
            half.neg().unsqueeze(3),
        ],
        3,
    )
    off, split = (pool.view(-1, 2 * cap + 1) @ pick.T).abs_().view(rows, heavy, per, -1).min(3)
    best, j = (off + half).min(2, keepdim=True)
    slots = torch.cat([own, other.gather(2, j) * cap + span], 2)
    read = slots.gather(2, perm[split.gather(2, j).squeeze(2)])
    return best.squeeze(2), top, slots.view(rows, -1), read.view(rows, -1)


def _dense(
    wt: torch.Tensor,
    own: torch.Tensor,
    top: torch.Tensor,
    others: torch.Tensor,
    ex: torch.Tensor,
    hot: torch.Tensor,
    n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`_nearest`, over every (busy item, other item) pair, skipping pairs that duplicate an expert.

    ``ex`` [B, m] is the expert in each slot, ``n`` the number of experts.
    """
    rows, m = wt.shape
    bins, cap = others.shape[1], own.shape[1]
    here = _presence(ex, bins, n)
    delta = wt.unsqueeze(1) - wt.gather(1, own).unsqueeze(2)
    other = others.unsqueeze(2).expand(rows, bins, cap).reshape(rows, 1, m)
    score = torch.maximum(top.unsqueeze(2) + delta, other - delta)
    bin_of_slot = torch.arange(m, device=wt.device) // cap
    cell = (bin_of_slot * n).view(1, 1, m) + ex.gather(1, own).unsqueeze(2)
    clash = here.gather(1, cell.view(rows, cap * m)).view(rows, cap, m) > 0
    clash |= (here.gather(1, hot * n + ex) > 0).unsqueeze(1)
    best, pick = score.masked_fill_(clash, math.inf).view(rows, cap * m).min(1, keepdim=True)
    src = own.gather(1, torch.div(pick, m, rounding_mode="floor"))
    return best, src, pick % m


def _resplit_loop(
    wt: torch.Tensor, at: torch.Tensor, bins: int, max_iters: int, floor: torch.Tensor | None
) -> None:
    """Re-split iterations (:func:`_resplit`) on slot-form ``wt`` and ``at``, in place.

    The multi-bin phase of :func:`ladder` first, then one bin per iteration.
    Only rows still improving are carried to the next iteration, and rows
    whose busiest bin is at or below ``floor`` [B] are dropped: their caller
    cannot gain from them.
    """
    rows, m = wt.shape
    cap = m // bins
    live = torch.arange(rows, device=wt.device)
    load = wt.view(rows, bins, cap).sum(2)
    if floor is not None:
        live = live[load.amax(1) > floor]
    w, a, load = wt[live], at[live], load[live]
    phases = ladder(bins)
    phase, since = 0, 0
    for _ in range(max_iters):
        if live.numel() == 0:
            break
        best, top, pool, read = _resplit(w, load, phases[phase], RESPLIT_PARTNERS)
        ok = best < top * (1 - _TOL)
        read = torch.where(ok.repeat_interleave(2 * cap, 1), read, pool)
        w.scatter_(1, pool, w.gather(1, read))
        a.scatter_(1, pool, a.gather(1, read))
        load = w.view(-1, bins, cap).sum(2)
        since += 1
        if phase < len(phases) - 1:
            if since == _RESPLIT_PHASE:
                phase, since = phase + 1, 0
            continue
        going = ok.any(1)
        if floor is not None:
            going &= load.amax(1) > floor[live]
        wt[live], at[live] = w, a
        live, w, a, load = live[going], w[going], a[going], load[going]
    wt[live], at[live] = w, a


def swap(
    w: torch.Tensor,
    assign: torch.Tensor,
    bins: int,
    max_iters: int = 64,
    *,
    experts: torch.Tensor | None = None,
    slots: bool = False,
    floor: torch.Tensor | None = None,
) -> torch.Tensor:
    """Best-improving swaps between the busiest bin and any other, until none helps (per row).

    ``assign`` is ``bin_of_item`` [B, m] (or ``slot_of_item`` with
    ``slots=True``; the result then has the same form). Each iteration, per
    row, finds the swap of an item on the busiest bin with an item on another
    bin that minimises the larger of the two bins' new loads, and applies it
    only when that is below the busiest bin's old load, so that bin gets
    strictly lighter and the loop ends. On wide packings a first phase of
    up to :data:`_PHASE` iterations fixes several busy bins per iteration, each
    with its own partner bins (see :func:`ladder`), and every such swap also
    leaves both of its bins below the busiest load; it ends early when no row
    found one. Rows that found nothing are
    masked off (their swap becomes a slot swapped with itself); every few
    iterations one check stops the loop once all rows are done. With
    ``experts`` [B, m] (expert of each item), one bin per iteration, and swaps
    that would put two replicas of one expert on one bin are skipped.

    When bins hold 3 to :data:`RESPLIT_CAP` items (and no ``experts`` are
    given), each iteration instead re-splits the busiest bin with its best
    partner among the :data:`RESPLIT_PARTNERS` lightest (:func:`_resplit`): a
    superset of the single swaps that also finds two-for-two and larger
    exchanges. There, rows whose busiest bin is at or below ``floor`` [B] are
    left alone (the caller only needs them that low).
    """
    rows, m = w.shape
    cap = m // bins
    place = assign if slots else to_slots(assign, bins)
    if bins < 2 or rows == 0 or max_iters <= 0:
        return place if slots else assign
    at = invert(place)
    wt = w.gather(1, at)
    if experts is None and 3 <= cap <= RESPLIT_CAP:
        _resplit_loop(wt, at, bins, max_iters, floor)
        place = invert(at)
        return place if slots else torch.div(place, cap, rounding_mode="floor")
    ex = experts.gather(1, at) if experts is not None else None
    n = int(experts.max()) + 1 if experts is not None else 0
    load = wt.view(rows, bins, cap).sum(2)
    span = torch.arange(cap, device=w.device)
    phases = [1] if ex is not None else ladder(bins)
    phase, since = 0, 0
    for _ in range(max_iters):
        heavy = phases[phase]
        if heavy > 1:
            best, top, src, dst = _nearest(wt, load, heavy)
        else:
            top, hot = load.max(1, keepdim=True)
            others = load.scatter(1, hot, math.inf)
            if ex is None:
                best, src, dst = _nearest_one(wt, hot * cap + span, top, others)
            else:
                best, src, dst = _dense(wt, hot * cap + span, top, others, ex, hot, n)
        ok = best < top * (1 - _TOL)
        dst = torch.where(ok, dst, src)
        a, b = wt.gather(1, src), wt.gather(1, dst)
        wt.scatter_(1, src, b).scatter_(1, dst, a)
        ia, ib = at.gather(1, src), at.gather(1, dst)
        at.scatter_(1, src, ib).scatter_(1, dst, ia)
        if ex is not None:
            ea, eb = ex.gather(1, src), ex.gather(1, dst)
            ex.scatter_(1, src, eb).scatter_(1, dst, ea)
        load.scatter_add_(1, torch.div(src, cap, rounding_mode="floor"), b - a)
        load.scatter_add_(1, torch.div(dst, cap, rounding_mode="floor"), a - b)
        since += 1
        if phase < len(phases) - 1:
            if since == _PHASE or (since % _CHECK_EVERY == 0 and not bool(ok.any())):
                phase, since = phase + 1, 0
        elif since % _CHECK_EVERY == 0 and not bool(ok.any()):
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
