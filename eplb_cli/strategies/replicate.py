"""Replica counts: how many slots each expert gets, batched over rows.

:func:`dhondt` is the Jefferson/D'Hondt allocation, which is exactly optimal for
the largest per-replica load ``max_e w_e / count_e``; :func:`fixup` is a local
search on top of a packing that trades that optimum for a lower busiest-GPU load
when one replica moved from a cold to a hot expert helps.
"""

from __future__ import annotations

import math

import torch

from .sorting import argsort_rows, kth_largest


def dhondt(w: torch.Tensor, slots: int) -> torch.Tensor:
    """Replica counts [B, n] int64 for loads ``w`` [B, n]: each >= 1, each row sums to ``slots``.

    Equal to the greedy "next replica to argmax w / count, lowest index on
    ties", which is exactly optimal for ``max w / count``, computed with no loop
    over replicas and no full sort (CPU sorts cost ~10 us per row):

    1. every quotient ``w_e / k`` above ``total / (slots - n)`` is among the
       ``slots - n`` largest (there are at most that many), so take them all;
    2. the ``left`` picks still open (``left <= n``) can only go to the
       ``left`` experts with the largest next quotient (ties: lower index),
       each at most ``window`` times, where ``window`` is bounded by the
       ``left``-th largest next quotient;
    3. the ``left``-th largest quotient of that small pool is the threshold;
       take everything above it, then ties in expert order.

    Rows whose load is all zero are treated as uniform, so their extra
    replicas go round-robin from expert 0.
    """
    rows, n = w.shape
    if slots < n:
        raise ValueError(f"dhondt: {slots} slots cannot hold {n} experts")
    extra = slots - n
    if extra == 0 or rows == 0:
        return torch.ones(rows, n, dtype=torch.int64, device=w.device)
    w = w.to(torch.float64).clamp(min=0)
    empty = w.sum(1, keepdim=True) <= 0
    w = w + empty
    # Shrunk a hair so rounding can never claim a quotient that merely equals the threshold.
    counts = torch.ceil(w * (extra * (1 - 1e-12)) / w.sum(1, keepdim=True)).clamp_(min=1).long()
    left = slots - counts.sum(1, keepdim=True)
    most = min(int(left.max()), n)
    if most <= 0:
        return counts
    nxt = w / counts
    kth = kth_largest(nxt, left.clamp(min=1))
    above = nxt > kth
    tied = nxt == kth
    chosen = above | (tied & (tied.cumsum(1) <= left - above.sum(1, keepdim=True)))
    spot = torch.where(chosen, chosen.cumsum(1) - 1, most)
    ids = torch.arange(n, device=w.device).expand(rows, n)
    pool = torch.zeros(rows, most + 1, dtype=torch.int64, device=w.device).scatter_(1, spot, ids)[:, :most]
    valid = torch.arange(most, device=w.device) < left
    wp, cp = w.gather(1, pool), counts.gather(1, pool)
    # Clamped so that underflowing (subnormal) loads give a finite bound.
    reach = torch.where(valid, torch.floor(wp / kth.clamp(min=torch.finfo(torch.float64).tiny)) - cp + 2, 1.0)
    window = int(reach.clamp_(1, most).max())
    cand = wp.unsqueeze(2) / (cp.unsqueeze(2) + torch.arange(window, device=w.device))
    cand = torch.where(valid.unsqueeze(2), cand, -math.inf)
    # Pad each row with (most - left) +inf so that every row's left-th largest is its most-th largest.
    pad = torch.where(torch.arange(most, device=w.device) < most - left, math.inf, -math.inf)
    flat = torch.cat([cand.view(rows, most * window), pad], 1)
    cut = kth_largest(flat, torch.full((rows, 1), most, dtype=torch.int64, device=w.device))
    above = (cand > cut.unsqueeze(2)).sum(2)
    tied = (cand == cut.unsqueeze(2)).any(2)
    tied &= tied.cumsum(1) <= left - above.sum(1, keepdim=True)
    return counts.scatter_add_(1, pool, above + tied.long())


def thinned(w: torch.Tensor, counts: torch.Tensor, most: int) -> torch.Tensor:
    """Count vectors [B, most, n] giving each row's heaviest expert 1 .. ``most`` fewer replicas.

    The freed replicas go where D'Hondt would put its next ones among the
    other experts (the largest quotients ``w_e / (count_e + j)``, j >= 0, lower
    expert first on ties), so variant d is D'Hondt's allocation with that
    expert held at ``count - d``. Where the heaviest expert has too few
    replicas to give d away (or is the only expert), variant d repeats ``counts``.

    Why: D'Hondt minimises the largest replica, but when GPUs hold few slots a
    hot expert cut into many mid-sized replicas can make even packing
    impossible (10 replicas of ~29k on 8 GPUs whose mean load is 49.5k puts
    two on one GPU); fewer, larger replicas that each fill a GPU with small
    ones can do far better.
    """
    rows, n = w.shape
    dev = w.device
    if n == 1:
        return counts.unsqueeze(1).repeat(1, most, 1)
    w = w.to(torch.float64)
    top = w.argmax(1, keepdim=True)
    steps = torch.arange(1, most + 1, device=dev)
    nxt = w.unsqueeze(2) / (counts.unsqueeze(2) + steps - 1).to(torch.float64)
    nxt.scatter_(1, top.unsqueeze(2).expand(rows, 1, most), -math.inf)
    order = argsort_rows(nxt.view(rows, n * most), descending=True)[:, :most]
    picks = torch.div(order, most, rounding_mode="floor").unsqueeze(1).expand(rows, most, most)
    first_d = torch.tril(torch.ones(most, most, dtype=torch.int64, device=dev)).expand(rows, most, most)
    ok = (counts.gather(1, top) > steps).long().unsqueeze(2)  # [B, most, 1]
    out = counts.unsqueeze(1).repeat(1, most, 1)
    out.scatter_add_(2, picks, first_d * ok)
    return out.scatter_add_(2, top.unsqueeze(1).expand(rows, most, 1), -steps.view(1, most, 1) * ok)


