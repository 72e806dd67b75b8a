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
All layers run at once; a layer leaves the loop when no swap lowers its
objective by :data:`_MIN_GAIN` of it.

:func:`keep_gain` is the migration-aware follow step for a robust plan: it
keeps replicas in place where that costs no balance on the forecast (relabel
and swap back, as :func:`eplb_cli.planning.migration.follow` does), then wins back the
robust objective wherever swapping back gave some of it away.
"""

from __future__ import annotations

import torch

from ..errors import EplbError, arg
from ..metrics import live_gpus
from ..placement import Placement, replica_counts
from ..threads import one_thread
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
    out = key.clone()
    rows = torch.arange(layers)
    state = [key, gt, gf, cap, share_t, fshare]
    with one_thread():
        for turn in range(rounds):
            taken = _round(state[0], state[1], state[2], state[3], state[4], state[5], gpu_of, gpu_ok, busy, k, e, turn)
            if not bool(taken.all()):
                out[rows] = state[0]
                keep = taken.nonzero().squeeze(1)
                rows = rows[keep]
                state = [x.index_select(0, keep) for x in state]
            if rows.numel() == 0:
                break
    out[rows] = state[0]
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


def _cells(table: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``table[r, row, col]`` for a [R, N, M] table and broadcastable int64 indices [R, ...]."""
    r, n, m = table.shape
    base = (torch.arange(r) * (n * m)).view((r,) + (1,) * (max(row.dim(), col.dim()) - 1))
    flat = base + row * m + col
    return table.reshape(-1).index_select(0, flat.reshape(-1)).view(flat.shape)


