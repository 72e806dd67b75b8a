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

from dataclasses import dataclass

import torch

from ..errors import EplbError, arg
from ..metrics import live_gpus
from ..placement import Placement, replica_counts
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


def _rank_on_gpu(phy2log: torch.Tensor, per_gpu: int) -> torch.Tensor:
    """For each slot, how many earlier slots of its GPU hold the same expert, int64 [L, S].

    The r-th copy of expert e on a GPU is "the same replica" in two placements,
    so (expert, rank) pairs identify the replicas that can stay.
    """
    rows = phy2log.reshape(-1, per_gpu)
    srt = torch.sort(rows, dim=1, stable=True)
    pos = torch.arange(per_gpu).expand_as(rows)
    starts = torch.ones_like(rows, dtype=torch.bool)
    starts[:, 1:] = srt.values[:, 1:] != srt.values[:, :-1]
    run_start = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
    rank = torch.empty_like(rows)
    rank.scatter_(1, srt.indices, pos - run_start)
    return rank.view_as(phy2log)


def _slot_codes(phy2log: torch.Tensor, per_gpu: int, empty: int) -> torch.Tensor:
    """Code ``expert * per_gpu + rank`` of each slot's replica (see :func:`_rank_on_gpu`); ``empty`` for -1 slots."""
    code = phy2log * per_gpu + _rank_on_gpu(phy2log, per_gpu)
    return torch.where(phy2log >= 0, code, torch.full_like(code, empty))


