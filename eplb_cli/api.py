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
from typing import TYPE_CHECKING, Any

import torch

from . import validation
from .errors import EplbError, GateFailed, arg, renamed
from .metrics import Score, count_moves, score
from .placement import Placement
from .planning.robust import ROBUST_TOLERANCE
from .strategies import get_strategy, plan
from .topology import Topology, parse_gpu_list, resolve
from .trace import Trace, load_warnings

if TYPE_CHECKING:
    from .formats.sglang import TokenRouting
    from .planning.budget import MoveBudget
    from .planning.compare import CompareRow
    from .planning.frontier import FrontierRow
    from .planning.replay import ReplayResult
    from .planning.transfer import Links
    from .span import RecordedSpans, Routing, Span, TokenModel
    from .tradeoff import Tradeoff

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

    ``moves`` counts the replicas moved from ``previous`` (None without one);
    ``robust`` says what scenario-robust planning changed (None without it;
    see :func:`robust_plan`).
    """

    placement: Placement
    score: Score
    runtime_ms: float
    strategy: str
    moves: dict | None = None
    robust: dict | None = None


def plan_load(load: torch.Tensor, topo: Topology, strategy: str = "balanced", *, seed: int = 0,
              device: str = "cpu") -> PlanResult:
    """Plan ``load`` [L, E] with a named strategy, timing only the strategy itself.

    A one-layer plan first loads the compiled kernels (0.3-0.8 s once per
    process, see the README's start-up notes), so the runtime is the plan's own.
    """
    strat = get_strategy(strategy)
    load = load.to(torch.float64)
    if load.shape[0]:
        plan(load[:1], topo, strat, seed=seed, device=device)
    t0 = time.perf_counter()
    placement = plan(load, topo, strat, seed=seed, device=device)
    ms = (time.perf_counter() - t0) * 1e3
    return PlanResult(placement, score(placement, load), ms, strategy)


def move_budget(max_moves: int | str | MoveBudget | None) -> MoveBudget | None:
    """``64`` (moves in each layer), ``"5%"`` (a share of all slots, in total), a budget, or None."""
    from .planning.budget import MoveBudget

    if max_moves is None or isinstance(max_moves, MoveBudget):
        return max_moves
    per_layer, share = validation.move_budget(max_moves)
    return MoveBudget(per_layer=per_layer, share=share)


def transfer_links(expert_bytes: int | str | None = None, nvlink_gbps: float = 450.0,
                   network_gbps: float = 50.0) -> Links:
    """The transfer model's bytes per replica (default: a DeepSeek-V3 expert in FP8) and bandwidths in GB/s."""
    from .planning.replay import parse_bytes
    from .planning.transfer import DEEPSEEK_V3_EXPERT_BYTES, Links

    size = parse_bytes(expert_bytes) if isinstance(expert_bytes, str) else expert_bytes
    return Links(expert_bytes=DEEPSEEK_V3_EXPERT_BYTES if size is None else size, nvlink_gbps=nvlink_gbps,
                 network_gbps=network_gbps)


def follow_previous(result: PlanResult, previous: Placement, load: torch.Tensor,
                    max_moves: int | str | MoveBudget | None = None, previous_name: str = "previous",
                    links: Links | None = None) -> PlanResult:
    """``result`` moved as little as possible from ``previous``, the placement served now.

    GPUs are relabelled and replicas swapped back where that costs no balance;
    ``max_moves`` caps the replicas moved (a count per layer, or a share of all
    slots such as ``"5%"``). The time spent is added to the runtime, and the
    moves are counted (with bytes and an estimated transfer time when
    ``links`` is given).
    """
    from .planning.migration import check_compatible, follow
    from .threads import one_thread

    budget = move_budget(max_moves)
    topo = result.placement.topology
    check_compatible(previous, result.placement, previous_name, f"{arg('gpus', topo.gpus)} {arg('slots', topo.slots)}")
    t0 = time.perf_counter()
    with one_thread():
        placement = follow(previous, result.placement, load, budget)
    ms = (time.perf_counter() - t0) * 1e3
    return dataclasses.replace(result, placement=placement, score=score(placement, load),
                               runtime_ms=result.runtime_ms + ms, moves=_moves(previous, placement, links))


def _moves(previous: Placement, placement: Placement, links: Links | None) -> dict[str, Any]:
    """Replicas moved from ``previous`` to ``placement`` (with bytes and transfer time when ``links`` is given)."""
    moves = count_moves(previous, placement)
    if links is not None:
        from .planning.transfer import transfer

        moves |= {"expert_bytes": links.expert_bytes, **transfer(previous, placement, links)}
    return moves


@dataclass
class RobustOptions:
    """Scenario-robust planning (:mod:`eplb_cli.planning.robust`): lower the mean over recorded windows of each
    window's busiest GPU, not only the busiest GPU on their forecast.

    ``scenarios``: only the last that many windows serve as scenarios (None:
    all). ``robust_tolerance``: on the forecast, no GPU may end above
    ``1 + robust_tolerance`` times the forecast plan's busiest GPU.
    """

    scenarios: int | None = None
    robust_tolerance: float = ROBUST_TOLERANCE

    def check(self) -> None:
        validation.robust_options(True, self.scenarios, self.robust_tolerance)


def robust_plan(result: PlanResult, history: torch.Tensor, load: torch.Tensor, options: RobustOptions | None = None,
                *, previous: Placement | None = None, max_moves: int | str | MoveBudget | None = None,
                previous_name: str = "previous", links: Links | None = None) -> PlanResult:
    """``result`` (planned for ``load`` [L, E]: ``history`` summed or averaged) made scenario-robust on ``history``
    [H, L, E].

    The windows of ``history`` (the last ``options.scenarios`` of them) are
    the scenarios, weighed equally. With ``previous``, the placement served
    now, the robust plan is followed as :func:`follow_previous` does, keeping
    its gain (:func:`eplb_cli.planning.robust.keep_gain`), within ``max_moves``.
    ``result.robust`` then says what changed: the scenario objective and the
    busiest GPU on ``load``, relative to ``result``.
    """
    from .planning.forecast import Forecast
    from .planning.migration import check_compatible
    from .planning.robust import check_scenarios, robust_rebalance, robust_summary
    from .threads import one_thread

    options = options or RobustOptions()
    options.check()
    budget = move_budget(max_moves)
    if budget is not None and previous is None:
        raise EplbError(f"{arg('max_moves')} needs {arg('previous')}: moves are counted from the placement served now")
    check_scenarios(history, result.placement, "history")
    if previous is not None:
        topo = result.placement.topology
        check_compatible(previous, result.placement, previous_name,
                         f"{arg('gpus', topo.gpus)} {arg('slots', topo.slots)}")
    t0 = time.perf_counter()
    with one_thread():
        placement = robust_rebalance(result.placement, previous, history, load, Forecast("mean"),
                                     scenarios=options.scenarios, tolerance=options.robust_tolerance, max_moves=budget)
    ms = (time.perf_counter() - t0) * 1e3
    changed = robust_summary(result.placement, placement, history, load, scenarios=options.scenarios,
                             tolerance=options.robust_tolerance)
    return dataclasses.replace(result, placement=placement, score=score(placement, load),
                               runtime_ms=result.runtime_ms + ms, robust=changed,
                               moves=_moves(previous, placement, links) if previous is not None else None)


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
    _, experts = weight.shape
    try:
        topo = resolve(experts=experts, gpus=num_gpus, nodes=num_nodes, slots=num_replicas, groups=num_groups,
                       policy="auto")
        placement = plan(weight.to(torch.float64), topo, get_strategy(strategy), seed=seed, device=str(weight.device))
    except EplbError as exc:
        names = {"gpus": "num_gpus", "nodes": "num_nodes", "slots": "num_replicas", "groups": "num_groups"}
        raise type(exc)(exc.render(renamed(names))) from None
    from .strategies.arrays import as_ints, kernels, to_tensor

    # The compiled inverse (one pass; Placement.log2phy and .logcnt give the same, padded to their own width).
    log2phy, logcnt = kernels().log2phy_rows(as_ints(placement.phy2log), experts, num_replicas - experts + 1)
    dev = weight.device
    return placement.phy2log.to(dev), to_tensor(log2phy, dev), to_tensor(logcnt, dev)


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
    routing: Routing | None = None
    span: Span | None = None
    span_residual: float | None = None
    span_left_out: int = 0
    tradeoff: Tradeoff | None = None
    recorded: RecordedSpans | None = None
    engine: dict | None = None
    """The settings the engine must start with for ``output`` to mean this plan (None: not an engine's file)."""
    groups_unknown: bool = False

    @property
    def load(self) -> torch.Tensor:
        return self.trace.total()


def _check_routing(topk: int | None, topk_groups: int | None) -> None:
    for name, value in (("topk", topk), ("topk_groups", topk_groups)):
        if value is not None and value < 1:
            raise EplbError(f"{arg(name, value)}: must be >= 1")


def token_model(trace: Trace, load: torch.Tensor | None = None, *, topk: int | None = None,
                topk_groups: int | None = None, groups: int | None = None) -> TokenModel | None:
    """The routing model fitted to ``load`` (default: the trace's summed windows), or None when
    nothing says how many experts a token takes (see :func:`eplb_cli.span.routing_for`)."""
    from .span import fit, routing_for

    _check_routing(topk, topk_groups)
    routing = routing_for(trace, topk=topk, topk_groups=topk_groups, groups=groups)
    return fit(trace.total() if load is None else load, routing) if routing is not None else None


def token_span(placement: Placement, model: TokenModel | None) -> Span | None:
    """Expected nodes and GPUs a token's experts reach under ``placement`` (None without a model)."""
    from .span import expected_span

    return expected_span(placement, model) if model is not None else None


def plan_trace(trace: str, cluster: ClusterOptions, *, strategy: str = "balanced", seed: int = 0,
               device: str = "cpu", reading: TraceOptions | None = None, previous: str | None = None,
               max_moves: int | str | None = None, expert_bytes: int | str | None = None,
               nvlink_gbps: float = 450.0, network_gbps: float = 50.0, output: str | None = None,
               fmt: str | None = None, force: bool = False, plot: str | None = None, layer: int | None = None,
               strict: bool = False, warn: Warn | None = None, topk: int | None = None, topk_groups: int | None = None,
               alternative: bool = True, robust: RobustOptions | None = None) -> PlanReport:
    """``eplb plan``: read ``trace``, plan it for ``cluster``, follow ``previous``, write ``output`` and ``plot``.

    Every option is checked before the trace is read, and the output files
    before any planning. The report carries the token span under the model's
    routing (``topk``, ``topk_groups``; see :mod:`eplb_cli.span`) and, with
    ``alternative`` and a cluster where both policies apply, the same plan
    under the other policy (:class:`~eplb_cli.tradeoff.Tradeoff`). With
    ``robust``, the plan is made scenario-robust on the trace's windows
    (:func:`robust_plan`) before it follows ``previous``.
    """
    from .device import check_device
    from .formats import save_placement

    reading = reading or TraceOptions()
    validation.cluster(cluster.gpus, cluster.nodes, cluster.slots, cluster.redundant, cluster.groups, cluster.policy,
                       cluster.exclude_gpus)
    validation.plan_options(trace, device=device, input_format=reading.input_format, window=reading.window,
                            windows=reading.windows, layer=layer, output=output, fmt=fmt, force=force, plot=plot,
                            previous=previous, max_moves=max_moves, robust=robust is not None,
                            scenarios=robust.scenarios if robust else None,
                            robust_tolerance=robust.robust_tolerance if robust else None)
    check_device(device)
    get_strategy(strategy)
    budget = move_budget(max_moves)
    links = None
    if expert_bytes is not None:
        if previous is None:
            raise EplbError(f"{arg('expert_bytes')} needs {arg('previous')}: bytes are counted from the placement "
                            "served now")
        links = transfer_links(expert_bytes, nvlink_gbps, network_gbps)
    elif (nvlink_gbps, network_gbps) != (450.0, 50.0):
        raise EplbError(f"{arg('nvlink_gbps')} and {arg('network_gbps')} go with {arg('expert_bytes')} "
                        "(transfer times)")
    _check_routing(topk, topk_groups)
    tr = reading.read(trace)
    topo = cluster.resolve(tr)
    load = tr.total()
    found = check_warnings(load, trace, strict=strict, warn=warn)
    _check_layer(layer, tr)
    from .span import fit, routing_for

    routing = routing_for(tr, topk=topk, topk_groups=topk_groups, groups=cluster.groups)
    old = placement_for(previous, tr, gpus=topo.gpus, nodes=topo.nodes, groups=topo.groups, trace_name=trace,
                        dense_row=dense_row(topo, strategy, seed)) if previous else None

    def planned(under: Topology) -> PlanResult:
        res = plan_load(load, under, strategy, seed=seed, device=device)
        if robust is not None:
            return robust_plan(res, tr.load, load, robust, previous=old, max_moves=budget,
                               previous_name=str(previous), links=links)
        if old is None:
            return res
        return follow_previous(res, old, load, budget, previous_name=str(previous), links=links)

    result = planned(topo)
    model = fit(load, routing) if routing is not None else None
    spans = token_span(result.placement, model)
    tokens = _token_routing(trace, reading)
    recorded = _recorded(tokens, result.placement, topo) if tokens is not None else None
    trade = _tradeoff(topo, result, spans, model, planned, tokens, recorded) if alternative else None
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
    return PlanReport(tr, trace, topo, result, found, output, written, previous, routing=model.routing if model else None,
                      span=spans, span_residual=model.residual if model else None,
                      span_left_out=model.left_out if model else 0, tradeoff=trade, recorded=recorded,
                      engine=engine, groups_unknown=cluster.groups_unknown(tr))


def _token_routing(trace: str, reading: TraceOptions | None) -> TokenRouting | None:
    """The per-token routing ``trace`` holds when it is an SGLang ``per_token`` dump (None otherwise)."""
    from .formats.sglang import read_token_routing

    if reading is not None and reading.input_format not in (None, "sglang-per-pass", "sglang-pt"):
        return None
    return read_token_routing(trace)


def _recorded(tokens: TokenRouting, placement: Placement, topo: Topology) -> RecordedSpans:
    """Spans over the recorded tokens: as the engine served them (when its slots divide over ``topo.gpus``)
    and under ``placement``."""
    from .span import RecordedSpans, recorded_span, served_span

    if tokens.phy2log.shape[0] != placement.layers:
        raise EplbError(f"the per_token records have {tokens.phy2log.shape[0]} layers but the trace "
                        f"{placement.layers}; give the dumps of one recording")
    slots = int(tokens.phy2log.shape[1])
    served = served_span(tokens.slots, slots, topo.gpus, topo.nodes) if slots % topo.gpus == 0 else None
    planned = recorded_span(placement, tokens.experts())
    return RecordedSpans(planned.tokens or 0, served, planned)


def _tradeoff(topo: Topology, result: PlanResult, spans: Span | None, model: TokenModel | None,
              planned: Callable[[Topology], PlanResult], tokens: TokenRouting | None,
              recorded: RecordedSpans | None) -> Tradeoff | None:
    """``result`` against the same plan under the other policy, when both policies apply
    (with both spans over the recorded tokens, filled into ``recorded``, when there are some)."""
    from .span import recorded_span
    from .tradeoff import PolicyFigures, Tradeoff, other_policy, with_policy

    other = other_policy(topo)
    if other is None:
        return None
    alt = planned(with_policy(topo, other))
    mine = recorded.planned if recorded is not None else None
    theirs = recorded_span(alt.placement, tokens.experts()) if tokens is not None else None
    if recorded is not None:
        recorded.other = theirs
    return Tradeoff(PolicyFigures(topo.policy, result.score.summary(), spans, result.runtime_ms, mine),
                    PolicyFigures(other, alt.score.summary(), token_span(alt.placement, model), alt.runtime_ms, theirs))


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
    dispatch: str = "even"

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def evaluate_placement(placement: str, trace: str, *, gpus: int | None = None, nodes: int | None = None,
                       groups: int | None = None, reading: TraceOptions | None = None, layer: int | None = None,
                       exclude_gpus: str | list[int] | None = None, max_imbalance: float | None = None,
                       min_balancedness: float | None = None, plot: str | None = None, force: bool = False,
                       strict: bool = False, warn: Warn | None = None, dispatch: str = "even") -> EvaluationReport:
    """``eplb evaluate``: score ``placement`` on ``trace``, as it runs once ``exclude_gpus`` fail; gates.

    ``dispatch`` is how an expert's tokens split over its replicas: ``even``
    or ``lp`` (:mod:`eplb_cli.dispatch`). Gates are reported, not enforced:
    call :func:`enforce` (the CLI does, for exit code 1).
    """
    from .failure import evaluate_failure

    reading = reading or TraceOptions()
    validation.evaluate_options(placement, trace, gpus=gpus, nodes=nodes, groups=groups,
                                input_format=reading.input_format, window=reading.window, windows=reading.windows,
                                layer=layer, exclude_gpus=exclude_gpus, max_imbalance=max_imbalance,
                                min_balancedness=min_balancedness, plot=plot, force=force, dispatch=dispatch)
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
    running, sc, failure = evaluate_failure(p, load, failed, dispatch)
    summary = sc.summary()
    found_gates = gates(summary["gpu_imbalance"], summary["balancedness"], max_imbalance, min_balancedness)
    if plot:
        from .plots import score_heatmap

        score_heatmap(sc, topo, plot, label=f"{Path(placement).name} on {Path(trace).name}",
                      layer_ids=tr.meta.get("layer_ids"), force=force)
    return EvaluationReport(tr, trace, placement, running, sc, failure, found_gates, found, dispatch)


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
                 migration_aware: bool = True, max_moves: int | str | None = None,
                 expert_bytes: str | int | None = None, previous: str | None = None, seed: int = 0,
                 device: str = "cpu", threads: int | None = 1, min_gain: float | None = None,
                 reading: TraceOptions | None = None, max_imbalance: float | None = None,
                 min_balancedness: float | None = None, plot: str | None = None, force: bool = False,
                 strict: bool = False, warn: Warn | None = None,
                 progress: Callable[[int, int], None] | None = None, robust: RobustOptions | None = None,
                 dispatch: str = "even") -> ReplayReport:
    """``eplb replay``: walk ``trace`` as a server would (see :mod:`eplb_cli.planning.replay`).

    ``progress(done, total)`` is called after each rebalance. With ``robust``
    each plan is made scenario-robust on its history windows, weighted as the
    forecast weighs them; ``dispatch`` (``even`` or ``lp``) is how the served
    figures split an expert's tokens over its replicas.
    """
    tr, topo, found, options = _replay_setup(trace, cluster, strategy=strategy, history=history, forecast=forecast,
                                             migration_aware=migration_aware, max_moves=max_moves,
                                             expert_bytes=expert_bytes, previous=previous, seed=seed, device=device,
                                             threads=threads, min_gain=min_gain, reading=reading, strict=strict,
                                             warn=warn, every=every, max_imbalance=max_imbalance,
                                             min_balancedness=min_balancedness, plot=plot, force=force,
                                             robust=robust, dispatch=dispatch)
    from .planning.replay import replay

    result = replay(tr, topo, every=every, start=start, progress=progress, **options)
    size = options["expert_bytes"]
    s = result.summary
    found_gates = gates(s["served_gpu_imbalance"], s["served_balancedness"], max_imbalance, min_balancedness)
    if plot:
        from .plots import replay_figure
        from .report import topology_line

        replay_figure({f"{strategy}, forecast {forecast}": result.to_dict()["rebalances"]}, plot,
                      title=f"{Path(trace).name}: replay every {every} window(s); {topology_line(topo)}",
                      force=force)
    return ReplayReport(tr, trace, topo, result, found_gates, found, size, cluster.groups_unknown(tr))


