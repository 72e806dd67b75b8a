"""Exact maximum-weight assignment, batched: which new GPU keeps which old GPU's replicas.

Relabelling a new plan's GPUs (and nodes) to keep the most replicas in place is
a linear assignment problem per layer; :func:`max_weight_assignment` solves a
batch of them at once with tensor operations.
"""

from __future__ import annotations

import torch


def max_weight_assignment(weight: torch.Tensor) -> torch.Tensor:
    """Exact maximum-weight perfect matching for a batch of square matrices.

    ``weight`` is float [B, n, n]; returns int64 [B, n] with ``col[b, i]`` the
    column given to row i. Shortest augmenting paths with dual potentials (the
    Hungarian method in Jonker-Volgenant form, as in Crouse 2016) run on all B
    problems at once: column and row reductions match most rows of a
    near-permutation for free, then each remaining row is added by a Dijkstra
    search whose steps are tensor operations over the batch (ties go to free
    columns, which ends searches early on integer weights). Python loops run
    over augmentations and search steps, never over problems or entries.
    """
    if weight.dim() != 3 or weight.shape[1] != weight.shape[2]:
        raise ValueError(f"weight must be [B, n, n], got {tuple(weight.shape)}")
    b, n, _ = weight.shape
    if n == 0 or b == 0:
        return torch.zeros(b, n, dtype=torch.int64)
    cost = -weight.to(torch.float64)
    cols = torch.arange(n).expand(b, n)
    v, best_row = cost.min(dim=1)
    u = torch.zeros(b, n, dtype=torch.float64)
    first = torch.full((b, n), n, dtype=torch.int64).scatter_reduce_(1, best_row, cols, reduce="amin")
    wins = first.gather(1, best_row) == cols
    row4col = torch.where(wins, best_row, -1)
    col4row = torch.where(first < n, first, -1)
    _reduce_rows(cost, u, v, row4col, col4row)
    free = col4row < 0
    free_rows = torch.sort(free.to(torch.int8), dim=1, descending=True, stable=True).indices
    n_free = free.sum(dim=1)
    for step in range(int(n_free.max())):
        _augment(cost, u, v, row4col, col4row, free_rows[:, step], n_free > step)
    return col4row


def _reduce_rows(cost: torch.Tensor, u: torch.Tensor, v: torch.Tensor, row4col: torch.Tensor,
                 col4row: torch.Tensor) -> None:
    """Row reduction: match free rows whose cheapest column is free, while that helps (in place).

    A free row's potential rises to its smallest reduced cost, which keeps every
    reduced cost >= 0; if that minimum lies on a free column the edge is tight
    and joins the matching. Rows competing for one column: the lowest row wins
    and the others try again in the next pass.
    """
    b, n = col4row.shape
    rows = torch.arange(n).expand(b, n)
    for _ in range(n):
        row_free, col_free = col4row < 0, row4col < 0
        if not bool((row_free.any(dim=1) & col_free.any(dim=1)).any()):
            return
        reduced = cost - v.unsqueeze(1)
        low = reduced.min(dim=2).values
        u.copy_(torch.where(row_free, low, u))
        tight = (reduced == low.unsqueeze(2)) & col_free.unsqueeze(1) & row_free.unsqueeze(2)
        has = tight.any(dim=2)
        want = tight.to(torch.int8).argmax(dim=2)
        winner = torch.full((b, n), n, dtype=torch.int64)
        winner.scatter_reduce_(1, want, torch.where(has, rows, n), reduce="amin")
        won = winner < n
        if not bool(won.any()):
            return
        row4col.copy_(torch.where(won, winner, row4col))
        padded = torch.cat([col4row, col4row.new_full((b, 1), -1)], dim=1)
        padded.scatter_(1, torch.where(won, winner, n), rows)
        col4row.copy_(padded[:, :n])


def _augment(cost: torch.Tensor, u: torch.Tensor, v: torch.Tensor, row4col: torch.Tensor, col4row: torch.Tensor,
             start: torch.Tensor, active: torch.Tensor) -> None:
    """Match row ``start`` in every ``active`` problem along a shortest augmenting path (in place).

    Dijkstra over reduced costs ``cost - u - v`` from the free row until a free
    column is reached, then the potentials of the visited rows and columns are
    updated and the matching flips along the path.
    """
    b, n = col4row.shape
    inf = float("inf")
    rows = cost.reshape(b * n, n)
    base = torch.arange(b).unsqueeze(1) * n
    free_col = (row4col < 0).to(torch.int8)
    spc = torch.full((b, n), inf, dtype=torch.float64)
    path = torch.zeros(b, n, dtype=torch.int64)
    seen = torch.zeros(b, n, dtype=torch.bool)
    min_val = torch.zeros(b, 1, dtype=torch.float64)
    i = start.unsqueeze(1)
    j = torch.zeros(b, 1, dtype=torch.int64)
    searching = active.unsqueeze(1)
    while bool(searching.any()):
        r = rows.index_select(0, (base + i).squeeze(1)) + (min_val - u.gather(1, i) - v)
        better = (r < spc) & ~seen & searching
        spc = torch.where(better, r, spc)
        path = torch.where(better, i, path)
        masked = spc.masked_fill(seen, inf)
        low = masked.min(dim=1, keepdim=True).values
        tied = (masked == low).to(torch.int8)
        j = torch.where(searching, (tied + tied * free_col).argmax(dim=1, keepdim=True), j)
        seen.scatter_(1, j, True)
        min_val = torch.where(searching, low, min_val)
        owner = row4col.gather(1, j)
        go_on = searching & (owner >= 0)
        i = torch.where(go_on, owner, i)
        searching = go_on
    sink = j.squeeze(1)
    bat = torch.arange(b)
    act = active.unsqueeze(1)
    step = torch.where(seen & act, min_val - spc, 0.0)
    v.sub_(step)
    visited = seen & act & (row4col >= 0)
    u.scatter_add_(1, row4col.clamp(min=0), torch.where(visited, step, 0.0))
    u[bat, start] += torch.where(active, min_val.squeeze(1), 0.0)
    j = sink
    walking = active.clone()
    while bool(walking.any()):
        i = path[bat, j]
        row4col[bat, j] = torch.where(walking, i, row4col[bat, j])
        prev = col4row[bat, i]
        col4row[bat, i] = torch.where(walking, j, prev)
        walking = walking & (i != start)
        j = torch.where(walking, prev, j)
