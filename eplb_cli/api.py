"""The Python API: everything a command does, callable from Python.

Two layers. Functions on objects (:func:`plan_load`, :func:`follow_previous`,
:func:`evaluate`, :func:`rebalance_experts`, ...) take tensors, a
:class:`~eplb_cli.topology.Topology` and placements. Functions named after the
commands (:func:`plan_trace`, :func:`evaluate_placement`, :func:`replay_trace`,
:func:`compare_strategies`, :func:`inspect_file`, :func:`convert_file`,
:func:`generate_trace`) take file names and options the way the command line
does, check everything before the work, write the files asked for and return
a result to print; the CLI only parses arguments, calls one of them and
prints. Errors name these functions' parameters (``gpus=0``); the CLI spells
the same errors with its flags (``--gpus 0``).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import EplbError, GateFailed, arg, renamed
from .metrics import Score, count_moves, score
from .placement import Placement
from .strategies import get_strategy, plan
from .topology import Topology, parse_gpu_list, resolve
from .trace import Trace, load_warnings

if TYPE_CHECKING:
    from .planning.replay import ReplayResult

Warn = Callable[[str], None]
"""Where warnings about an input go: the CLI prints them; by default they become Python warnings."""


class EplbWarning(UserWarning):
    """Something about an input a user should know before trusting figures from it."""


def _python_warning(message: str) -> None:
    warnings.warn(message, EplbWarning, stacklevel=3)


# ================================================================= objects


def load_trace(path: str, input_format: str | None = None, *, window: int | None = None,
               windows: str | None = None) -> Trace:
    """Read a trace file (any supported format), summing every ``window`` steps and keeping ``windows`` A:B.

    The reader applies both while reading where the format allows (safetensors),
    so they also bound the memory a huge trace needs.
    """
    from .formats import read_trace

    return read_trace(path, input_format, window=window, windows=windows)


def topology_for(trace: Trace, gpus: int, nodes: int = 1, slots: int | None = None, redundant: int | None = None,
                 groups: int | None = None, policy: str = "auto", exclude_gpus: str | list[int] | None = None) -> Topology:
    """The cluster for ``trace``'s model: :func:`~eplb_cli.topology.resolve` with groups defaulting to the trace's."""
    failed = parse_gpu_list(exclude_gpus) if isinstance(exclude_gpus, str) or exclude_gpus is None else list(exclude_gpus)
    return resolve(trace.experts, gpus, nodes, slots, redundant, groups if groups is not None else trace.groups,
                   policy, failed)


def check_warnings(load: torch.Tensor, source: str, *, strict: bool = False, warn: Warn | None = None) -> list[str]:
    """The warnings ``load`` deserves, sent to ``warn``; with ``strict`` the first one is an error."""
    found = load_warnings(load, source)
    if strict and found:
        raise EplbError(f"{source}: {found[0]} ({arg('strict', True)})")
    for message in found:
        (warn or _python_warning)(message)
    return found


@dataclass
class PlanResult:
    """A placement with its score on the load it was planned from.

    ``moves`` counts the replicas moved from ``previous`` (None without one).
    """

    placement: Placement
    score: Score
    runtime_ms: float
    strategy: str
    moves: dict | None = None


def plan_load(load: torch.Tensor, topo: Topology, strategy: str = "balanced", *, seed: int = 0,
              device: str = "cpu") -> PlanResult:
    """Plan ``load`` [L, E] with a named strategy, timing only the strategy itself."""
    strat = get_strategy(strategy)
    load = load.to(torch.float64)
    t0 = time.perf_counter()
    placement = plan(load, topo, strat, seed=seed, device=device)
    ms = (time.perf_counter() - t0) * 1e3
    return PlanResult(placement, score(placement, load), ms, strategy)


def follow_previous(result: PlanResult, previous: Placement, load: torch.Tensor, max_moves: int | None = None,
                    previous_name: str = "previous") -> PlanResult:
    """``result`` moved as little as possible from ``previous``, the placement served now.

    GPUs are relabelled and replicas swapped back where that costs no balance;
    ``max_moves`` caps the replicas moved per layer. The time spent is added
    to the runtime, and the moves are counted.
    """
    from .planning.migration import check_compatible, follow

    if max_moves is not None and max_moves < 0:
        raise EplbError(f"{arg('max_moves', max_moves)}: must be >= 0")
    topo = result.placement.topology
    check_compatible(previous, result.placement, previous_name, f"{arg('gpus', topo.gpus)} {arg('slots', topo.slots)}")
    t0 = time.perf_counter()
    placement = follow(previous, result.placement, load, max_moves)
    ms = (time.perf_counter() - t0) * 1e3
    return dataclasses.replace(result, placement=placement, score=score(placement, load),
                               runtime_ms=result.runtime_ms + ms, moves=count_moves(previous, placement))


def evaluate(placement: Placement, load: torch.Tensor | Trace) -> Score:
    """Score an existing placement on a load matrix [L, E] or on a trace's summed windows."""
    if isinstance(load, Trace):
        load = load.total()
    return score(placement, load.to(torch.float64))


