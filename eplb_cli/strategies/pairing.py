"""Replica counts chosen for the packing when each GPU holds two slots (decode shapes), compiled.

With two slots per GPU the best packing of given replicas is known exactly:
sort them and pair the largest with the smallest (an exchange argument), so
a count vector's best busiest GPU is cheap to score (:func:`pair_peak`).
D'Hondt's counts minimise the largest replica, which is not what pairing
needs: a replica close to the target needs a small partner, and small
partners come from cold experts given one more replica. :func:`search`
therefore walks count vectors from D'Hondt's, moving one replica at a time
from a donor (an expert that barely needs its last replica) to a receiver
(a cold expert, a hot expert, or an expert of the busiest pairs), scoring
every candidate by its exact best pairing and keeping the best move while it
lowers the busiest GPU. A row never ends worse than its starting counts
paired best.

The kernels run one row (a layer, or one node of a layer) at a time, like
:mod:`.kernels`, and are loaded only when a plan at two slots per GPU runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .kernels import argsort

_JIT: dict[str, Any] = {"cache": True, "nogil": True}
TOL = 1e-12
"""A move is kept only when it brings the busiest GPU below ``peak * (1 - TOL)``."""

DONORS = 6
"""Donors tried per row and move: the experts with >= 2 replicas and the smallest load / (count - 1)."""
COLD = 4
"""Receivers taken from the coldest experts (smallest load / (count + 1))."""
HOT = 2
"""Receivers taken from the hottest experts (largest load / count)."""
CRITICAL = 2
"""Busiest pairs whose two experts are tried as receivers."""
MOVES = 16
"""Most moves per row of the full search (``thorough``)."""
QUICK = (4, 3, 3)
"""(moves, donors, cold receivers) of the quick search (``balanced``)."""


@njit(**_JIT)
def pair_peak(val: np.ndarray, cnt: np.ndarray, size: int, pairs: np.ndarray) -> float:
    """Busiest GPU of the best pairing of runs ``val`` [size] (increasing) with ``cnt`` [size] replicas each.

    The i-th smallest replica goes with the i-th largest: two pointers walk
    the runs from both ends, one step per run boundary, so a row costs
    O(experts) however many slots. ``pairs`` [size, 3] receives (sum, low
    run, high run) of each step; the return value is the largest sum. Row
    totals must be even.
    """
    lo, hi = 0, size - 1
    rlo, rhi = cnt[0], cnt[size - 1]
    peak = 0.0
    k = 0
    while lo <= hi:
        if lo == hi:
            if rlo >= 2:
                s = val[lo] + val[lo]
                peak = max(peak, s)
                pairs[k, 0], pairs[k, 1], pairs[k, 2] = s, lo, hi
                k += 1
            break
        s = val[lo] + val[hi]
        peak = max(peak, s)
        pairs[k, 0], pairs[k, 1], pairs[k, 2] = s, lo, hi
        k += 1
        take = min(rlo, rhi)
        rlo -= take
        rhi -= take
        if rlo == 0:
            lo += 1
            rlo = rhi if lo == hi else cnt[lo]
        if rhi == 0:
            hi -= 1
            rhi = rlo if lo == hi else cnt[hi]
    for j in range(k, pairs.shape[0]):
        pairs[j, 0] = -1.0
    return peak


@njit(**_JIT)
def _runs(w: np.ndarray, c: np.ndarray, order: np.ndarray, per: np.ndarray, val: np.ndarray, cnt: np.ndarray,
          run_of: np.ndarray) -> None:
    """Experts of one row by increasing load per replica: ``order``, their ``val`` and ``cnt``, and ``run_of``."""
    n = w.shape[0]
    for e in range(n):
        per[e] = w[e] / c[e]
    argsort(per, order, False)
    for k in range(n):
        e = order[k]
        val[k] = per[e]
        cnt[k] = c[e]
        run_of[e] = k


@njit(**_JIT)
def _smallest(key: np.ndarray, k: int, out: np.ndarray) -> int:
    """Indices of the ``k`` smallest finite values of ``key`` into ``out`` (increasing, lower index on ties)."""
    m = 0
    for e in range(key.shape[0]):
        v = key[e]
        if not v < np.inf:
            continue
        if m == k and not v < key[out[m - 1]]:
            continue
        pos = m if m < k else k - 1
        while pos > 0 and v < key[out[pos - 1]]:
            out[pos] = out[pos - 1]
            pos -= 1
        out[pos] = e
        if m < k:
            m += 1
    return m


@njit(**_JIT)
def _trial(order: np.ndarray, val: np.ndarray, cnt: np.ndarray, n: int, d: int, vd: float, r: int, vr: float,
           run_of: np.ndarray, tv: np.ndarray, tc: np.ndarray) -> int:
    """The runs after moving one replica from expert ``d`` (new size ``vd``) to ``r`` (new size ``vr``).

    Merges the two changed experts into the sorted runs in one pass (no sort);
    returns the run count. Order among equal sizes does not change the peak.
    """
    kd, kr = run_of[d], run_of[r]
    cd, cr = cnt[kd] - 1, cnt[kr] + 1
    first_v, first_c, second_v, second_c = vd, cd, vr, cr
    if vr < vd:
        first_v, first_c, second_v, second_c = vr, cr, vd, cd
    size = 0
    placed = 0
    for k in range(n):
        if k == kd or k == kr:
            continue
        v = val[k]
        while placed < 2:
            pv = first_v if placed == 0 else second_v
            if pv > v:
                break
            tv[size] = pv
            tc[size] = first_c if placed == 0 else second_c
            size += 1
            placed += 1
        tv[size] = v
        tc[size] = cnt[k]
        size += 1
    while placed < 2:
        tv[size] = first_v if placed == 0 else second_v
        tc[size] = first_c if placed == 0 else second_c
        size += 1
        placed += 1
    return size


@njit(**_JIT)
def search(w: np.ndarray, counts: np.ndarray, moves: int, donors: int, cold: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts [B, n] searched for pairing from ``counts`` [B, n] (each >= 1, even row sums), and their peak [B].

    Per row and move: donors are the ``donors`` experts with >= 2 replicas
    whose load / (count - 1) is smallest; receivers are the ``cold`` experts
    with the smallest load / (count + 1), the :data:`HOT` largest replicas and
    both experts of the :data:`CRITICAL` busiest pairs. Every (donor,
    receiver) pair is scored by :func:`pair_peak`; the best (first on ties)
    is applied when it lowers the row's peak below ``peak * (1 - TOL)``, else
    the row stops. Deterministic and row by row, so batching changes nothing.
    """
    rows, n = w.shape
    out = counts.copy()
    best = np.empty(rows, np.float64)
    c = np.empty(n, np.int64)
    order = np.empty(n, np.int64)
    per = np.empty(n, np.float64)
    val = np.empty(n, np.float64)
    cnt = np.empty(n, np.int64)
    run_of = np.empty(n, np.int64)
    tv = np.empty(n, np.float64)
    tc = np.empty(n, np.int64)
    pairs = np.empty((n, 3), np.float64)
    key = np.empty(n, np.float64)
    dn = np.empty(max(donors, 1), np.int64)
    rc = np.empty(max(cold, 1), np.int64)
    rh = np.empty(HOT, np.int64)
    crit = np.empty(2 * CRITICAL, np.int64)
    recv = np.empty(max(cold, 1) + HOT + 2 * CRITICAL, np.int64)
    for row in range(rows):
        c[:] = counts[row]
        wr = w[row]
        _runs(wr, c, order, per, val, cnt, run_of)
        peak = pair_peak(val, cnt, n, pairs)
        for _ in range(moves):
            for e in range(n):
                key[e] = wr[e] / (c[e] - 1) if c[e] >= 2 else np.inf
            nd = _smallest(key, donors, dn)
            if nd == 0:
                break
            for e in range(n):
                key[e] = wr[e] / (c[e] + 1)
            nr = _smallest(key, cold, rc)
            m = 0
            for j in range(nr):
                recv[m] = rc[j]
                m += 1
            for e in range(n):
                key[e] = -per[e]
            nh = _smallest(key, HOT, rh)
            for j in range(nh):
                recv[m] = rh[j]
                m += 1
            for e in range(n):
                key[e] = -pairs[e, 0] if pairs[e, 0] >= 0 else np.inf
            nc = _smallest(key, CRITICAL, crit)
            for j in range(nc):
                p = crit[j]
                recv[m] = order[int(pairs[p, 1])]
                recv[m + 1] = order[int(pairs[p, 2])]
                m += 2
            top, pick_d, pick_r = np.inf, -1, -1
            for a in range(nd):
                d = dn[a]
                vd = wr[d] / (c[d] - 1)
                for b in range(m):
                    r = recv[b]
                    if r == d:
                        continue
                    size = _trial(order, val, cnt, n, d, vd, r, wr[r] / (c[r] + 1), run_of, tv, tc)
                    s = pair_peak(tv, tc, size, pairs)
                    if s < top:
                        top, pick_d, pick_r = s, d, r
            if not top < peak * (1 - TOL):
                break
            c[pick_d] -= 1
            c[pick_r] += 1
            _runs(wr, c, order, per, val, cnt, run_of)
            peak = pair_peak(val, cnt, n, pairs)
        out[row] = c
        best[row] = peak
    return out, best


