"""Replay a trace as a server would: plan from a forecast, serve the next windows, rebalance, repeat.

Rebalances happen at windows ``start, start + every, ...`` (``start`` defaults
to ``every``: the first ``every`` windows are the recording a server starts
from). At window t the plan is made from the forecast of the history windows
``[t - history, t)`` (all of them when ``history`` is None) and serves
windows ``[t, t + every)``. Between consecutive rebalances the new plan is
relabelled and swapped back towards the one being served
(:mod:`eplb_cli.planning.migration`), and ``max_moves`` caps the replicas it may move
(a count per layer, or a share of all slots: :class:`~eplb_cli.planning.budget.MoveBudget`).
With ``min_gain`` a rebalance is skipped, as engines gate them, when its
forecast gain is below the threshold: the gain is the relative drop of the
GPU imbalance on the forecast, ``1 - imbalance(new plan) / imbalance(plan
served now)``, both on the forecast load. A skipped rebalance keeps serving
the current plan; the summary counts the moves it saved and the served
balance it lost (the figures had every skipped plan been served on its
windows). With ``robust``, each plan is made scenario-robust on the history
windows (:mod:`eplb_cli.planning.robust`) before it is followed, and the
follow step keeps that gain (:func:`eplb_cli.planning.robust.keep_gain`).
``dispatch`` says how tokens are split over an expert's replicas when scoring
(:mod:`eplb_cli.dispatch`).

Figures per rebalance: GPU imbalance in-sample (the plan on its own
forecast) and served (on the windows it serves), served balancedness, and
replicas moved. The served figures of all rebalances are pooled over every
(window, layer) pair with load, so long and short serving periods count by
their windows; the summary adds the distribution over served windows of each
window's GPU imbalance (p50, p95, p99, worst).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..dispatch import check_dispatch, dispatch_gpu_loads
from ..errors import EplbError, arg
from ..metrics import ServedTally, count_moves, live_gpus
from ..placement import Placement
from ..strategies import get_strategy, plan
from ..threads import torch_threads
from ..topology import Topology
from ..trace import Trace
from ..validation import robust_options, threads_count
from .budget import MoveBudget
from .forecast import Forecast
from .migration import check_compatible, follow
from .robust import ROBUST_TOLERANCE, robust_rebalance, scenario_weights

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


MAX_BYTES = float(1 << 63)
"""Sizes at or beyond this are no expert's weights (and would overflow 64-bit byte counts)."""


def parse_bytes(text: str, param: str = "expert_bytes") -> int:
    """Parse a size such as ``44040192``, ``42MiB`` or ``1.5GB`` into bytes."""
    raw = text.strip().lower().replace(" ", "")
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(digits):]
    try:
        value = float(digits)
    except ValueError:
        value = float("nan")
    if unit not in _UNITS or not value >= 0 or value == float("inf"):
        raise EplbError(f"{arg(param, text)}: expected a size in bytes such as 44040192, 42MiB or 1.5GB")
    size = value * _UNITS[unit]
    if size >= MAX_BYTES:
        raise EplbError(f"{arg(param, text)}: more than 2**63 bytes; give the weight bytes of one expert replica")
    return round(size)


@dataclass
class Rebalance:
    """One rebalance: the plan made at ``window`` and how it served ``window .. served_until - 1``."""

    window: int
    served_until: int
    history_from: int
    in_sample_gpu_imbalance: float
    served_gpu_imbalance: float
    served_gpu_imbalance_worst: float
    served_balancedness: float
    moves: int | None
    moves_intra_node: int | None
    moves_inter_node: int | None
    bytes_moved: int | None
    plan_ms: float
    forecast_gain: float | None = None  # 1 - imbalance(new) / imbalance(current), both on the forecast
    skipped: bool = False  # the gain was below min_gain: the current plan kept serving


@dataclass
class ReplayResult:
    """Every rebalance of a replay and the pooled summary."""

    rebalances: list[Rebalance]
    summary: dict = field(default_factory=dict)
    placement: Placement | None = None

    def to_dict(self) -> dict:
        return {"rebalances": [asdict(r) for r in self.rebalances], "summary": dict(self.summary)}


def replay_intervals(trace: Trace, topo: Topology, intervals: list[int], *, start: int | None = None,
                     progress: Callable[[int, int], None] | None = None, **kwargs) -> list[ReplayResult]:
    """:func:`replay` once per rebalance interval, all from the same first window so they serve the same windows.

    That window is ``start``, or the largest interval (each run then has that
    many recorded windows before its first plan). ``kwargs`` go to :func:`replay`.
    """
    first = max(intervals) if start is None else start
    total = sum(len(rebalance_windows(trace.windows, every, first)) for every in intervals)
    results: list[ReplayResult] = []
    for every in intervals:
        before = sum(r.summary["rebalances"] for r in results)
        step = None if progress is None else (lambda done, _, before=before: progress(before + done, total))
        results.append(replay(trace, topo, every=every, start=first, progress=step, **kwargs))
    return results