def placement_for(path: str, trace: Trace, *, gpus: int | None = None, nodes: int | None = None,
                  groups: int | None = None, trace_name: str = "the trace") -> Placement:
    """Read a placement and check it fits ``trace``: same layers and experts.

    ``gpus``, ``nodes`` and ``groups`` fill what the file does not record
    (engine files hold no topology); a file that records another GPU count
    than ``gpus`` is an error.
    """
    from .formats import load_placement

    for name, value in (("gpus", gpus), ("nodes", nodes), ("groups", groups)):
        if value is not None and value < 1:
            raise EplbError(f"{arg(name, value)}: must be >= 1")
    defaults = {k: v for k, v in (("gpus", gpus), ("nodes", nodes),
                                  ("groups", groups if groups is not None else trace.groups)) if v is not None}
    p = load_placement(path, defaults=defaults)
    if gpus is not None and p.topology.gpus != gpus:
        raise EplbError(f"{path}: made for {p.topology.gpus} GPUs but {arg('gpus', gpus)} was given; "
                        "drop it or fix it")
    if p.layers != trace.layers or p.topology.experts != trace.experts:
        raise EplbError(
            f"{path} ({p.layers} layers x {p.topology.experts} experts) does not match {trace_name} "
            f"({trace.layers} layers x {trace.experts} experts); give the placement and trace of one model"
        )
    return p


@dataclass
class Gate:
    """A quality gate: ``name`` is the parameter (``max_imbalance`` or ``min_balancedness``)."""

    name: str
    limit: float
    value: float
    passed: bool

    def as_dict(self) -> dict:
        return {"gate": self.name, "limit": self.limit, "value": self.value, "passed": self.passed}


def check_gate_limits(max_imbalance: float | None, min_balancedness: float | None) -> None:
    """Reject gate values no placement could meet or miss."""
    if max_imbalance is not None and not max_imbalance >= 1.0:
        raise EplbError(f"{arg('max_imbalance', max_imbalance)}: must be >= 1.0 (max/mean GPU load; 1.0 is perfect)")
    if min_balancedness is not None and not 0.0 < min_balancedness <= 1.0:
        raise EplbError(f"{arg('min_balancedness', min_balancedness)}: must be in (0, 1] (1.0 is perfect)")


def gates(imbalance: float, balancedness: float, max_imbalance: float | None,
          min_balancedness: float | None) -> list[Gate]:
    """Each requested gate with its limit, the measured value and whether it passed."""
    out = []
    if max_imbalance is not None:
        out.append(Gate("max_imbalance", max_imbalance, imbalance, bool(imbalance <= max_imbalance)))
    if min_balancedness is not None:
        out.append(Gate("min_balancedness", min_balancedness, balancedness, bool(balancedness >= min_balancedness)))
    return out


def enforce(found: list[Gate], what: str) -> None:
    """Raise :class:`GateFailed` (exit code 1) naming the first gate ``what`` missed."""
    for g in found:
        if not g.passed:
            name, side = ("GPU imbalance", "above") if g.name == "max_imbalance" else ("balancedness", "below")
            raise GateFailed(f"gate failed: {what}: {name} {g.value:.4f} is {side} {arg(g.name)} {g.limit:g}")


