"""Compiled inner loops of the strategies, one row (a layer, or one node of a layer) at a time.

Why compiled: the batched torch formulation spent its time in per-op overhead
(thousands of small ops per plan at 3-10 us each); these loops do the same
work in microseconds per row. Numba compiles each function on first use and
caches the machine code beside this file (``cache=True``), so only the first
plan on a machine pays the compile. Nothing imports this module until a plan
runs (not ``import eplb_cli``, not ``eplb --help``).

Conventions:

- Items of a row are in *processing order*: decreasing weight, equal weights
  in index order (:func:`argsort`). Packers read them in that order and write
  ``slot`` [m], the slot of each item: bin ``b`` owns slots
  ``b*cap .. b*cap+cap-1`` (``cap = m / bins``).
- Refiners work on the *slot view*: ``wt``, ``it`` and ``ex`` [m] hold the
  weight, item and expert in each slot. A move exchanges slots' contents, so
  bin sizes never change, and the bins it touches are summed again from their
  slots (no drift).
- Determinism: float64, only +, -, *, / and comparisons, one thread, no
  fastmath, ties broken by index, so results are bit-identical on every
  IEEE-754 platform. The tests run each function's pure-Python original
  (``.py_func``) against the compiled code on random cases.

``dhondt_rows``, ``pack_rows``, ``refine_rows``, ``dedupe_rows``,
``fixup_rows`` and :func:`arrange` are the batched entry points (plain loops
over rows); the other functions work on one row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

_JIT: dict[str, Any] = {"cache": True, "nogil": True}
_INLINE: dict[str, Any] = {"cache": True, "nogil": True, "inline": "always"}
"""Small helpers are inlined where they are called: a call that passes arrays costs reference counting."""
TOL = 1e-12
"""A move must bring the busiest bin below ``top * (1 - TOL)``, so rounding can never make it cycle."""

LPT, ROUNDS, SNAKE, KK, RESTARTS, DIVERSE = 0, 1, 2, 3, 4, 5
"""Packer codes, in the order of :data:`eplb_cli.strategies.pack.PACKERS`."""

_SMALL = 64
"""Rows up to this length are sorted by insertion alone."""

_SCAN = 64
"""A move of the busiest bin looks at most at this many of the lightest bins (all of them up to 65 bins),
so that a move costs the same however many bins there are."""

_FEW_BINS = 16
"""Up to this many bins, LPT finds the lightest bin by a plain scan (cheaper than its winner tree)."""


# --- sorting and heaps -------------------------------------------------------------------------


@njit(**_INLINE)
def _ahead(x: np.ndarray, a: int, b: int, descending: bool) -> bool:
    """Whether index ``a`` sorts before ``b``: by value (decreasing if ``descending``), then by index."""
    if x[a] == x[b]:
        return a < b
    return x[a] > x[b] if descending else x[a] < x[b]


@njit(**_JIT)
def argsort(x: np.ndarray, order: np.ndarray, descending: bool) -> None:
    """Stable argsort of ``x`` [m] into ``order`` [m]: equal values (0.0 and -0.0 too) keep index order.

    Rows already in order are only checked. Short rows: insertion sort.
    Longer rows: an LSD radix sort on the top 16
    (24 from 1024 values) bits of each float's order-preserving integer image
    (two or three passes, no comparisons to mispredict), then an insertion
    pass puts values that share those bits in exact order.
    """
    m = x.shape[0]
    ordered = True
    for i in range(1, m):
        if _ahead(x, i, i - 1, descending):
            ordered = False
            break
    if ordered:
        for i in range(m):
            order[i] = i
        return
    if m > _SMALL:
        digits = 2 if m < 1024 else 3
        key = np.empty(m, np.int64)
        spare = np.empty(m, np.int64)
        count = np.zeros((digits, 256), np.int64)
        flip = np.int64(0x7FFFFFFFFFFFFFFF)
        for i in range(m):
            bits = np.float64(x[i]).view(np.int64)
            if bits < 0:
                bits ^= flip
            if descending:
                bits = ~bits
            key[i] = (bits >> (64 - 8 * digits)) + (np.int64(1) << (8 * digits - 1))
            for d in range(digits):
                count[d, (key[i] >> (8 * d)) & 255] += 1
        for d in range(digits):
            total = 0
            for b in range(256):
                total, count[d, b] = total + count[d, b], total
        src, dst = order, spare
        for i in range(m):
            src[i] = i
        for d in range(digits):
            for q in range(m):
                i = src[q]
                b = (key[i] >> (8 * d)) & 255
                dst[count[d, b]] = i
                count[d, b] += 1
            src, dst = dst, src
        if digits % 2 == 1:
            order[:] = src
    else:
        for i in range(m):
            order[i] = i
    for i in range(1, m):
        c = order[i]
        j = i
        while j > 0 and _ahead(x, c, order[j - 1], descending):
            order[j] = order[j - 1]
            j -= 1
        order[j] = c


@njit(**_INLINE)
def _sift_down(heap: np.ndarray, size: int, pos: int, key: np.ndarray) -> None:
    """Restore the min-heap ``heap[:size]`` of ids, ordered by (key[id], id), below ``pos``."""
    item = heap[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _ahead(key, heap[child + 1], heap[child], False):
            child += 1
        if not _ahead(key, heap[child], item, False):
            break
        heap[pos] = heap[child]
        pos = child
    heap[pos] = item


@njit(**_INLINE)
def _heaviest(load: np.ndarray) -> int:
    """Index of the largest entry (the lowest index on ties)."""
    hot = 0
    for b in range(1, load.shape[0]):
        if load[b] > load[hot]:
            hot = b
    return hot


# --- replication -------------------------------------------------------------------------------


@njit(**_JIT)
def dhondt(w: np.ndarray, slots: int, counts: np.ndarray) -> None:
    """D'Hondt replica counts of one row ``w`` [n] into ``counts`` [n]: each >= 1, summing to ``slots``.

    Equal to the greedy "next replica to the largest w / count, lowest index on
    ties", which is exactly optimal for ``max w / count``. Every quotient
    ``w_e / k`` above ``total / (slots - n)`` is among the ``slots - n``
    taken (there are at most that many), so ``ceil(w_e * (slots - n) /
    total)`` replicas (shrunk a hair against rounding) are given at once; the
    at most ``n`` picks left come off a heap of the next quotients, so a row
    costs O(n log n) however many slots there are. An all-zero row counts as
    uniform (its extra replicas go round-robin from expert 0).
    """
    n = w.shape[0]
    extra = slots - n
    total = 0.0
    for e in range(n):
        total += max(w[e], 0.0)
    uniform = not total > 0.0
    if uniform:
        total = float(n)
    # Shrunk by 1e-12, so that rounding never claims a quotient that merely equals the threshold.
    scale = extra * (1 - 1e-12)
    left = slots
    key = np.empty(n, np.float64)
    for e in range(n):
        we = 1.0 if uniform else max(w[e], 0.0)
        counts[e] = max(int(np.ceil(we * scale / total)), 1) if extra > 0 and we > 0 else 1
        left -= counts[e]
        key[e] = -we if counts[e] == 1 else -(we / counts[e])
    if left <= 0:
        return
    heap = np.arange(n)
    for pos in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, pos, key)
    for _ in range(left):
        e = heap[0]
        counts[e] += 1
        we = 1.0 if uniform else max(w[e], 0.0)
        key[e] = -(we / counts[e])
        _sift_down(heap, n, 0, key)


@njit(**_JIT)
def dhondt_rows(w: np.ndarray, slots: int) -> np.ndarray:
    """:func:`dhondt` for every row of ``w`` [B, n]: counts [B, n] int64."""
    rows, n = w.shape
    counts = np.empty((rows, n), np.int64)
    for r in range(rows):
        dhondt(w[r], slots, counts[r])
    return counts


@njit(**_JIT)
def thinned_rows(w: np.ndarray, counts: np.ndarray, most: int) -> np.ndarray:
    """Count vectors [B, most, n]: variant d gives each row's heaviest expert (the first on ties) d fewer
    replicas and hands them to the others as D'Hondt would (next quotients ``w_e / count_e``, lower expert
    first on ties); a row whose heaviest expert has d replicas or fewer (or that has one expert) keeps its
    counts in variant d."""
    rows, n = w.shape
    out = np.empty((rows, most, n), np.int64)
    key = np.empty(n, np.float64)
    heap = np.empty(n, np.int64)
    cur = np.empty(n, np.int64)
    for r in range(rows):
        top = 0
        for e in range(1, n):
            if w[r, e] > w[r, top]:
                top = e
        cur[:] = counts[r]
        size = 0
        for e in range(n):
            if e != top:
                key[e] = -(w[r, e] / cur[e])
                heap[size] = e
                size += 1
        for pos in range(size // 2 - 1, -1, -1):
            _sift_down(heap, size, pos, key)
        for d in range(1, most + 1):
            out[r, d - 1] = counts[r]
            if n == 1 or counts[r, top] <= d:
                continue
            e = heap[0]
            cur[e] += 1
            key[e] = -(w[r, e] / cur[e])
            _sift_down(heap, size, 0, key)
            out[r, d - 1] = cur
            out[r, d - 1, top] = counts[r, top] - d
    return out


@njit(**_JIT)
def replicas(w: np.ndarray, counts: np.ndarray, expert: np.ndarray, weight: np.ndarray) -> None:
    """The replicas of one row in processing order: ``expert`` and ``weight`` (= w / count) [S].

    Experts by decreasing load per replica (equal loads: lower expert first),
    each expert's replicas together.
    """
    n = w.shape[0]
    per = np.empty(n, np.float64)
    order = np.empty(n, np.int64)
    for e in range(n):
        per[e] = w[e] / counts[e]
    argsort(per, order, True)
    pos = 0
    for k in range(n):
        e = order[k]
        for _ in range(counts[e]):
            expert[pos] = e
            weight[pos] = per[e]
            pos += 1


@njit(**_JIT)
def fixup(
    w: np.ndarray, counts: np.ndarray, expert: np.ndarray, bin_of: np.ndarray, bins: int, spread: bool
) -> int:
    """Move one replica from a cold expert to the hot one if the busiest bin gets lighter; the item moved or -1.

    ``expert`` and ``bin_of`` [S] give each replica's expert and bin. The
    receiver is the expert of the heaviest replica on the busiest bin (the
    first such replica): one more replica thins it on every bin that holds
    it. The donor is the replica, among experts with >= 2 replicas, whose
    hand-over gives the lowest new busiest-bin load, evaluated exactly (a
    donor's other replicas get heavier wherever they sit; the first replica on
    ties). The move is made only when that is below the old maximum, so a row
    never gets worse. With ``spread``, a replica on a bin that already holds
    the receiver is not used. ``counts`` and ``expert`` are updated in place;
    the replica keeps its bin.
    """
    n = w.shape[0]
    m = expert.shape[0]
    if bins < 2 or m <= n:
        return -1
    load = np.zeros(bins, np.float64)
    for s in range(m):
        load[bin_of[s]] += w[expert[s]] / counts[expert[s]]
    hot = _heaviest(load)
    peak = load[hot]
    recv, heaviest = -1, -1.0
    for s in range(m):
        if bin_of[s] == hot:
            x = w[expert[s]] / counts[expert[s]]
            if x > heaviest:
                heaviest, recv = x, expert[s]
    w_r, c_r = w[recv], float(counts[recv])
    thin = w_r / (c_r + 1)
    held = np.zeros(bins, np.float64)
    for s in range(m):
        if expert[s] == recv:
            held[bin_of[s]] += 1.0
    base = np.empty(bins, np.float64)
    for b in range(bins):
        base[b] = load[b] + held[b] * (thin - w_r / c_r)
    # Replicas grouped by expert (a counting sort), to visit each donor's replicas.
    start = np.zeros(n + 1, np.int64)
    for s in range(m):
        start[expert[s] + 1] += 1
    for e in range(n):
        start[e + 1] += start[e]
    member = np.empty(m, np.int64)
    fill = start[:n].copy()
    for s in range(m):
        member[fill[expert[s]]] = s
        fill[expert[s]] += 1
    # Bins by decreasing base load (equal loads: lower index first): a donor changes only the bins that hold
    # it, so the busiest of the others is found by walking this order past those.
    ranked = np.empty(bins, np.int64)
    argsort(base, ranked, True)
    mult = np.zeros(bins, np.float64)
    after = np.empty(bins, np.float64)
    best, pick = np.inf, -1
    for d in range(n):
        if d == recv or counts[d] < 2:
            continue
        w_d, c_d = w[d], float(counts[d])
        grow = w_d / max(c_d - 1, 1.0)
        for q in range(start[d], start[d + 1]):
            mult[bin_of[member[q]]] += 1.0
        first, second, at = -np.inf, -np.inf, -1
        found = 0
        for k in range(bins):  # the two busiest bins that do not hold the donor
            b = ranked[k]
            if mult[b] == 0.0:
                if found == 0:
                    first, at = base[b], b
                else:
                    second = base[b]
                found += 1
                if found == 2:
                    break
        for q in range(start[d], start[d + 1]):  # and the donor's bins, each once
            b = bin_of[member[q]]
            if mult[b] <= 0.0:
                continue
            after[b] = base[b] + mult[b] * (grow - w_d / c_d)
            mult[b] = -mult[b]
            v = after[b]
            if v > first or (v == first and b < at):
                first, second, at = v, first, b
            elif v > second:
                second = v
        for q in range(start[d], start[d + 1]):
            s = member[q]
            b = bin_of[s]
            if spread and held[b] > 0:
                continue
            own = after[b] + thin - grow
            score = max(second if b == at else first, own)
            if score < best or (score == best and s < pick):
                best, pick = score, s
        for q in range(start[d], start[d + 1]):
            mult[bin_of[member[q]]] = 0.0
    if pick < 0 or not best < peak * (1 - TOL):
        return -1
    counts[expert[pick]] -= 1
    counts[recv] += 1
    expert[pick] = recv
    return pick


@njit(**_JIT)
def fixup_rows(
    w: np.ndarray, counts: np.ndarray, expert: np.ndarray, bin_of: np.ndarray, bins: int, spread: bool
) -> np.ndarray:
    """:func:`fixup` on every row, in place on ``counts`` [B, n] and ``expert`` [B, S]; whether each row moved [B]."""
    rows = w.shape[0]
    moved = np.zeros(rows, np.bool_)
    for r in range(rows):
        moved[r] = fixup(w[r], counts[r], expert[r], bin_of[r], bins, spread) >= 0
    return moved


# --- packers: items in processing order -> slot of each item ------------------------------------


@njit(**_JIT)
def lpt(ws: np.ndarray, bins: int, slot: np.ndarray) -> None:
    """LPT: each item, in order, to the lightest bin that still has room (lowest index on ties).

    DeepSeek's ``balanced_packing`` rule. The lightest open bin comes from a
    winner tree over the bins: each node keeps the load and index of the
    lighter of its two children's winners (the left one, which has the lower
    index, on ties); a full bin weighs +inf.
    """
    m = ws.shape[0]
    cap = m // bins
    if bins <= _FEW_BINS:
        _lpt_scan(ws, bins, slot)
        return
    width = 1
    while width < bins:
        width *= 2
    value = np.full(2 * width, np.inf)
    index = np.empty(2 * width, np.int64)
    for b in range(width):
        index[width + b] = b
        if b < bins:
            value[width + b] = 0.0
    for node in range(width - 1, 0, -1):
        right = value[2 * node + 1] < value[2 * node]
        value[node] = value[2 * node + right]
        index[node] = index[2 * node + right]
    load = np.zeros(bins, np.float64)
    fill = np.zeros(bins, np.int64)
    for k in range(m):
        b = index[1]
        slot[k] = b * cap + fill[b]
        load[b] += ws[k]
        fill[b] += 1
        node = width + b
        value[node] = load[b] if fill[b] < cap else np.inf
        node //= 2
        while node >= 1:
            right = value[2 * node + 1] < value[2 * node]
            value[node] = value[2 * node + right]
            index[node] = index[2 * node + right]
            node //= 2


@njit(**_JIT)
def _lpt_scan(ws: np.ndarray, bins: int, slot: np.ndarray) -> None:
    """:func:`lpt` for few bins: the lightest open bin by a scan in index order (strictly lighter replaces)."""
    m = ws.shape[0]
    cap = m // bins
    key = np.zeros(bins, np.float64)
    fill = np.zeros(bins, np.int64)
    for k in range(m):
        b = 0
        for q in range(1, bins):
            if key[q] < key[b]:
                b = q
        slot[k] = b * cap + fill[b]
        fill[b] += 1
        key[b] = key[b] + ws[k] if fill[b] < cap else np.inf


@njit(**_JIT)
def rounds(ws: np.ndarray, bins: int, slot: np.ndarray) -> None:
    """LPT by rounds: each run of ``bins`` items goes one per bin, largest to the lightest bin (lowest index on ties)."""
    m = ws.shape[0]
    cap = m // bins
    load = np.zeros(bins, np.float64)
    order = np.empty(bins, np.int64)
    for lap in range(cap):
        argsort(load, order, False)
        for k in range(bins):
            b = order[k]
            slot[lap * bins + k] = b * cap + lap
            load[b] += ws[lap * bins + k]


@njit(**_JIT)
def snake(ws: np.ndarray, bins: int, slot: np.ndarray) -> None:
    """Zig-zag: items dealt to bins 0..bins-1, then bins-1..0, and so on."""
    cap = ws.shape[0] // bins
    for k in range(ws.shape[0]):
        lap, pos = k // bins, k % bins
        b = bins - 1 - pos if lap % 2 == 1 else pos
        slot[k] = b * cap + lap


@njit(**_JIT)
def kk(ws: np.ndarray, bins: int, slot: np.ndarray) -> None:
    """Balanced Karmarkar-Karp (largest differencing with equal cardinality).

    Runs of ``bins`` items form partial solutions (one item per bin); the two
    partials with the largest spread (max - min bin sum; ties: the lower run)
    are merged, heaviest bin of the first with the lightest of the second,
    until one is left. Each partial keeps its bins in decreasing order of sum
    (equal sums: the earlier position first), so a merge pairs them in one
    pass and re-sorts a nearly sorted list. An absorbed bin forwards to the
    bin it joined; each item's final bin is the end of its chain.
    """
    m = ws.shape[0]
    cap = m // bins
    if cap == 1 or bins == 1:
        for k in range(m):
            slot[k] = (k % bins) * cap + k // bins
        return
    total = np.empty((cap, bins), np.float64)
    node = np.empty((cap, bins), np.int64)
    label = np.arange(m)
    spread = np.empty(cap, np.float64)
    alive = np.ones(cap, np.bool_)
    merged = np.empty(bins, np.float64)
    owner = np.empty(bins, np.int64)
    order = np.empty(bins, np.int64)
    for p in range(cap):
        argsort(ws[p * bins : (p + 1) * bins], order, True)
        for k in range(bins):
            total[p, k] = ws[p * bins + order[k]]
            node[p, k] = p * bins + order[k]
        spread[p] = total[p, 0] - total[p, bins - 1]
    for _ in range(cap - 1):
        a, c = -1, -1
        for p in range(cap):
            if not alive[p]:
                continue
            if a < 0 or spread[p] > spread[a]:
                a, c = p, a
            elif c < 0 or spread[p] > spread[c]:
                c = p
        for k in range(bins):
            merged[k] = total[a, k] + total[c, bins - 1 - k]
            owner[k] = node[a, k]
            label[node[c, bins - 1 - k]] = node[a, k]
        argsort(merged, order, True)
        for k in range(bins):
            total[a, k] = merged[order[k]]
            node[a, k] = owner[order[k]]
        spread[a] = total[a, 0] - total[a, bins - 1]
        alive[c] = False
    for k in range(m):
        root = k
        while label[root] != root:
            root = label[root]
        slot[k] = (root % bins) * cap + k // bins


@njit(**_JIT)
def peak(ws: np.ndarray, slot: np.ndarray, bins: int) -> float:
    """Load of the busiest bin when item k sits in ``slot[k]``."""
    cap = ws.shape[0] // bins
    load = np.zeros(bins, np.float64)
    for k in range(ws.shape[0]):
        load[slot[k] // cap] += ws[k]
    return load.max()


@njit(**_JIT)
def _pack_plain(code: int, ws: np.ndarray, bins: int, slot: np.ndarray) -> None:
    """Run packer ``code`` (``lpt``, ``rounds``, ``snake``; anything else: ``kk``) on one row."""
    if code == LPT:
        lpt(ws, bins, slot)
    elif code == ROUNDS:
        rounds(ws, bins, slot)
    elif code == SNAKE:
        snake(ws, bins, slot)
    else:
        kk(ws, bins, slot)


@njit(**_JIT)
def pack(code: int, ws: np.ndarray, bins: int, slot: np.ndarray, mult: np.ndarray, base: int) -> None:
    """Run packer ``code`` on one row in processing order.

    ``restarts`` runs packer ``base`` on ``ws * mult[r]`` for each row r of
    ``mult`` [R, m] (row 0 all ones: the plain packing), visiting the items
    in their true order, and keeps the run whose busiest bin, scored on the
    true weights, is lightest (the first on ties). ``diverse`` packs as
    ``kk`` (its repair needs the experts, see :func:`arrange`).
    """
    if code != RESTARTS:
        _pack_plain(code, ws, bins, slot)
        return
    if mult.shape[0] <= 1:
        _pack_plain(base, ws, bins, slot)
        return
    noisy = np.empty_like(ws)
    trial = np.empty_like(slot)
    best = np.inf
    for r in range(mult.shape[0]):
        for k in range(ws.shape[0]):
            noisy[k] = ws[k] * mult[r, k]
        _pack_plain(base, noisy, bins, trial)
        score = peak(ws, trial, bins)
        if score < best:
            best = score
            slot[:] = trial


@njit(**_JIT)
def pack_rows(code: int, w: np.ndarray, bins: int, presorted: bool, mult: np.ndarray, base: int) -> np.ndarray:
    """Slot of each item [B, m] under packer ``code`` for weights ``w`` [B, m].

    Unless ``presorted``, each row is first put in processing order (a stable
    descending sort). ``mult`` [B, R, m]: the restarts' weight multipliers.
    """
    rows, m = w.shape
    out = np.empty((rows, m), np.int64)
    order = np.arange(m)
    ws = np.empty(m, np.float64)
    slot = np.empty(m, np.int64)
    for r in range(rows):
        if not presorted:
            argsort(w[r], order, True)
        for k in range(m):
            ws[k] = w[r, order[k]]
        pack(code, ws, bins, slot, mult[r], base)
        for k in range(m):
            out[r, order[k]] = slot[k]
    return out


# --- refiners: on the slot view ----------------------------------------------------------------


@njit(**_INLINE)
def _bin_sum(wt: np.ndarray, b: int, cap: int) -> float:
    total = 0.0
    for q in range(b * cap, (b + 1) * cap):
        total += wt[q]
    return total


@njit(**_INLINE)
def _exchange(wt: np.ndarray, it: np.ndarray, ex: np.ndarray, i: int, j: int) -> None:
    wt[i], wt[j] = wt[j], wt[i]
    it[i], it[j] = it[j], it[i]
    ex[i], ex[j] = ex[j], ex[i]


@njit(**_JIT)
def _presence(ex: np.ndarray, bins: int, n: int) -> np.ndarray:
    """Replicas of each expert on each bin, [bins * n] (bin-major)."""
    cap = ex.shape[0] // bins
    here = np.zeros(bins * n, np.int32)
    for s in range(ex.shape[0]):
        here[(s // cap) * n + ex[s]] += 1
    return here


@njit(**_INLINE)
def _sort_bin(wt: np.ndarray, it: np.ndarray, ex: np.ndarray, b: int, cap: int) -> None:
    """Put bin ``b``'s slots in decreasing order of weight (insertion; bins are short)."""
    lo = b * cap
    for q in range(lo + 1, lo + cap):
        w_q, i_q, e_q = wt[q], it[q], ex[q]
        p = q
        while p > lo and wt[p - 1] < w_q:
            wt[p], it[p], ex[p] = wt[p - 1], it[p - 1], ex[p - 1]
            p -= 1
        wt[p], it[p], ex[p] = w_q, i_q, e_q


