"""Plans under a move budget: one greedy walk from the placement served now towards a better one.

:func:`budget_path` starts from the old placement and, in every layer at
once, takes one change per step (:func:`_best_change`). A step moves one or
two replicas, and the path records every step, so the plan for any budget
is read off it: for M moves per layer, each layer's longest prefix within M
(:meth:`BudgetPath.at`); for a share of all slots, the prefixes chosen by a
knapsack over layers (:meth:`BudgetPath.within`). A whole ladder of budgets
costs one walk (:mod:`eplb_cli.planning.frontier`).

The changes considered at the busiest live GPU g of a layer:

- swaps: one of g's replicas with one on one of the lightest GPUs;
- copies: one more replica of an expert on g, written over the cheapest
  redundant replica (that of the expert whose other replicas gain least) of
  one of the lightest GPUs. It spreads a hot expert over more GPUs, and,
  under the hierarchical policy, lets load leave an overloaded node in a
  move or two where the target moves whole groups.

A step takes the change that removes the most squared load above the
target's level per replica moved, among those that raise no GPU above the
busiest one. Every expert keeps a replica, and GPU loads after each
candidate are exact (replica counts change, so every replica of the experts
involved is re-weighed). Where the target lowers a layer's busiest GPU, the
walk never goes below the target's and stops once it reaches it: the target
is the plan from scratch, a budget buys the way towards it, and a larger
budget is then never worse. Where the target is no better than the old
placement, the walk lowers the busiest GPU as far as it can. Moves that the
topology forces (slots of newly excluded GPUs emptied, newly live slots
filled, experts whose only replicas were lost) come first and count against
the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import EplbError, arg
from ..metrics import gpu_loads, live_gpus
from ..placement import Placement, replica_counts
from ..threads import one_thread
from ..topology import Topology

_HOT_GPUS = 1
"""How many of the busiest GPUs a change may start from (more cost time and did not help on the shipped trace)."""
_COPY_TARGETS = 4
"""How many of the lightest GPUs a copy may be written to."""
_SWAP_PARTNERS = 12
"""How many of the lightest GPUs a swap may trade with."""
_INF = float("inf")


@dataclass(frozen=True)
class MoveBudget:
    """A move budget: ``per_layer`` moves in every layer, or a ``share`` of all slots in total (one of the two).

    A count caps each layer (``--max-moves 64``); a share caps the whole plan
    (``--max-moves 5%``: at most 5% of all layers x slots replicas move, or
    5% of every layer's slots on average) and spends it in the layers where
    it lowers the GPU imbalance most.
    """

    per_layer: int | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        if (self.per_layer is None) == (self.share is None):
            raise ValueError("give per_layer or share")
        if self.per_layer is not None and self.per_layer < 0:
            raise EplbError(f"{arg('max_moves', self.per_layer)}: must be >= 0")
        if self.share is not None and not 0.0 <= self.share <= 1.0:
            raise EplbError(f"{arg('max_moves', f'{100 * self.share:g}%')}: the share must be between 0% and 100%")

    def total(self, layers: int, slots: int) -> int:
        """Moves the whole plan may make: the share of ``layers * slots``, rounded down (counts: per layer times layers)."""
        if self.share is not None:
            return int(self.share * layers * slots + 1e-9)
        assert self.per_layer is not None  # exactly one of the two is set
        return self.per_layer * layers

    @property
    def label(self) -> str:
        """How the CLI spells it: ``64`` or ``5%``."""
        return f"{100 * self.share:g}%" if self.share is not None else str(self.per_layer)

    @property
    def scope(self) -> str:
        return "of all slots, in total" if self.share is not None else "per layer"


@dataclass
class BudgetPath:
    """A greedy path from an old placement towards a target, step by step in every layer (see the module doc).

    ``first``/``first_to`` and ``second``/``second_to`` are int64 [T, L]: at
    step i, layer l sets slot ``first[i, l]`` to expert ``first_to[i, l]``
    and, when ``second[i, l] >= 0``, slot ``second[i, l]`` to
    ``second_to[i, l]``; ``used`` [T, L] counts those moves (0: the layer
    had stopped).
    """

    start: torch.Tensor  # int64 [L, S]: the old placement with the forced moves made
    goal: torch.Tensor  # int64 [L, S]: the target
    moved: torch.Tensor  # int64 [T + 1, L]: slots holding another expert than the old placement, before each step
    needed: torch.Tensor  # int64 [L]: slots the whole target changes
    mean: torch.Tensor  # float64 [L]: mean live GPU load (0 for a layer without load)
    goal_peak: torch.Tensor  # float64 [L]: the target's busiest live GPU
    peak: torch.Tensor  # float64 [T + 1, L]: the busiest live GPU before the first step and after each
    first: torch.Tensor
    first_to: torch.Tensor
    second: torch.Tensor
    second_to: torch.Tensor
    used: torch.Tensor
    topology: Topology

    def plan(self, budget: MoveBudget) -> Placement:
        """The plan for ``budget``: :meth:`at` for a count per layer, :meth:`within` for a share in total."""
        if budget.share is not None:
            layers, slots = self.start.shape
            return self.within(budget.total(layers, slots))
        assert budget.per_layer is not None
        return self.at(budget.per_layer)

    def at(self, max_moves: int) -> Placement:
        """The plan for at most ``max_moves`` moves in every layer.

        Each layer takes the longest prefix of its steps that moves no more
        (a later step may put a replica back, so moves are counted on the
        placement, not summed over steps); a layer whose whole target fits
        takes it. Forced moves are made whatever the budget.
        """
        fits = self.moved <= max_moves
        fits[0] = True  # the forced moves are made whatever the budget
        steps = torch.where(fits, torch.arange(fits.shape[0]).unsqueeze(1), 0).max(dim=0).values
        return self._placement(steps, self.needed <= max_moves)

    def within(self, total: int) -> Placement:
        """The plan for at most ``total`` moves over all layers, spent where they lower the GPU imbalance most.

        Each layer offers every prefix of its path and its whole target, each
        with its moves and its GPU imbalance (busiest / mean GPU load); a
        knapsack over layers (dynamic programming on the moves left) picks
        one offer per layer with the least sum of imbalances (the cheaper
        offer on ties). Forced moves are made whatever the budget.
        """
        return self.within_each([total])[0]

    def within_each(self, totals: list[int]) -> list[Placement]:
        """:meth:`within` for several totals, from one knapsack table."""
        extra = [max(t - int(self.moved[0].sum()), 0) for t in totals]
        with one_thread():
            offer_moves, pick = self._knapsack(max(extra, default=0))
        plans = []
        for left in extra:
            chosen = torch.zeros(pick.shape[0], dtype=torch.int64)
            for layer in reversed(range(pick.shape[0])):  # walk the table back from this budget
                chosen[layer] = pick[layer, left]
                left -= int(offer_moves[layer, chosen[layer]])
            whole = chosen == offer_moves.shape[1] - 1
            plans.append(self._placement(torch.where(whole, 0, chosen), whole))
        return plans

    def _offers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Extra moves (beyond the forced) and GPU imbalance of each layer's offers, [L, T + 2] each.

        Offer i < T + 1 is the prefix of i steps, offer T + 1 the whole target;
        an offer that is no better than a cheaper one gets infinite cost.
        """
        extra = (torch.cat([self.moved, self.needed.unsqueeze(0)]) - self.moved[0]).clamp(min=0)
        peak = torch.cat([self.peak, self.goal_peak.unsqueeze(0)])
        value = peak * torch.where(self.mean > 0, 1.0 / self.mean.clamp(min=1e-300), 0.0)
        # Drop offers dominated by cheaper ones (a stopped layer's later prefixes repeat its last).
        order = torch.sort(extra, dim=0, stable=True).indices
        ranked = value.gather(0, order)
        best_before = torch.cat([torch.full_like(ranked[:1], _INF), torch.cummin(ranked, dim=0).values[:-1]])
        useful = torch.empty_like(order, dtype=torch.bool).scatter_(0, order, ranked < best_before)
        return extra.T.contiguous(), torch.where(useful, value, _INF).T.contiguous()

    def _knapsack(self, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each offer's extra moves [L, T + 2], and the offer each layer takes for each budget 0..``total`` [L, total + 1].

        ``pick[l, b]`` is layer l's offer in the best choice for layers 0..l
        with at most b extra moves; walking back from layer L - 1 and the
        budget gives the choice for every layer.
        """
        extra, value = self._offers()
        layers = extra.shape[0]
        best = torch.zeros(total + 1, dtype=torch.float64)  # least sum of imbalances so far, per budget
        pick = torch.zeros(layers, total + 1, dtype=torch.int64)
        budget = torch.arange(total + 1)
        for layer in range(layers):
            worth = (value[layer] < _INF).nonzero().squeeze(1)  # the offers worth making (offer 0 always is)
            left = budget.unsqueeze(0) - extra[layer, worth].unsqueeze(1)  # [offers, total + 1]
            cost = torch.where(left >= 0, best.index_select(0, left.clamp(min=0).reshape(-1)).view(worth.numel(), -1),
                               _INF) + value[layer, worth].unsqueeze(1)
            best, at = cost.min(dim=0)
            pick[layer] = worth.index_select(0, at)
        return extra, pick

    def _placement(self, steps: torch.Tensor, whole: torch.Tensor) -> Placement:
        """The start with each layer's first ``steps`` steps made, or its whole target where ``whole``."""
        layers, slots = self.start.shape
        taken = torch.arange(self.used.shape[0]).unsqueeze(1) < steps.unsqueeze(0)
        cur = self.start.clone()
        # Writes in step order (first before second); where a slot is written twice, the last write wins.
        step_no = torch.arange(taken.shape[0]).unsqueeze(1).expand_as(taken)
        layer_no = torch.arange(layers).expand_as(taken)
        slot = torch.stack([self.first, self.second], dim=2)
        value = torch.stack([self.first_to, self.second_to], dim=2)
        write = taken.unsqueeze(2) & (slot >= 0)
        order = (step_no * 2).unsqueeze(2) + torch.arange(2)
        where = (layer_no.unsqueeze(2) * slots + slot.clamp(min=0))[write]
        order, value = order[write], value[write]
        last = torch.full((layers * slots,), -1, dtype=torch.int64).scatter_reduce_(0, where, order, reduce="amax")
        final = order == last.index_select(0, where)
        cur.view(-1)[where[final]] = value[final]
        cur[whole] = self.goal[whole]
        return Placement(cur, self.topology)


def budget_path(old: Placement, target: Placement, load: torch.Tensor, limit: int | None = None) -> BudgetPath:
    """Walk from ``old`` towards ``target`` on ``load`` [L, E] (see the module doc).

    ``target`` (the plan from scratch) sets where the walk stops and is the
    offer for a budget that fits it whole; it should already be relabelled
    to ``old`` (:func:`eplb_cli.planning.migration.follow`) so that it moves as little
    as it can. With ``limit`` a layer stops once its steps have moved that
    many replicas (enough for every count up to ``limit``); without, it
    walks until no change improves it.
    """
    topo = target.topology
    e = topo.experts
    goal = target.phy2log
    start = old.phy2log.clone()
    forced = (start < 0) != (goal < 0)
    start[forced] = goal[forced]
    _repair(start, goal, e)
    was = old.phy2log

    def moves(p: torch.Tensor) -> torch.Tensor:
        return ((p != was) & (p >= 0)).sum(dim=1)

    spent = moves(start)
    load = load.to(torch.float64)
    live = live_gpus(topo)
    goal_peak = gpu_loads(target, load)[:, live].max(dim=1).values
    start_peak = gpu_loads(Placement(start, topo), load)[:, live].max(dim=1).values
    tol = 1e-9 * start_peak.clamp(min=1.0)
    # Where the target is better, the path stops at its busiest GPU; elsewhere it just goes as low as it can.
    floor = torch.where(goal_peak < start_peak - tol, goal_peak, -_INF)
    layers = goal.shape[0]
    cur = start.clone()
    going = (start != goal).any(dim=1) & (start_peak > floor + tol)
    if limit is not None:
        going &= spent < limit
    peaks, moved, steps = [start_peak], [spent], []
    with one_thread():
        for _ in range(2 * topo.slots):
            rows = going.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            step = _best_change(cur[rows], load[rows], topo, floor[rows])
            # Widen the step to all layers (-1 and 0 where a layer is not walking), then make it.
            first, first_to, second, second_to = (torch.full((layers,), -1, dtype=f.dtype) for f in step[:4])
            full = _Step(first, first_to, second, second_to, torch.zeros(layers, dtype=torch.int64), peaks[-1].clone())
            for whole, part in zip(full, step):
                whole[rows] = part
            took, two = full.used > 0, full.second >= 0
            cur[took, full.first[took]] = full.first_to[took]
            cur[two, full.second[two]] = full.second_to[two]
            peaks.append(full.peak)
            moved.append(moves(cur))
            steps.append(full)
            spent = spent + full.used
            going &= took & (full.peak > floor + tol)
            if limit is not None:
                going &= spent < limit
    empty = torch.zeros(0, layers, dtype=torch.int64)
    fields = [torch.stack(f) for f in zip(*steps)] if steps else [empty] * 5
    return BudgetPath(start=start, goal=goal.clone(), moved=torch.stack(moved), needed=moves(goal),
                      mean=load.sum(dim=1) / int(live.sum()), goal_peak=goal_peak, peak=torch.stack(peaks),
                      first=fields[0], first_to=fields[1], second=fields[2], second_to=fields[3], used=fields[4],
                      topology=topo)


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


# ---------------------------------------------------------------- one step


class _Changes(NamedTuple):
    """Candidate changes of one kind, priced: ``peak`` and ``excess`` are [B, n] each.

    ``peak`` is the busiest live GPU after the change (inf: not allowed) and
    ``excess`` the sum over live GPUs of the squared load above the layer's
    level. Each change moves ``moves`` replicas; ``decode(i)`` turns a chosen
    index [B] into the change: slot ``first`` gets ``first_to`` and slot
    ``second`` (-1: none) gets ``second_to``, [B] each.
    """

    peak: torch.Tensor
    excess: torch.Tensor
    moves: int
    decode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


class _Step(NamedTuple):
    """The change each layer takes, [B] each (``used`` 0: none), and its busiest GPU after."""

    first: torch.Tensor
    first_to: torch.Tensor
    second: torch.Tensor
    second_to: torch.Tensor
    used: torch.Tensor
    peak: torch.Tensor


@dataclass
class _State:
    """Loads of the current placement of a batch of B layers, for pricing candidate changes exactly."""

    cur: torch.Tensor  # int64 [B, S]
    load: torch.Tensor  # float64 [B, E]
    count: torch.Tensor  # float64 [B, E]: replicas of each expert
    slot_share: torch.Tensor  # float64 [B, S]: load of the replica in each slot
    gpu: torch.Tensor  # float64 [B, G]
    live: torch.Tensor  # bool [G]
    hot_slots: torch.Tensor  # int64 [B, r * k]: the slots of the r busiest live GPUs
    ranked: torch.Tensor  # float64 [B, 3]: loads of the three busiest live GPUs (fewer with fewer GPUs)
    ranked_gpu: torch.Tensor  # int64 [B, 3]: which GPUs they are
    level: torch.Tensor  # float64 [B]: load above which a GPU counts as excess
    peak: torch.Tensor  # float64 [B]
    excess: torch.Tensor  # float64 [B]


def _state(cur: torch.Tensor, load: torch.Tensor, topo: Topology, level: torch.Tensor) -> _State:
    rows, slots = cur.shape
    experts, gpus, k = topo.experts, topo.gpus, topo.slots_per_gpu
    gpu_of = torch.arange(slots) // k
    live = live_gpus(topo)
    count = replica_counts(cur, experts).to(torch.float64)
    key = torch.where(cur >= 0, cur, experts)
    slot_share = torch.cat([load / count.clamp(min=1), load.new_zeros(rows, 1)], dim=1).gather(1, key)
    gpu = torch.zeros(rows, gpus, dtype=torch.float64).scatter_add_(1, gpu_of.expand(rows, slots), slot_share)
    busy = gpu.masked_fill(~live, -_INF)
    ranked = torch.topk(busy, min(3, gpus), dim=1)
    hot = torch.topk(busy, min(_HOT_GPUS, int(live.sum())), dim=1).indices
    return _State(cur=cur, load=load, count=count,
                  slot_share=slot_share, gpu=gpu, live=live,
                  hot_slots=(hot.unsqueeze(2) * k + torch.arange(k)).reshape(rows, -1),
                  ranked=ranked.values, ranked_gpu=ranked.indices, level=level, peak=ranked.values[:, 0],
                  excess=_excess(gpu[:, live], level))


def _excess(gpu: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension of the squared load above ``level`` (one per row of the first)."""
    above = (gpu - level.view(-1, *([1] * (gpu.dim() - 1)))).clamp(min=0)
    return (above * above).sum(dim=-1)


def _best_change(cur: torch.Tensor, load: torch.Tensor, topo: Topology, floor: torch.Tensor) -> _Step:
    """The change each layer takes next (see the module doc), [B] per field.

    Among changes that raise no GPU above the busiest one and do not take it
    below ``floor``, the one that removes most excess load per replica moved;
    excess is load above the floor (the mean where there is none), squared so
    that the busiest GPUs count most.
    """
    live_count = int(live_gpus(topo).sum())
    level = torch.where(floor > -_INF, floor, load.sum(dim=1) / live_count)
    st = _state(cur, load, topo, level)
    families = [_swaps(st, topo), _copies(st, topo)]
    peak, excess = (torch.cat(parts, dim=1) for parts in zip(*[(f.peak, f.excess) for f in families]))
    moves = torch.cat([torch.full((f.peak.shape[1],), float(f.moves), dtype=torch.float64) for f in families])
    tol = (1e-9 * st.peak.clamp(min=1.0)).unsqueeze(1)
    now_peak, now_excess = st.peak.unsqueeze(1), st.excess.unsqueeze(1)
    allowed = (peak <= now_peak + tol) & (peak >= floor.unsqueeze(1) - tol) & (excess < now_excess - tol * now_peak)
    choice = torch.where(allowed, (now_excess - excess) / moves, -_INF).argmax(dim=1, keepdim=True)
    take = allowed.gather(1, choice).squeeze(1)
    # Decode the chosen change from the family it falls in.
    none = torch.full_like(take, -1, dtype=torch.int64)
    first, first_to, second, second_to = none, none, none, none
    start = 0
    for f in families:
        size = f.peak.shape[1]
        inside = take & (choice.squeeze(1) >= start) & (choice.squeeze(1) < start + size)
        got = f.decode((choice.squeeze(1) - start).clamp(0, size - 1))
        first, first_to, second, second_to = (torch.where(inside, new, old)
                                              for new, old in zip(got, (first, first_to, second, second_to)))
        start += size
    used = take.to(torch.int64) * (1 + (second >= 0).to(torch.int64))
    return _Step(first, first_to, second, second_to, used, torch.where(take, peak.gather(1, choice).squeeze(1), st.peak))


def _swaps(st: _State, topo: Topology) -> _Changes:
    """Swaps of a replica on a busy GPU (slot s) with one on a light GPU (slot t), [B, r * k * H * k].

    Only the two GPUs change, by d and -d with d = share(t) - share(s); the
    busiest of the others is the first of the three busiest that is neither.
    """
    rows, _slots = st.cur.shape
    k = topo.slots_per_gpu
    light = min(_SWAP_PARTNERS, int(st.live.sum()))
    partners = torch.topk(st.gpu.masked_fill(~st.live, _INF), light, dim=1, largest=False).indices  # [B, H]
    theirs = (partners.unsqueeze(2) * k + torch.arange(k)).reshape(rows, -1)  # [B, H * k]
    mine = st.hot_slots
    n, p = mine.shape[1], theirs.shape[1]
    g, h = (mine // k).unsqueeze(2), (theirs // k).unsqueeze(1)  # [B, n, 1] and [B, 1, p]
    d = st.slot_share.gather(1, theirs).unsqueeze(1) - st.slot_share.gather(1, mine).unsqueeze(2)  # [B, n, p]
    load_g, load_h = st.gpu.gather(1, g.squeeze(2)).unsqueeze(2), st.gpu.gather(1, h.squeeze(1)).unsqueeze(1)
    new_g, new_h = load_g + d, load_h - d
    held, other = st.cur.gather(1, mine).unsqueeze(2), st.cur.gather(1, theirs).unsqueeze(1)
    ok = (other != held) & (other >= 0) & (h != g)
    rest = torch.full((rows, n, p), -_INF, dtype=torch.float64)
    for i in reversed(range(st.ranked.shape[1])):  # the first ranked GPU that is neither g nor h
        gpu_i = st.ranked_gpu[:, i].view(-1, 1, 1)
        rest = torch.where((gpu_i != g) & (gpu_i != h), st.ranked[:, i].view(-1, 1, 1), rest)
    peak = torch.where(ok, torch.maximum(rest, torch.maximum(new_g, new_h)), _INF)
    lv = st.level.view(-1, 1, 1)
    excess = (st.excess.view(-1, 1, 1) - _sq_above(load_g, lv) - _sq_above(load_h, lv)
              + _sq_above(new_g, lv) + _sq_above(new_h, lv))

    def decode(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s, t = mine.gather(1, (index // p).unsqueeze(1)), theirs.gather(1, (index % p).unsqueeze(1))
        return s.squeeze(1), st.cur.gather(1, t).squeeze(1), t.squeeze(1), st.cur.gather(1, s).squeeze(1)

    return _Changes(peak.reshape(rows, -1), excess.reshape(rows, -1), 2, decode)


def _sq_above(load: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    above = (load - level).clamp(min=0)
    return above * above


def _copies(st: _State, topo: Topology) -> _Changes:
    """One more replica of an expert x of a busy GPU over a redundant replica c on a light GPU h, [B, r * k * H].

    On each GPU the slot given up is the one whose expert c has at least two
    replicas and the lightest replicas once it has one fewer. x's replicas
    all get lighter (n_x -> n_x + 1), c's heavier (n_c -> n_c - 1).
    """
    rows, _slots = st.cur.shape
    k, gpus = topo.slots_per_gpu, topo.gpus
    light = min(_COPY_TARGETS, int(st.live.sum()))
    # The slot each GPU would give up, and the GPUs to try (the lightest live ones).
    expert = st.cur.clamp(min=0)
    spare = (st.cur >= 0) & (st.count.gather(1, expert) >= 2)
    after_loss = torch.where(spare, st.load.gather(1, expert) / (st.count.gather(1, expert) - 1).clamp(min=1), _INF)
    give = after_loss.view(rows, gpus, k).argmin(dim=2)  # [B, G]
    give_ok = spare.view(rows, gpus, k).any(dim=2)
    targets = torch.topk(st.gpu.masked_fill(~st.live, _INF), light, dim=1, largest=False).indices  # [B, H]
    t = targets * k + give.gather(1, targets)  # [B, H]
    c = st.cur.gather(1, t).clamp(min=0)
    x = st.cur.gather(1, st.hot_slots).clamp(min=0)  # [B, n]
    n = x.shape[1]
    n_x, w_x = st.count.gather(1, x), st.load.gather(1, x)
    n_c, w_c = st.count.gather(1, c), st.load.gather(1, c)
    lighter = w_x / n_x - w_x / (n_x + 1)  # per replica of x
    heavier = w_c / (n_c - 1).clamp(min=1) - w_c / n_c  # per remaining replica of c
    on_x, on_c = _copies_on_gpus(st.cur, x, k), _copies_on_gpus(st.cur, c, k)  # [B, n, G] and [B, H, G]
    at_h = torch.nn.functional.one_hot(targets, gpus).to(torch.float64)  # [B, H, G]
    after = (st.gpu.view(rows, 1, 1, gpus) - (on_x * lighter.unsqueeze(2)).unsqueeze(2)
             + (on_c * heavier.unsqueeze(2)).unsqueeze(1)
             + at_h.unsqueeze(1) * ((w_x / (n_x + 1)).view(rows, n, 1, 1)
                                   - (w_c / (n_c - 1).clamp(min=1)).view(rows, 1, light, 1)))
    ok = give_ok.gather(1, targets).unsqueeze(1) & (x.unsqueeze(2) != c.unsqueeze(1))
    after = after[..., st.live]
    peak = torch.where(ok, after.max(dim=-1).values, _INF)

    def decode(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        none = torch.full_like(index, -1)
        return (t.gather(1, (index % light).unsqueeze(1)).squeeze(1), x.gather(1, (index // light).unsqueeze(1)).squeeze(1),
                none, none)

    return _Changes(peak.reshape(rows, -1), _excess(after, st.level).reshape(rows, -1), 1, decode)



def _copies_on_gpus(cur: torch.Tensor, experts: torch.Tensor, per_gpu: int) -> torch.Tensor:
    """Replicas of each of ``experts`` [B, m] on each GPU of ``cur`` [B, S], float64 [B, m, G]."""
    rows = cur.shape[0]
    on = cur.view(rows, 1, -1, per_gpu) == experts.view(rows, -1, 1, 1)
    return on.sum(dim=3).to(torch.float64)