def rebalance_windows(windows: int, every: int, start: int | None = None) -> list[tuple[int, int]]:
    """``(first, end)`` of the windows each rebalance serves; raises when none is left to serve."""
    if every < 1:
        raise EplbError(f"{arg('every', every)}: must be >= 1")
    first = every if start is None else start
    if first < 1:
        raise EplbError(f"{arg('start', first)}: must be >= 1 (a plan needs at least one recorded window)")
    if first >= windows:
        raise EplbError(
            f"{arg('every')}/{arg('start', first)}: the trace has {windows} window(s), so none is left to serve "
            f"after it; use a smaller {arg('every')} or {arg('start')}, or a longer trace"
        )
    return [(t, min(t + every, windows)) for t in range(first, windows, every)]


def replay(
    trace: Trace,
    topo: Topology,
    *,
    every: int,
    forecast: Forecast,
    strategy: str = "balanced",
    history: int | None = None,
    start: int | None = None,
    migration_aware: bool = True,
    max_moves: int | MoveBudget | None = None,
    expert_bytes: int | None = None,
    previous: Placement | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = 1,
    min_gain: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    robust: bool = False,
    scenarios: int | None = None,
    robust_tolerance: float = ROBUST_TOLERANCE,
    dispatch: str = "even",
) -> ReplayResult:
    """Walk ``trace`` window by window, rebalancing every ``every`` windows (see the module doc).

    ``threads`` sets torch's intra-op threads for the run (restored after):
    a replay is many small tensor operations, where handing work to other
    threads costs more than it saves, and on a busy machine several times
    more. None leaves torch's setting alone. The compiled loops (planning,
    relabelling, swapping back) keep torch's setting from outside the run
    (:func:`eplb_cli.threads.torch_threads`). ``progress(done, total)`` is
    called after each rebalance. ``robust`` plans each rebalance
    scenario-robust on its history windows (the last ``scenarios`` of them,
    weighted as the forecast weighs them), within ``robust_tolerance`` of the
    forecast plan on the forecast; ``dispatch`` is ``even`` or ``lp``
    (:mod:`eplb_cli.dispatch`).
    """
    threads_count(threads)
    with torch_threads(threads):
        return _replay(trace, topo, every=every, forecast=forecast, strategy=strategy, history=history, start=start,
                       migration_aware=migration_aware, max_moves=max_moves, expert_bytes=expert_bytes,
                       previous=previous, seed=seed, device=device, min_gain=min_gain, progress=progress,
                       robust=robust, scenarios=scenarios, robust_tolerance=robust_tolerance, dispatch=dispatch)