def _replay_setup(trace: str, cluster: ClusterOptions, *, strategy: str, history: int | None, forecast: str,
                  migration_aware: bool, max_moves: int | str | None, expert_bytes: str | int | None,
                  previous: str | None, seed: int, device: str, threads: int | None, min_gain: float | None,
                  reading: TraceOptions | None, strict: bool, warn: Warn | None, every: int | list[int] = 1,
                  max_imbalance: float | None = None, min_balancedness: float | None = None, plot: str | None = None,
                  force: bool = False, robust: RobustOptions | None = None,
                  dispatch: str = "even") -> tuple[Trace, Topology, list[str], dict]:
    """What every replay needs: the options checked, the trace and cluster read, ``previous`` checked against them."""
    from .device import check_device
    from .planning.forecast import parse_forecast
    from .planning.replay import check_previous, parse_bytes

    reading = reading or TraceOptions()
    validation.cluster(cluster.gpus, cluster.nodes, cluster.slots, cluster.redundant, cluster.groups, cluster.policy,
                       cluster.exclude_gpus)
    validation.replay_options(trace, every=every, history=history, device=device, threads=threads,
                              input_format=reading.input_format, window=reading.window, windows=reading.windows,
                              max_imbalance=max_imbalance, min_balancedness=min_balancedness, max_moves=max_moves,
                              previous=previous, plot=plot, force=force, min_gain=min_gain,
                              robust=robust is not None, scenarios=robust.scenarios if robust else None,
                              robust_tolerance=robust.robust_tolerance if robust else None, dispatch=dispatch)
    check_device(device)
    fc = parse_forecast(forecast)
    if robust is not None:
        from .planning.robust import scenario_weights

        scenario_weights(fc, 1, robust.scenarios)  # the oracle has no history to draw scenarios from
    get_strategy(strategy)
    budget = move_budget(max_moves)
    size = parse_bytes(expert_bytes) if isinstance(expert_bytes, str) else expert_bytes
    tr = reading.read(trace)
    topo = cluster.resolve(tr)
    found = check_warnings(tr.total(), trace, strict=strict, warn=warn)
    old = None
    if previous is not None:
        old = placement_for(previous, tr, gpus=topo.gpus, nodes=topo.nodes, groups=topo.groups, trace_name=trace,
                            dense_row=dense_row(topo, strategy, seed))
        check_previous(old, tr, topo, previous, trace)
    options = dict(forecast=fc, strategy=strategy, history=history, migration_aware=migration_aware,
                   max_moves=budget, expert_bytes=size, previous=old, seed=seed, device=device, threads=threads,
                   min_gain=min_gain, robust=robust is not None, scenarios=robust.scenarios if robust else None,
                   robust_tolerance=robust.robust_tolerance if robust else ROBUST_TOLERANCE, dispatch=dispatch)
    return tr, topo, found, options


