"""Replay a trace as a server would: plan from a forecast, serve the next windows, rebalance, repeat.

Rebalances happen at windows ``start, start + every, ...`` (``start`` defaults
to ``every``: the first ``every`` windows are the recording a server starts
from). At window t the plan is made from the forecast of the history windows
``[t - history, t)`` (all of them when ``history`` is None) and serves
windows ``[t, t + every)``. Between consecutive rebalances the new plan is
relabelled and swapped back towards the one being served
(:mod:`eplb_cli.planning.migration`), and ``max_moves`` caps the replicas it may move
per layer.

Figures per rebalance: GPU imbalance in-sample (the plan on its own
forecast) and served (on the windows it serves), served balancedness, and
replicas moved. The served figures of all rebalances are pooled over every
(window, layer) pair with load, so long and short serving periods count by
their windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..errors import EplbError, arg
from ..metrics import ServedTally, count_moves, live_gpus, window_gpu_loads
from ..placement import Placement
from ..strategies import get_strategy, plan
from ..topology import Topology
from ..trace import Trace
from .forecast import Forecast
from .migration import check_compatible, follow

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


MAX_BYTES = float(1 << 63)
"""Sizes at or beyond this are no expert's weights (and would overflow 64-bit byte counts)."""
MAX_THREADS = 1024


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


@dataclass
class ReplayResult:
    """Every rebalance of a replay and the pooled summary."""

    rebalances: list[Rebalance]
    summary: dict = field(default_factory=dict)
    placement: Placement | None = None

    def to_dict(self) -> dict:
        return {"rebalances": [asdict(r) for r in self.rebalances], "summary": dict(self.summary)}


def check_threads(threads: int | None) -> None:
    """``threads`` must be a thread count torch can set (None leaves torch's own)."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise EplbError(f"{arg('threads', threads)}: must be between 1 and {MAX_THREADS}")


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
    max_moves: int | None = None,
    expert_bytes: int | None = None,
    previous: Placement | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = 1,
    progress: Callable[[int], Callable[[str], None]] | None = None,
) -> ReplayResult:
    """Walk ``trace`` window by window, rebalancing every ``every`` windows (see the module doc).

    ``threads`` sets torch's intra-op threads for the run (restored after):
    a replay is many small tensor operations, where handing work to other
    threads costs more than it saves, and on a busy machine several times
    more. None leaves torch's setting alone. ``progress(total)`` returns a
    callback called as each rebalance starts (the CLI draws a bar with it).
    """
    check_threads(threads)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _replay(trace, topo, every=every, forecast=forecast, strategy=strategy, history=history, start=start,
                       migration_aware=migration_aware, max_moves=max_moves, expert_bytes=expert_bytes,
                       previous=previous, seed=seed, device=device, progress=progress)
    finally:
        torch.set_num_threads(before)


def _replay(trace: Trace, topo: Topology, *, every: int, forecast: Forecast, strategy: str, history: int | None,
            start: int | None, migration_aware: bool, max_moves: int | None, expert_bytes: int | None,
            previous: Placement | None, seed: int, device: str,
            progress: Callable[[int], Callable[[str], None]] | None = None) -> ReplayResult:
    """The replay loop itself (see :func:`replay`)."""
    if history is not None and history < 1:
        raise EplbError(f"{arg('history', history)}: must be >= 1 window")
    if max_moves is not None and max_moves < 0:
        raise EplbError(f"{arg('max_moves', max_moves)}: must be >= 0")
    if max_moves is not None and not migration_aware:
        raise EplbError(f"{arg('max_moves')} needs {arg('migration_aware', True)}: the move budget is counted from the plan being served")
    strat = get_strategy(strategy)
    load = trace.load
    live = live_gpus(topo)
    serving = previous
    rows: list[Rebalance] = []
    total = ServedTally()
    moved = {"moves": 0, "moves_intra_node": 0, "moves_inter_node": 0}
    t_start = time.perf_counter()
    spans = rebalance_windows(trace.windows, every, start)
    step = progress(len(spans)) if progress is not None else None
    for first, end in spans:
        if step is not None:
            step(f"window {first}")
        lo = 0 if history is None else max(0, first - history)
        future = load[first:end]
        predicted = forecast.predict(load[lo:first], future)
        t0 = time.perf_counter()
        placement = plan(predicted, topo, strat, seed=seed, device=device)
        if serving is not None and migration_aware:
            placement = follow(serving, placement, predicted, max_moves)
        plan_ms = (time.perf_counter() - t0) * 1e3
        in_sample = ServedTally().add(window_gpu_loads(placement, predicted.unsqueeze(0)), live)
        served = ServedTally().add(window_gpu_loads(placement, future), live)
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
            plan_ms=plan_ms,
        ))
        serving = placement
    runtime = time.perf_counter() - t_start
    in_samples = torch.tensor([r.in_sample_gpu_imbalance for r in rows], dtype=torch.float64)
    summary = {
        "forecast": forecast.name,
        "strategy": strategy,
        "every": every,
        "history": history,
        "start": rows[0].window,
        "migration_aware": migration_aware,
        "max_moves": max_moves,
        "rebalances": len(rows),
        "served_windows": rows[-1].served_until - rows[0].window,
        "served_gpu_imbalance": total.imbalance,
        "served_gpu_imbalance_worst": total.worst,
        "served_balancedness": total.balancedness,
        "in_sample_gpu_imbalance": float(in_samples.nanmean()),
        **moved,
        "moves_per_rebalance": moved["moves"] / max(sum(r.moves is not None for r in rows), 1),
        "bytes_moved": None if expert_bytes is None else moved["moves"] * expert_bytes,
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