def stay_matrix(old: Placement, new: Placement) -> torch.Tensor:
    """Replicas that stay when new GPU h takes old GPU g's place, int64 [L, G, G] (h, g).

    Equals sum over experts of min(copies on new GPU h, copies on old GPU g):
    the r-th copy of expert e on new GPU h stays on old GPU g exactly when g
    holds at least r copies of e, so every new replica (expert, rank) adds
    one for each old GPU holding the same (expert, rank). Those matches are
    found by sorting the old replicas' keys ``layer * (E * k + 1) + code``
    (code = expert * k + rank, see :func:`_slot_codes`; it unpacks as layer =
    key // (E * k + 1), expert = key % (E * k + 1) // k, rank = key % k)
    and looking the new replicas' keys up in them.
    """
    topo = new.topology
    layers, slots = new.phy2log.shape
    g, k = topo.gpus, topo.slots_per_gpu
    span = topo.experts * k + 1
    base = torch.arange(layers).unsqueeze(1) * span
    old_key = (base + _slot_codes(old.phy2log, k, span - 1)).reshape(-1)  # empty old slots: code span - 1
    new_key = (base + _slot_codes(new.phy2log, k, span - 1)).reshape(-1)
    old_sorted = torch.sort(old_key, stable=True)
    first = torch.searchsorted(old_sorted.values, new_key)
    count = torch.searchsorted(old_sorted.values, new_key, right=True) - first
    count = torch.where(new.phy2log.reshape(-1) >= 0, count, 0)  # an empty new slot keeps nothing
    new_slot = torch.repeat_interleave(torch.arange(new_key.numel()), count)  # once per matching old replica
    nth = torch.arange(new_slot.numel()) - _at(torch.cumsum(count, 0) - count, new_slot)
    old_slot = _at(old_sorted.indices, _at(first, new_slot) + nth)
    cell = (new_slot // slots) * g * g + (new_slot % slots) // k * g + (old_slot % slots) // k
    return torch.bincount(cell, minlength=layers * g * g).view(layers, g, g)


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
    experts reordered: a replica that matches one of ``old`` on that GPU goes to
    that slot, the others fill the remaining slots in their order.
    """
    return _keep_slots(_slot_codes(old, per_gpu, -1), new, per_gpu)


def _keep_slots(old_codes: torch.Tensor, new: torch.Tensor, per_gpu: int) -> torch.Tensor:
    """:func:`keep_slots` with the old placement's slot codes computed once by the caller."""
    a = old_codes.reshape(-1, per_gpu)
    b_rows = new.reshape(-1, per_gpu)
    b = _slot_codes(new, per_gpu, -2).reshape(-1, per_gpu)
    same = b.unsqueeze(2) == a.unsqueeze(1)
    kept = same.any(dim=2)
    target = same.to(torch.int8).argmax(dim=2)
    taken = same.any(dim=1)
    free = torch.sort(taken.to(torch.int8), dim=1, stable=True).indices
    order = (torch.cumsum((~kept).to(torch.int64), dim=1) - 1).clamp(min=0)
    target = torch.where(kept, target, free.gather(1, order))
    out = torch.empty_like(b_rows)
    out.scatter_(1, target, b_rows)
    return out.view_as(new)


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


def _at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a 1-D ``values`` and an index of any shape (index_select, faster than indexing)."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


@dataclass
class _SwapBoard:
    """What :func:`swap_back` tracks, with every layer's slots laid end to end (flat index ``layer * S + slot``).

    GPUs get ids unique over layers (``layer * G + gpu``), and an expert's
    per-replica load is read from ``share`` at ``layer * (E + 1) + expert``
    (index E of each layer is the empty slot, with load 0).
    """

    cur: torch.Tensor  # int64 [L*S]: expert each slot holds now (-1: empty)
    was: torch.Tensor  # int64 [L*S]: expert the old placement held there
    old_codes: torch.Tensor  # int64 [L, S]: the old placement's replica codes (see _slot_codes)
    slot_layer: torch.Tensor  # int64 [L*S]
    slot_gpu: torch.Tensor  # int64 [L*S]: GPU id of the slot, unique over layers
    slot_part: torch.Tensor  # int64 [L*S]: node of the slot under the hierarchical policy, else 0
    slot_live: torch.Tensor  # bool [L*S]: the slot is on a live GPU
    parts: int  # nodes under the hierarchical policy, else 1
    share: torch.Tensor  # float64 [L*(E+1)]: load of one replica of each expert (counts never change)
    gpu_load: torch.Tensor  # float64 [L*G]
    cap: torch.Tensor  # float64 [L*G]: the busiest live GPU of the GPU's layer, which no swap may exceed
    per_gpu: int
    experts: int

    def share_at(self, layer: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        """Load of one replica of ``expert`` (E for an empty slot) in ``layer``."""
        return _at(self.share, layer * (self.experts + 1) + expert)


def _swap_board(old: Placement, cur: Placement, load: torch.Tensor) -> _SwapBoard:
    """The board for swapping ``cur`` back towards ``old``, with GPU loads and caps on ``load`` [L, E].

    Live GPUs and nodes are those of ``cur``'s topology (GPUs newly excluded there hold nothing).
    """
    topo = cur.topology
    now = cur.phy2log
    layers, slots = now.shape
    gpus, k, e = topo.gpus, topo.slots_per_gpu, topo.experts
    flat = torch.arange(layers * slots)
    slot_layer = flat // slots
    slot_gpu = slot_layer * gpus + flat % slots // k
    hierarchical = topo.hierarchical
    share = torch.cat([load.to(torch.float64) / replica_counts(now, e).clamp(min=1),
                       torch.zeros(layers, 1, dtype=torch.float64)], dim=1).reshape(-1)
    flat_now = now.reshape(-1)
    gpu_load = torch.zeros(layers * gpus, dtype=torch.float64)
    gpu_load.index_add_(0, slot_gpu, _at(share, slot_layer * (e + 1) + torch.where(flat_now >= 0, flat_now, e)))
    # No GPU may end above the layer's busiest live GPU (with a relative tolerance of 1e-9 for rounding).
    cap = gpu_load.view(layers, gpus)[:, live_gpus(topo)].max(dim=1).values
    cap = (cap + 1e-9 * cap.clamp(min=1.0)).repeat_interleave(gpus)
    return _SwapBoard(
        cur=flat_now, was=old.phy2log.reshape(-1), old_codes=_slot_codes(old.phy2log, k, -1),
        slot_layer=slot_layer, slot_gpu=slot_gpu,
        slot_part=slot_gpu % gpus // topo.gpus_per_node if hierarchical else torch.zeros_like(slot_gpu),
        slot_live=live_gpus(topo).repeat(layers)[slot_gpu], parts=topo.nodes if hierarchical else 1,
        share=share, gpu_load=gpu_load, cap=cap, per_gpu=k, experts=e,
    )


def swap_back(old: Placement, new: Placement, load: torch.Tensor, min_gain: float = 0.005) -> Placement:
    """Swap replicas between GPUs of ``new`` to put more of them where ``old`` had them, at no cost to balance.

    A swap trades a replica that moved onto GPU g for one of the experts g
    lost, from a GPU h where a copy of it moved in; it keeps one more replica
    in place (two when h wanted the first one back). A swap is allowed only
    when neither GPU ends above the busiest GPU's load of ``new``, so every
    layer's max GPU load (hence GPU imbalance and balancedness) stays the same
    or drops; under the hierarchical policy swaps stay within a node, which
    keeps every node's load too. Replica counts never change.

    Rounds run on all layers at once (:func:`_swap_round`). A round takes a
    set of swaps that touch no slot twice and raise no GPU's load twice, so
    their effects add up exactly. Rounds stop when a round keeps fewer than
    ``min_gain`` of the replicas still moved. ``new`` should already be
    relabelled (:func:`relabel`).
    """
    check_compatible(old, new)
    topo = new.topology
    cur = keep_slots(old.phy2log, new.phy2log, topo.slots_per_gpu)
    if topo.gpus == 1:
        return Placement(cur, topo)
    board = _swap_board(old, Placement(cur, topo), load)
    for _ in range(topo.slots):
        if not _swap_round(board, min_gain):
            break
    return Placement(board.cur.view(new.layers, topo.slots), topo)


def _swap_round(board: _SwapBoard, min_gain: float) -> bool:
    """One round of :func:`swap_back` on every layer (in place); False when the rounds should stop.

    A swap is named by three slots: ``s`` on GPU g, which lost its old
    expert y; ``t`` on GPU h (same node under the hierarchical policy), where
    a replica of y moved in; and ``a`` on GPU g, holding a replica x that
    moved in (``a`` may be ``s``). After the swap ``s`` holds y again, ``t``
    holds x, and ``a`` holds what ``s`` held: g trades x for y, h trades y
    for x, so g's load changes by ``d = share(y) - share(x)`` and h's by -d.
    """
    b = board
    # Step 1: the slots that moved (hold another expert than the old placement had there).
    moved = (b.cur != b.was) & b.slot_live
    incoming = (moved & (b.cur >= 0)).nonzero().squeeze(1)  # slots holding a replica that moved in
    lacking = (moved & (b.was >= 0)).nonzero().squeeze(1)  # slots whose old replica is gone
    if lacking.numel() == 0 or incoming.numel() == 0:
        return False

    # Step 2: pair every lacking slot s with every incoming slot t holding s's old expert in s's part.
    s, y, t = _pair_lacking(b, incoming, lacking)
    if s.numel() == 0:
        return False

    # Step 3: keep the pairs where g holds some incoming replica light or heavy enough to fit both caps.
    fits = _some_replica_fits(b, incoming, s, y, t)
    s, y, t = s[fits], y[fits], t[fits]
    if s.numel() == 0:
        return False

    # Step 4: every candidate (s, t, a) with a any slot of g: how many replicas it keeps, and whether it is allowed.
    g, h = _at(b.slot_gpu, s), _at(b.slot_gpu, t)
    layer = _at(b.slot_layer, s)
    k, e = b.per_gpu, b.experts
    a = (s - s % k).unsqueeze(1) + torch.arange(k)  # [P, k]: the slots of g
    x = _at(b.cur, a)
    x_or_empty = torch.where(x >= 0, x, e)
    wanted = torch.zeros(b.cap.numel() * (e + 1), dtype=torch.bool)  # (GPU id, expert): a slot there lost that expert
    wanted.index_fill_(0, _at(b.slot_gpu, lacking) * (e + 1) + _at(b.was, lacking), True)
    kept = 1 + _at(wanted, h.unsqueeze(1) * (e + 1) + x_or_empty).to(torch.int64)  # 2 when h wanted x back
    d = b.share_at(layer, y).unsqueeze(1) - b.share_at(layer.unsqueeze(1), x_or_empty)
    room_g, room_h = _at(b.cap, g) - _at(b.gpu_load, g), _at(b.cap, h) - _at(b.gpu_load, h)
    allowed = _at(moved, a) & (x >= 0) & (d <= room_g.unsqueeze(1)) & (-d <= room_h.unsqueeze(1))
    if not bool(allowed.any()):
        return False

    # Step 5: take a set of candidates that share no slot and raise no GPU twice.
    take = _disjoint_best(b, a, s, t, g, h, d, kept, allowed)
    row, col = take.nonzero(as_tuple=True)
    slot_a, slot_t, slot_s = a[row, col], t[row], s[row]

    # Step 6: apply them: s gets y back, a gets what s held (y too when a is s), t gets x.
    x_at_a, y_at_t, z_at_s = _at(b.cur, slot_a), _at(b.cur, slot_t), _at(b.cur, slot_s)
    b.cur.index_copy_(0, slot_s, y_at_t)
    b.cur.index_copy_(0, slot_a, torch.where(slot_a == slot_s, y_at_t, z_at_s))
    b.cur.index_copy_(0, slot_t, x_at_a)
    b.gpu_load.index_add_(0, g[row], d[row, col])
    b.gpu_load.index_add_(0, h[row], -d[row, col])
    moved_before = int(moved.sum())

    # Step 7: on every GPU h that took a replica, put the replicas it kept back into their old slots.
    touched = torch.unique(_at(h, row))
    grid = b.cur.view(-1, k)
    grid.index_copy_(0, touched, _keep_slots(b.old_codes.view(-1, k).index_select(0, touched),
                                             grid.index_select(0, touched), k))

    # Step 8: go on while a round still puts back at least min_gain of the replicas that were moved.
    moved_after = int(((b.cur != b.was) & b.slot_live).sum())
    return moved_before - moved_after >= min_gain * moved_before


def _pair_lacking(b: _SwapBoard, incoming: torch.Tensor, lacking: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs (lacking slot s, its old expert y, incoming slot t holding y in s's part), as three [P] tensors.

    Incoming slots are sorted by their group key ``(layer * (E + 1) + expert)
    * parts + part``, which unpacks as part = key % parts, then layer and
    expert from key // parts as in :attr:`_SwapBoard.share`. Each lacking
    slot looks up the run of its own key (layer, old expert, part): every
    slot in that run is a partner.
    """
    e1 = b.experts + 1
    group = (_at(b.slot_layer, incoming) * e1 + _at(b.cur, incoming)) * b.parts + _at(b.slot_part, incoming)
    incoming = _at(incoming, torch.sort(group, stable=True).indices)
    run_length = torch.bincount(group, minlength=b.share.numel() * b.parts)
    run_start = torch.cumsum(run_length, 0) - run_length
    y = _at(b.was, lacking)
    want = (_at(b.slot_layer, lacking) * e1 + y) * b.parts + _at(b.slot_part, lacking)
    partners = _at(run_length, want)
    pair = torch.repeat_interleave(torch.arange(lacking.numel()), partners)  # index into lacking, once per partner
    nth = torch.arange(pair.numel()) - _at(torch.cumsum(partners, 0) - partners, pair)  # which partner of its run
    t = _at(incoming, _at(_at(run_start, want), pair) + nth)
    return _at(lacking, pair), _at(y, pair), t


def _some_replica_fits(b: _SwapBoard, incoming: torch.Tensor, s: torch.Tensor, y: torch.Tensor, t: torch.Tensor
                       ) -> torch.Tensor:
    """Bool [P]: GPU g of s holds an incoming replica x with share(y) - room(g) <= share(x) <= share(y) + room(h).

    A quick filter before the [P, k] candidates are built. Each incoming
    replica gets the float key ``gpu id + share * 0.5 / cap(gpu)``: a share
    never exceeds its GPU's cap, so a GPU's keys lie in [id, id + 0.5] and
    one sorted array answers the question with two binary searches (bounds
    clamped to [id, id + 0.75] so they never reach the next GPU's keys).
    """
    gpu = _at(b.slot_gpu, incoming)
    scale = 0.5 / _at(b.cap, gpu)
    key = torch.sort(gpu + b.share_at(_at(b.slot_layer, incoming), _at(b.cur, incoming)) * scale).values
    g, h = _at(b.slot_gpu, s), _at(b.slot_gpu, t)
    share_y = b.share_at(_at(b.slot_layer, s), y)
    half = 0.5 / _at(b.cap, g)
    low = g + ((share_y - (_at(b.cap, g) - _at(b.gpu_load, g))) * half).clamp(min=0.0)
    high = g + ((share_y + (_at(b.cap, h) - _at(b.gpu_load, h))) * half).clamp(max=0.75)
    return torch.searchsorted(key, high, right=True) > torch.searchsorted(key, low)


def _disjoint_best(b: _SwapBoard, a: torch.Tensor, s: torch.Tensor, t: torch.Tensor, g: torch.Tensor,
                   h: torch.Tensor, d: torch.Tensor, kept: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Bool [P, k]: the allowed candidates that are the best at every slot they use and at the GPU they load.

    Candidates are ranked by replicas kept, then by the smallest load change
    |d| (relative to g's cap), then by position. The three are packed into
    one int64 priority, ``((kept << 20) + closeness) << 32 + position``: it
    unpacks as kept = p >> 52, closeness = (p >> 32) & (2**20 - 1), position
    = p & (2**32 - 1); a disallowed candidate gets -1. Each resource keeps
    the highest priority that claims it: slots by their flat index, and the
    GPU whose load rises (g when d > 0, h when d < 0) at ``L * S + GPU id``
    (a candidate with d == 0 raises nothing and claims the unused entry
    after them). A candidate is taken when it holds every one of its claims.
    """
    closeness = ((1.0 - (d.abs() / _at(b.cap, g).unsqueeze(1)).clamp(max=1.0)) * ((1 << 20) - 1)).to(torch.int64)
    position = torch.arange(allowed.numel()).view_as(allowed)
    priority = torch.where(allowed, (((kept << 20) + closeness) << 32) + position, -1)
    slots = b.cur.numel()
    rises = torch.where(d > 0, g.unsqueeze(1), h.unsqueeze(1))
    rises = torch.where(d != 0, slots + rises, slots + b.cap.numel())
    claims = (a, t.unsqueeze(1).expand_as(priority), s.unsqueeze(1).expand_as(priority), rises)
    best = torch.full((slots + b.cap.numel() + 1,), -1, dtype=torch.int64)
    for claim in claims:
        best.scatter_reduce_(0, claim.reshape(-1), priority.reshape(-1), reduce="amax")
    take = (allowed & (priority == _at(best, a)) & (priority == _at(best, t).unsqueeze(1))
            & (priority == _at(best, s).unsqueeze(1)))
    return take & ((d == 0) | (priority == _at(best, rises)))


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