@njit(**_JIT)
def paired(w: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best pairing of each row's replicas: (expert of each slot [B, S], busiest GPU [B]).

    GPU g (slots 2g, 2g + 1) holds the g-th smallest and the g-th largest
    replica (experts by increasing load per replica, lower index first on
    ties, each expert's replicas together).
    """
    rows, n = w.shape
    slots = 0
    if rows:
        for e in range(n):
            slots += counts[0, e]
    half = slots // 2
    phy = np.empty((rows, slots), np.int64)
    top = np.empty(rows, np.float64)
    per = np.empty(n, np.float64)
    order = np.empty(n, np.int64)
    ranked = np.empty(slots, np.int64)
    for row in range(rows):
        for e in range(n):
            per[e] = w[row, e] / counts[row, e]
        argsort(per, order, False)
        pos = 0
        for k in range(n):
            e = order[k]
            for _ in range(counts[row, e]):
                ranked[pos] = e
                pos += 1
        peak = 0.0
        for g in range(half):
            a, b = ranked[g], ranked[slots - 1 - g]
            phy[row, 2 * g] = a
            phy[row, 2 * g + 1] = b
            peak = max(peak, per[a] + per[b])
        top[row] = peak
    return phy, top


def improve(w: np.ndarray, counts: np.ndarray, phy: np.ndarray, busiest: np.ndarray, quick: bool) -> np.ndarray:
    """``phy`` [B, S] with each row replaced by the searched counts' best pairing where that is lighter.

    ``w`` [B, n] float64, ``counts`` [B, n] the counts ``phy`` was packed
    from, ``busiest`` [B] its busiest GPU. ``quick``: the :data:`QUICK`
    search, else the full one and the quick one, the lighter per row. Rows
    where the pairing is not strictly lighter keep ``phy`` exactly, so no row gets worse.
    """
    moves, donors, cold = QUICK if quick else (MOVES, DONORS, COLD)
    better, _ = search(w, counts, moves, donors, cold)
    alt, peak = paired(w, better)
    if not quick:
        # The full search walks other paths than the quick one and can end higher on a row: keeping the
        # lighter of both means the full search is never above the quick one (thorough never above balanced).
        q_alt, q_peak = paired(w, search(w, counts, *QUICK)[0])
        lighter = q_peak < peak
        alt[lighter], peak = q_alt[lighter], np.where(lighter, q_peak, peak)
    take = peak < busiest
    if take.any():
        phy = phy.copy()
        phy[take] = alt[take]
    return phy