@dataclass
class IntervalReport:
    """What :func:`replay_intervals` measured: one replay summary per rebalance interval."""

    trace: Trace
    source: str
    topology: Topology
    summaries: list[dict]
    warnings: list[str]
    groups_unknown: bool = False


def replay_intervals(trace: str, cluster: ClusterOptions, every: str | list[int], *, strategy: str = "balanced",
                     history: int | None = None, forecast: str = "last", start: int | None = None,
                     migration_aware: bool = True, max_moves: int | str | None = None,
                     expert_bytes: str | int | None = None, previous: str | None = None, seed: int = 0,
                     device: str = "cpu", threads: int | None = 1, min_gain: float | None = None,
                     reading: TraceOptions | None = None, strict: bool = False, warn: Warn | None = None,
                     progress: Callable[[int, int], None] | None = None, robust: RobustOptions | None = None,
                     dispatch: str = "even") -> IntervalReport:
    """``eplb replay --every 1,2,4,8``: one replay per interval, all serving the same windows, to choose one.

    ``robust`` and ``dispatch`` as in :func:`replay_trace`.
    """
    from .planning import replay as replaying

    intervals = validation.intervals(every) if isinstance(every, str) else list(every)
    tr, topo, found, options = _replay_setup(trace, cluster, strategy=strategy, history=history, forecast=forecast,
                                             migration_aware=migration_aware, max_moves=max_moves,
                                             expert_bytes=expert_bytes, previous=previous, seed=seed, device=device,
                                             threads=threads, min_gain=min_gain, reading=reading, strict=strict,
                                             warn=warn, every=intervals, robust=robust, dispatch=dispatch)
    results = replaying.replay_intervals(tr, topo, intervals, start=start, progress=progress, **options)
    return IntervalReport(tr, trace, topo, [r.summary for r in results], found)


