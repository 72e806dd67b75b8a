"""Migration-aware planning: keep experts where they are, and plan under a move budget.

Moving a replica means copying an expert's weights to another GPU, so a new
plan should move as few as it can. Three steps, each batched over layers:

:func:`relabel`
    GPUs are interchangeable (and nodes are, under the hierarchical policy), so
    the GPUs of a new plan can be renamed to match the old placement without
    changing any GPU's load. Choosing the renaming that keeps the most replicas
    in place is an assignment problem per layer, solved exactly by
    :func:`max_weight_assignment`; then the slots within each GPU are permuted
    so that a replica kept on its GPU also keeps its slot.
:func:`swap_back`
    Balance is set by the busiest GPU, so replicas can trade GPUs freely as
    long as no GPU ends above it: swaps that put replicas back where they were
    cost nothing and often halve the moves again.
:func:`budgeted`
    ``--max-moves M`` (per layer) or ``--max-moves 5%`` (of all slots, in
    total): start from the old placement and take, one by one, the changes
    that most lower the busiest GPUs (:mod:`eplb_cli.planning.budget`), keeping every
    expert with a replica.

:func:`follow` chains them. A replica "moves" when its slot holds a different
expert afterwards (:func:`eplb_cli.metrics.count_moves` counts them, split
intra-/inter-node).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import EplbError, arg
from ..jit import njit
from ..metrics import live_gpus
from ..placement import Placement, replica_counts
from ..threads import by_rows
from .assignment import max_weight_assignment
from .budget import MoveBudget, budget_path

_FORCE = 1.0e6
"""Weight bonus (and penalty) that pins excluded GPUs to themselves in the assignment."""


# ---------------------------------------------------------------- relabelling


def check_compatible(old: Placement, new: Placement, old_name: str = "previous", new_name: str = "the new plan") -> None:
    """Both placements must describe the same model and cluster shape."""
    a, b = old.topology, new.topology
    if old.layers != new.layers or a.experts != b.experts or a.slots != b.slots or a.gpus != b.gpus:
        raise EplbError(
            f"{old_name} ({old.layers} layers x {a.experts} experts, {a.slots} slots on {a.gpus} GPUs) does not match "
            f"{new_name} ({new.layers} layers x {b.experts} experts, {b.slots} slots on {b.gpus} GPUs); "
            "give a placement made for the same model and cluster"
        )


def stay_matrix(old: Placement, new: Placement) -> torch.Tensor:
    """Replicas that stay when new GPU h takes old GPU g's place, int64 [L, G, G] (h, g).

    Equals the sum over experts of min(copies on new GPU h, copies on old GPU
    g): the r-th copy of expert e on new GPU h stays on old GPU g exactly when
    g holds more than r copies of e. One compiled pass per layer
    (:func:`_stay_layers`) walks each new replica over the old GPUs holding
    its expert, so the work grows with slots x replicas per expert, not GPUs squared.
    """
    topo = new.topology
    old_np, new_np = np.ascontiguousarray(old.phy2log.numpy()), np.ascontiguousarray(new.phy2log.numpy())
    (out,) = by_rows(new.layers, lambda at: (_stay_layers(old_np[at], new_np[at], topo.gpus, topo.slots_per_gpu,
                                                           topo.experts),))
    return torch.from_numpy(out)


@njit(cache=True, nogil=True)
def _stay_layers(old: np.ndarray, new: np.ndarray, gpus: int, k: int, experts: int) -> np.ndarray:
    """:func:`stay_matrix` of phy2log rows ``old`` and ``new`` [L, S]."""
    out = np.zeros((old.shape[0], gpus, gpus), dtype=np.int64)
    for layer in range(old.shape[0]):
        held, start = _slots_by_expert(old[layer], experts)  # in slot order, so grouped by GPU
        row = new[layer]
        for q in range(row.shape[0]):
            e = row[q]
            if e < 0:
                continue
            h = q // k
            r = 0  # earlier copies of e on new GPU h
            for p in range(h * k, q):
                r += row[p] == e
            j = start[e]
            while j < start[e + 1]:
                g, n = held[j] // k, 1
                while j + n < start[e + 1] and held[j + n] // k == g:
                    n += 1
                if n > r:
                    out[layer, h, g] += 1
                j += n
    return out


def gpu_mapping(old: Placement, new: Placement) -> torch.Tensor:
    """Where each GPU of ``new`` should go to keep the most replicas in place, int64 [L, G].

    Under the hierarchical policy GPUs stay grouped by node: the best GPU
    matching is found for every (new node, old node) pair, then nodes are
    matched on those totals. Excluded GPUs of the new topology map to themselves.
    """
    topo = new.topology
    layers, g = new.layers, topo.gpus
    stay = stay_matrix(old, new).to(torch.float64)
    if topo.excluded_gpus:
        dead = ~live_gpus(topo)
        pinned = dead.unsqueeze(1) | dead.unsqueeze(0)
        stay = torch.where(pinned, torch.full_like(stay, -_FORCE), stay)
        stay = stay + torch.diag(dead.to(torch.float64) * 2 * _FORCE)
    if not topo.hierarchical or topo.nodes == 1:
        return max_weight_assignment(stay)
    n, per = topo.nodes, topo.gpus_per_node
    blocks = stay.view(layers, n, per, n, per).permute(0, 1, 3, 2, 4).reshape(-1, per, per)
    inner = max_weight_assignment(blocks)
    value = blocks.gather(2, inner.unsqueeze(2)).sum(dim=(1, 2)).view(layers, n, n)
    node_to = max_weight_assignment(value)
    inner = inner.view(layers, n, n, per)
    chosen = inner.gather(2, node_to.view(layers, n, 1, 1).expand(layers, n, 1, per)).squeeze(2)
    return (node_to.unsqueeze(2) * per + chosen).reshape(layers, g)


def keep_slots(old: torch.Tensor, new: torch.Tensor, per_gpu: int) -> torch.Tensor:
    """Permute the slots within each GPU of ``new`` so replicas ``old`` held there keep their slot.

    Both are phy2log [L, S] with the same GPUs; returns ``new`` with each GPU's
    experts reordered: the r-th copy of an expert on a GPU goes to the slot of
    ``old``'s r-th copy there when it has one, the others fill the remaining
    slots in their order (one compiled pass, :func:`_keep_rows`).
    """
    a = np.ascontiguousarray(old.reshape(-1, per_gpu).numpy())
    b = np.ascontiguousarray(new.reshape(-1, per_gpu).numpy())
    (out,) = by_rows(a.shape[0], lambda at: (_keep_rows(a[at], b[at]),))
    return torch.from_numpy(out).view(new.shape)


@njit(cache=True, nogil=True)
def _keep_rows(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """:func:`keep_slots` for rows of one GPU's slots each, ``old`` and ``new`` [R, k]."""
    rows, k = new.shape
    out = np.empty_like(new)
    target = np.empty(k, dtype=np.int64)
    taken = np.zeros(k, dtype=np.bool_)
    for row in range(rows):
        taken[:] = False
        for i in range(k):
            target[i] = -1
            e = new[row, i]
            if e < 0:
                continue
            r = 0  # earlier copies of e in new's row
            for p in range(i):
                r += new[row, p] == e
            for j in range(k):
                if old[row, j] == e:
                    if r == 0:
                        target[i] = j
                        taken[j] = True
                        break
                    r -= 1
        free = 0
        for i in range(k):
            if target[i] < 0:
                while taken[free]:
                    free += 1
                target[i] = free
                free += 1
            out[row, target[i]] = new[row, i]
    return out


