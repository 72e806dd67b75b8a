"""Loads, imbalance, lower bounds and migration, as defined in DESIGN.md.

All figures leave out layers with no load (dense layers): their imbalance is
undefined, and counting them as perfect would flatter every strategy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .jit import njit
from .placement import Placement, replica_counts
from .threads import by_rows
from .topology import Topology


def slot_loads(placement: Placement, load: torch.Tensor) -> torch.Tensor:
    """Load each slot serves, [L, S]: a replica of expert e carries load[e] / count[e]."""
    phy2log = placement.phy2log.to(load.device)
    cnt = replica_counts(phy2log, placement.topology.experts).clamp(min=1).to(load.dtype)
    per_replica = torch.cat([load / cnt, load.new_zeros(load.shape[0], 1)], dim=1)
    idx = torch.where(phy2log >= 0, phy2log, torch.full_like(phy2log, placement.topology.experts))
    return per_replica.gather(1, idx)


def gpu_loads(placement: Placement, load: torch.Tensor) -> torch.Tensor:
    """Load on each GPU, [L, G]."""
    topo = placement.topology
    return slot_loads(placement, load).view(load.shape[0], topo.gpus, topo.slots_per_gpu).sum(-1)


def node_loads(gpu_load: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Load on each node, [L, N]."""
    return gpu_load.view(gpu_load.shape[0], topo.nodes, topo.gpus_per_node).sum(-1)


def live_gpus(topo: Topology) -> torch.Tensor:
    """Bool [G]: GPUs that are not excluded."""
    live = torch.ones(topo.gpus, dtype=torch.bool)
    if topo.excluded_gpus:
        live[list(topo.excluded_gpus)] = False
    return live


_QUOTIENT_CELLS = 1 << 22
"""Most quotients :func:`optimal_replica_max` holds at once (32 MiB of float64)."""


