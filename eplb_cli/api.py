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

from . import validation
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
                  groups: int | None = None, trace_name: str = "the trace",
                  dense_row: torch.Tensor | None = None) -> Placement:
    """Read a placement and fit it to ``trace``: one row per trace row, same experts.

    ``gpus``, ``nodes`` and ``groups`` fill what the file does not record
    (engine files hold no topology); a file that records another GPU count
    than ``gpus`` is an error. Rows are matched to the trace's layers by model
    layer id (:func:`~eplb_cli.moe_layers.align`); the trace's dense layers
    need no row, and get ``dense_row`` (see :func:`dense_row`) when given.
    """
    from .formats import read_placement
    from .moe_layers import align

    validation.positive(gpus=gpus, nodes=nodes, groups=groups)
    defaults = {k: v for k, v in (("gpus", gpus), ("nodes", nodes),
                                  ("groups", groups if groups is not None else trace.groups)) if v is not None}
    p, meta = read_placement(path, defaults=defaults)
    if gpus is not None and p.topology.gpus != gpus:
        raise EplbError(f"{path}: made for {p.topology.gpus} GPUs but {arg('gpus', gpus)} was given; "
                        "drop it or fix it")
    if p.topology.experts != trace.experts:
        raise EplbError(
            f"{path} ({p.layers} layers x {p.topology.experts} experts) does not match {trace_name} "
            f"({trace.layers} layers x {trace.experts} experts); give the placement and trace of one model"
        )
    return align(p, trace, all_layers=bool(meta.get("all_layers")), source=path, trace_name=trace_name,
                 dense_row=dense_row)


def dense_row(topo: Topology, strategy: str = "balanced", seed: int = 0) -> torch.Tensor:
    """The slot row ``strategy`` plans for a layer with no load (the same for every such layer).

    A placement file holds no dense layers; filling a trace's dense rows with
    this row when reading the placement served now keeps them from counting as
    moves against the new plan.
    """
    zero = torch.zeros(1, topo.experts, dtype=torch.float64)
    return plan(zero, topo, get_strategy(strategy), seed=seed).phy2log[0]


@dataclass
class Gate:
    """A quality gate: ``name`` is the parameter (``max_imbalance`` or ``min_balancedness``)."""

    name: str
    limit: float
    value: float
    passed: bool

    def as_dict(self) -> dict:
        return {"gate": self.name, "limit": self.limit, "value": self.value, "passed": self.passed}


check_gate_limits = validation.gate_limits


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

    def groups_unknown(self, trace: Trace) -> bool:
        """Whether ``auto`` means global only because neither ``groups`` nor the trace gave the expert groups."""
        return self.policy == "auto" and self.groups is None and trace.groups is None and self.nodes > 1


def _check_layer(layer: int | None, trace: Trace) -> None:
    if layer is not None and not 0 <= layer < trace.layers:
        raise EplbError(f"{arg('layer', layer)}: the trace has layers 0 to {trace.layers - 1}")


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
    engine: dict | None = None
    """The settings the engine must start with for ``output`` to mean this plan (None: not an engine's file)."""
    groups_unknown: bool = False

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

    reading = reading or TraceOptions()
    validation.cluster(cluster.gpus, cluster.nodes, cluster.slots, cluster.redundant, cluster.groups, cluster.policy,
                       cluster.exclude_gpus)
    validation.plan_options(trace, device=device, input_format=reading.input_format, window=reading.window,
                            windows=reading.windows, layer=layer, output=output, fmt=fmt, force=force, plot=plot,
                            previous=previous, max_moves=max_moves)
    check_device(device)
    get_strategy(strategy)
    tr = reading.read(trace)
    topo = cluster.resolve(tr)
    load = tr.total()
    found = check_warnings(load, trace, strict=strict, warn=warn)
    _check_layer(layer, tr)
    old = placement_for(previous, tr, gpus=topo.gpus, nodes=topo.nodes, groups=topo.groups, trace_name=trace,
                        dense_row=dense_row(topo, strategy, seed)) if previous else None
    result = plan_load(load, topo, strategy, seed=seed, device=device)
    if old is not None:
        result = follow_previous(result, old, load, max_moves, previous_name=str(previous))
    written = engine = None
    if output:
        from .formats.placement_io import launch_settings
        from .moe_layers import moe_placement

        moe = moe_placement(result.placement, tr)
        written = save_placement(moe, output, force=force, fmt=fmt, extra={"strategy": strategy, "source": trace})
        engine = launch_settings(moe, output, fmt, topo.gpus)
    if plot:
        from .plots import score_heatmap

        score_heatmap(result.score, topo, plot, label=strategy, layer_ids=tr.meta.get("layer_ids"), force=force)
    return PlanReport(tr, trace, topo, result, found, output, written, previous, engine, cluster.groups_unknown(tr))


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

    reading = reading or TraceOptions()
    validation.evaluate_options(placement, trace, gpus=gpus, nodes=nodes, groups=groups,
                                input_format=reading.input_format, window=reading.window, windows=reading.windows,
                                layer=layer, exclude_gpus=exclude_gpus, max_imbalance=max_imbalance,
                                min_balancedness=min_balancedness, plot=plot, force=force)
    tr = reading.read(trace)
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
    groups_unknown: bool = False

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def replay_trace(trace: str, cluster: ClusterOptions, *, strategy: str = "balanced", every: int = 1,
                 history: int | None = None, forecast: str = "last", start: int | None = None,
                 migration_aware: bool = True, max_moves: int | None = None, expert_bytes: str | int | None = None,
                 previous: str | None = None, seed: int = 0, device: str = "cpu", threads: int | None = 1,
                 reading: TraceOptions | None = None, max_imbalance: float | None = None,
                 min_balancedness: float | None = None, plot: str | None = None, force: bool = False,
                 strict: bool = False, warn: Warn | None = None) -> ReplayReport:
    """``eplb replay``: walk ``trace`` as a server would (see :mod:`eplb_cli.planning.replay`)."""
    from .device import check_device
    from .planning.forecast import parse_forecast
    from .planning.replay import check_previous, parse_bytes, replay

    reading = reading or TraceOptions()
    validation.cluster(cluster.gpus, cluster.nodes, cluster.slots, cluster.redundant, cluster.groups, cluster.policy,
                       cluster.exclude_gpus)
    validation.replay_options(trace, every=every, history=history, device=device, threads=threads,
                              input_format=reading.input_format, window=reading.window, windows=reading.windows,
                              max_imbalance=max_imbalance, min_balancedness=min_balancedness, max_moves=max_moves,
                              previous=previous, plot=plot, force=force)
    check_device(device)
    fc = parse_forecast(forecast)
    get_strategy(strategy)
    size = parse_bytes(expert_bytes) if isinstance(expert_bytes, str) else expert_bytes
    tr = reading.read(trace)
    topo = cluster.resolve(tr)
    found = check_warnings(tr.total(), trace, strict=strict, warn=warn)
    old = None
    if previous is not None:
        old = placement_for(previous, tr, gpus=topo.gpus, nodes=topo.nodes, groups=topo.groups, trace_name=trace,
                            dense_row=dense_row(topo, strategy, seed))
        check_previous(old, tr, topo, previous, trace)
    result = replay(tr, topo, every=every, forecast=fc, strategy=strategy, history=history, start=start,
                    migration_aware=migration_aware, max_moves=max_moves, expert_bytes=size, previous=old,
                    seed=seed, device=device, threads=threads)
    s = result.summary
    found_gates = gates(s["served_gpu_imbalance"], s["served_balancedness"], max_imbalance, min_balancedness)
    if plot:
        from .plots import replay_figure
        from .report import topology_line

        replay_figure({f"{strategy}, forecast {forecast}": result.to_dict()["rebalances"]}, plot,
                      title=f"{Path(trace).name}: replay every {every} window(s); {topology_line(topo)}",
                      force=force)
    return ReplayReport(tr, trace, topo, result, found_gates, found, size, cluster.groups_unknown(tr))