def relabel(old: Placement, new: Placement) -> Placement:
    """``new`` with GPUs (and, hierarchically, nodes) renamed and slots permuted to keep ``old``'s replicas.

    Every GPU keeps its set of replicas, so every balance figure of ``new``
    is unchanged (under the global policy GPUs may change node, so node loads
    can differ); only the number of moved replicas drops.
    """
    check_compatible(old, new)
    topo = new.topology
    layers, g, k = new.layers, topo.gpus, topo.slots_per_gpu
    to = gpu_mapping(old, new)
    moved = torch.empty(layers, g, k, dtype=torch.int64)
    moved.scatter_(1, to.unsqueeze(2).expand(layers, g, k), new.phy2log.view(layers, g, k))
    return Placement(keep_slots(old.phy2log, moved.view(layers, -1), k), topo)


def swap_back(old: Placement, new: Placement, load: torch.Tensor, min_gain: float = 0.005) -> Placement:
    """Swap replicas between GPUs of ``new`` to put more of them where ``old`` had them, at no cost to balance.

    A swap trades a replica that moved onto GPU g for one of the experts g
    lost, from a GPU h where a copy of it moved in; it keeps one more replica
    in place (two when h wanted the first one back). A swap is allowed only
    when neither GPU ends above the busiest GPU's load of ``new``, so every
    layer's max GPU load (hence GPU imbalance and balancedness) stays the same
    or drops; under the hierarchical policy swaps stay within a node, which
    keeps every node's load too. Replica counts never change.

    Each layer is swapped on its own, one swap at a time, in compiled calls
    (:func:`_swap_layers`, blocks of layers over threads, see
    :func:`eplb_cli.threads.by_rows`): every swap is applied at once, so the next one sees
    the loads it left. Swaps come in passes (as many swaps as the layer had
    lacking slots when the pass began); the passes stop when one keeps fewer
    than ``min_gain`` of the replicas still moved. ``new`` should already be
    relabelled (:func:`relabel`).
    """
    check_compatible(old, new)
    topo = new.topology
    cur = keep_slots(old.phy2log, new.phy2log, topo.slots_per_gpu)
    if topo.gpus == 1:
        return Placement(cur, topo)
    layers, gpus, e = new.layers, topo.gpus, topo.experts
    share = torch.cat([load.to(torch.float64) / replica_counts(cur, e).clamp(min=1),
                       torch.zeros(layers, 1, dtype=torch.float64)], dim=1)
    held = share.gather(1, torch.where(cur >= 0, cur, e))
    gpu_load = held.view(layers, gpus, -1).sum(dim=2)
    live = live_gpus(topo)
    # No GPU may end above the layer's busiest live GPU (with a relative tolerance of 1e-9 for rounding).
    cap = gpu_load[:, live].max(dim=1).values
    cap = cap + 1e-9 * cap.clamp(min=1.0)
    gpu = torch.arange(gpus)
    part = gpu // topo.gpus_per_node if topo.hierarchical else torch.zeros_like(gpu)
    out, was, shares, loads, caps = cur.numpy().copy(), old.phy2log.numpy(), share.numpy(), gpu_load.numpy(), cap.numpy()
    live_np, part_np = live.numpy(), part.numpy()

    def block(at: slice) -> tuple[np.ndarray]:
        rows = out[at]
        _swap_layers(rows, was[at], shares[at], loads[at].copy(), caps[at], live_np, part_np, topo.slots_per_gpu,
                     float(min_gain))
        return (rows,)

    (swapped,) = by_rows(layers, block)
    return Placement(torch.from_numpy(swapped), topo)