def _replay(trace: Trace, topo: Topology, *, every: int, forecast: Forecast, strategy: str, history: int | None,
            start: int | None, migration_aware: bool, max_moves: int | MoveBudget | None, expert_bytes: int | None,
            previous: Placement | None, seed: int, device: str, min_gain: float | None,
            progress: Callable[[int, int], None] | None, robust: bool, scenarios: int | None,
            robust_tolerance: float, dispatch: str) -> ReplayResult:
    """The replay loop itself (see :func:`replay`)."""
    check_dispatch(dispatch)
    robust_options(robust, scenarios, robust_tolerance)
    if robust:
        scenario_weights(forecast, 1, scenarios)  # fail on the oracle before any work
    if history is not None and history < 1:
        raise EplbError(f"{arg('history', history)}: must be >= 1 window")
    if isinstance(max_moves, int) and max_moves < 0:
        raise EplbError(f"{arg('max_moves', max_moves)}: must be >= 0")
    if max_moves is not None and not migration_aware:
        raise EplbError(f"{arg('max_moves')} needs {arg('migration_aware', True)}: the move budget is counted from "
                        "the plan being served")
    if min_gain is not None and not min_gain == min_gain:
        raise EplbError(f"{arg('min_gain', 'nan')}: give a number, e.g. 0.01 (skip rebalances that gain less than 1%)")
    strat = get_strategy(strategy)
    load = trace.load
    live = live_gpus(topo)
    serving = previous
    rows: list[Rebalance] = []
    total = ServedTally()
    if_taken = ServedTally()  # as total, with every skipped plan served on its windows
    moved = {"moves": 0, "moves_intra_node": 0, "moves_inter_node": 0}
    saved = 0
    schedule = rebalance_windows(trace.windows, every, start)
    t_start = time.perf_counter()
    for done, (first, end) in enumerate(schedule, start=1):
        lo = 0 if history is None else max(0, first - history)
        future = load[first:end]
        predicted = forecast.predict(load[lo:first], future)
        t0 = time.perf_counter()
        placement = plan(predicted, topo, strat, seed=seed, device=device)
        if robust:
            placement = robust_rebalance(placement, serving if migration_aware else None, load[lo:first], predicted,
                                         forecast, scenarios=scenarios, tolerance=robust_tolerance, max_moves=max_moves)
        elif serving is not None and migration_aware:
            placement = follow(serving, placement, predicted, max_moves)
        plan_ms = (time.perf_counter() - t0) * 1e3
        in_sample = ServedTally().add(dispatch_gpu_loads(placement, predicted.unsqueeze(0), dispatch), live)
        served = ServedTally().add(dispatch_gpu_loads(placement, future, dispatch), live)
        gain, skipped = None, False
        if min_gain is not None and serving is not None:
            current = ServedTally().add(dispatch_gpu_loads(serving, predicted.unsqueeze(0), dispatch), live)
            gain = 1.0 - in_sample.imbalance / current.imbalance
            skipped = not gain >= min_gain
        if skipped:
            assert serving is not None  # a rebalance is only skipped against a plan being served
            if_taken.merge(served)
            saved += count_moves(serving, placement)["moves"]
            placement, in_sample = serving, current
            served = ServedTally().add(dispatch_gpu_loads(placement, future, dispatch), live)
        else:
            if_taken.merge(served)
        total.merge(served)
        moves = count_moves(serving, placement) if serving is not None else None
        if moves is not None:
            for key in moved:
                moved[key] += moves[key]
        rows.append(Rebalance(
            window=first, served_until=end, history_from=lo,
            in_sample_gpu_imbalance=in_sample.imbalance,
            served_gpu_imbalance=served.imbalance,
            served_gpu_imbalance_worst=served.worst,
            served_balancedness=served.balancedness,
            moves=None if moves is None else moves["moves"],
            moves_intra_node=None if moves is None else moves["moves_intra_node"],
            moves_inter_node=None if moves is None else moves["moves_inter_node"],
            bytes_moved=None if moves is None or expert_bytes is None else moves["moves"] * expert_bytes,
            plan_ms=plan_ms, forecast_gain=gain, skipped=skipped,
        ))
        serving = placement
        if progress is not None:
            progress(done, len(schedule))
    runtime = time.perf_counter() - t_start
    in_samples = torch.tensor([r.in_sample_gpu_imbalance for r in rows], dtype=torch.float64)
    summary = {
        "forecast": forecast.name,
        "strategy": strategy,
        "every": every,
        "history": history,
        "start": rows[0].window,
        "migration_aware": migration_aware,
        "max_moves": max_moves.label if isinstance(max_moves, MoveBudget) else max_moves,
        "max_moves_scope": None if max_moves is None else (max_moves.scope if isinstance(max_moves, MoveBudget)
                                                           else "per layer"),
        "robust": robust,
        "scenarios": scenarios if robust else None,
        "robust_tolerance": robust_tolerance if robust else None,
        "dispatch": dispatch,
        "rebalances": len(rows),
        "served_windows": rows[-1].served_until - rows[0].window,
        "served_gpu_imbalance": total.imbalance,
        "served_gpu_imbalance_worst": total.worst,
        **total.window_summary(),
        "served_balancedness": total.balancedness,
        "in_sample_gpu_imbalance": float(in_samples.nanmean()),
        **moved,
        "moves_per_rebalance": moved["moves"] / max(sum(r.moves is not None for r in rows), 1),
        "bytes_moved": None if expert_bytes is None else moved["moves"] * expert_bytes,
        "min_gain": min_gain,
        "skipped": sum(r.skipped for r in rows),
        "moves_saved": saved if min_gain is not None else None,
        "served_gpu_imbalance_if_taken": if_taken.imbalance if min_gain is not None else None,
        "served_balancedness_if_taken": if_taken.balancedness if min_gain is not None else None,
        "runtime_s": runtime,
    }
    return ReplayResult(rows, summary, serving)


def check_previous(previous: Placement, trace: Trace, topo: Topology, name: str, trace_name: str) -> None:
    """``--previous`` must be a placement for this trace's model and this cluster."""
    if previous.layers != trace.layers or previous.topology.experts != trace.experts:
        raise EplbError(
            f"{name} has {previous.layers} layers x {previous.topology.experts} experts but {trace_name} has "
            f"{trace.layers} x {trace.experts}; give the placement that serves this model"
        )
    probe = Placement(torch.zeros(previous.layers, topo.slots, dtype=torch.int64), topo)
    check_compatible(previous, probe, name, f"the cluster given ({topo.slots} slots on {topo.gpus} GPUs)")