def optimal_replica_max(load: torch.Tensor, slots: int) -> torch.Tensor:
    """Smallest achievable max per-replica load T* when ``slots`` replicas are shared out, [B].

    Greedy D'Hondt (each extra replica to the largest load/count) is exactly
    optimal for this. Its counts are 1 + the number of quotients load[e]/k,
    k >= 1 (the priority of replica k + 1), among the ``slots - E`` largest;
    computed here without a loop.
    """
    rows, experts = load.shape
    extra = slots - experts
    if extra <= 0:
        return load.max(dim=1).values
    step = max(1, _QUOTIENT_CELLS // (experts * extra))
    if rows > step:  # rows are independent: bound the [rows, experts * extra] temporaries
        return torch.cat([optimal_replica_max(part, slots) for part in load.split(step)])
    k = torch.arange(1, extra + 1, dtype=load.dtype, device=load.device)
    q = (load.unsqueeze(-1) / k).reshape(rows, -1)
    cut = torch.topk(q, extra, dim=1).values[:, -1:]
    above = (q > cut).view(rows, experts, extra).sum(-1)
    ties = (q == cut).view(rows, experts, extra).sum(-1)
    need = extra - above.sum(-1, keepdim=True)
    take = torch.minimum(ties, (need - (torch.cumsum(ties, 1) - ties)).clamp(min=0))
    return (load / (1 + above + take)).max(dim=1).values


def _best_split(value: torch.Tensor, subsets: list[tuple[int, ...]], k: int) -> torch.Tensor:
    """Min over partitions of k groups into the given equal-size subsets of the max subset value, [L].

    ``value`` [L, len(subsets)] is each subset's cost; dynamic programming over
    group masks (at most 4096 for k <= 12), compiled: a few hundred tiny
    tensor operations cost more in dispatch (and in thread hand-offs on a busy
    machine) than the arithmetic.
    """
    masks = np.array([sum(1 << i for i in sub) for sub in subsets], dtype=np.int64)
    cost = np.ascontiguousarray(value.detach().to(torch.float64).cpu().numpy())
    best = _split_dp(cost, masks, k, len(subsets[0]))
    return torch.from_numpy(best).to(device=value.device, dtype=value.dtype)


@njit(cache=True, nogil=True)
def _split_dp(cost: np.ndarray, masks: np.ndarray, k: int, per: int) -> np.ndarray:
    """DP of :func:`_best_split`: best[mask] over masks in increasing order (a mask's rest is smaller)."""
    layers = cost.shape[0]
    full = (1 << k) - 1
    best = np.full((full + 1, layers), np.inf)
    best[0, :] = 0.0
    for mask in range(1, full + 1):
        bits = 0
        low = -1
        for i in range(k):
            if (mask >> i) & 1:
                bits += 1
                if low < 0:
                    low = i
        if bits % per:
            continue
        for j in range(masks.shape[0]):
            m = masks[j]
            if (m >> low) & 1 and (m & mask) == m:
                rest = mask ^ m
                for layer in range(layers):
                    cand = max(best[rest, layer], cost[layer, j])
                    if cand < best[mask, layer]:
                        best[mask, layer] = cand
    return best[full].copy()


def group_split_bound(load: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Lower bound on the max node load when whole groups go to nodes, [L].

    Exact (the best split into nodes of groups/nodes groups each) by dynamic
    programming over subsets when there are at most 12 groups; otherwise the
    weaker bound max(total / nodes, heaviest group + lightest others).
    """
    layers = load.shape[0]
    k, n = topo.groups, topo.nodes
    per = k // n
    group = load.view(layers, k, -1).sum(-1)
    if n == 1:
        return group.sum(-1)
    if k > 12:
        srt = torch.sort(group, dim=1).values
        heavy = srt[:, -1] + srt[:, : per - 1].sum(-1)
        return torch.maximum(group.sum(-1) / n, heavy)
    subsets = list(itertools.combinations(range(k), per))
    return _best_split(torch.stack([group[:, list(sub)].sum(-1) for sub in subsets], dim=1), subsets, k)


def hierarchical_bound(load: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Lower bound on the max GPU load under the hierarchical policy, [L].

    Each node holds whole groups and replicates only its own experts within its
    S/N slots, so for a given split a node's GPUs carry at least
    max(node load / GPUs per node, optimal max replica load of the node's
    experts over S/N slots). The bound is the best split of that (exact by
    dynamic programming for at most 12 groups; else the group split alone).
    """
    k, n, gpn = topo.groups, topo.nodes, topo.gpus_per_node
    if k > 12:
        return group_split_bound(load, topo) / gpn
    layers, experts = load.shape
    size = experts // k
    subsets = list(itertools.combinations(range(k), k // n))
    idx = torch.tensor([[g * size + e for g in sub for e in range(size)] for sub in subsets], device=load.device)
    member = load[:, idx]  # [L, subsets, E / N]
    t_star = optimal_replica_max(member.reshape(-1, idx.shape[1]), topo.slots // n).view(layers, len(subsets))
    return _best_split(torch.maximum(member.sum(-1) / gpn, t_star), subsets, k)


PAIRING_STEPS = 12
"""Bisection steps of :func:`pairing_bound` (the interval shrinks 4096-fold)."""
PAIRING_LEVELS = 24
"""Threshold levels tried per step: the partner limits T - s of the largest replicas."""
PAIRING_WEIGHTS = np.array([0.25, 1 / 3, 0.5, 2 / 3, 1.0])
"""Weights m of the threshold in the certificate cost (see :func:`_pair_certified`)."""


def pairing_bound(load: torch.Tensor, slots: int, low: torch.Tensor, high: torch.Tensor, per_gpu: int = 2) -> torch.Tensor:
    """Lower bound [L] on the busiest GPU when each of slots / ``per_gpu`` GPUs holds ``per_gpu`` replicas.

    Bisects between ``low`` (a known bound) and ``high`` (a known placement's
    busiest GPU), keeping the largest target that :func:`_pair_certified`
    proves unreachable. It sees what the count bound cannot: a replica near
    the target needs a small partner, and small partners cost replicas.
    Compiled (:func:`_pairing_rows`), blocks of layers over threads.
    """
    w = np.ascontiguousarray(load.detach().to("cpu", torch.float64).numpy())
    lo = np.ascontiguousarray(low.detach().to("cpu", torch.float64).numpy())
    hi = np.ascontiguousarray(high.detach().to("cpu", torch.float64).numpy())
    (out,) = by_rows(w.shape[0], lambda at: (_pairing_rows(w[at], slots, lo[at], hi[at], per_gpu, PAIRING_STEPS,
                                                            PAIRING_LEVELS, PAIRING_WEIGHTS),))
    return torch.from_numpy(out).to(device=load.device, dtype=load.dtype)


@njit(cache=True, nogil=True)
def _pairing_rows(w: np.ndarray, slots: int, low: np.ndarray, high: np.ndarray, per: int, steps: int, levels: int,
                  weights: np.ndarray) -> np.ndarray:
    """:func:`pairing_bound` of every row of ``w`` [L, E]."""
    out = low.copy()
    for r in range(w.shape[0]):
        lo, hi = low[r], max(high[r], low[r])
        for _ in range(steps):
            mid = (lo + hi) / 2
            if _pair_certified(w[r], slots, mid, per, levels, weights):
                lo = mid
            else:
                hi = mid
        out[r] = lo
    return out


@njit(cache=True, nogil=True)
def _pair_certified(w: np.ndarray, slots: int, t: float, per: int, levels: int, weights: np.ndarray) -> bool:
    """Whether the row ``w`` [E] is proven unable to keep every GPU's ``per`` replicas at or below ``t``.

    A certificate is a cost per replica size, psi, whose sum over the ``per``
    replicas of a GPU is at most ``per`` whenever they sum to at most T: then
    the S replicas of any placement within T cost at most S in all, so counts
    whose cheapest cost exceeds S cannot exist. Here psi(s) = 1 - m / (per - 1)
    for s <= y, 1 + m for s >= h = T - y (and > T / 2), 1 in between (y <= T / 2,
    0 <= m <= 1). It is valid: a GPU holds at most one replica above T / 2,
    and one of at least T - y leaves at most y to the other per - 1, so each
    of them is at most y and the GPU's sum is exactly ``per``; a GPU without
    one sums to at most ``per``. (At 2 per GPU: a replica reaching T - y
    needs a partner of at most y.) Each expert pays the least of c * psi(load / c) over its
    possible counts c (at least ceil(load / T), at most S - E + 1); as psi
    only falls with c, the cheapest is the fewest replicas, the first count
    whose size drops below T - y, or the first that drops to y. Tried for
    y = T - s of the ``levels`` largest fewest-count replicas s, with each
    of ``weights`` as m; a row whose fewest counts already exceed S is
    proven too (the count bound). High is tested exactly against the level's
    own replica size and low with margins (:func:`_high`, :func:`_low`), and
    each run's fewest count is found with the same tests (:func:`_first_count`),
    so rounding can only weaken a certificate, never make a false one.
    """
    if not t > 0:
        return False  # a layer without load: nothing to prove
    experts = w.shape[0]
    cmin = np.empty(experts)
    size = np.empty(experts)
    need = 0.0
    for e in range(experts):
        cmin[e] = max(np.ceil(w[e] / t * (1 - 1e-12)), 1.0)
        size[e] = w[e] / cmin[e]
        need += cmin[e]
    if need > slots:
        return True
    cmax = slots - experts + 1
    k = min(levels, experts)
    top = np.sort(size)[::-1][:k]
    half = t / 2
    base = np.empty(3)
    slope = np.empty(3)
    cost = np.empty(weights.shape[0])
    lw = 1.0 / (per - 1)
    for i in range(k):
        h = top[i]
        y = min(max(t - h, 0.0), half)
        cost[:] = 0.0
        for e in range(experts):
            c0 = cmin[e]
            counts = (c0, _first_count(w[e], c0, cmax, h, y, t, False), _first_count(w[e], c0, cmax, h, y, t, True))
            for j in range(3):
                c = counts[j]
                if c > cmax:
                    base[j], slope[j] = np.inf, 0.0  # a count beyond S - E + 1 leaves other experts none
                    continue
                sz = w[e] / c
                base[j] = c
                slope[j] = c * ((1.0 if _high(sz, h, t) else 0.0) - (lw if _low(sz, y, t) else 0.0))
            for q in range(weights.shape[0]):
                m = weights[q]
                cost[q] += min(base[0] + m * slope[0], base[1] + m * slope[1], base[2] + m * slope[2])
        for q in range(weights.shape[0]):
            if cost[q] > slots * (1 + 1e-9):
                return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _high(s: float, h: float, t: float) -> bool:
    """A replica of size s is high at level h (the level's own replica size): s >= h and s > T / 2.

    Strict on purpose (no margin): a high replica must leave its GPU's others
    at most T - h, whatever the rounding.
    """
    return s >= h and s > t / 2 * (1 + 1e-9)


@njit(cache=True, nogil=True, inline="always")
def _low(s: float, y: float, t: float) -> bool:
    """A replica of size s is low at level y = T - h: s <= y, with margins (1e-9 relative, 1e-12 T absolute) that
    only ever count more replicas low, so that rounding can never leave a high replica's partner out."""
    return s <= y * (1 + 1e-9) + 1e-12 * t and s <= t / 2 * (1 + 1e-9)


@njit(cache=True, nogil=True, inline="always")
def _first_count(w: float, c0: float, cmax: float, h: float, y: float, t: float, low: bool) -> float:
    """The fewest replicas (>= c0) whose size w / c is low at level y (``low``), or no longer high at level h;
    cmax + 1 when no allowed count is. Started from the formula, then moved to agree with :func:`_high` /
    :func:`_low` exactly, so the cheapest count of each constant-psi run is always tried."""
    if low:
        edge = min(y * (1 + 1e-9) + 1e-12 * t, t / 2 * (1 + 1e-9))
        c = max(c0, np.ceil(w / edge)) if edge > 0 else (c0 if w <= 0 else cmax + 1)
        while c > c0 and _low(w / (c - 1), y, t):
            c -= 1
        while c <= cmax and not _low(w / c, y, t):
            c += 1
    else:
        c = max(c0, np.floor(w / max(h, t / 2 * (1 + 1e-9))) + 1)
        while c > c0 and not _high(w / (c - 1), h, t):
            c -= 1
        while c <= cmax and _high(w / c, h, t):
            c += 1
    return min(c, cmax + 1)


def count_bound(load: torch.Tensor, topo: Topology) -> torch.Tensor:
    """The bound from loads and replica counts alone, per layer [L]: the :func:`lower_bound` of any slot count.

    max(total / live GPUs, optimal max per-replica load over live slots),
    and under the hierarchical policy also the best group->node split, where
    each node's GPUs carry at least its load share and its own replicas' max
    (see :func:`hierarchical_bound`).
    """
    live = int(live_gpus(topo).sum())
    slots = live * topo.slots_per_gpu
    lb = torch.maximum(load.sum(-1) / live, optimal_replica_max(load, slots))
    if topo.hierarchical:
        lb = torch.maximum(lb, hierarchical_bound(load, topo))
    return lb


PAIRING_SHAPES = (2, 3, 4)
"""Slots per GPU where :func:`lower_bound` adds :func:`pairing_bound` (few replicas per GPU: there it can bite)."""


def lower_bound(load: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Lower bound on the max GPU load of any placement, per layer [L].

    :func:`count_bound`; where GPUs hold 2 to 4 slots each (decode shapes,
    few replicas per GPU), raised by :func:`pairing_bound`: the replicas
    sharing a GPU must fit together, which the count bound cannot see. The
    upper end of its bisection is a placement's busiest GPU: D'Hondt's counts
    paired best at 2 slots per GPU, the ``fast`` plan otherwise.
    """
    lb = count_bound(load, topo)
    per = topo.slots_per_gpu
    if per not in PAIRING_SHAPES or load.shape[0] == 0 or load.shape[1] < 2:
        return lb
    live = int(live_gpus(topo).sum())
    slots = live * per
    cpu = load.detach().to("cpu", torch.float64)
    if per == 2:
        from .strategies.kernels import dhondt_rows
        from .strategies.pairing import paired

        w = np.ascontiguousarray(cpu.numpy())
        high = torch.from_numpy(paired(w, dhondt_rows(w, slots))[1])
    else:
        from .strategies.chains import compose

        flat = Topology(experts=topo.experts, slots=slots, gpus=live)
        high = gpu_loads(Placement(compose(cpu, flat, "fast"), flat), cpu).amax(1)
    return pairing_bound(cpu, slots, lb.detach().to("cpu", torch.float64), high, per).to(lb)


@dataclass
class Score:
    """Per-layer and aggregate balance figures of one placement on one load matrix."""

    gpu_load: torch.Tensor  # [L, G]
    node_load: torch.Tensor  # [L, N]
    slot_load: torch.Tensor  # [L, S]
    lower: torch.Tensor  # [L]
    active: torch.Tensor  # bool [L]: layers with load
    live: torch.Tensor  # bool [G]
    extras: dict = field(default_factory=dict)

    @property
    def skipped_layers(self) -> int:
        return int((~self.active).sum())

    def _ratio(self, loads: torch.Tensor, live: torch.Tensor | None = None) -> torch.Tensor:
        if live is not None:
            loads = loads[:, live]
        a = loads[self.active]
        return a.max(-1).values / a.mean(-1)

    def gpu_imbalance_per_layer(self) -> torch.Tensor:
        """max/mean GPU load for each loaded layer."""
        return self._ratio(self.gpu_load, self.live)

    def node_imbalance_per_layer(self) -> torch.Tensor:
        return self._ratio(self.node_load)

    def summary(self) -> dict[str, float | int]:
        """The aggregate figures every command reports (keys shared by --json outputs)."""
        if not bool(self.active.any()):
            nan = float("nan")
            return dict.fromkeys(
                ["gpu_imbalance", "gpu_imbalance_worst", "node_imbalance", "node_imbalance_worst",
                 "balancedness", "slot_balancedness", "lower_bound", "gap"], nan
            ) | {"skipped_layers": self.skipped_layers}
        gpu = self.gpu_load[:, self.live][self.active]
        gpu_max, gpu_mean = gpu.max(-1).values, gpu.mean(-1)
        gi, ni = self.gpu_imbalance_per_layer(), self.node_imbalance_per_layer()
        spg = self.slot_load.shape[1] // self.live.numel()
        slot = self.slot_load[self.active][:, self.live.repeat_interleave(spg)]
        lb = self.lower[self.active]
        return {
            "gpu_imbalance": float(gi.mean()),
            "gpu_imbalance_worst": float(gi.max()),
            "node_imbalance": float(ni.mean()),
            "node_imbalance_worst": float(ni.max()),
            "balancedness": float(gpu_mean.sum() / gpu_max.sum()),
            "slot_balancedness": float(slot.mean(-1).sum() / slot.max(-1).values.sum()),
            "lower_bound": float((lb / gpu_mean).mean()),
            "gap": float(gpu_max.sum() / lb.sum() - 1.0),
            "skipped_layers": self.skipped_layers,
        }

    def per_gpu(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(load summed over loaded layers [G], share of loaded layers where the GPU is busiest [G])."""
        return _per_unit(self.gpu_load, self.active, self.live)

    def per_node(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _per_unit(self.node_load, self.active, None)


def _per_unit(loads: torch.Tensor, active: torch.Tensor, live: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    a = loads[active]
    total = a.sum(0)
    if a.shape[0] == 0:
        return total, torch.zeros_like(total)
    masked = a if live is None else a.masked_fill(~live, float("-inf"))
    busiest = masked.argmax(-1)
    share = torch.bincount(busiest, minlength=loads.shape[1]).to(loads.dtype) / a.shape[0]
    return total, share


def score(placement: Placement, load: torch.Tensor) -> Score:
    """Score ``placement`` on ``load`` [L, E] (float64)."""
    topo = placement.topology
    load = load.to(torch.float64)
    slot = slot_loads(placement, load)
    gpu = slot.view(load.shape[0], topo.gpus, topo.slots_per_gpu).sum(-1)
    return Score(
        gpu_load=gpu,
        node_load=node_loads(gpu, topo),
        slot_load=slot,
        lower=lower_bound(load, topo),
        active=load.sum(-1) > 0,
        live=live_gpus(topo),
    )


def count_moves(old: Placement, new: Placement) -> dict[str, Any]:
    """Replicas (layer, slot) whose expert changes from ``old`` to ``new``.

    A changed slot is intra-node when the old placement already held its new
    expert somewhere on the same node (a copy over NVLink), else inter-node.
    """
    topo = new.topology
    a, b = old.phy2log, new.phy2log
    changed = (a != b) & (b >= 0)
    layers, slots = b.shape
    node_of_slot = torch.arange(slots) // topo.slots_per_gpu // topo.gpus_per_node
    e = topo.experts
    held = torch.zeros(layers, topo.nodes, e + 1, dtype=torch.bool)
    idx = node_of_slot.expand(layers, slots) * (e + 1) + torch.where(a >= 0, a, torch.full_like(a, e))
    held.view(layers, -1).scatter_(1, idx, True)
    need = node_of_slot.expand(layers, slots) * (e + 1) + b.clamp(min=0)
    local = held.view(layers, -1).gather(1, need)
    moves = int(changed.sum())
    intra = int((changed & local).sum())
    return {"moves": moves, "moves_intra_node": intra, "moves_inter_node": moves - intra}


# ---------------------------------------------------------------- served load over many windows


def window_gpu_loads(placement: Placement, loads: torch.Tensor) -> torch.Tensor:
    """GPU loads of one placement on many windows at once, float64 [W, L, G].

    The windows are stacked into the layer dimension, so scoring a plan on
    every window it serves is one batched gather and sum.
    """
    windows, layers, experts = loads.shape
    stacked = Placement(placement.phy2log.repeat(windows, 1), placement.topology)
    return gpu_loads(stacked, loads.reshape(windows * layers, experts).to(torch.float64)).view(windows, layers, -1)


@dataclass
class ServedTally:
    """Running sums over (window, layer) pairs with load, for served-load figures.

    ``imbalance`` is the mean over those pairs of max/mean GPU load;
    ``balancedness`` is sum of means / sum of maxes, the aggregate of DESIGN.md
    taken over windows as well as layers. ``window_imbalance`` keeps each
    window's GPU imbalance (the mean over its loaded layers), for the
    distribution over windows (:meth:`window_percentile`): step time follows
    the busy windows, not the average.
    """

    pairs: int = 0
    ratio_sum: float = 0.0
    mean_sum: float = 0.0
    max_sum: float = 0.0
    worst: float = float("nan")
    window_imbalance: list[float] = field(default_factory=list)

    def add(self, gpu_load: torch.Tensor, live: torch.Tensor) -> ServedTally:
        """Add GPU loads [W, L, G] (or [L, G], one window); pairs whose live GPUs carry nothing are skipped."""
        by_window = gpu_load[..., live].reshape(-1 if gpu_load.dim() == 3 else 1, gpu_load.shape[-2], int(live.sum()))
        w_mean, w_peak = by_window.mean(dim=-1), by_window.max(dim=-1).values
        w_active = w_peak > 0
        w_ratio = torch.where(w_active, w_peak / torch.where(w_active, w_mean, 1.0), 0.0).sum(dim=-1)
        w_count = w_active.sum(dim=-1)
        self.window_imbalance.extend((w_ratio[w_count > 0] / w_count[w_count > 0]).tolist())
        loads = gpu_load[..., live].reshape(-1, int(live.sum()))
        mean, peak = loads.mean(dim=-1), loads.max(dim=-1).values
        active = peak > 0
        if bool(active.any()):
            ratio = peak[active] / mean[active]
            self.pairs += int(active.sum())
            self.ratio_sum += float(ratio.sum())
            self.mean_sum += float(mean[active].sum())
            self.max_sum += float(peak[active].sum())
            top = float(ratio.max())
            self.worst = top if self.worst != self.worst else max(self.worst, top)
        return self

    def merge(self, other: ServedTally) -> ServedTally:
        """Add another tally's sums into this one."""
        self.pairs += other.pairs
        self.ratio_sum += other.ratio_sum
        self.mean_sum += other.mean_sum
        self.max_sum += other.max_sum
        if other.worst == other.worst:
            self.worst = other.worst if self.worst != self.worst else max(self.worst, other.worst)
        self.window_imbalance.extend(other.window_imbalance)
        return self

    def window_percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100, linear interpolation as numpy's default) of per-window GPU imbalance."""
        if not self.window_imbalance:
            return float("nan")
        return float(torch.quantile(torch.tensor(self.window_imbalance, dtype=torch.float64), q / 100.0))

    def window_summary(self, prefix: str = "served_gpu_imbalance") -> dict[str, float]:
        """p50, p95, p99 and worst of per-window GPU imbalance, keyed ``{prefix}_p50`` ... ``{prefix}_worst_window``."""
        return {f"{prefix}_p50": self.window_percentile(50), f"{prefix}_p95": self.window_percentile(95),
                f"{prefix}_p99": self.window_percentile(99), f"{prefix}_worst_window": self.window_percentile(100)}

    @property
    def imbalance(self) -> float:
        return self.ratio_sum / self.pairs if self.pairs else float("nan")

    @property
    def balancedness(self) -> float:
        return self.mean_sum / self.max_sum if self.max_sum > 0 else float("nan")
