"""Replica counts: how many slots each expert gets, batched over rows.

:func:`dhondt` is the Jefferson/D'Hondt allocation, which is exactly optimal for
the largest per-replica load ``max_e w_e / count_e``; :func:`fixup` is a local
search on top of a packing that trades that optimum for a lower busiest-GPU load
when one replica moved from a cold to a hot expert helps.
"""

from __future__ import annotations

import numpy as np
import torch

from .arrays import as_floats, as_ints, kernels, to_tensor


def dhondt(w: torch.Tensor, slots: int) -> torch.Tensor:
    """Replica counts [B, n] int64 for loads ``w`` [B, n]: each >= 1, each row sums to ``slots``.

    Equal to the greedy "next replica to argmax w / count, lowest index on
    ties", which is exactly optimal for ``max w / count`` (see
    :func:`.kernels.dhondt` for how it avoids one step per replica). Rows
    whose load is all zero are treated as uniform, so their extra replicas go
    round-robin from expert 0. Negative loads count as zero.
    """
    n = w.shape[1]
    if slots < n:
        raise ValueError(f"dhondt: {slots} slots cannot hold {n} experts")
    return to_tensor(kernels().dhondt_rows(as_floats(w), slots), w.device)


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
    return to_tensor(kernels().thinned_rows(as_floats(w), as_ints(counts), most), w.device)


def handed_over(w: np.ndarray, counts: np.ndarray, donors: int, receivers: int) -> np.ndarray:
    """Count vectors [B, donors * receivers, n]: ``counts`` [B, n] with one replica handed from a donor to a receiver.

    Donors are the experts with two or more replicas whose replica would grow
    least without one (smallest ``w / (count - 1)``), receivers the coldest
    experts with one replica (smallest ``w``); lower expert first on ties.
    A pair that does not exist (too few donors or receivers) repeats ``counts``.

    Why: with 3 slots per GPU a busy GPU is a large replica plus two
    others, and it fits under the target only with small enough partners; a
    second replica of a cold expert makes two small ones, at the price of one
    replica of an expert that barely needs it (the effect the pairing search
    of :mod:`.pairing` exploits at 2 slots per GPU).
    """
    b, n = counts.shape
    donors, receivers = min(donors, n), min(receivers, n)
    give = np.argsort(np.where(counts >= 2, w / np.maximum(counts - 1, 1), np.inf), axis=1, kind="stable")[:, :donors]
    take = np.argsort(np.where(counts == 1, w, np.inf), axis=1, kind="stable")[:, :receivers]
    ok = (np.take_along_axis(counts, give, 1) >= 2)[:, :, None] & (np.take_along_axis(counts, take, 1) == 1)[:, None, :]
    out = np.repeat(counts[:, None, :], donors * receivers, axis=1)
    row = np.arange(b)[:, None]
    pair = np.arange(donors * receivers)[None, :]
    step = ok.reshape(b, -1).astype(counts.dtype)
    out[row, pair, np.repeat(give, receivers, axis=1)] -= step
    out[row, pair, np.tile(take, (1, donors))] += step
    return out


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
    replica, among experts with >= 2 replicas, whose hand-over gives the
    lowest new busiest-bin load, evaluated exactly for every replica (a
    donor's other replicas get heavier wherever they sit). The move is applied
    only when that new maximum is strictly below the old one, so a row never
    gets worse. With ``spread``, a replica on a bin that already holds the
    receiver is not used (no new duplicate replicas on a bin).
    Returns (counts, expert, moved [B] bool); the replica keeps its bin.
    """
    dev = w.device
    new_counts, new_expert = as_ints(counts).copy(), as_ints(expert).copy()
    moved = kernels().fixup_rows(as_floats(w), new_counts, new_expert, as_ints(bin_of_item), bins, spread)
    return to_tensor(new_counts, dev), to_tensor(new_expert, dev), to_tensor(moved, dev)