@dataclass
class ComparisonReport:
    """What :func:`compare_strategies` measured: one row per strategy."""

    trace: Trace
    source: str
    topology: Topology
    rows: list
    warnings: list[str]
    groups_unknown: bool = False


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

    reading = reading or TraceOptions()
    validation.cluster(cluster.gpus, cluster.nodes, cluster.slots, cluster.redundant, cluster.groups, cluster.policy,
                       cluster.exclude_gpus)
    names = validation.compare_options(trace, strategies, repeat=repeat, oos_pairs=oos_pairs, device=device,
                                       input_format=reading.input_format, window=reading.window,
                                       windows=reading.windows, plot=plot, force=force)
    check_device(device)
    for name in names:
        get_strategy(name)
    tr = reading.read(trace)
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
    return ComparisonReport(tr, trace, topo, rows, found, cluster.groups_unknown(tr))


def inspect_file(trace: str, *, reading: TraceOptions | None = None, top: int = 10) -> dict:
    """``eplb inspect``: shape, tokens per layer, zero layers, skew, hottest experts, drift between windows.

    A placement file gets its own summary (``kind`` placement): layers and
    their ids, slots, replicas and the GPU counts it fits.
    """
    from .formats.placement_io import read_placement_source
    from .formats.registry import detect_placement, trace_format
    from .formats.source import Source
    from .formats.trace_io import read_trace_source
    from .inspection import inspect_placement, inspect_trace

    reading = reading or TraceOptions()
    validation.inspect_options(trace, input_format=reading.input_format, window=reading.window,
                               windows=reading.windows, top=top)
    src = Source(str(trace))
    if reading.input_format is None and detect_placement(src) is not None:
        placement, meta = read_placement_source(src, need_gpus=False)
        return inspect_placement(placement, meta, src.name)
    return inspect_trace(read_trace_source(src, trace_format(reading.input_format) if reading.input_format else None,
                                           window=reading.window, windows=reading.windows), top=top)


def convert_file(src: str, dst: str, *, fmt: str | None = None, input_format: str | None = None,
                 gpus: int | None = None, nodes: int | None = None, groups: int | None = None,
                 force: bool = False) -> dict:
    """``eplb convert``: a trace or a placement from one format to another; returns what was written."""
    from .formats.convert import convert

    validation.convert_options(src, dst, fmt=fmt, input_format=input_format, gpus=gpus, nodes=nodes, groups=groups,
                               force=force)
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
    from .formats.limits import check_memory
    from .synthetic import generate

    validation.generate_options(output, layers=layers, experts=experts, windows=windows, skew=skew, drift=drift,
                                groups=groups, fmt=fmt, force=force)
    binary = (fmt or Path(output).suffix.lstrip(".")).lower() == "safetensors"
    check_memory(output, layers * experts * windows * (24 if binary else 96), "to generate",
                 f"use fewer {arg('windows')}, {arg('layers')} or {arg('experts')}")
    tr = generate(layers, experts, windows, seed, skew=skew, drift=drift, groups=groups)
    write_trace(tr, output, fmt, force=force)
    return GeneratedTrace(tr, output, seed)