def _gain(gt: torch.Tensor, share_t: torch.Tensor, top_idx: torch.Tensor, top_val: torch.Tensor, ca: torch.Tensor,
          cb: torch.Tensor, gi: torch.Tensor, gj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact drop of the summed busiest-GPU load when replicas ``ca`` (on GPU ``gi``) and ``cb`` (on ``gj``) swap.

    ``gt`` [R, G, H] are the GPU loads per scenario, ``share_t`` [R, E + 1, H]
    the load per replica, ``top_idx``/``top_val`` [R, T, H] (T <= 3) each
    scenario's busiest GPUs in order: only GPUs gi and gj change (by +d and
    -d), so the new busiest is the larger of theirs and the busiest of the
    others. Returns the drop [R, K] and d [R, K, H].
    """
    d = _rows(share_t, cb) - _rows(share_t, ca)
    new = torch.maximum(_rows(gt, gi) + d, _rows(gt, gj) - d)
    gi3, gj3 = gi.unsqueeze(2), gj.unsqueeze(2)
    first = top_idx[:, 0:1]
    rest = top_val[:, 0:1].expand_as(new)
    if top_val.shape[1] >= 2:
        second = top_val[:, 1:2]
        if top_val.shape[1] >= 3:
            second = torch.where((top_idx[:, 1:2] == gi3) | (top_idx[:, 1:2] == gj3), top_val[:, 2:3], second)
        else:
            second = torch.zeros_like(new)
        rest = torch.where((first == gi3) | (first == gj3), second, rest)
    else:
        rest = torch.where((first == gi3) | (first == gj3), torch.zeros_like(new), rest)
    return (top_val[:, 0:1] - torch.maximum(rest, new)).sum(dim=2), d


def _round(key: torch.Tensor, gt: torch.Tensor, gf: torch.Tensor, cap: torch.Tensor, share_t: torch.Tensor,
           fshare: torch.Tensor, gpu_of: torch.Tensor, gpu_ok: torch.Tensor, busy: int, k: int,
           e: int, turn: int) -> torch.Tensor:
    """One round on every layer given: screen, score the candidates exactly, apply the best swaps (in place).

    ``key`` [R, S] holds each slot's expert (``e`` for an empty slot), ``gt``
    [R, G, H] and ``gf`` [R, G] the GPU loads per scenario and on the
    forecast, ``share_t`` [R, E + 1, H] and ``fshare`` [R, E + 1] the load per
    replica. Returns a bool mask over the layers: those that took a swap.
    """
    r, _slots = key.shape
    g_all, h_all = gt.shape[1], gt.shape[2]
    top = torch.topk(gt, min(3, g_all), dim=1)  # [R, T, H]
    peak = top.values[:, 0]  # [R, H]
    # Screen and first ranking on every stride-th scenario (a different offset each round) when there are many.
    stride = -(-h_all // _SAMPLE)
    cols = torch.arange(turn % stride, h_all, stride)
    gt_s, st_s = (gt, share_t) if stride == 1 else (gt[:, :, cols], share_t[:, :, cols])
    top_s = top if stride == 1 else torch.topk(gt_s, min(3, g_all), dim=1)
    arg = top_s.indices[:, 0]  # [R, H']
    h_s = arg.shape[1]
    hits = torch.zeros(r, g_all, dtype=torch.float64).scatter_add_(1, top.indices[:, 0], torch.ones_like(peak))
    total = gt.sum(dim=2)  # [R, G]: load over all scenarios; breaks ties in hits, ranks partners
    hot = torch.topk(hits + 0.5 * total / total.max(dim=1, keepdim=True).values.clamp(min=1e-300), busy, dim=1).indices
    # Partners of each busy GPU: the allowed GPUs with the least load over all scenarios.
    n_part = min(_PARTNERS, g_all - 1)
    near = torch.topk(torch.where(gpu_ok[hot], total.unsqueeze(1), float("inf")), n_part, dim=2, largest=False)
    lane = torch.arange(k)
    mine = hot.unsqueeze(2) * k + lane  # [R, B, k]
    theirs = (near.indices.unsqueeze(3) * k + lane).reshape(r, busy, -1)  # [R, B, P * k]
    a = key.gather(1, mine.reshape(r, -1)).view_as(mine)
    b = key.gather(1, theirs.reshape(r, -1)).view_as(theirs)
    rows_a = _rows(st_s, a)  # [R, B, k, H']
    rows_b = _rows(st_s, b)  # [R, B, P * k, H']
    # First-order screen over the scenarios where the busy GPU g (or the partner h) is the busiest: g sheds
    # a and takes b, h the reverse. Quadratic penalty: sum over scenarios of (share_b - share_a)^2.
    at_hot = (arg.unsqueeze(1) == hot.unsqueeze(2)).to(torch.float64).unsqueeze(2)  # [R, B, 1, H]
    at_part = (arg.view(r, 1, 1, -1) == near.indices.unsqueeze(3)).to(torch.float64)  # [R, B, P, H]
    lam = (_CURVATURE / top_s.values[:, 0].mean(dim=1).clamp(min=1e-300)).view(r, 1, 1)
    p_hot_b = (rows_b * at_hot).sum(dim=3)  # [R, B, P * k]
    p_part_b = (rows_b.view(r, busy, n_part, k, h_s) * at_part.unsqueeze(3)).sum(dim=4).view(r, busy, -1)
    sq_b, sq_a = (rows_b * rows_b).sum(dim=3), (rows_a * rows_a).sum(dim=3)
    col = (p_hot_b - p_part_b + lam * sq_b).unsqueeze(2)  # [R, B, 1, P * k]
    row = (lam * sq_a - (rows_a * at_hot).sum(dim=3)).unsqueeze(3)  # [R, B, k, 1]
    p_part_a = torch.bmm(rows_a.view(r * busy, k, h_s), at_part.view(r * busy, n_part, h_s).transpose(1, 2))
    p_part_a = p_part_a.view(r, busy, k, n_part, 1).expand(-1, -1, -1, -1, k).reshape(r, busy, k, -1)
    cross = torch.bmm(rows_a.view(r * busy, k, h_s), rows_b.view(r * busy, -1, h_s).transpose(1, 2))
    screen = torch.addcmul(p_part_a, cross.view(r, busy, k, -1), -2.0 * lam.unsqueeze(3)) + col + row
    valid = ((near.values < float("inf")).repeat_interleave(k, dim=2) & (b < e)).unsqueeze(2) \
        & (a.unsqueeze(3) != b.unsqueeze(2)) & (a < e).unsqueeze(3)
    screen = torch.where(valid, screen, float("inf")).view(r, busy, -1)
    # The best candidates of each busy GPU, so that a round can take a swap at each of them.
    width = theirs.shape[2]
    cand = torch.topk(screen, min(-(-CANDIDATES // busy), screen.shape[2]), dim=2, largest=False)
    flat = (cand.indices + torch.arange(busy).view(1, -1, 1) * screen.shape[2]).reshape(r, -1)
    si = mine.reshape(r, -1).gather(1, flat // width)  # [R, K] slot on a busy GPU
    sj = theirs.reshape(r, -1).gather(1, flat // (k * width) * width + flat % width)
    ca, cb = key.gather(1, si), key.gather(1, sj)
    gi, gj = gpu_of[si], gpu_of[sj]
    df = fshare.gather(1, cb) - fshare.gather(1, ca)
    fits = (gf.gather(1, gi) + df <= cap.unsqueeze(1)) & (gf.gather(1, gj) - df <= cap.unsqueeze(1))
    fits &= cand.values.reshape(r, -1) < float("inf")
    if stride > 1:
        # Rank the candidates on the sampled scenarios, then score the best few on all of them.
        rough, _ = _gain(gt_s, st_s, top_s.indices, top_s.values, ca, cb, gi, gj)
        per = torch.where(fits, rough, float("-inf")).view(r, busy, -1)
        few = torch.topk(per, min(-(-_FINALISTS // busy), per.shape[2]), dim=2).indices
        few = (few + torch.arange(busy).view(1, -1, 1) * per.shape[2]).reshape(r, -1)
        si, sj, ca, cb, gi, gj, df, fits = (x.gather(1, few) for x in (si, sj, ca, cb, gi, gj, df, fits))
    gain, d = _gain(gt, share_t, top.indices, top.values, ca, cb, gi, gj)
    gain = torch.where(fits, gain, -1.0)
    thr = (_MIN_GAIN * peak.sum(dim=1)).unsqueeze(1)
    best = torch.topk(gain, min(_PER_ROUND, gain.shape[1]), dim=1)
    order = best.indices
    oi, oj = si.gather(1, order), sj.gather(1, order)  # slots
    # Take each improving swap that shares no slot with a better improving one.
    eligible = best.values > thr
    ends = torch.stack([oi, oj], dim=2)  # [R, C, 2]
    clash = (ends.unsqueeze(2).unsqueeze(4) == ends.unsqueeze(1).unsqueeze(3)).flatten(3).any(dim=3)  # [R, C, C]
    earlier = torch.ones(order.shape[1], order.shape[1], dtype=torch.bool).tril(-1)
    chosen = eligible & ~(clash & earlier & eligible.unsqueeze(1)).any(dim=2)
    take = chosen[:, 0]
    if not bool(take.any()):
        return take
    # Several swaps are kept together only where they beat the best one alone and fit the forecast cap together.
    g_i, g_j = gpu_of[oi], gpu_of[oj]
    d_o = d.gather(1, order.unsqueeze(2).expand(-1, -1, h_all))  # [R, C, H]
    df_o = df.gather(1, order)

    def moved(pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = pick.to(torch.float64)
        step = d_o * w.unsqueeze(2)
        scen = torch.zeros_like(gt).scatter_add_(1, g_i.unsqueeze(2).expand(-1, -1, h_all), step)
        scen.scatter_add_(1, g_j.unsqueeze(2).expand(-1, -1, h_all), -step)
        fc = torch.zeros_like(gf).scatter_add_(1, g_i, df_o * w).scatter_add_(1, g_j, -df_o * w)
        return scen, fc

    several = chosen[:, 1:].any(dim=1)
    if bool(several.any()):
        scen_all, fc_all = moved(chosen)
        joint = (peak - (gt + scen_all).max(dim=1).values).sum(dim=1)
        together = (joint >= gain.gather(1, order[:, :1]).squeeze(1)) & ((gf + fc_all) <= cap.unsqueeze(1)).all(dim=1)
        chosen = torch.where(together.unsqueeze(1), chosen, chosen & (torch.arange(order.shape[1]) == 0))
    scen_step, fc_step = moved(chosen)
    gt += scen_step
    gf += fc_step
    row, col = chosen.nonzero(as_tuple=True)
    i, j = oi[row, col], oj[row, col]
    xa, xb = key[row, i], key[row, j]
    key[row, i] = xb
    key[row, j] = xa
    return take