@njit(**_INLINE)
def _lighter(load: np.ndarray, a: int, b: int) -> bool:
    """The ranking of bins: by load, equal loads with the higher index first, so the last is the busiest
    bin with the lowest index."""
    return load[a] < load[b] or (load[a] == load[b] and a > b)


@njit(**_INLINE)
def _rerank(order: np.ndarray, pos: np.ndarray, load: np.ndarray, b: int) -> None:
    """Move bin ``b`` to its place in the ranking ``order`` (``pos``: its inverse) after its load changed."""
    p = pos[b]
    while p > 0 and _lighter(load, b, order[p - 1]):
        order[p] = order[p - 1]
        pos[order[p]] = p
        p -= 1
    while p < order.shape[0] - 1 and _lighter(load, order[p + 1], b):
        order[p] = order[p + 1]
        pos[order[p]] = p
        p += 1
    order[p] = b
    pos[b] = p


@njit(**_JIT)
def _masks(cap: int, most: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit masks of the subsets of ``cap`` items with 2 .. ``most`` members, grouped by size.

    Returns (masks, start): the masks with k members are ``masks[start[k] : start[k + 1]]``
    (``start`` has ``most + 2`` entries; sizes 0 and 1 are empty groups).
    """
    start = np.zeros(most + 2, np.int64)
    count = 0
    for k in range(most + 1):
        start[k] = count
        if k >= 2:
            for mask in range(1 << cap):
                bits = 0
                for q in range(cap):
                    bits += (mask >> q) & 1
                if bits == k:
                    count += 1
    start[most + 1] = count
    masks = np.empty(count, np.int64)
    fill = 0
    for k in range(2, most + 1):
        for mask in range(1 << cap):
            bits = 0
            for q in range(cap):
                bits += (mask >> q) & 1
            if bits == k:
                masks[fill] = mask
                fill += 1
    return masks, start


@njit(**_INLINE)
def _group_sums(wt: np.ndarray, b: int, cap: int, masks: np.ndarray, sums: np.ndarray, chosen: np.ndarray,
                start: np.ndarray) -> None:
    """Sums of bin ``b``'s item groups of each size (``masks`` of positions in the bin), each size in
    decreasing order of sum: ``sums`` and ``chosen`` (the mask) [len(masks)]."""
    for k in range(2, start.shape[0] - 1):
        lo = start[k]
        for r in range(lo, start[k + 1]):
            mask = masks[r]
            f = 0.0
            for q in range(cap):
                if (mask >> q) & 1:
                    f += wt[b * cap + q]
            p = r
            while p > lo and sums[p - 1] < f:
                sums[p], chosen[p] = sums[p - 1], chosen[p - 1]
                p -= 1
            sums[p], chosen[p] = f, mask


@njit(**_INLINE)
def _closest(
    mine: np.ndarray, theirs: np.ndarray, top: float, light: float, best: float
) -> tuple[float, int, int]:
    """The exchange of a group of the busy bin (sums ``mine``, decreasing) for an equal-size group of a
    partner (``theirs``, decreasing) that leaves the pair lightest: (new pair maximum, i, j), or
    (``best``, -1, -1) when none beats ``best``.

    Giving away ``a`` and taking ``b`` leaves the pair at ``max(top - a + b, light + a - b)`` =
    ``(top + light) / 2 + |a - b - (top - light) / 2|``; as ``a`` decreases the best ``b`` does too, so one
    merge-like pass over both lists finds it.
    """
    aim = (top - light) * 0.5
    found_i, found_j = -1, -1
    j = 0
    size = theirs.shape[0]
    for i in range(mine.shape[0]):
        a = mine[i]
        while j < size and a - theirs[j] < aim:
            j += 1
        for q in range(max(j - 1, 0), min(j + 1, size)):
            v = max(top + (theirs[q] - a), light + (a - theirs[q]))
            if v < best:
                best, found_i, found_j = v, i, q
    return best, found_i, found_j


@njit(**_INLINE)
def _rank(load: np.ndarray, order: np.ndarray, pos: np.ndarray) -> None:
    """Rank the bins by :func:`_lighter` into ``order`` (lightest first) and its inverse ``pos``."""
    bins = load.shape[0]
    argsort(load, order, False)
    k = 0
    while k < bins - 1:  # equal loads: the higher index first
        j = k
        while j < bins - 1 and load[order[j + 1]] == load[order[k]]:
            j += 1
        order[k : j + 1] = order[k : j + 1][::-1].copy()
        k = j + 1
    for k in range(bins):
        pos[order[k]] = k


@njit(**_INLINE)
def _pair_move(
    wt: np.ndarray, ex: np.ndarray, here: np.ndarray, n: int, cap: int, hot: int, o: int, top: float, light: float,
    best: float, groups: bool, sums: np.ndarray, chosen: np.ndarray, start: np.ndarray,
) -> tuple[float, int, int]:
    """The best exchange between the busier bin ``hot`` (load ``top``) and ``o`` (load ``light``) that
    beats ``best``: (new pair maximum, mask given, mask taken), masks 0 when none does.

    One item for one (with ``n`` > 0 only those that put no second replica of
    an expert on a bin, every pair checked), and with ``groups`` k items for
    k from the bins' sorted group sums (``sums``/``chosen`` rows ``hot`` and
    ``o``, fresh; see :func:`_group_sums`).
    """
    give, take = 0, 0
    h0, o0 = hot * cap, o * cap
    if n > 0:
        for i in range(h0, h0 + cap):
            for j in range(o0, o0 + cap):
                v = max(top + (wt[j] - wt[i]), light + (wt[i] - wt[j]))
                if v < best and here[o * n + ex[i]] == 0 and here[hot * n + ex[j]] == 0:
                    best, give, take = v, 1 << (i - h0), 1 << (j - o0)
        return best, give, take
    v, i, j = _closest(wt[h0 : h0 + cap], wt[o0 : o0 + cap], top, light, best)
    if i >= 0:
        best, give, take = v, 1 << i, 1 << j
    if groups:
        for size in range(2, start.shape[0] - 1):
            lo, hi = start[size], start[size + 1]
            v, i, j = _closest(sums[hot, lo:hi], sums[o, lo:hi], top, light, best)
            if i >= 0:
                best, give, take = v, chosen[hot, lo + i], chosen[o, lo + j]
    return best, give, take


@njit(**_INLINE)
def _move(
    wt: np.ndarray, it: np.ndarray, ex: np.ndarray, here: np.ndarray, n: int, cap: int, load: np.ndarray,
    hot: int, other: int, give: int, take: int,
) -> None:
    """Exchange the items of ``hot`` set in ``give`` with those of ``other`` set in ``take`` (the q-th for
    the q-th), keep both bins sorted and their loads and replica counts (``here``, when ``n`` > 0) current."""
    h0, o0 = hot * cap, other * cap
    i, j = 0, 0
    while True:
        while i < cap and not (give >> i) & 1:
            i += 1
        while j < cap and not (take >> j) & 1:
            j += 1
        if i == cap or j == cap:
            break
        if n > 0:
            here[hot * n + ex[h0 + i]] -= 1
            here[other * n + ex[h0 + i]] += 1
            here[other * n + ex[o0 + j]] -= 1
            here[hot * n + ex[o0 + j]] += 1
        _exchange(wt, it, ex, h0 + i, o0 + j)
        i += 1
        j += 1
    _sort_bin(wt, it, ex, hot, cap)
    _sort_bin(wt, it, ex, other, cap)
    load[hot] = _bin_sum(wt, hot, cap)
    load[other] = _bin_sum(wt, other, cap)


@njit(**_JIT)
def refine(
    wt: np.ndarray, it: np.ndarray, ex: np.ndarray, bins: int, max_iters: int, floor: float,
    n: int, partners: int, sweeps: int, masks: np.ndarray, start: np.ndarray,
) -> bool:
    """Exchanges of items between bins that lower the busiest bin, in place: ``sweeps``, then best moves on
    the busiest bin until none helps (at most ``max_iters``).

    A move between two bins is the exchange that leaves the larger of their
    new loads lowest: of one item for one item, and, given the masks of the
    groups to try (``masks``/``start`` from :func:`_masks`; for bins of 3-6
    items), of k items for k (2 <= k <= cap / 2). Together those are
    every equal-size re-split of the pair's items (giving k of cap away is
    giving cap - k with the bins' names swapped), so they find the
    two-for-two and larger exchanges single swaps miss. A move is made only
    when the busier bin of the pair gets lighter.

    A sweep ranks the bins by load and pairs the k-th busiest with the
    ((k + s) mod (bins / 2))-th lightest in sweep s: one move each, half the
    bins at once, so a few sweeps pull every bin towards the mean in
    O(slots) work (alone, the best moves on the busiest bin need about one
    iteration per bin above the final maximum). Sweeps stop early once one
    moves nothing. Then each iteration takes the busiest bin (the lowest
    index on ties) and makes its best move: one-for-one with any of the
    :data:`_SCAN` lightest bins, k for k with the ``partners`` lightest.

    How it stays cheap: bins stay ranked by load and partners are visited
    from the lightest, so a bin whose mean with the busiest already reaches
    the best move found ends the search. Each bin keeps its items, and the
    sums of its groups of each size, in decreasing order, so the best
    exchange of two bins comes from merge-like passes (:func:`_closest`).
    With ``n`` > 0, no move puts two replicas of one expert (``ex``) on a
    bin (every pair is then checked; no group exchanges). Stops once the
    busiest bin is at or below ``floor``. Returns whether it settled (no move
    helps, or the floor is reached) rather than ran out of iterations.
    """
    m = wt.shape[0]
    cap = m // bins
    if bins < 2 or cap < 2:
        return True
    load = np.empty(bins, np.float64)
    for b in range(bins):
        load[b] = _bin_sum(wt, b, cap)
    if load.max() <= floor:
        return True
    dense = n > 0
    here = _presence(ex, bins, n) if dense else np.zeros(0, np.int32)
    for b in range(bins):
        _sort_bin(wt, it, ex, b, cap)
    order = np.empty(bins, np.int64)
    pos = np.empty(bins, np.int64)
    groups = masks.shape[0] > 0 and not dense
    sums = np.empty((bins if groups else 0, masks.shape[0]), np.float64)
    chosen = np.empty((bins if groups else 0, masks.shape[0]), np.int64)
    fresh = np.zeros(bins, np.bool_)
    half = bins // 2
    for s in range(sweeps):
        _rank(load, order, pos)
        moved = False
        for k in range(half):
            hot, o = order[bins - 1 - k], order[(k + s) % half]
            if _lighter(load, hot, o):
                hot, o = o, hot
            if load[hot] <= floor:
                continue
            if groups:
                for b in (hot, o):
                    if not fresh[b]:
                        _group_sums(wt, b, cap, masks, sums[b], chosen[b], start)
                        fresh[b] = True
            top = load[hot]
            v, give, take = _pair_move(wt, ex, here, n, cap, hot, o, top, load[o], top * (1 - TOL), groups, sums,
                                       chosen, start)
            if give:
                _move(wt, it, ex, here, n, cap, load, hot, o, give, take)
                fresh[hot] = fresh[o] = False
                moved = True
        if not moved:
            break
    if max_iters <= 0:
        return False
    _rank(load, order, pos)
    for _ in range(max_iters):
        hot = order[bins - 1]
        top = load[hot]
        if top <= floor:
            return True
        best = top * (1 - TOL)
        other, give, take = -1, 0, 0
        if groups and not fresh[hot]:
            _group_sums(wt, hot, cap, masks, sums[hot], chosen[hot], start)
            fresh[hot] = True
        for k in range(min(bins - 1, _SCAN)):
            o = order[k]
            if (top + load[o]) * 0.5 >= best:
                break
            with_groups = groups and k < partners
            if with_groups and not fresh[o]:
                _group_sums(wt, o, cap, masks, sums[o], chosen[o], start)
                fresh[o] = True
            v, g, t = _pair_move(wt, ex, here, n, cap, hot, o, top, load[o], best, with_groups, sums, chosen, start)
            if g:
                best, other, give, take = v, o, g, t
        if other < 0:
            return True
        _move(wt, it, ex, here, n, cap, load, hot, other, give, take)
        fresh[hot] = fresh[other] = False
        _rerank(order, pos, load, hot)
        _rerank(order, pos, load, other)
    return False


@njit(**_JIT)
def dedupe(wt: np.ndarray, it: np.ndarray, ex: np.ndarray, bins: int, n: int, max_iters: int) -> None:
    """Split replicas of one expert that share a bin, by swaps that hurt balance least, in place.

    Each iteration takes the first slot whose expert also sits elsewhere on
    its bin and swaps it with the item, on another bin, that creates no new
    duplicate and leaves the lighter larger-of-the-two-bins load (the first
    such item on ties). A duplicate that no swap can split (e.g. an expert
    with more replicas than bins) is left alone.
    """
    m = wt.shape[0]
    cap = m // bins
    if bins < 2 or cap < 2:
        return
    here = _presence(ex, bins, n)
    total = np.zeros(n, np.int64)
    for s in range(m):
        total[ex[s]] += 1
    stuck = np.zeros(m, np.bool_)
    for s in range(m):
        stuck[s] = total[ex[s]] > bins
    load = np.empty(bins, np.float64)
    for b in range(bins):
        load[b] = _bin_sum(wt, b, cap)
    for _ in range(max_iters):
        src = -1
        for s in range(m):
            if not stuck[s] and here[(s // cap) * n + ex[s]] > 1:
                src = s
                break
        if src < 0:
            break
        g = src // cap
        a, ea = wt[src], ex[src]
        best, dst = np.inf, -1
        for t in range(m):
            o = t // cap
            if o == g or here[o * n + ea] != 0 or here[g * n + ex[t]] != 0:
                continue
            v = max(load[g] - a + wt[t], load[o] + a - wt[t])
            if v < best:
                best, dst = v, t
        if dst < 0:
            for s in range(g * cap, (g + 1) * cap):
                if ex[s] == ea:
                    stuck[s] = True
            continue
        o = dst // cap
        here[g * n + ea] -= 1
        here[o * n + ea] += 1
        here[o * n + ex[dst]] -= 1
        here[g * n + ex[dst]] += 1
        _exchange(wt, it, ex, src, dst)
        load[g] = _bin_sum(wt, g, cap)
        load[o] = _bin_sum(wt, o, cap)


@njit(**_JIT)
def _to_view(ws: np.ndarray, expert: np.ndarray, slot: np.ndarray, wt: np.ndarray, it: np.ndarray, ex: np.ndarray):
    for k in range(ws.shape[0]):
        s = slot[k]
        wt[s], it[s], ex[s] = ws[k], k, expert[k]


@njit(**_JIT)
def refine_rows(
    w: np.ndarray, slot_of: np.ndarray, bins: int, max_iters: int, experts: np.ndarray, floor: np.ndarray,
    resplit: bool, partners: int, sweeps: int,
) -> np.ndarray:
    """:func:`refine` on every row of slot-form packings ``slot_of`` [B, m] of ``w`` [B, m]; new slots [B, m].

    ``experts`` [B, m] (or [0, 0]: none): the expert of each item, whose
    duplicates on a bin the swaps avoid. ``floor`` [B]. ``resplit``: also
    exchange groups of items (for bins of 3-6 items).
    """
    rows, m = w.shape
    n = int(experts.max()) + 1 if experts.shape[0] else 0
    cap = m // max(bins, 1)
    masks, start = _masks(cap, cap // 2 if resplit and not n else 1)
    out = np.empty((rows, m), np.int64)
    wt = np.empty(m, np.float64)
    it = np.empty(m, np.int64)
    ex = np.zeros(m, np.int64)
    for r in range(rows):
        _to_view(w[r], experts[r] if n else ex, slot_of[r], wt, it, ex)
        refine(wt, it, ex, bins, max_iters, floor[r], n, partners, sweeps, masks, start)
        for s in range(m):
            out[r, it[s]] = s
    return out


@njit(**_JIT)
def dedupe_rows(w: np.ndarray, slot_of: np.ndarray, bins: int, experts: np.ndarray, max_iters: int) -> np.ndarray:
    """:func:`dedupe` on every row of slot-form packings ``slot_of`` [B, m]; new slots [B, m]."""
    rows, m = w.shape
    n = int(experts.max()) + 1 if rows else 0
    out = np.empty((rows, m), np.int64)
    wt = np.empty(m, np.float64)
    it = np.empty(m, np.int64)
    ex = np.empty(m, np.int64)
    for r in range(rows):
        _to_view(w[r], experts[r], slot_of[r], wt, it, ex)
        dedupe(wt, it, ex, bins, n, max_iters)
        for s in range(m):
            out[r, it[s]] = s
    return out


# --- the whole arrangement of one row ----------------------------------------------------------


@njit(**_JIT)
def arrange(
    w: np.ndarray, counts: np.ndarray, slots: int, bins: int, packers: np.ndarray, mult: np.ndarray,
    swap_iters: int, fixup_rounds: int, spread: bool, floor: np.ndarray, resplit: bool, partners: int,
    sweeps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack and refine the replicas given by ``counts`` [B, n] of loads ``w`` [B, n]: (expert of each slot, busiest load).

    Per row: the replicas in processing order (:func:`replicas`), each packer
    of ``packers`` (codes; ``mult`` [B, R, S] for ``restarts``), keeping the
    packing whose busiest bin is lightest (the first listed on ties; the
    rest are skipped once one reaches ``floor``), then
    :func:`refine` with ``swap_iters``, then ``fixup_rounds`` rounds of
    :func:`fixup`, each followed by :func:`refine` again. With ``spread``
    (the ``diverse`` packer) duplicates are repaired (:func:`dedupe`) and the
    swaps avoid new ones. ``floor`` [B], ``partners`` and ``sweeps``: see :func:`refine`; ``resplit``:
    also exchange groups of items (for bins of 3-6 items).
    Returns phy [B, S] int64, the busiest bin's load [B] and whether the
    last refine settled [B] (see :func:`refine`; True without swaps).
    """
    rows, n = w.shape
    cap = slots // bins
    phy = np.empty((rows, slots), np.int64)
    top = np.empty(rows, np.float64)
    settled = np.ones(rows, np.bool_)
    c = np.empty(n, np.int64)
    expert = np.empty(slots, np.int64)
    ws = np.empty(slots, np.float64)
    slot = np.empty(slots, np.int64)
    wt, it, ex = np.empty(slots, np.float64), np.empty(slots, np.int64), np.empty(slots, np.int64)
    bwt, bit, bex = np.empty_like(wt), np.empty_like(it), np.empty_like(ex)
    bin_of = np.arange(slots) // cap
    refine_n = n if spread else 0
    masks, start = _masks(cap, cap // 2 if resplit and not spread else 1)
    for r in range(rows):
        c[:] = counts[r]
        replicas(w[r], c, expert, ws)
        best = np.inf
        for code in packers:
            pack(code, ws, bins, slot, mult[r], KK)
            _to_view(ws, expert, slot, wt, it, ex)
            if code == DIVERSE:
                dedupe(wt, it, ex, bins, n, slots)
            score = 0.0
            for b in range(bins):
                score = max(score, _bin_sum(wt, b, cap))
            if score < best:
                best = score
                bwt[:], bit[:], bex[:] = wt, it, ex
            if best <= floor[r]:
                break  # already as low as the caller needs: the other packers could not matter
        if swap_iters or sweeps:
            settled[r] = refine(bwt, bit, bex, bins, swap_iters, floor[r], refine_n, partners, sweeps, masks, start)
        for _ in range(fixup_rounds):
            if fixup(w[r], c, bex, bin_of, bins, spread) >= 0:
                for s in range(slots):
                    bwt[s] = w[r, bex[s]] / c[bex[s]]
            elif settled[r]:
                break  # nothing moved and the swaps had settled: the later rounds would repeat this one
            if swap_iters or sweeps:
                settled[r] = refine(bwt, bit, bex, bins, swap_iters, floor[r], refine_n, partners, sweeps, masks, start)
        score = 0.0
        for b in range(bins):
            score = max(score, _bin_sum(bwt, b, cap))
        top[r] = score
        phy[r] = bex
    return phy, top, settled


@njit(**_JIT)
def log2phy_rows(phy: np.ndarray, experts: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """log2phy [L, E, width] (each expert's slots in increasing order, -1 padded) and logcnt [L, E] of
    phy2log [L, S] (-1: an empty slot); ``width`` must be at least the most replicas of an expert."""
    layers, slots = phy.shape
    out = np.full((layers, experts, width), -1, np.int64)
    count = np.zeros((layers, experts), np.int64)
    for layer in range(layers):
        for s in range(slots):
            e = phy[layer, s]
            if e >= 0:
                out[layer, e, count[layer, e]] = s
                count[layer, e] += 1
    return out, count
