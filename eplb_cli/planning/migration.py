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
    ``--max-moves M``: start from the old placement and take, one by one, the
    changes that most lower the busiest GPU's load, at most M per layer,
    keeping every expert with a replica.

:func:`follow` chains them. A replica "moves" when its slot holds a different
expert afterwards (:func:`eplb_cli.metrics.count_moves` counts them, split
intra-/inter-node).
"""

from __future__ import annotations

import torch

from ..errors import EplbError, arg
from ..metrics import live_gpus
from ..placement import Placement, replica_counts, slots_of_experts
from .assignment import max_weight_assignment

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


def _replica_table(phy2log: torch.Tensor, rank: torch.Tensor, gpus: int, experts: int, width: int) -> torch.Tensor:
    """One-hot [L, G, E * width]: GPU g holds the (rank+1)-th copy of expert e."""
    layers, slots = phy2log.shape
    code = torch.where(phy2log >= 0, phy2log * width + rank, experts * width)
    row = (torch.arange(slots) // (slots // gpus)).expand(layers, slots)
    table = torch.zeros(layers, gpus, experts * width + 1, dtype=torch.float32)
    table.view(layers, -1).scatter_(1, row * (experts * width + 1) + code, 1.0)
    return table[:, :, :-1]


def stay_matrix(old: Placement, new: Placement) -> torch.Tensor:
    """Replicas that stay when new GPU h takes old GPU g's place, int64 [L, G, G] (h, g).

    Equals sum over experts of min(copies on new GPU h, copies on old GPU g),
    computed as one batched product of one-hot (expert, copy) tables.
    """
    topo = new.topology
    k = topo.slots_per_gpu
    ra, rb = _rank_on_gpu(old.phy2log, k), _rank_on_gpu(new.phy2log, k)
    width = int(torch.maximum(ra.max(), rb.max())) + 1
    a = _replica_table(old.phy2log, ra, topo.gpus, topo.experts, width)
    b = _replica_table(new.phy2log, rb, topo.gpus, topo.experts, width)
    return torch.bmm(b, a.transpose(1, 2)).round().to(torch.int64)


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


def swap_back(old: Placement, new: Placement, load: torch.Tensor, min_gain: float = 0.005) -> Placement:
    """Swap replicas between GPUs of ``new`` to put more of them where ``old`` had them, at no cost to balance.

    A swap trades a replica that moved onto GPU g for one of the experts g
    lost, from a GPU h where a copy of it moved in; it keeps one more replica
    in place (two when h wanted the first one back). A swap is allowed only
    when neither GPU ends above the busiest GPU's load of ``new``, so every
    layer's max GPU load (hence GPU imbalance and balancedness) stays the same
    or drops; under the hierarchical policy swaps stay within a node, which
    keeps every node's load too. Replica counts never change.

    Rounds run on all layers at once. A round takes a set of swaps that touch
    no slot twice and raise no GPU's load twice (each swap must be the best
    one, most replicas kept then smallest load change, at every slot it uses
    and at the GPU whose load it raises), so their effects add up exactly.
    Rounds stop when a round keeps fewer than ``min_gain`` of the replicas
    still moved. ``new`` should already be relabelled (:func:`relabel`).
    """
    check_compatible(old, new)
    topo = new.topology
    layers, slots, g_all, k, e = new.layers, topo.slots, topo.gpus, topo.slots_per_gpu, topo.experts
    cur = keep_slots(old.phy2log, new.phy2log, k)
    if g_all == 1:
        return Placement(cur, topo)
    old_codes = _slot_codes(old.phy2log, k, -1)
    was = old.phy2log.reshape(-1)
    lay_of = torch.arange(layers * slots) // slots
    gpu_of = lay_of * g_all + torch.arange(layers * slots) % slots // k
    live = live_gpus(topo).repeat(layers)[gpu_of]
    parts = topo.nodes if topo.hierarchical else 1
    part = gpu_of % g_all // topo.gpus_per_node if topo.hierarchical else torch.zeros_like(gpu_of)
    share = torch.cat([load.to(torch.float64) / replica_counts(cur, e).clamp(min=1),
                       torch.zeros(layers, 1, dtype=torch.float64)], dim=1).reshape(-1)
    cur = cur.reshape(-1)
    gpu_load = torch.zeros(layers * g_all, dtype=torch.float64)
    gpu_load.index_add_(0, gpu_of, _at(share, lay_of * (e + 1) + torch.where(cur >= 0, cur, e)))
    cap = gpu_load.view(layers, g_all)[:, live_gpus(topo)].max(dim=1).values
    cap = (cap + 1e-9 * cap.clamp(min=1.0)).repeat_interleave(g_all)
    offsets = torch.arange(k)
    keys = layers * (e + 1) * parts
    for _ in range(slots):
        diff = (cur != was) & live
        source = (diff & (cur >= 0)).nonzero().squeeze(1)
        lacking = (diff & (was >= 0)).nonzero().squeeze(1)
        if lacking.numel() == 0 or source.numel() == 0:
            break
        scale = 0.5 / _at(cap, _at(gpu_of, source))
        out_key = _at(gpu_of, source) + _at(share, _at(lay_of, source) * (e + 1) + _at(cur, source)) * scale
        out_key = torch.sort(out_key).values
        src_key = (_at(lay_of, source) * (e + 1) + _at(cur, source)) * parts + _at(part, source)
        order = torch.sort(src_key, stable=True).indices
        source = _at(source, order)
        copies = torch.bincount(src_key, minlength=keys)
        first = torch.cumsum(copies, 0) - copies
        y = _at(was, lacking)
        want_key = (_at(lay_of, lacking) * (e + 1) + y) * parts + _at(part, lacking)
        hits = _at(copies, want_key)
        pair = torch.repeat_interleave(torch.arange(lacking.numel()), hits)
        if pair.numel() == 0:
            break
        offset = torch.arange(pair.numel()) - _at(torch.cumsum(hits, 0) - hits, pair)
        t = _at(source, _at(_at(first, want_key), pair) + offset)
        s, y = _at(lacking, pair), _at(y, pair)
        lay, g, h = _at(lay_of, s), _at(gpu_of, s), _at(gpu_of, t)
        sy = _at(share, lay * (e + 1) + y)
        half = 0.5 / _at(cap, g)
        low = g + ((sy - (_at(cap, g) - _at(gpu_load, g))) * half).clamp(min=0.0)
        high = g + ((sy + (_at(cap, h) - _at(gpu_load, h))) * half).clamp(max=0.75)
        fits = torch.searchsorted(out_key, high, right=True) > torch.searchsorted(out_key, low)
        keep = fits.nonzero().squeeze(1)
        s, y, t, lay, g, h, sy = (_at(v, keep) for v in (s, y, t, lay, g, h, sy))
        if s.numel() == 0:
            break
        mine = (s - s % k).unsqueeze(1) + offsets
        x = _at(cur, mine)
        xc = torch.where(x >= 0, x, e)
        wanted = torch.zeros(layers * g_all * (e + 1), dtype=torch.bool)
        wanted.index_fill_(0, _at(gpu_of, lacking) * (e + 1) + _at(was, lacking), True)
        gain = 1 + _at(wanted, h.unsqueeze(1) * (e + 1) + xc).to(torch.int64)
        d = sy.unsqueeze(1) - _at(share, lay.unsqueeze(1) * (e + 1) + xc)
        room_g, room_h = _at(cap, g) - _at(gpu_load, g), _at(cap, h) - _at(gpu_load, h)
        valid = _at(diff, mine) & (x >= 0) & (d <= room_g.unsqueeze(1)) & (-d <= room_h.unsqueeze(1))
        if not bool(valid.any()):
            break
        top = _at(cap, g).unsqueeze(1)
        close = ((1.0 - (d.abs() / top).clamp(max=1.0)) * ((1 << 20) - 1)).to(torch.int64)
        key = torch.where(valid, (((gain << 20) + close) << 32) + torch.arange(valid.numel()).view_as(valid), -1)
        n = layers * slots
        rises = torch.where(d > 0, g.unsqueeze(1), h.unsqueeze(1))
        rises = torch.where(d != 0, n + rises, n + layers * g_all)
        claims = (mine, t.unsqueeze(1).expand_as(key), s.unsqueeze(1).expand_as(key), rises)
        best = torch.full((n + layers * g_all + 1,), -1, dtype=torch.int64)
        for claim in claims:
            best.scatter_reduce_(0, claim.reshape(-1), key.reshape(-1), reduce="amax")
        take = valid & (key == _at(best, mine)) & (key == _at(best, t).unsqueeze(1)) & (key == _at(best, s).unsqueeze(1))
        take &= (d == 0) | (key == _at(best, rises))
        row, col = take.nonzero(as_tuple=True)
        a, b, c = mine[row, col], t[row], s[row]
        xs, ys, zs = _at(cur, a), _at(cur, b), _at(cur, c)
        cur.index_copy_(0, c, ys)
        cur.index_copy_(0, a, torch.where(a == c, ys, zs))
        cur.index_copy_(0, b, xs)
        gpu_load.index_add_(0, g[row], d[row, col])
        gpu_load.index_add_(0, h[row], -d[row, col])
        before = int(diff.sum())
        touched = torch.unique(_at(h, row))
        grid = cur.view(-1, k)
        grid.index_copy_(0, touched, _keep_slots(old_codes.view(-1, k).index_select(0, touched),
                                                 grid.index_select(0, touched), k))
        if before - int(((cur != was) & live).sum()) < min_gain * before:
            break
    return Placement(cur.view(layers, slots), topo)


# ---------------------------------------------------------------- move budget


def _repair(cur: torch.Tensor, target: torch.Tensor, experts: int) -> torch.Tensor:
    """Give every expert left without a replica one slot of ``target`` that holds it (in place, returns changed mask)."""
    layers, slots = cur.shape
    changed = torch.zeros_like(cur, dtype=torch.bool)
    for _ in range(experts + 1):
        missing = replica_counts(cur, experts) == 0
        if not bool(missing.any()):
            return changed
        want = (target >= 0) & (cur != target) & missing.gather(1, target.clamp(min=0))
        first = torch.full((layers, experts + 1), slots, dtype=torch.int64)
        key = torch.where(want, target, torch.full_like(target, experts))
        first.scatter_reduce_(1, key, torch.arange(slots).expand(layers, slots), reduce="amin")
        pick = torch.zeros_like(want)
        slot = first[:, :experts]
        ok = slot < slots
        rows = torch.arange(layers).unsqueeze(1).expand_as(slot)
        pick[rows[ok], slot[ok]] = True
        cur[pick] = target[pick]
        changed |= pick
    raise AssertionError("repair did not converge; the target placement is invalid")


def budgeted(old: Placement, target: Placement, load: torch.Tensor, max_moves: int) -> Placement:
    """At most ``max_moves`` replica moves per layer from ``old`` towards a better balance on ``load``.

    ``target`` should already be relabelled to ``old`` (:func:`relabel`), so its
    changed slots are the moves worth making. Layers where the target needs no
    more than ``max_moves`` moves take it whole. Elsewhere, changes are taken
    greedily, in every layer at once, each the one that most lowers the
    busiest live GPU's load (ties: the sum of squared GPU loads), among
    changes that touch that GPU: one of its slots set to the target's expert;
    that plus the target's next slot of the expert it held (the replica moves
    there, so experts with a single replica can move too); or a swap of one
    of its replicas with any replica elsewhere (within its node under the
    hierarchical policy). Every expert keeps a replica; a layer stops when no
    change improves it or its budget is spent. Moves the topology forces
    (slots of newly excluded GPUs emptied, newly live slots filled, experts
    whose only replicas were lost) come first and may exceed the budget.
    """
    if max_moves < 0:
        raise EplbError(f"{arg('max_moves', max_moves)}: must be >= 0")
    check_compatible(old, target)
    topo = target.topology
    e = topo.experts
    goal = target.phy2log
    cur = old.phy2log.clone()
    forced = (cur < 0) != (goal < 0)
    cur[forced] = goal[forced]
    forced |= _repair(cur, goal, e)
    spent = (forced & (goal >= 0)).sum(dim=1)
    needed = (cur != goal).sum(dim=1) + spent
    whole = needed <= max_moves
    cur[whole] = goal[whole]
    load = load.to(torch.float64)
    copies = slots_of_experts(goal, e)
    going = ~whole & (spent < max_moves)
    for _ in range(max_moves):
        if not bool(going.any()):
            break
        cur, used = _best_move(cur, goal, copies, load, topo, going, max_moves - spent)
        spent = spent + used
        going = going & (used > 0) & (spent < max_moves)
    return Placement(cur, topo).validate()


def _best_move(cur: torch.Tensor, goal: torch.Tensor, copies: torch.Tensor, load: torch.Tensor, topo,
               going: torch.Tensor, room: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the best improving change at each layer's busiest GPU (see :func:`budgeted`); return moves used [L].

    A change sets slot s to expert ``gains`` and, for a pair, slot t to the
    expert s held (a replica moving from s to t, t losing ``loses``); a
    single change loses s's own expert. With counts n -> n', every replica
    of x carries load_x / n'_x, so GPU loads after each candidate are exact.
    """
    layers, slots = cur.shape
    experts, gpus, k = topo.experts, topo.gpus, topo.slots_per_gpu
    e1 = experts + 1
    gpu_of = torch.arange(slots) // k
    live = live_gpus(topo)
    cnt = replica_counts(cur, experts).to(torch.float64)
    key = torch.where(cur >= 0, cur, experts)
    per_gpu = torch.zeros(layers, gpus * e1, dtype=torch.float64)
    per_gpu.scatter_add_(1, gpu_of * e1 + key, torch.ones_like(cur, dtype=torch.float64))
    by_expert = per_gpu.view(layers, gpus, e1).transpose(1, 2)
    share = torch.cat([load / cnt.clamp(min=1), load.new_zeros(layers, 1)], dim=1)
    slot_share = share.gather(1, key)
    gl = torch.zeros(layers, gpus, dtype=torch.float64).scatter_add_(1, gpu_of.expand(layers, slots), slot_share)
    now = gl.masked_fill(~live, float("-inf"))
    ranked = torch.topk(now, min(3, gpus), dim=1)
    hot = ranked.indices[:, :1]
    now_peak = now.max(dim=1).values
    now_spread = (gl[:, live] ** 2).sum(dim=1)
    mine = hot * k + torch.arange(k)
    changed = (cur != goal) & (cur >= 0) & (goal >= 0)

    # Target changes at the busiest GPU: singles [L, k] and pairs [L, k * R].
    a, b = cur.gather(1, mine).clamp(min=0), goal.gather(1, mine).clamp(min=0)
    reps = copies.shape[2]
    t = copies.gather(1, a.unsqueeze(2).expand(layers, k, reps)).reshape(layers, -1)
    tc = t.clamp(min=0)
    c = cur.gather(1, tc).clamp(min=0)
    s2, a2, b2 = (x.repeat_interleave(reps, dim=1) for x in (mine, a, b))
    ok_single = changed.gather(1, mine) & (cnt.gather(1, a) >= 2)
    ok_pair = ((t >= 0) & changed.gather(1, tc) & changed.gather(1, s2) & (room >= 2).unsqueeze(1)
               & ((c == b2) | (cnt.gather(1, c) >= 2)))
    cand_s = torch.cat([mine, s2], dim=1)
    cand_t = torch.cat([torch.full_like(mine, -1), torch.where(ok_pair, tc, -1)], dim=1)
    gains, loses, moving = torch.cat([b, b2], dim=1), torch.cat([a, c], dim=1), torch.cat([a, a2], dim=1)
    ok = torch.cat([ok_single, ok_pair], dim=1)
    pair = (cand_t >= 0).unsqueeze(2)
    same = gains == loses
    cg, cl = cnt.gather(1, gains), cnt.gather(1, loses)
    wg, wl = load.gather(1, gains), load.gather(1, loses)
    cg_new = torch.where(same, cg, cg + 1)
    cl_new = torch.where(same, cl, (cl - 1).clamp(min=1))
    at_s = torch.nn.functional.one_hot(gpu_of[cand_s], gpus).to(torch.float64)
    at_t = torch.nn.functional.one_hot(gpu_of[cand_t.clamp(min=0)], gpus).to(torch.float64) * pair
    gone = torch.where(pair, at_t, at_s)
    after = (gl.unsqueeze(1)
             + torch.where(same, 0.0, wg / cg_new - wg / cg).unsqueeze(2)
             * by_expert.gather(1, gains.unsqueeze(2).expand(-1, -1, gpus))
             + torch.where(same, 0.0, wl / cl_new - wl / cl).unsqueeze(2)
             * (by_expert.gather(1, loses.unsqueeze(2).expand(-1, -1, gpus)) - gone)
             + at_s * (wg / cg_new).unsqueeze(2) - gone * (wl / cl).unsqueeze(2)
             + (at_t - at_s * pair) * share.gather(1, moving).unsqueeze(2))[:, :, live]
    inf = float("inf")
    peak_t = torch.where(ok, after.max(dim=2).values, inf)
    spread_t = (after * after).sum(dim=2)

    # Swaps of a replica on the busiest GPU with one elsewhere [L, k * S]: only those two GPUs change.
    x_share = slot_share.gather(1, mine).unsqueeze(2)
    d = slot_share.unsqueeze(1) - x_share
    other = gpu_of.expand(layers, slots)
    hot_load, their = gl.gather(1, hot).unsqueeze(2), gl.gather(1, other).unsqueeze(1)
    new_hot, new_other = hot_load + d, their - d
    ok_swap = (cur.unsqueeze(1) != cur.gather(1, mine).unsqueeze(2)) & (room >= 2).view(-1, 1, 1)
    ok_swap &= (other.unsqueeze(1) != hot.unsqueeze(2)) & (cur.unsqueeze(1) >= 0) & live[other].unsqueeze(1)
    if topo.hierarchical:
        per_node = topo.gpus_per_node
        ok_swap &= (other // per_node).unsqueeze(1) == (hot // per_node).unsqueeze(2)
    if gpus >= 3:
        second_is_other = ranked.indices[:, 1:2] == other
        rest = torch.where(second_is_other, ranked.values[:, 2:3], ranked.values[:, 1:2])
    else:
        rest = torch.full((layers, slots), float("-inf"), dtype=torch.float64)
    peak_w = torch.maximum(rest.unsqueeze(1), torch.maximum(new_hot, new_other))
    peak_w = torch.where(ok_swap, peak_w, inf).reshape(layers, -1)
    spread_w = (now_spread.view(-1, 1, 1) - hot_load ** 2 - their ** 2 + new_hot ** 2 + new_other ** 2).reshape(layers, -1)

    peak = torch.cat([peak_t, peak_w], dim=1)
    spread = torch.cat([spread_t, spread_w], dim=1)
    tol = 1e-9 * now_peak.clamp(min=1.0)
    tied = peak <= (peak.min(dim=1).values + tol).unsqueeze(1)
    choice = torch.where(tied, spread, inf).argmin(dim=1, keepdim=True)
    c_peak, c_spread = peak.gather(1, choice).squeeze(1), spread.gather(1, choice).squeeze(1)
    better = (c_peak < now_peak - tol) | ((c_peak <= now_peak + tol) & (c_spread < now_spread - tol * now_peak))
    take = going & (c_peak < inf) & better
    n_target = cand_s.shape[1]
    is_swap = choice.squeeze(1) >= n_target
    w = (choice - n_target).clamp(min=0)
    first = torch.where(is_swap.unsqueeze(1), mine.gather(1, w // slots), cand_s.gather(1, choice.clamp(max=n_target - 1)))
    second = torch.where(is_swap.unsqueeze(1), w % slots, cand_t.gather(1, choice.clamp(max=n_target - 1)))
    first_to = torch.where(is_swap.unsqueeze(1), cur.gather(1, second.clamp(min=0)), goal.gather(1, first))
    second_to = torch.where(is_swap.unsqueeze(1), cur.gather(1, first), goal.gather(1, second.clamp(min=0)))
    two = take & (second.squeeze(1) >= 0)
    out = cur.clone()
    out.scatter_(1, first, torch.where(take.unsqueeze(1), first_to, cur.gather(1, first)))
    second = second.clamp(min=0)
    out.scatter_(1, second, torch.where(two.unsqueeze(1), second_to, out.gather(1, second)))
    return out, take.to(torch.int64) + two.to(torch.int64)


def follow(old: Placement, new: Placement, load: torch.Tensor, max_moves: int | None = None) -> Placement:
    """The placement to serve after ``old`` when ``new`` was planned for ``load`` [L, E].

    ``new`` relabelled (:func:`relabel`) and swapped back (:func:`swap_back`),
    which keeps its balance on ``load``; then, with ``max_moves``, at most that
    many moves per layer from ``old`` towards it (:func:`budgeted`).
    """
    placed = swap_back(old, relabel(old, new), load)
    if max_moves is None:
        return placed
    return budgeted(old, placed, load, max_moves)
