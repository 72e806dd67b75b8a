"""Scenario-robust planning: a placement that holds up on the windows to come, not only on their forecast.

A plan made for a point forecast is balanced on that forecast, but each served
window scatters around it, and each window's busiest GPU sets its step time.
The recorded windows are samples of that scatter, so they serve as scenarios
(DESIGN.md, "What the server feels"): :func:`robust_swaps` starts from the
forecast's plan and swaps replicas between GPUs to lower the weighted mean over
the scenarios of each scenario's busiest GPU load. The weights are the
forecast's own (:func:`scenario_weights`): ``mean`` weighs the windows equally,
``ema`` favours recent ones and ``last`` keeps only the newest, so on drifting
traffic the old windows, which no longer say what comes next, count for little.
The forecast is then the weighted mean of the scenarios, and the robust plan
asks more of the placement than to balance that mean.

Replica counts never change (each expert keeps the replicas the forecast gave
it); under the hierarchical policy swaps stay within a node, so every node
keeps its groups and its load in every scenario, and the busiest node too.

Guarantees, per layer: the scenario objective never rises (a swap is taken only
when it lowers it, counted exactly), and on the forecast itself no GPU ends
above ``1 + tolerance`` times the starting plan's busiest GPU
(:data:`ROBUST_TOLERANCE` by default).

Cost: per-scenario GPU loads are kept and updated by the two GPUs a swap
touches, never re-scored from scratch. Each round, every replica on the GPUs
busiest in the most scenarios is paired with the replicas on their least
loaded partners and screened by a quadratic model of the gain (the load each
busiest GPU sheds, less a penalty for swaps that move much load: their
first-order gain overstates what they achieve once another GPU becomes the
busiest). The best candidates are ranked exactly on a sample of the scenarios,
the finalists scored exactly on all of them, and each layer takes the best
swap, or several on distinct slots when together they beat the best alone.
The rounds run in one compiled call (Numba, :func:`_swap_all`), layer after
layer, so a round costs tens of microseconds rather than a hundred small
tensor operations; a layer stops at its first round in which no swap lowers
its objective by :data:`_MIN_GAIN` of it. Ties (candidates of equal screen or
gain, partners of equal load) go to the lower index, so results are
deterministic.

:func:`keep_gain` is the migration-aware follow step for a robust plan: it
keeps replicas in place where that costs no balance on the forecast (relabel
and swap back, as :func:`eplb_cli.planning.migration.follow` does), then wins back the
robust objective wherever swapping back gave some of it away.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import EplbError, arg
from ..jit import njit
from ..metrics import live_gpus
from ..placement import Placement, replica_counts
from .budget import MoveBudget
from .forecast import Forecast
from .migration import budgeted, relabel, swap_back

ROBUST_TOLERANCE = 0.05
"""Default headroom on the forecast: no GPU's forecast load may end above 1.05 x the starting plan's busiest GPU."""

CANDIDATES = 64
"""Swaps per layer and round ranked exactly (the rest are screened out)."""

_CURVATURE = 2.0
"""Weight of the quadratic penalty in the screen, per unit of (moved load)^2 / mean busiest-GPU load."""

_BUSY_GPUS = 4
"""Each screened swap moves a replica off one of this many GPUs, those busiest in the most scenarios."""

_PARTNERS = 8
"""GPUs each busy GPU may swap with: the allowed ones with the least load over all scenarios."""

_SAMPLE = 32
"""Scenarios the candidates are ranked on when there are more (every n-th, a different offset each round)."""

_FINALISTS = 8
"""Candidates per layer then scored on every scenario."""

_MIN_GAIN = 1e-4
"""A swap must lower its layer's objective by this share of it (0.01%): smaller gains are noise, not worth a round."""

_PER_ROUND = 4
"""Most swaps (on distinct slots) a layer takes per round."""


def scenario_weights(forecast: Forecast, windows: int, cap: int | None = None) -> torch.Tensor:
    """Weight of each of the last ``windows`` history windows as a scenario, float64 [windows], summing to 1.

    The forecast's own weights (uniform for ``mean``, exponential for ``ema``,
    the newest window alone for ``last``); with ``cap``, only the last ``cap``
    windows keep theirs, renormalised.
    """
    if cap is not None and cap < 1:
        raise EplbError(f"{arg('scenarios', cap)}: must be >= 1 window")
    if forecast.needs_future:
        raise EplbError(f"{arg('robust')}: the oracle forecast has no history to draw scenarios from; "
                        f"use {arg('forecast', 'last')}, mean or ema:ALPHA")
    w = forecast.weights(windows)
    if cap is not None and cap < windows:
        w = torch.cat([torch.zeros(windows - cap, dtype=torch.float64), w[-cap:]])
    return w / w.sum()