def rebalance_experts(weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int,
                      *, strategy: str = "balanced", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop-in for DeepSeek's ``rebalance_experts``: returns (phy2log, log2phy, logcnt).

    Same arguments and return shapes as DeepSeek's function (vLLM and SGLang
    call it this way); the policy follows DeepSeek's rule (hierarchical when
    ``num_groups % num_nodes == 0``), read as ``eplb plan --policy auto`` reads
    it: one group on one node is the global policy, which is what DeepSeek's
    hierarchical code computes in that case. So the result is exactly what
    ``eplb plan`` writes for the same load, topology and strategy.
    ``log2phy`` is padded to ``num_replicas - experts + 1`` columns as
    DeepSeek's is; each expert's slots are listed in increasing order.
    Errors name this function's parameters (``num_gpus=0``).
    """
    weight = torch.as_tensor(weight)
    layers, experts = weight.shape
    try:
        topo = resolve(experts=experts, gpus=num_gpus, nodes=num_nodes, slots=num_replicas, groups=num_groups,
                       policy="auto")
        placement = plan(weight.to(torch.float64), topo, get_strategy(strategy), seed=seed, device=str(weight.device))
    except EplbError as exc:
        names = {"gpus": "num_gpus", "nodes": "num_nodes", "slots": "num_replicas", "groups": "num_groups"}
        raise type(exc)(exc.render(renamed(names))) from None
    width = num_replicas - experts + 1
    compact = placement.log2phy
    log2phy = torch.full((layers, experts, width), -1, dtype=torch.int64)
    log2phy[:, :, : compact.shape[2]] = compact
    dev = weight.device
    return placement.phy2log.to(dev), log2phy.to(dev), placement.logcnt.to(dev)


# ================================================================= commands


@dataclass
class TraceOptions:
    """How to read a trace: ``input_format`` (None: detect), ``window`` steps per window, ``windows`` A:B."""

    input_format: str | None = None
    window: int | None = None
    windows: str | None = None

    def read(self, path: str) -> Trace:
        return load_trace(path, self.input_format, window=self.window, windows=self.windows)


@dataclass
class ClusterOptions:
    """The cluster: GPUs, nodes, slots (or redundant slots), expert groups, policy and excluded GPUs."""

    gpus: int
    nodes: int = 1
    slots: int | None = None
    redundant: int | None = None
    groups: int | None = None
    policy: str = "auto"
    exclude_gpus: str | list[int] | None = None

    def resolve(self, trace: Trace) -> Topology:
        return topology_for(trace, self.gpus, self.nodes, self.slots, self.redundant, self.groups, self.policy,
                            self.exclude_gpus)


def _check_layer(layer: int | None, trace: Trace) -> None:
    if layer is not None and not 0 <= layer < trace.layers:
        raise EplbError(f"{arg('layer', layer)}: the trace has layers 0 to {trace.layers - 1}")


def _check_plot(plot: str | None, force: bool, reads: tuple[str | None, ...] = ()) -> None:
    if plot:
        from .plots import check_plot

        check_plot(plot, force, reads)


@dataclass
class PlanReport:
    """What :func:`plan_trace` did: the trace, the cluster, the plan, and what was written."""

    trace: Trace
    source: str
    topology: Topology
    result: PlanResult
    warnings: list[str]
    output: str | None = None
    output_format: str | None = None
    previous: str | None = None

    @property
    def load(self) -> torch.Tensor:
        return self.trace.total()


def plan_trace(trace: str, cluster: ClusterOptions, *, strategy: str = "balanced", seed: int = 0,
               device: str = "cpu", reading: TraceOptions | None = None, previous: str | None = None,
               max_moves: int | None = None, output: str | None = None, fmt: str | None = None,
               force: bool = False, plot: str | None = None, layer: int | None = None, strict: bool = False,
               warn: Warn | None = None) -> PlanReport:
    """``eplb plan``: read ``trace``, plan it for ``cluster``, follow ``previous``, write ``output`` and ``plot``.

    Every option is checked before the trace is read, and the output files
    before any planning.
    """
    from .device import check_device
    from .formats import save_placement
    from .formats.atomic import check_writable
    from .formats.placement_io import writer_for

    check_device(device)
    get_strategy(strategy)
    if output:
        writer_for(output, fmt)
        check_writable(output, force, reads=(trace,))
    _check_plot(plot, force, (trace, previous))
    if output and plot and str(output) != "-" and Path(output).absolute() == Path(plot).absolute():
        raise EplbError(f"{arg('plot', plot)}: is also the placement output; give the figure another name")
    if previous is None and max_moves is not None:
        raise EplbError(f"{arg('max_moves')} needs {arg('previous')}: moves are counted from the placement served now")
    tr = (reading or TraceOptions()).read(trace)
    topo = cluster.resolve(tr)
    load = tr.total()
    found = check_warnings(load, trace, strict=strict, warn=warn)
    _check_layer(layer, tr)
    old = placement_for(previous, tr, gpus=topo.gpus, nodes=topo.nodes, groups=topo.groups,
                        trace_name=trace) if previous else None
    result = plan_load(load, topo, strategy, seed=seed, device=device)
    if old is not None:
        result = follow_previous(result, old, load, max_moves, previous_name=str(previous))
    written = None
    if output:
        extra = {"strategy": strategy, "source": trace,
                 **({"layer_ids": tr.meta["layer_ids"]} if "layer_ids" in tr.meta else {})}
        written = save_placement(result.placement, output, force=force, fmt=fmt, extra=extra)
    if plot:
        from .plots import score_heatmap

        score_heatmap(result.score, topo, plot, label=strategy, layer_ids=tr.meta.get("layer_ids"), force=force)
    return PlanReport(tr, trace, topo, result, found, output, written, previous)


@dataclass
class EvaluationReport:
    """What :func:`evaluate_placement` found: the placement as it runs, its score, failure summary and gates."""

    trace: Trace
    source: str
    placement_path: str
    placement: Placement
    score: Score
    failure: dict | None
    gates: list[Gate]
    warnings: list[str]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def evaluate_placement(placement: str, trace: str, *, gpus: int | None = None, nodes: int | None = None,
                       groups: int | None = None, reading: TraceOptions | None = None, layer: int | None = None,
                       exclude_gpus: str | list[int] | None = None, max_imbalance: float | None = None,
                       min_balancedness: float | None = None, plot: str | None = None, force: bool = False,
                       strict: bool = False, warn: Warn | None = None) -> EvaluationReport:
    """``eplb evaluate``: score ``placement`` on ``trace``, as it runs once ``exclude_gpus`` fail; gates.

    Gates are reported, not enforced: call :func:`enforce` (the CLI does, for exit code 1).
    """
    from .failure import evaluate_failure

    check_gate_limits(max_imbalance, min_balancedness)
    _check_plot(plot, force, (placement, trace))
    for name, value in (("gpus", gpus), ("nodes", nodes), ("groups", groups)):
        if value is not None and value < 1:
            raise EplbError(f"{arg(name, value)}: must be >= 1")
    tr = (reading or TraceOptions()).read(trace)
    p = placement_for(placement, tr, gpus=gpus, nodes=nodes, groups=groups, trace_name=trace)
    topo = p.topology
    load = tr.total()
    found = check_warnings(load, trace, strict=strict, warn=warn)
    _check_layer(layer, tr)
    failed = parse_gpu_list(exclude_gpus) if isinstance(exclude_gpus, str) or exclude_gpus is None else list(exclude_gpus)
    bad = [g for g in failed if not 0 <= g < topo.gpus]
    if bad:
        raise EplbError(f"{arg('exclude_gpus', bad[0])}: {placement} has GPUs 0 to {topo.gpus - 1}")
    if failed and len(set(failed) | set(topo.excluded_gpus)) >= topo.gpus:
        raise EplbError(f"{arg('exclude_gpus')} fails every GPU: leave at least one")
    running, sc, failure = evaluate_failure(p, load, failed)
    summary = sc.summary()
    found_gates = gates(summary["gpu_imbalance"], summary["balancedness"], max_imbalance, min_balancedness)
    if plot:
        from .plots import score_heatmap

        score_heatmap(sc, topo, plot, label=f"{Path(placement).name} on {Path(trace).name}",
                      layer_ids=tr.meta.get("layer_ids"), force=force)
    return EvaluationReport(tr, trace, placement, running, sc, failure, found_gates, found)


@dataclass
class ReplayReport:
    """What :func:`replay_trace` did: the replay itself, its cluster and gates."""

    trace: Trace
    source: str
    topology: Topology
    result: ReplayResult
    gates: list[Gate]
    warnings: list[str]
    expert_bytes: int | None

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def replay_trace(trace: str, cluster: ClusterOptions, *, strategy: str = "balanced", every: int = 1,
                 history: int | None = None, forecast: str = "last", start: int | None = None,
                 migration_aware: bool = True, max_moves: int | None = None, expert_bytes: str | int | None = None,
                 previous: str | None = None, seed: int = 0, device: str = "cpu", threads: int | None = 1,
                 reading: TraceOptions | None = None, max_imbalance: float | None = None,
                 min_balancedness: float | None = None, plot: str | None = None, force: bool = False,
                 strict: bool = False, warn: Warn | None = None,
                 progress: Callable[[int], Callable[[str], None]] | None = None) -> ReplayReport:
    """``eplb replay``: walk ``trace`` as a server would (see :mod:`eplb_cli.planning.replay`).

    ``progress(total)`` returns a callback called as each rebalance starts.
    """
    from .device import check_device
    from .planning.forecast import parse_forecast
    from .planning.replay import check_previous, check_threads, parse_bytes, replay

    check_device(device)
    check_threads(threads)
    check_gate_limits(max_imbalance, min_balancedness)
    fc = parse_forecast(forecast)
    get_strategy(strategy)
    _check_plot(plot, force, (trace, previous))
    size = parse_bytes(expert_bytes) if isinstance(expert_bytes, str) else expert_bytes
    tr = (reading or TraceOptions()).read(trace)
    topo = cluster.resolve(tr)
    found = check_warnings(tr.total(), trace, strict=strict, warn=warn)
    old = None
    if previous is not None:
        old = placement_for(previous, tr, gpus=topo.gpus, nodes=topo.nodes, groups=topo.groups, trace_name=trace)
        check_previous(old, tr, topo, previous, trace)
    result = replay(tr, topo, every=every, forecast=fc, strategy=strategy, history=history, start=start,
                    migration_aware=migration_aware, max_moves=max_moves, expert_bytes=size, previous=old,
                    seed=seed, device=device, threads=threads, progress=progress)
    s = result.summary
    found_gates = gates(s["served_gpu_imbalance"], s["served_balancedness"], max_imbalance, min_balancedness)
    if plot:
        from .plots import replay_figure
        from .report import topology_line

        replay_figure({f"{strategy}, forecast {forecast}": result.to_dict()["rebalances"]}, plot,
                      title=f"{Path(trace).name}: replay every {every} window(s); {topology_line(topo)}",
                      force=force)
    return ReplayReport(tr, trace, topo, result, found_gates, found, size)


@dataclass
class ComparisonReport:
    """What :func:`compare_strategies` measured: one row per strategy."""

    trace: Trace
    source: str
    topology: Topology
    rows: list
    warnings: list[str]


def compare_strategies(trace: str, cluster: ClusterOptions, strategies: str | list[str] = "deepseek,fast,balanced,thorough",
                       *, repeat: int = 5, oos_pairs: int = 64, seed: int = 0, device: str = "cpu",
                       reading: TraceOptions | None = None, plot: str | None = None, force: bool = False,
                       strict: bool = False, warn: Warn | None = None,
                       progress: Callable[[int], Callable[[str], None]] | None = None) -> ComparisonReport:
    """``eplb compare``: plan ``trace`` with each strategy; figures, median runtimes, moves, next-window scores.

    ``progress(total)`` returns a callback called with each strategy's name as it starts.
    """
    from .device import check_device
    from .planning.compare import compare

    check_device(device)
    if repeat < 1:
        raise EplbError(f"{arg('repeat', repeat)}: must be >= 1")
    if oos_pairs < 0:
        raise EplbError(f"{arg('oos_pairs', oos_pairs)}: must be >= 0")
    names = [n.strip() for n in strategies.split(",") if n.strip()] if isinstance(strategies, str) else list(strategies)
    if not names:
        raise EplbError(f"{arg('strategies')}: give at least one strategy, e.g. deepseek,balanced")
    for name in names:
        get_strategy(name)
    _check_plot(plot, force, (trace,))
    tr = (reading or TraceOptions()).read(trace)
    topo = cluster.resolve(tr)
    found = check_warnings(tr.total(), trace, strict=strict, warn=warn)
    step = progress(len(names)) if progress else None
    rows = compare(tr, topo, names, repeat=repeat, seed=seed, device=device, oos=oos_pairs > 0,
                   max_pairs=oos_pairs or None, progress=step)
    if plot:
        from .plots import compare_figure
        from .report import topology_line

        compare_figure([r.as_dict() for r in rows], plot, title=f"{Path(trace).name}: {topology_line(topo)}",
                       force=force)
    return ComparisonReport(tr, trace, topo, rows, found)


def inspect_file(trace: str, *, reading: TraceOptions | None = None, top: int = 10) -> dict:
    """``eplb inspect``: shape, tokens per layer, zero layers, skew, hottest experts, drift between windows."""
    from .inspection import inspect_trace

    if top < 0:
        raise EplbError(f"{arg('top', top)}: must be >= 0")
    return inspect_trace((reading or TraceOptions()).read(trace), top=top)


def convert_file(src: str, dst: str, *, fmt: str | None = None, input_format: str | None = None,
                 gpus: int | None = None, nodes: int | None = None, groups: int | None = None,
                 force: bool = False) -> dict:
    """``eplb convert``: a trace or a placement from one format to another; returns what was written."""
    from .formats.convert import convert

    for name, value in (("gpus", gpus), ("nodes", nodes), ("groups", groups)):
        if value is not None and value < 1:
            raise EplbError(f"{arg(name, value)}: must be >= 1")
    defaults = {k: v for k, v in (("gpus", gpus), ("nodes", nodes), ("groups", groups)) if v is not None}
    return convert(src, dst, fmt=fmt, input_format=input_format, force=force, defaults=defaults)


@dataclass
class GeneratedTrace:
    """What :func:`generate_trace` wrote."""

    trace: Trace
    output: str
    seed: int
    meta: dict = field(default_factory=dict)


def generate_trace(output: str, *, layers: int = 58, experts: int = 256, windows: int = 8, seed: int = 0,
                   skew: float = 1.0, drift: float = 0.1, groups: int | None = None, fmt: str | None = None,
                   force: bool = False) -> GeneratedTrace:
    """``eplb generate``: write a synthetic trace (log-normal popularity with drift), deterministic per seed."""
    from .formats import write_trace
    from .formats.atomic import check_writable
    from .formats.limits import check_memory
    from .synthetic import generate

    for name, value in (("layers", layers), ("experts", experts), ("windows", windows)):
        if value < 1:
            raise EplbError(f"{arg(name, value)}: must be >= 1")
    if skew < 0 or drift < 0:
        raise EplbError(f"{arg('skew')} and {arg('drift')} must be >= 0")
    check_writable(output, force)
    binary = (fmt or Path(output).suffix.lstrip(".")).lower() == "safetensors"
    check_memory(output, layers * experts * windows * (24 if binary else 96), "to generate",
                 f"use fewer {arg('windows')}, {arg('layers')} or {arg('experts')}")
    tr = generate(layers, experts, windows, seed, skew=skew, drift=drift, groups=groups)
    write_trace(tr, output, fmt, force=force)
    return GeneratedTrace(tr, output, seed)