@dataclass
class FrontierReport:
    """What :func:`plan_frontier` found: one row per move budget, from ``previous`` towards the plan for ``trace``."""

    trace: Trace
    source: str
    topology: Topology
    strategy: str
    previous: str
    links: Links
    rows: list[FrontierRow]
    runtime_s: float
    warnings: list[str]


def plan_frontier(trace: str, cluster: ClusterOptions, previous: str, *, strategy: str = "balanced", seed: int = 0,
                  device: str = "cpu", reading: TraceOptions | None = None, expert_bytes: int | str | None = None,
                  nvlink_gbps: float = 450.0, network_gbps: float = 50.0, strict: bool = False,
                  warn: Warn | None = None) -> FrontierReport:
    """``eplb plan --previous OLD --frontier``: balance reached for a ladder of move budgets (0% to 50% of all
    slots, and unlimited), with the moves, bytes and estimated transfer time of each
    (:mod:`eplb_cli.planning.frontier`)."""
    from .device import check_device
    from .planning.frontier import frontier

    check_device(device)
    get_strategy(strategy)
    links = transfer_links(expert_bytes, nvlink_gbps, network_gbps)
    tr = (reading or TraceOptions()).read(trace)
    topo = cluster.resolve(tr)
    load = tr.total()
    found = check_warnings(load, trace, strict=strict, warn=warn)
    old = placement_for(previous, tr, gpus=topo.gpus, nodes=topo.nodes, groups=topo.groups, trace_name=trace)
    result = plan_load(load, topo, strategy, seed=seed, device=device)
    t0 = time.perf_counter()
    rows = frontier(old, result.placement, load, links=links)
    return FrontierReport(tr, trace, topo, strategy, previous, links, rows, time.perf_counter() - t0, found)