def scenario_gpu_loads(placement: Placement, scenarios: torch.Tensor) -> torch.Tensor:
    """GPU loads of ``placement`` in every scenario, float64 [L, H, G], from ``scenarios`` [H, L, E]."""
    topo = placement.topology
    layers, slots = placement.phy2log.shape
    e = topo.experts
    share = _shares(placement.phy2log, scenarios.to(torch.float64).permute(1, 0, 2), e)
    key = torch.where(placement.phy2log >= 0, placement.phy2log, e)
    gpu_of = torch.arange(slots) // topo.slots_per_gpu
    per_slot = share.gather(2, key.unsqueeze(1).expand(layers, share.shape[1], slots))
    return torch.zeros(layers, share.shape[1], topo.gpus, dtype=torch.float64).index_add_(2, gpu_of, per_slot)


def scenario_objective(placement: Placement, scenarios: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean over scenarios of the busiest GPU's load, per layer, float64 [L]: what :func:`robust_swaps` lowers.

    ``weights`` [H] default to equal; they are normalised to sum to 1.
    """
    peak = scenario_gpu_loads(placement, scenarios).max(dim=2).values  # [L, H]
    w = _normalised(weights, scenarios.shape[0])
    return peak @ w


def _normalised(weights: torch.Tensor | None, windows: int) -> torch.Tensor:
    """``weights`` [H] as float64 summing to 1 (equal weights when None)."""
    if weights is None:
        return torch.full((windows,), 1.0 / windows, dtype=torch.float64)
    w = weights.to(torch.float64)
    if w.shape != (windows,) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise EplbError(f"scenario weights: expected {windows} weights >= 0 with a positive sum")
    return w / w.sum()


def check_scenarios(scenarios: torch.Tensor, placement: Placement, name: str = "scenarios") -> None:
    """``scenarios`` must be [H >= 1, L, E] for the placement's layers and experts."""
    if scenarios.dim() != 3 or scenarios.shape[0] < 1 or scenarios.shape[1] != placement.layers \
            or scenarios.shape[2] != placement.topology.experts:
        raise EplbError(f"{name}: expected [windows >= 1, {placement.layers}, {placement.topology.experts}] loads, "
                        f"got {tuple(scenarios.shape)}")


def _shares(phy2log: torch.Tensor, load: torch.Tensor, experts: int) -> torch.Tensor:
    """Load per replica, [L, H, E + 1] from ``load`` [L, H, E]; the last column (empty slots) is 0."""
    cnt = replica_counts(phy2log, experts).clamp(min=1).to(torch.float64)
    share = load / cnt.unsqueeze(1)
    return torch.cat([share, share.new_zeros(share.shape[0], share.shape[1], 1)], dim=2)


def _forecast_gpu_loads(placement: Placement, forecast: torch.Tensor) -> torch.Tensor:
    """GPU loads of ``placement`` on ``forecast`` [L, E], float64 [L, G]."""
    return scenario_gpu_loads(placement, forecast.unsqueeze(0)).squeeze(1)


def robust_swaps(placement: Placement, scenarios: torch.Tensor, forecast: torch.Tensor, *,
                 weights: torch.Tensor | None = None, tolerance: float = ROBUST_TOLERANCE,
                 reference: Placement | None = None, max_rounds: int | None = None) -> Placement:
    """Swap replicas of ``placement`` to lower the weighted mean over ``scenarios`` of each one's busiest GPU.

    ``scenarios`` is float [H, L, E] (e.g. the history windows) with
    ``weights`` [H] (default: equal), ``forecast`` [L, E] the load the
    placement was planned for. Per layer, a swap is taken only when it lowers
    the scenario objective (:func:`scenario_objective`) and keeps every GPU's
    load on the forecast within ``1 + tolerance`` times the busiest GPU's
    forecast load of ``reference`` (default: ``placement``). Stops when no
    screened swap improves a layer, or after ``max_rounds`` rounds (default:
    the number of slots). See the module doc for the method.
    """
    check_scenarios(scenarios, placement)
    if forecast.shape != (placement.layers, placement.topology.experts):
        raise EplbError(f"forecast: expected [{placement.layers}, {placement.topology.experts}] loads, "
                        f"got {tuple(forecast.shape)}")
    if not tolerance >= 0:
        raise EplbError(f"{arg('tolerance', tolerance)}: must be >= 0 (0 keeps the forecast's busiest GPU as it is)")
    w = _normalised(weights, scenarios.shape[0])
    topo = placement.topology
    layers, slots = placement.phy2log.shape
    g_all, k, e = topo.gpus, topo.slots_per_gpu, topo.experts
    gpu_of = torch.arange(slots) // k
    live = live_gpus(topo)
    gpus = torch.arange(g_all)
    gpu_ok = (gpus.unsqueeze(1) != gpus.unsqueeze(0)) & live.unsqueeze(1) & live.unsqueeze(0)
    if topo.hierarchical:
        node = gpus // topo.gpus_per_node
        gpu_ok &= node.unsqueeze(1) == node.unsqueeze(0)
    if not bool(gpu_ok.any()):
        return placement

    # A weighted max is the max of the weighted loads: scale each scenario by its weight, drop those weighing 0.
    kept = (w > 0).nonzero().squeeze(1)
    weighted = scenarios.to(torch.float64).index_select(0, kept) * w[kept].view(-1, 1, 1)
    key = torch.where(placement.phy2log >= 0, placement.phy2log, e)
    cnt = replica_counts(placement.phy2log, e).clamp(min=1).to(torch.float64)
    share_t = torch.zeros(layers, e + 1, kept.numel(), dtype=torch.float64)  # [L, E + 1, H]: load per replica
    share_t[:, :e] = weighted.permute(1, 2, 0) / cnt.unsqueeze(2)
    fshare = torch.cat([forecast.to(torch.float64) / cnt, cnt.new_zeros(layers, 1)], dim=1)  # [L, E + 1]
    gt = torch.zeros(layers, g_all, kept.numel(), dtype=torch.float64).index_add_(1, gpu_of, _rows(share_t, key))
    gf = torch.zeros(layers, g_all, dtype=torch.float64).index_add_(1, gpu_of, fshare.gather(1, key))
    ref = gf if reference is None else _forecast_gpu_loads(reference, forecast)
    cap = (1.0 + tolerance) * ref.max(dim=1).values
    cap = cap + 1e-12 * cap.abs().clamp(min=1.0)

    busy = min(_BUSY_GPUS, g_all)
    rounds = slots if max_rounds is None else max_rounds
    slot_expert = np.ascontiguousarray(key.numpy())
    _swap_all(slot_expert, gt.numpy(), gf.numpy(), cap.numpy(), share_t.numpy(), fshare.numpy(), gpu_ok.numpy(), k,
              busy, rounds)
    out = torch.from_numpy(slot_expert)
    return Placement(torch.where(out < e, out, -1), topo)


def keep_gain(old: Placement, robust: Placement, scenarios: torch.Tensor, forecast: torch.Tensor, *,
              weights: torch.Tensor | None = None, tolerance: float = ROBUST_TOLERANCE,
              reference: Placement | None = None, max_moves: int | MoveBudget | None = None) -> Placement:
    """The placement to serve after ``old`` when ``robust`` came out of :func:`robust_swaps`.

    ``robust`` relabelled to ``old`` (GPUs renamed: every scenario keeps its
    GPU loads) and swapped back (replicas returned to their old GPU where no
    GPU ends above the busiest one on ``forecast``). Swapping back looks at
    the forecast alone, so it can raise the scenario objective; where it did,
    :func:`robust_swaps` runs again from there (same cap on the forecast,
    relative to ``reference``, default ``robust``), and layers that still end
    above the robust plan's objective keep the relabelled plan, which has it
    exactly. So per layer the result's scenario objective is at most
    ``robust``'s. With ``max_moves`` (a count per layer, or a
    :class:`~eplb_cli.planning.budget.MoveBudget`),
    :func:`eplb_cli.planning.migration.budgeted` then moves at most that many
    replicas towards it; the budget may leave some of the gain unrealised.
    """
    ref = robust if reference is None else reference
    renamed = relabel(old, robust)
    target = scenario_objective(renamed, scenarios, weights)
    back = swap_back(old, renamed, forecast)
    worse = scenario_objective(back, scenarios, weights) > target * (1 + 1e-12)
    if bool(worse.any()):
        rows = worse.nonzero().squeeze(1)
        sub = robust_swaps(Placement(back.phy2log[rows], back.topology), scenarios[:, rows], forecast[rows],
                           weights=weights, tolerance=tolerance, reference=Placement(ref.phy2log[rows], ref.topology))
        still = scenario_objective(sub, scenarios[:, rows], weights) > target[rows] * (1 + 1e-12)
        fixed = torch.where(still.unsqueeze(1), renamed.phy2log[rows], sub.phy2log)
        phy2log = back.phy2log.clone()
        phy2log[rows] = fixed
        back = Placement(phy2log, back.topology)
    if max_moves is None:
        return back
    return budgeted(old, back, forecast, max_moves)


def robust_rebalance(planned: Placement, serving: Placement | None, history: torch.Tensor, forecast_load: torch.Tensor,
                     forecast: Forecast, *, scenarios: int | None = None, tolerance: float = ROBUST_TOLERANCE,
                     max_moves: int | MoveBudget | None = None) -> Placement:
    """One robust rebalance: ``planned`` (the forecast's plan) made robust on ``history`` [H, L, E], then followed.

    The scenarios are the last ``scenarios`` history windows (all when None)
    with the forecast's weights (:func:`scenario_weights`); ``forecast_load``
    [L, E] is what ``planned`` was made for. With ``serving`` (the placement
    served now) the result keeps the gain while moving little
    (:func:`keep_gain`, within ``max_moves`` when given).
    """
    weights = scenario_weights(forecast, history.shape[0], scenarios)
    robust = robust_swaps(planned, history, forecast_load, weights=weights, tolerance=tolerance)
    if serving is None:
        return robust
    return keep_gain(serving, robust, history, forecast_load, weights=weights, tolerance=tolerance,
                     reference=planned, max_moves=max_moves)


def robust_summary(planned: Placement, robust: Placement, history: torch.Tensor, forecast_load: torch.Tensor, *,
                   scenarios: int | None = None, weights: torch.Tensor | None = None,
                   tolerance: float = ROBUST_TOLERANCE) -> dict:
    """What a robust plan changed: the scenario objective and the busiest GPU on the forecast, summed over layers.

    ``scenario_peak_change`` and ``forecast_peak_change`` are relative
    changes from ``planned`` to ``robust`` (negative is better).
    """
    used = history.shape[0] if scenarios is None else min(scenarios, history.shape[0])
    scen, w = history[-used:], None if weights is None else weights[-used:]
    before, after = scenario_objective(planned, scen, w).sum(), scenario_objective(robust, scen, w).sum()
    f_before = _forecast_gpu_loads(planned, forecast_load).max(dim=1).values.sum()
    f_after = _forecast_gpu_loads(robust, forecast_load).max(dim=1).values.sum()
    return {"scenarios": used, "robust_tolerance": tolerance,
            "scenario_peak_change": float(after / before - 1.0) if before > 0 else 0.0,
            "forecast_peak_change": float(f_after / f_before - 1.0) if f_before > 0 else 0.0}


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[r, index[r, ...], :]`` for a [R, N, H] table and an int64 index [R, ...], as [R, ..., H].

    One ``index_select`` over the flattened rows (much cheaper than a gather on an expanded index).
    """
    r, n, h = table.shape
    flat = (index + (torch.arange(r) * n).view((r,) + (1,) * (index.dim() - 1))).reshape(-1)
    return table.reshape(r * n, h).index_select(0, flat).view((*index.shape, h))


@njit(cache=True, nogil=True)
def _best(values: np.ndarray, count: int, largest: bool) -> np.ndarray:
    """Indices of the ``count`` largest (or smallest) ``values``, best first, ties to the lower index.

    An insertion into a short sorted list: one pass when few values enter it.
    """
    sign = -1.0 if largest else 1.0
    idx = np.empty(count, dtype=np.int64)
    val = np.empty(count)
    filled = 0
    for n in range(values.shape[0]):
        v = sign * values[n]
        if filled == count and not v < val[count - 1]:
            continue
        pos = min(filled, count - 1)
        while pos > 0 and v < val[pos - 1]:
            val[pos] = val[pos - 1]
            idx[pos] = idx[pos - 1]
            pos -= 1
        val[pos] = v
        idx[pos] = n
        filled = min(filled + 1, count)
    return idx


@njit(cache=True, nogil=True)
def _swap_gain(gt: np.ndarray, top_idx: np.ndarray, top_val: np.ndarray, share: np.ndarray, ca: int, cb: int,
               gi: int, gj: int, cols: np.ndarray, d: np.ndarray) -> float:
    """Exact drop of the summed busiest-GPU load over the scenarios ``cols`` when replicas ``ca`` (on GPU ``gi``)
    and ``cb`` (on ``gj``) swap; writes each scenario's change of GPU gi's load (-(change of gj's)) into ``d``.

    ``gt`` [G, H] are the GPU loads per scenario, ``share`` [E + 1, H] the load
    per replica, ``top_idx``/``top_val`` [T, H] (T <= 3) each scenario's
    busiest GPUs in order: only gi and gj change (by +d and -d), so the new
    busiest is the larger of theirs and the busiest of the others.
    """
    depth = top_idx.shape[0]
    total = 0.0
    for n in range(cols.shape[0]):
        h = cols[n]
        dh = share[cb, h] - share[ca, h]
        d[n] = dh
        new = max(gt[gi, h] + dh, gt[gj, h] - dh)
        first = top_idx[0, h]
        rest = top_val[0, h]
        if first == gi or first == gj:
            rest = 0.0
            if depth >= 3:
                second = top_idx[1, h]
                rest = top_val[2, h] if second == gi or second == gj else top_val[1, h]
        total += top_val[0, h] - max(rest, new)
    return total


@njit(cache=True, nogil=True)
def _top3(gt: np.ndarray, top_idx: np.ndarray, top_val: np.ndarray) -> None:
    """Each scenario's (up to) three busiest GPUs of ``gt`` [G, H], busiest first, ties to the lower index."""
    g_all, h_all = gt.shape
    depth = top_idx.shape[0]
    for h in range(h_all):
        for t in range(depth):
            top_idx[t, h] = -1
            top_val[t, h] = -np.inf
        for g in range(g_all):
            v = gt[g, h]
            for t in range(depth):
                if top_idx[t, h] < 0 or v > top_val[t, h]:
                    for u in range(depth - 1, t, -1):
                        top_idx[u, h] = top_idx[u - 1, h]
                        top_val[u, h] = top_val[u - 1, h]
                    top_idx[t, h] = g
                    top_val[t, h] = v
                    break


@njit(cache=True, nogil=True)
def _swap_all(key: np.ndarray, gt: np.ndarray, gf: np.ndarray, cap: np.ndarray, share: np.ndarray,
              fshare: np.ndarray, gpu_ok: np.ndarray, k: int, busy: int, rounds: int) -> None:
    """Robust swaps on every layer, one layer after another, in place on ``key``, ``gt`` and ``gf``.

    ``key`` [L, S] holds each slot's expert (E for an empty slot), ``gt``
    [L, G, H] and ``gf`` [L, G] the GPU loads per scenario and on the
    forecast, ``cap`` [L] the forecast cap, ``share`` [L, E + 1, H] and
    ``fshare`` [L, E + 1] the load per replica, ``gpu_ok`` [G, G] the GPU
    pairs a swap may join. A layer stops at its first round without a swap.
    """
    for layer in range(key.shape[0]):
        for turn in range(rounds):
            if not _round(key[layer], gt[layer], gf[layer], cap[layer], share[layer], fshare[layer], gpu_ok, k,
                          busy, turn):
                break


@njit(cache=True, nogil=True)
def _round(key: np.ndarray, gt: np.ndarray, gf: np.ndarray, cap: float, share: np.ndarray, fshare: np.ndarray,
           gpu_ok: np.ndarray, k: int, busy: int, turn: int) -> bool:
    """One round on one layer: screen, score the candidates exactly, apply the best swaps; False when none."""
    e = share.shape[0] - 1
    g_all, h_all = gt.shape
    depth = min(3, g_all)
    top_idx = np.empty((depth, h_all), dtype=np.int64)
    top_val = np.empty((depth, h_all))
    _top3(gt, top_idx, top_val)
    every = np.arange(h_all)
    # Screen and first ranking on every stride-th scenario (a different offset each round) when there are many.
    stride = -(-h_all // _SAMPLE)
    cols = np.arange(turn % stride, h_all, stride)
    h_s = cols.shape[0]
    hits = np.zeros(g_all)
    total = np.zeros(g_all)  # load over all scenarios: breaks ties in hits, ranks partners
    for h in range(h_all):
        hits[top_idx[0, h]] += 1.0
        for g in range(g_all):
            total[g] += gt[g, h]
    top_total = max(total.max(), 1e-300)
    hot = _best(hits + 0.5 * total / top_total, busy, True)
    # Partners of each busy GPU: the allowed GPUs with the least load over all scenarios.
    n_part = min(_PARTNERS, g_all - 1)
    near = np.empty((busy, n_part), dtype=np.int64)
    near_ok = np.empty((busy, n_part), dtype=np.bool_)
    for b in range(busy):
        allowed = np.full(g_all, np.inf)
        for g in range(g_all):
            if gpu_ok[hot[b], g]:
                allowed[g] = total[g]
        pick = _best(allowed, n_part, False)
        near[b] = pick
        near_ok[b] = allowed[pick] < np.inf
    peak_mean = 0.0
    for n in range(h_s):
        peak_mean += top_val[0, cols[n]]
    lam = _CURVATURE / max(peak_mean / h_s, 1e-300)
    # First-order screen over the sampled scenarios where the busy GPU g (or the partner p) is the busiest: g
    # sheds a and takes b, p the reverse. Quadratic penalty: sum over scenarios of (share_b - share_a)^2.
    width = n_part * k
    per_busy = min(-(-CANDIDATES // busy), k * width)
    n_cand = busy * per_busy
    si = np.empty(n_cand, dtype=np.int64)
    sj = np.empty(n_cand, dtype=np.int64)
    listed = np.empty(n_cand, dtype=np.bool_)
    rows_a = np.empty((k, h_s))
    rows_b = np.empty((h_s, width))  # transposed: the inner loops below run over the partners' slots
    screen = np.empty((k, width))
    for b in range(busy):
        g = hot[b]
        for i in range(k):
            for n in range(h_s):
                rows_a[i, n] = share[key[g * k + i], cols[n]]
        for j in range(width):
            x = key[near[b, j // k] * k + j % k]
            for n in range(h_s):
                rows_b[n, j] = share[x, cols[n]]
        part_a = np.zeros((k, n_part))
        row = np.zeros(k)
        for i in range(k):
            sq = 0.0
            at = 0.0
            for n in range(h_s):
                v = rows_a[i, n]
                sq += v * v
                top = top_idx[0, cols[n]]
                if top == g:
                    at += v
                for p in range(n_part):
                    if top == near[b, p]:
                        part_a[i, p] += v
            row[i] = lam * sq - at
        sq_b = np.zeros(width)
        at_b = np.zeros(width)
        off_b = np.zeros(width)
        cross = np.zeros((k, width))
        for n in range(h_s):
            top = top_idx[0, cols[n]]
            for j in range(width):
                v = rows_b[n, j]
                sq_b[j] += v * v
            if top == g:
                for j in range(width):
                    at_b[j] += rows_b[n, j]
            for p in range(n_part):
                if top == near[b, p]:
                    for j in range(p * k, (p + 1) * k):
                        off_b[j] += rows_b[n, j]
            for i in range(k):
                va = rows_a[i, n]
                for j in range(width):
                    cross[i, j] += va * rows_b[n, j]
        for i in range(k):
            xa = key[g * k + i]
            for j in range(width):
                p = j // k
                xb = key[near[b, p] * k + j % k]
                if not near_ok[b, p] or xb >= e or xa >= e or xa == xb:
                    screen[i, j] = np.inf
                else:
                    screen[i, j] = part_a[i, p] - 2.0 * lam * cross[i, j] + (at_b[j] - off_b[j] + lam * sq_b[j]) \
                        + row[i]
        # The best candidates of each busy GPU, so that a round can take a swap at each of them.
        best = _best(screen.ravel(), per_busy, False)
        for r in range(per_busy):
            c = b * per_busy + r
            flat = best[r]
            si[c] = g * k + flat // width
            j = flat % width
            sj[c] = near[b, j // k] * k + j % k
            listed[c] = screen[flat // width, flat % width] < np.inf
    fits = np.empty(n_cand, dtype=np.bool_)
    for c in range(n_cand):
        df = fshare[key[sj[c]]] - fshare[key[si[c]]]
        fits[c] = listed[c] and gf[si[c] // k] + df <= cap and gf[sj[c] // k] - df <= cap
    d_s = np.empty(h_s)
    if stride > 1:
        # Rank the candidates on the sampled scenarios, then score the best few on all of them.
        rough = np.full(n_cand, -np.inf)
        for c in range(n_cand):
            if fits[c]:
                rough[c] = _swap_gain(gt, top_idx, top_val, share, key[si[c]], key[sj[c]], si[c] // k, sj[c] // k,
                                      cols, d_s)
        per_few = min(-(-_FINALISTS // busy), per_busy)
        few = np.empty(busy * per_few, dtype=np.int64)
        for b in range(busy):
            few[b * per_few:(b + 1) * per_few] = b * per_busy + _best(rough[b * per_busy:(b + 1) * per_busy],
                                                                      per_few, True)
        si, sj, fits = si[few], sj[few], fits[few]
        n_cand = few.shape[0]
    gain = np.full(n_cand, -1.0)
    d = np.zeros((n_cand, h_all))
    for c in range(n_cand):
        if fits[c]:
            gain[c] = _swap_gain(gt, top_idx, top_val, share, key[si[c]], key[sj[c]], si[c] // k, sj[c] // k,
                                 every, d[c])
    peak_sum = 0.0
    for h in range(h_all):
        peak_sum += top_val[0, h]
    thr = _MIN_GAIN * peak_sum
    order = _best(gain, min(_PER_ROUND, n_cand), True)
    # Take each improving swap that shares no slot with a better improving one.
    chosen = np.zeros(order.shape[0], dtype=np.bool_)
    for c in range(order.shape[0]):
        if gain[order[c]] <= thr:
            continue
        chosen[c] = True
        for c2 in range(c):
            if gain[order[c2]] > thr and (si[order[c]] == si[order[c2]] or si[order[c]] == sj[order[c2]]
                                          or sj[order[c]] == si[order[c2]] or sj[order[c]] == sj[order[c2]]):
                chosen[c] = False
                break
    if not chosen[0]:
        return False
    # Several swaps are kept together only where they beat the best one alone and fit the forecast cap together.
    if chosen[1:].any():
        scen, fc = _moved(gt, gf, d, si, sj, fshare, key, order, chosen, k)
        joint = 0.0
        for h in range(h_all):
            most = -np.inf
            for g in range(g_all):
                most = max(most, gt[g, h] + scen[g, h])
            joint += top_val[0, h] - most
        fit = True
        for g in range(g_all):
            fit = fit and gf[g] + fc[g] <= cap
        if not (joint >= gain[order[0]] and fit):
            chosen[1:] = False
    scen, fc = _moved(gt, gf, d, si, sj, fshare, key, order, chosen, k)
    for g in range(g_all):
        gf[g] += fc[g]
        for h in range(h_all):
            gt[g, h] += scen[g, h]
    for c in range(order.shape[0]):
        if chosen[c]:
            i, j = si[order[c]], sj[order[c]]
            key[i], key[j] = key[j], key[i]
    return True


@njit(cache=True, nogil=True)
def _moved(gt: np.ndarray, gf: np.ndarray, d: np.ndarray, si: np.ndarray, sj: np.ndarray, fshare: np.ndarray,
           key: np.ndarray, order: np.ndarray, chosen: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Change of the GPU loads per scenario [G, H] and on the forecast [G] when the ``chosen`` swaps are made."""
    scen = np.zeros_like(gt)
    fc = np.zeros_like(gf)
    for c in range(order.shape[0]):
        if chosen[c]:
            o = order[c]
            for h in range(d.shape[1]):
                scen[si[o] // k, h] += d[o, h]
            fc[si[o] // k] += fshare[key[sj[o]]] - fshare[key[si[o]]]
    for c in range(order.shape[0]):
        if chosen[c]:
            o = order[c]
            for h in range(d.shape[1]):
                scen[sj[o] // k, h] -= d[o, h]
            fc[sj[o] // k] -= fshare[key[sj[o]]] - fshare[key[si[o]]]
    return scen, fc
