"""Exact maximum-weight assignment, batched: which new GPU keeps which old GPU's replicas.

Relabelling a new plan's GPUs (and nodes) to keep the most replicas in place is
a linear assignment problem per layer; :func:`max_weight_assignment` solves a
batch of them with compiled calls (Numba), blocks of problems on as many threads as torch uses.
"""

from __future__ import annotations

import numpy as np
import torch

from ..jit import njit
from ..threads import by_rows

_INF = np.inf


def max_weight_assignment(weight: torch.Tensor) -> torch.Tensor:
    """Exact maximum-weight perfect matching for a batch of square matrices.

    ``weight`` is float [B, n, n]; returns int64 [B, n] with ``col[b, i]`` the
    column given to row i. Shortest augmenting paths with dual potentials (the
    Hungarian method in Jonker-Volgenant form, as in Crouse 2016, "On
    implementing 2D rectangular assignment algorithms"): column and row
    reductions match most rows of a near-permutation for free, then each
    remaining row joins by a Dijkstra search over reduced costs. Ties go to the
    lowest index, and to free columns first within a search (which ends
    searches early on integer weights), so results are deterministic.
    """
    if weight.dim() != 3 or weight.shape[1] != weight.shape[2]:
        raise ValueError(f"weight must be [B, n, n], got {tuple(weight.shape)}")
    b, n, _ = weight.shape
    if n == 0 or b == 0:
        return torch.zeros(b, n, dtype=torch.int64)
    cost = np.ascontiguousarray(-weight.detach().to(torch.float64).cpu().numpy())
    (col,) = by_rows(b, lambda at: (_solve_all(cost[at]),))
    return torch.from_numpy(col)


@njit(cache=True, nogil=True)
def _solve_all(cost: np.ndarray) -> np.ndarray:
    """Column [B, n] of each row for the minimum-cost assignment of every cost [B, n, n]."""
    b, n, _ = cost.shape
    col4row = np.empty((b, n), dtype=np.int64)
    for k in range(b):
        col4row[k] = _solve(cost[k])
    return col4row


@njit(cache=True, nogil=True)
def _solve(c: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of one square ``c``: the column of each row."""
    n = c.shape[0]
    u = np.zeros(n)
    v = np.empty(n)
    row4col = np.full(n, -1, dtype=np.int64)
    col4row = np.full(n, -1, dtype=np.int64)
    # Column reduction: v[j] is column j's cheapest cost; the lowest column
    # whose cheapest row is r claims r.
    for j in range(n):
        best = 0
        for i in range(1, n):
            if c[i, j] < c[best, j]:
                best = i
        v[j] = c[best, j]
        if col4row[best] < 0:
            col4row[best] = j
            row4col[j] = best
    _reduce_rows(c, u, v, row4col, col4row)
    for start in range(n):
        if col4row[start] < 0:
            _augment(c, u, v, row4col, col4row, start)
    return col4row


@njit(cache=True, nogil=True)
def _reduce_rows(c: np.ndarray, u: np.ndarray, v: np.ndarray, row4col: np.ndarray, col4row: np.ndarray) -> None:
    """Row reduction: match free rows whose cheapest column is free, while that helps (in place).

    In each pass a free row's potential rises to its smallest reduced cost,
    which keeps every reduced cost >= 0; if that minimum lies on a free column
    the edge is tight: the row's lowest such column goes to the lowest row
    that wants it, and the rows that lost try again in the next pass.
    """
    n = c.shape[0]
    want = np.empty(n, dtype=np.int64)
    for _ in range(n):
        for i in range(n):
            want[i] = -1
            if col4row[i] >= 0:
                continue
            low = _INF
            for j in range(n):
                low = min(low, c[i, j] - v[j])
            u[i] = low
            for j in range(n):
                if row4col[j] < 0 and c[i, j] - v[j] == low:
                    want[i] = j
                    break
        won = False
        for i in range(n):
            j = want[i]
            if j >= 0 and row4col[j] < 0:
                row4col[j] = i
                col4row[i] = j
                won = True
        if not won:
            return


@njit(cache=True, nogil=True)
def _augment(c: np.ndarray, u: np.ndarray, v: np.ndarray, row4col: np.ndarray, col4row: np.ndarray,
             start: int) -> None:
    """Match free row ``start`` along a shortest augmenting path (in place).

    Dijkstra over reduced costs ``c - u - v`` from ``start`` until a free
    column is reached; then the potentials of the visited rows and columns
    move by their distance below the path's length, which keeps reduced costs
    >= 0 and those on the path 0, and the matching flips along the path.
    """
    n = c.shape[0]
    spc = np.full(n, _INF)
    path = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=np.bool_)
    min_val = 0.0
    i = start
    j = 0
    while True:
        base = min_val - u[i]
        for k in range(n):
            if not seen[k]:
                r = c[i, k] + (base - v[k])
                if r < spc[k]:
                    spc[k] = r
                    path[k] = i
        low = _INF
        j = -1
        for k in range(n):
            if seen[k]:
                continue
            if spc[k] < low:
                low, j = spc[k], k
            elif spc[k] == low and row4col[k] < 0 and row4col[j] >= 0:
                j = k
        seen[j] = True
        min_val = low
        if row4col[j] < 0:
            break
        i = row4col[j]
    for k in range(n):
        if seen[k]:
            step = min_val - spc[k]
            v[k] -= step
            if row4col[k] >= 0:
                u[row4col[k]] += step
    u[start] += min_val
    while True:
        i = path[j]
        row4col[j] = i
        prev = col4row[i]
        col4row[i] = j
        if i == start:
            return
        j = prev