@dataclass
class PolicyRow:
    """One strategy under one policy in :func:`compare_strategies`: its figures and token span."""

    policy: str
    row: CompareRow
    span: Span | None = None

    def __getattr__(self, name: str) -> Any:
        """Everything else of :class:`~eplb_cli.planning.compare.CompareRow` (strategy, placement, oos, ...)."""
        if name == "row":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.row, name)

    def as_dict(self) -> dict:
        spans = self.span.summary() if self.span is not None else dict.fromkeys(("node_span", "node_span_worst", "gpu_span"))
        return {"policy": self.policy, **self.row.as_dict(), **spans}


@dataclass
class ComparisonReport:
    """What :func:`compare_strategies` measured: one row per strategy (per policy with ``policies``)."""

    trace: Trace
    source: str
    topology: Topology
    rows: list[PolicyRow]
    warnings: list[str]
    policies: list[str] = field(default_factory=list)
    routing: Routing | None = None
    span_residual: float | None = None
    groups_unknown: bool = False
    dispatch: str = "even"


def parse_policies(policies: str | list[str] | None) -> list[str] | None:
    """``hierarchical,global`` as a list of distinct policy names (None: the cluster's own)."""
    from .topology import POLICIES

    if policies is None:
        return None
    names = [n.strip() for n in policies.split(",") if n.strip()] if isinstance(policies, str) else list(policies)
    if not names:
        raise EplbError(f"{arg('policies')}: give at least one policy, e.g. hierarchical,global")
    for name in names:
        if name not in POLICIES:
            raise EplbError(f"{arg('policies', name)}: unknown; use {', '.join(POLICIES)}")
    if len(set(names)) != len(names):
        raise EplbError(f"{arg('policies', ','.join(names))}: each policy once")
    return names