@njit(cache=True, nogil=True)
def _swap_layers(cur: np.ndarray, was: np.ndarray, share: np.ndarray, gpu_load: np.ndarray, cap: np.ndarray,
                 live: np.ndarray, part: np.ndarray, k: int, min_gain: float) -> None:
    """:func:`swap_back` on every layer of ``cur`` [L, S] (in place), towards ``was`` [L, S].

    ``share`` [L, E + 1] is one replica's load (column E: an empty slot),
    ``gpu_load`` [L, G] the GPUs' loads (updated in place), ``cap`` [L] the
    most any GPU of the layer may carry, ``live`` [G] and ``part`` [G] (node
    under the hierarchical policy, else 0) describe the GPUs.
    """
    for layer in range(cur.shape[0]):
        _swap_layer(cur[layer], was[layer], share[layer], gpu_load[layer], cap[layer], live, part, k, min_gain)


@njit(cache=True, nogil=True)
def _swap_layer(cur: np.ndarray, was: np.ndarray, share: np.ndarray, load: np.ndarray, cap: float,
                live: np.ndarray, part: np.ndarray, k: int, min_gain: float) -> None:
    """Swap one layer back, one best swap at a time (in place).

    A swap is named by three slots: ``s`` on GPU g, which lost its old
    expert y; ``t`` on GPU h (same part), where a replica of y moved in; and
    ``a`` on GPU g, holding a replica x that moved in (``a`` may be ``s``).
    After it ``s`` holds y again, ``t`` holds x, and ``a`` holds what ``s``
    held: g's load changes by ``d = share(y) - share(x)`` and h's by -d.
    The best allowed swap keeps the most replicas (2 when h lost a copy of x),
    then changes the loads least (|d|), then has the lowest (s, t, a).

    Each lacking slot caches its best candidate; a swap on GPUs g and h only
    changes candidates that start on g or h or take a replica from them, so
    only those slots are searched again.
    """
    slots = cur.shape[0]
    held, start = _slots_by_expert(cur, share.shape[0] - 1)  # slots holding e now: held[start[e]:start[e + 1]]
    owned, ostart = _slots_by_expert(was, share.shape[0] - 1)  # slots the old placement gave e
    mv = np.zeros(slots, dtype=np.bool_)  # the slot is live and holds another expert than it had
    for i in range(slots):
        mv[i] = live[i // k] and cur[i] != was[i]
    moved = 0
    for i in range(slots):
        moved += mv[i]
    # Each lacking slot's best candidate: rank (2 - kept) * 2 + |d| / cap (inf when none), slots t and a.
    rank = np.full(slots, np.inf)
    best_t = np.zeros(slots, dtype=np.int64)
    best_a = np.zeros(slots, dtype=np.int64)
    lost = np.zeros((slots // k, share.shape[0]), dtype=np.bool_)  # lost[h, e]: GPU h lost expert e
    for gpu in range(slots // k):
        _mark_lost(gpu, cur, was, k, lost)
    seen = np.zeros(slots, dtype=np.int64)  # seen[s] == stamp: s was searched again after this swap
    stamp = 0
    for s in range(slots):
        _search(s, cur, was, share, load, cap, mv, part, k, held, start, lost, rank, best_t, best_a)
    best_on = np.empty(slots // k, dtype=np.int64)  # each GPU's best lacking slot (-1: none with a candidate)
    for gpu in range(slots // k):
        best_on[gpu] = _gpu_best(gpu, rank, k)
    before_cur = np.empty(2 * k, dtype=np.int64)
    cur_before = np.empty(2 * k, dtype=np.int64)
    while True:
        lacking = 0
        for i in range(slots):
            if was[i] >= 0 and mv[i]:
                lacking += 1
        if lacking == 0:
            return
        before = moved
        for _ in range(lacking):
            bs = -1
            for gpu in range(slots // k):
                s = best_on[gpu]
                if s >= 0 and (bs < 0 or rank[s] < rank[bs]):
                    bs = s
            if bs < 0:
                return
            stamp += 1
            g, h = bs // k, best_t[bs] // k
            for q in range(k):
                # Only a slot that moved can give its expert back: remember those (-1 for the others).
                cur_before[q], cur_before[k + q] = cur[g * k + q], cur[h * k + q]
                before_cur[q] = cur[g * k + q] if mv[g * k + q] else -1
                before_cur[k + q] = cur[h * k + q] if mv[h * k + q] else -1
                moved -= mv[g * k + q] + mv[h * k + q]
            _apply(bs, best_t[bs], best_a[bs], cur, was, share, load, k)
            _mark_lost(g, cur, was, k, lost)
            _mark_lost(h, cur, was, k, lost)
            for q in range(k):
                mv[g * k + q] = live[g] and cur[g * k + q] != was[g * k + q]
                mv[h * k + q] = live[h] and cur[h * k + q] != was[h * k + q]
                moved += mv[g * k + q] + mv[h * k + q]
            # Refresh the slot lists of every expert g or h held, then the candidates that may have changed:
            # those of slots on g or h, and those of slots that lost an expert that moved in on g or h
            # (before or after: only those can be a candidate's t).
            for q in range(2 * k):
                u = (g if q < k else h) * k + q % k
                if cur_before[q] != cur[u]:
                    for e in (cur_before[q], cur[u]):
                        if e >= 0:
                            _relist(e, g, h, cur, k, held, start)
            for q in range(2 * k):
                u = (g if q < k else h) * k + q % k
                seen[u] = stamp
                _search(u, cur, was, share, load, cap, mv, part, k, held, start, lost, rank, best_t, best_a)
            best_on[g] = _gpu_best(g, rank, k)
            best_on[h] = _gpu_best(h, rank, k)
            for q in range(2 * k):
                u = (g if q < k else h) * k + q % k
                for e in (before_cur[q], cur[u] if mv[u] else -1):
                    if e >= 0:
                        for j in range(ostart[e], ostart[e + 1]):
                            v = owned[j]  # off g and h, so whether it lacks did not change
                            if seen[v] != stamp and mv[v]:
                                seen[v] = stamp
                                _search(v, cur, was, share, load, cap, mv, part, k, held, start, lost, rank,
                                        best_t, best_a)
                                best_on[v // k] = _gpu_best(v // k, rank, k)
        if before - moved < min_gain * before:
            return


@njit(cache=True, nogil=True)
def _slots_by_expert(row: np.ndarray, experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots of ``row`` grouped by expert, in slot order: ``slot[start[e]:start[e + 1]]`` hold e (-1 left out)."""
    start = np.zeros(experts + 1, dtype=np.int64)
    for i in range(row.shape[0]):
        if row[i] >= 0:
            start[row[i] + 1] += 1
    for e in range(experts):
        start[e + 1] += start[e]
    slot = np.empty(start[experts], dtype=np.int64)
    fill = start[:experts].copy()
    for i in range(row.shape[0]):
        if row[i] >= 0:
            slot[fill[row[i]]] = i
            fill[row[i]] += 1
    return slot, start


@njit(cache=True, nogil=True, inline="always")
def _search(s: int, cur: np.ndarray, was: np.ndarray, share: np.ndarray, load: np.ndarray, cap: float,
            mv: np.ndarray, part: np.ndarray, k: int, held: np.ndarray, start: np.ndarray, lost: np.ndarray,
            rank: np.ndarray, best_t: np.ndarray, best_a: np.ndarray) -> None:
    """Cache slot s's best allowed candidate (rank[s] = inf when s is not lacking or has none).

    Ties go to the lowest t, then the lowest a. ``lost[h, e]`` says whether
    GPU h lost expert e (:func:`_mark_lost`).
    """
    rank[s] = np.inf
    y = was[s]
    if y < 0 or not mv[s]:
        return
    g = s // k
    room_g = cap - load[g]
    for j in range(start[y], start[y + 1]):
        t = held[j]
        h = t // k
        if h == g or part[h] != part[g] or not mv[t]:
            continue
        room_h = cap - load[h]
        for a in range(g * k, g * k + k):
            x = cur[a]
            if x < 0 or not mv[a]:
                continue
            d = share[y] - share[x]
            if d > room_g or -d > room_h:
                continue
            r = (0.0 if lost[h, x] else 2.0) + abs(d) / cap
            if r < rank[s] or (r == rank[s] and (t < best_t[s] or (t == best_t[s] and a < best_a[s]))):
                rank[s], best_t[s], best_a[s] = r, t, a


@njit(cache=True, nogil=True, inline="always")
def _gpu_best(gpu: int, rank: np.ndarray, k: int) -> int:
    """The slot of ``gpu`` with the lowest finite rank (the first of equals), or -1."""
    best = -1
    for s in range(gpu * k, gpu * k + k):
        if rank[s] < np.inf and (best < 0 or rank[s] < rank[best]):
            best = s
    return best


@njit(cache=True, nogil=True, inline="always")
def _mark_lost(gpu: int, cur: np.ndarray, was: np.ndarray, k: int, lost: np.ndarray) -> None:
    """Set row ``gpu`` of ``lost`` [G, E + 1]: the experts ``was`` had on the GPU in a slot that now holds another."""
    for q in range(gpu * k, gpu * k + k):
        if was[q] >= 0:
            lost[gpu, was[q]] = False
    for q in range(gpu * k, gpu * k + k):
        if was[q] >= 0 and cur[q] != was[q]:
            lost[gpu, was[q]] = True


@njit(cache=True, nogil=True, inline="always")
def _apply(s: int, t: int, a: int, cur: np.ndarray, was: np.ndarray, share: np.ndarray, load: np.ndarray,
           k: int) -> None:
    """Take the swap (s, t, a): s gets y back, a gets what s held (y too when a is s), t gets x."""
    g, h = s // k, t // k
    y, x, z = cur[t], cur[a], cur[s]
    d = share[y] - share[x]
    cur[s] = y
    cur[a] = y if a == s else z
    cur[t] = x
    load[g] += d
    load[h] -= d
    _settle(cur, was, g, k)
    _settle(cur, was, h, k)


@njit(cache=True, nogil=True, inline="always")
def _relist(e: int, g: int, h: int, cur: np.ndarray, k: int, held: np.ndarray, start: np.ndarray) -> None:
    """Rewrite expert e's slot list after GPUs g and h permuted their replicas among themselves."""
    n = start[e]
    for j in range(start[e], start[e + 1]):
        gpu = held[j] // k
        if gpu != g and gpu != h:
            held[n] = held[j]
            n += 1
    for gpu in (g, h):
        for q in range(gpu * k, gpu * k + k):
            if cur[q] == e:
                held[n] = q
                n += 1


@njit(cache=True, nogil=True, inline="always")
def _settle(cur: np.ndarray, was: np.ndarray, gpu: int, k: int) -> None:
    """Permute the slots of ``gpu`` so every replica it holds that ``was`` had there sits in its old slot."""
    lo = gpu * k
    changed = True
    while changed:
        changed = False
        for i in range(lo, lo + k):
            if was[i] < 0 or cur[i] == was[i]:
                continue
            for j in range(lo, lo + k):
                if cur[j] == was[i] and cur[j] != was[j]:
                    cur[i], cur[j] = cur[j], cur[i]
                    changed = True
                    break


# ---------------------------------------------------------------- move budget


def budgeted(old: Placement, target: Placement, load: torch.Tensor, max_moves: int | MoveBudget) -> Placement:
    """At most ``max_moves`` replica moves from ``old`` towards a better balance on ``load``.

    ``max_moves`` is a count per layer, or a :class:`~eplb_cli.planning.budget.MoveBudget`
    (a count per layer or a share of all slots in total). ``target`` should
    already be relabelled to ``old`` (:func:`relabel`), so that taking it
    whole moves as little as it can. The plan is read off one greedy path from
    ``old`` (:func:`eplb_cli.planning.budget.budget_path`): per layer its longest
    prefix within the count (or the whole target where it fits); for a share,
    the prefixes that lower the imbalance most in total. Moves the topology
    forces (slots of newly excluded GPUs emptied, newly live slots filled,
    experts whose only replicas were lost) come first and may exceed the budget.
    """
    if isinstance(max_moves, int) and max_moves < 0:
        raise EplbError(f"{arg('max_moves', max_moves)}: must be >= 0")
    budget = max_moves if isinstance(max_moves, MoveBudget) else MoveBudget(per_layer=max_moves)
    check_compatible(old, target)
    return budget_path(old, target, load, limit=budget.per_layer).plan(budget).validate()


def follow(old: Placement, new: Placement, load: torch.Tensor, max_moves: int | MoveBudget | None = None) -> Placement:
    """The placement to serve after ``old`` when ``new`` was planned for ``load`` [L, E].

    ``new`` relabelled (:func:`relabel`) and swapped back (:func:`swap_back`),
    which keeps its balance on ``load``; then, with ``max_moves`` (a count per
    layer, or a :class:`~eplb_cli.planning.budget.MoveBudget`), at most that many moves
    from ``old`` towards it (:func:`budgeted`).
    """
    placed = swap_back(old, relabel(old, new), load)
    if max_moves is None:
        return placed
    return budgeted(old, placed, load, max_moves)