def expand(counts: torch.Tensor, slots: int) -> torch.Tensor:
    """Column of each replica [B, slots] when column e of ``counts`` [B, n] (each >= 1) has counts[e] of them.

    Replicas come in column order (all of column 0 first). Built by marking
    where each column starts and a cumulative sum, which on CPU is several
    times cheaper than a batched searchsorted.
    """
    rows = counts.shape[0]
    starts = counts.cumsum(1)[:, :-1]
    marks = torch.zeros(rows, slots, dtype=torch.int64, device=counts.device)
    return marks.scatter_add_(1, starts, torch.ones_like(starts)).cumsum(1)


def fixup(
    w: torch.Tensor,
    counts: torch.Tensor,
    expert: torch.Tensor,
    bin_of_item: torch.Tensor,
    bins: int,
    *,
    spread: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move at most one replica per row from a cold expert to the hot one, if the busiest bin gets lighter.

    ``expert`` [B, S] is the expert of each replica (slot) and ``bin_of_item``
    its bin. The receiver is the expert of the heaviest replica on the busiest
    bin: one more replica thins it on every bin that holds it. The donor is the
    slot, among experts with >= 2 replicas (at most ``S - n`` experts, so the
    work is [B, S - n, bins]), whose hand-over gives the lowest new busiest-bin
    load, evaluated exactly for every slot at once (a donor's other replicas
    get heavier wherever they sit). The move is applied only when that
    new maximum is strictly below the old one, so a row never gets worse.
    With ``spread``, a slot on a bin that already holds the receiver is not
    used (no new duplicate replicas on a bin).
    Returns (counts, expert, moved [B] bool); the slot keeps its bin.
    """
    rows, n = w.shape
    slots = expert.shape[1]
    # Only experts with >= 2 replicas can donate, and there are at most slots - n of them.
    most = min(slots - n, n)
    if bins < 2 or rows == 0 or most < 1:
        return counts, expert, torch.zeros(rows, dtype=torch.bool, device=w.device)
    dev = w.device
    w = w.to(torch.float64)
    cf = counts.to(torch.float64)
    per = w / cf
    item_w = per.gather(1, expert)
    load = torch.zeros(rows, bins, dtype=torch.float64, device=dev).scatter_add_(1, bin_of_item, item_w)
    peak, hot = load.max(1, keepdim=True)
    on_hot = torch.where(bin_of_item == hot, item_w, -1.0)
    recv = expert.gather(1, on_hot.argmax(1, keepdim=True))
    recv_mult = torch.zeros(rows, bins, dtype=torch.float64, device=dev)
    recv_mult.scatter_add_(1, bin_of_item, (expert == recv).to(torch.float64))
    w_r, c_r = w.gather(1, recv), cf.gather(1, recv)
    thin = w_r / (c_r + 1)
    donors = counts.topk(most, dim=1).indices
    rank = torch.full((rows, n), most, dtype=torch.int64, device=dev)
    rank.scatter_(1, donors, torch.arange(most, device=dev).expand(rows, most))
    slot_rank = rank.gather(1, expert)
    mult = torch.zeros(rows, (most + 1) * bins, dtype=torch.float64, device=dev)
    mult = mult.scatter_add_(1, slot_rank * bins + bin_of_item, torch.ones_like(item_w)).view(rows, most + 1, bins)
    wd, cd = w.gather(1, donors), cf.gather(1, donors)
    grow = wd / (cd - 1).clamp(min=1)
    base = (load + recv_mult * (thin - w_r / c_r)).unsqueeze(1) + mult[:, :most] * (grow - wd / cd).unsqueeze(2)
    top = base.topk(2, dim=2)
    at = slot_rank.clamp(max=most - 1)
    first = top.values[:, :, 0].gather(1, at)
    second = top.values[:, :, 1].gather(1, at)
    other = torch.where(top.indices[:, :, 0].gather(1, at) == bin_of_item, second, first)
    own = base.view(rows, most * bins).gather(1, at * bins + bin_of_item) + thin - grow.gather(1, at)
    score = torch.maximum(other, own)
    valid = (slot_rank < most) & (counts.gather(1, expert) > 1) & (expert != recv)
    if spread:
        valid &= recv_mult.gather(1, bin_of_item) == 0
    score = torch.where(valid, score, math.inf)
    best, slot = score.min(1, keepdim=True)
    moved = best < peak * (1 - 1e-12)
    donor = expert.gather(1, slot)
    expert = expert.scatter(1, slot, torch.where(moved, recv, donor))
    step = moved.long()
    counts = counts.scatter_add(1, recv, step).scatter_add_(1, donor, -step)
    return counts, expert, moved.squeeze(1)