def compare_strategies(trace: str, cluster: ClusterOptions, strategies: str | list[str] = "deepseek,fast,balanced,thorough",
                       *, repeat: int = 5, oos_pairs: int = 64, seed: int = 0, device: str = "cpu",
                       reading: TraceOptions | None = None, plot: str | None = None, force: bool = False,
                       strict: bool = False, warn: Warn | None = None,
                       progress: Callable[[int], Callable[[str], None]] | None = None,
                       policies: str | list[str] | None = None, topk: int | None = None,
                       topk_groups: int | None = None, dispatch: str = "even") -> ComparisonReport:
    """``eplb compare``: plan ``trace`` with each strategy; figures, median runtimes, moves, next-window scores.

    With ``policies`` (e.g. ``hierarchical,global``) every strategy runs under
    each policy (``cluster.policy`` is then ignored), so the policy choice is
    made on numbers; moves count from the first strategy of the same policy.
    Each row has the token span when the routing is known (``topk``,
    ``topk_groups``; see :mod:`eplb_cli.span`). ``dispatch`` (``even`` or
    ``lp``) is how every figure splits an expert's tokens over its replicas.
    ``progress(total)`` returns a callback called with each strategy's name as it starts.
    """
    from .device import check_device
    from .planning.compare import compare
    from .span import fit, routing_for

    reading = reading or TraceOptions()
    validation.cluster(cluster.gpus, cluster.nodes, cluster.slots, cluster.redundant, cluster.groups, cluster.policy,
                       cluster.exclude_gpus)
    names = validation.compare_options(trace, strategies, repeat=repeat, oos_pairs=oos_pairs, device=device,
                                       input_format=reading.input_format, window=reading.window,
                                       windows=reading.windows, plot=plot, force=force, dispatch=dispatch)
    check_device(device)
    for name in names:
        get_strategy(name)
    chosen = parse_policies(policies)
    _check_routing(topk, topk_groups)
    tr = reading.read(trace)
    topos = [dataclasses.replace(cluster, policy=p).resolve(tr) for p in chosen] if chosen else [cluster.resolve(tr)]
    found = check_warnings(tr.total(), trace, strict=strict, warn=warn)
    routing = routing_for(tr, topk=topk, topk_groups=topk_groups, groups=cluster.groups)
    model = fit(tr.total(), routing) if routing is not None else None
    step = progress(len(names) * len(topos)) if progress else None
    rows = []
    for topo in topos:
        for row in compare(tr, topo, names, repeat=repeat, seed=seed, device=device, oos=oos_pairs > 0,
                           max_pairs=oos_pairs or None, progress=step, dispatch=dispatch):
            rows.append(PolicyRow(topo.policy, row, token_span(row.placement, model)))
    if plot:
        from .plots import compare_figure
        from .report import topology_line

        drawn = [r.as_dict() | ({"strategy": f"{r.strategy} ({r.policy})"} if len(topos) > 1 else {}) for r in rows]
        compare_figure(drawn, plot, title=f"{Path(trace).name}: {topology_line(topos[0])}", force=force)
    return ComparisonReport(tr, trace, topos[0], rows, found, [t.policy for t in topos],
                            model.routing if model else None, model.residual if model else None,
                            cluster.groups_unknown(tr), dispatch)


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
