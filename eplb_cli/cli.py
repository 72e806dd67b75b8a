"""The `eplb` command line: parse arguments, call the library, print.

Exit codes: 0 ok, 1 a quality gate failed, 2 bad input (one line on stderr).
With --json, stdout holds exactly one JSON document and human text goes to stderr.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import report
from .errors import EplbError

app = typer.Typer(
    name="eplb",
    help="Expert-parallel load balancing for MoE serving: traces in, placements out, imbalance tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ------------------------------------------------------------ shared options
TraceArg = Annotated[str, typer.Argument(help="Load trace file or folder (safetensors, CSV, SGLang, vLLM, TensorRT-LLM); - reads stdin.", show_default=False)]
Gpus = Annotated[int, typer.Option("--gpus", "-g", help="Number of GPUs (expert-parallel ranks).", show_default=False)]
Nodes = Annotated[int, typer.Option("--nodes", "-n", help="Number of nodes; GPUs divide evenly over them.")]
Slots = Annotated[Optional[int], typer.Option("--slots", help="Physical expert slots in all (default: experts + one per GPU, rounded to a multiple of GPUs).", show_default=False)]
Redundant = Annotated[Optional[int], typer.Option("--redundant", help="Redundant slots beyond one per expert (instead of --slots).", show_default=False)]
Groups = Annotated[Optional[int], typer.Option("--groups", help="Expert groups (DeepSeek-V3: 8); default from the trace, else 1.", show_default=False)]
Policy = Annotated[str, typer.Option("--policy", help="auto | hierarchical | global. auto = hierarchical when groups > 1, nodes > 1 and groups % nodes == 0.")]
StrategyOpt = Annotated[str, typer.Option("--strategy", "-s", help="Preset or stage chain; see 'eplb strategies'.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for randomised stages.")]
Device = Annotated[str, typer.Option("--device", help="Torch device for the strategy: cpu or cuda.")]
InputFormat = Annotated[Optional[str], typer.Option("--input-format", help="Force the trace format (default: detect).", show_default=False)]
Window = Annotated[Optional[int], typer.Option("--window", help="Sum every N recorded steps into one window.", show_default=False)]
Windows = Annotated[Optional[str], typer.Option("--windows", help="Keep windows A:B (Python slice, after --window).", show_default=False)]
Output = Annotated[Optional[str], typer.Option("--output", "-o", help="Write the placement here: .safetensors (eplb), .json / .pt (SGLang), .yaml (TensorRT-LLM), .csv; --format vllm-ascend for vLLM-Ascend's JSON.", show_default=False)]
Format = Annotated[Optional[str], typer.Option("--format", help="Output format (default: from the file extension).", show_default=False)]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print no warnings and no tables (results still go to files / --json).")]
Strict = Annotated[bool, typer.Option("--strict", help="Treat warnings (zero-load layers or experts) as errors, for CI.")]
ExcludeGpus = Annotated[Optional[str], typer.Option("--exclude-gpus", help="Failed or drained GPUs, e.g. 3,17: their slots stay empty.", show_default=False)]
PlotOpt = Annotated[Optional[str], typer.Option("--plot", help="Also draw a figure to FILE.png (needs: pip install 'eplb-cli[plot]').", metavar="FILE.png", show_default=False)]


def _out(text: str, to_stderr: bool = False) -> None:
    typer.echo(text, err=to_stderr)


def _warn(messages: list[str], quiet: bool, strict: bool, source: str) -> None:
    """Print warnings to stderr, or fail on the first one under --strict."""
    if strict and messages:
        raise EplbError(f"{source}: {messages[0]} (--strict)")
    if not quiet:
        for m in messages:
            typer.echo(f"eplb: warning: {source}: {m}", err=True)


def _trace_and_topology(trace: str, input_format: str | None, window: int | None, windows: str | None, gpus: int,
                        nodes: int, slots: int | None, redundant: int | None, groups: int | None, policy: str,
                        exclude_gpus: str | None):
    """Read the trace, then validate the topology flags against it (groups default to the trace's)."""
    from . import api
    from .topology import parse_gpu_list, resolve

    tr = api.load_trace(trace, input_format, window=window, windows=windows)
    topo = resolve(tr.experts, gpus, nodes, slots, redundant, groups if groups is not None else tr.groups, policy,
                   parse_gpu_list(exclude_gpus))
    return tr, topo


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    """Expert-parallel load balancing for MoE serving."""
    # --debug is read from argv by main(), which must know it before typer parses anything.


@app.command()
def plan(
    trace: TraceArg,
    gpus: Gpus,
    nodes: Nodes = 1,
    slots: Slots = None,
    redundant: Redundant = None,
    groups: Groups = None,
    policy: Policy = "auto",
    strategy: StrategyOpt = "balanced",
    seed: Seed = 0,
    device: Device = "cpu",
    input_format: InputFormat = None,
    window: Window = None,
    windows: Windows = None,
    layer: Annotated[Optional[int], typer.Option("--layer", help="Show this layer's GPUs and the experts they hold.", show_default=False)] = None,
    output: Output = None,
    fmt: Format = None,
    force: Force = False,
    exclude_gpus: ExcludeGpus = None,
    plot: PlotOpt = None,
    previous: Previous = None,
    max_moves: MaxMoves = None,
    robust: Robust = False,
    scenarios: Scenarios = None,
    robust_tolerance: RobustTolerance = 0.05,
    json_out: Json = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Compute a placement from a load trace and show how balanced it is."""
    from . import api
    from .atomic import check_writable
    from .checks import check_device, load_warnings
    from .placement import placement_format, save_placement

    check_device(device)
    if output:
        placement_format(output, fmt)
        check_writable(output, force)
    if plot:
        from .plots import check_plot

        check_plot(plot, force)
    tr, topo = _trace_and_topology(trace, input_format, window, windows, gpus, nodes, slots, redundant, groups,
                                   policy, exclude_gpus)
    load = tr.total()
    _warn(load_warnings(load, trace), quiet, strict, trace)
    if layer is not None and not 0 <= layer < tr.layers:
        raise EplbError(f"--layer {layer}: the trace has layers 0 to {tr.layers - 1}")
    res = api.plan_load(load, topo, strategy, seed=seed, device=device)
    if robust:
        res, moves, robust_doc = _robust_plan(res, load, tr, trace, previous, max_moves, scenarios, robust_tolerance)
    else:
        if scenarios is not None:
            raise EplbError("--scenarios needs --robust: it picks the windows the robust plan is made for")
        res, moves = _follow_previous(res, load, tr, trace, previous, max_moves)
        robust_doc = None
    if output:
        extra = {"strategy": strategy, "source": trace, **({"layer_ids": tr.meta["layer_ids"]} if "layer_ids" in tr.meta else {})}
        save_placement(res.placement, output, force=force, fmt=fmt, extra=extra)
    if plot:
        from .plots import score_heatmap

        score_heatmap(res.score, topo, plot, label=strategy, layer_ids=tr.meta.get("layer_ids"), force=force)
    summary = res.score.summary()
    if json_out:
        doc = {
            "strategy": strategy, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
            "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes,
            "groups": topo.groups, **summary, "runtime_ms": res.runtime_ms, "output": output,
            "excluded_gpus": list(topo.excluded_gpus), "previous": previous,
            **(moves or dict.fromkeys(("moves", "moves_intra_node", "moves_inter_node"))),
            "robust": robust_doc,
        }
        _out(report.to_json(doc))
        return
    if quiet:
        return
    head = [
        ("strategy", strategy),
        ("policy", report.policy_line(topo)),
        ("trace", f"{trace}: {tr.layers} layers x {tr.experts} experts, {tr.windows} window{'s' if tr.windows != 1 else ''} summed"),
        ("cluster", report.topology_line(topo)),
        *report.score_rows(summary),
        *(report.migration_rows(moves, tr.layers, topo.slots) if moves else []),
        *(report.robust_rows(robust_doc) if robust_doc else []),
        ("runtime", f"{res.runtime_ms:.1f} ms"),
    ]
    if output:
        head.append(("written", output))
    _out(report.score_report(head, res.placement, res.score, load, layer))


@app.command()
def generate(
    output: Annotated[str, typer.Argument(help="Trace file to write (.safetensors, .csv or .json).", show_default=False)],
    layers: Annotated[int, typer.Option("--layers", help="MoE layers.")] = 58,
    experts: Annotated[int, typer.Option("--experts", help="Experts per layer.")] = 256,
    windows: Annotated[int, typer.Option("--windows", help="Time windows (steps).")] = 8,
    seed: Seed = 0,
    skew: Annotated[float, typer.Option("--skew", help="Sigma of the log-normal expert popularity.")] = 1.0,
    drift: Annotated[float, typer.Option("--drift", help="Per-window drift of popularity (log space).")] = 0.1,
    groups: Groups = None,
    fmt: Format = None,
    force: Force = False,
) -> None:
    """Write a synthetic trace: skewed expert popularity with slow drift, deterministic per seed."""
    from .atomic import check_writable
    from .checks import check_memory
    from .synthetic import generate as make
    from .traces import write_trace

    for flag, value in (("--layers", layers), ("--experts", experts), ("--windows", windows)):
        if value < 1:
            raise EplbError(f"{flag} {value}: must be >= 1")
    if skew < 0 or drift < 0:
        raise EplbError("--skew and --drift must be >= 0")
    check_writable(output, force)
    binary = (fmt or Path(output).suffix.lstrip(".")).lower() == "safetensors"
    check_memory(output, layers * experts * windows * (24 if binary else 96), "to generate",
                 "use fewer --windows, --layers or --experts")
    tr = make(layers, experts, windows, seed, skew=skew, drift=drift, groups=groups)
    write_trace(tr, output, fmt, force=force)
    _out(f"wrote {output}: {windows} windows x {layers} layers x {experts} experts (seed {seed})", to_stderr=output == "-")


@app.command()
def strategies() -> None:
    """List the strategy presets and the stages a chain can use."""
    from .strategies import describe_strategies

    _out(report.rows_table([{"name": n, "what": d} for n, d in describe_strategies()],
                           [("name", "strategy"), ("what", "what it does")]))


# ---------------------------------------------------------------- compare (strategies side by side)
COMPARE_COLUMNS = [
    ("strategy", "strategy"), ("gpu_imbalance", "GPU imb."), ("gpu_imbalance_worst", "worst layer"),
    ("node_imbalance", "node imb."), ("balancedness", "balancedness"), ("gap", "gap to LB"),
    ("moves", "moves vs 1st"), ("runtime_ms", "ms (median)"),
]
OOS_COLUMNS = [("oos_gpu_imbalance", "next-window imb."), ("oos_balancedness", "next-window bal.")]


@app.command()
def compare(
    trace: TraceArg,
    gpus: Gpus,
    nodes: Nodes = 1,
    slots: Slots = None,
    redundant: Redundant = None,
    groups: Groups = None,
    policy: Policy = "auto",
    strategies_: Annotated[str, typer.Option("--strategies", help="Comma-separated strategies; the first is the reference for moves.")] = "deepseek,fast,balanced,thorough",
    repeat: Annotated[int, typer.Option("--repeat", help="Timed runs per strategy (after one warm-up); the median is shown.")] = 5,
    oos_pairs: Annotated[int, typer.Option("--oos-pairs", help="Most (t, t+1) window pairs scored out of sample (evenly spaced); 0 turns it off.")] = 64,
    dispatch: Dispatch = "even",
    seed: Seed = 0,
    device: Device = "cpu",
    input_format: InputFormat = None,
    window: Window = None,
    windows: Windows = None,
    exclude_gpus: ExcludeGpus = None,
    plot: PlotOpt = None,
    force: Force = False,
    json_out: Json = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table as a Markdown table.")] = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Run several strategies on the same trace and topology and print one table."""
    from .checks import check_device, load_warnings
    from .compare import compare as run_compare

    from .dispatch import check_dispatch

    check_device(device)
    check_dispatch(dispatch)
    if sum((json_out, csv_out, markdown)) > 1:
        raise EplbError("--json, --csv and --markdown: pick one output style")
    if repeat < 1:
        raise EplbError(f"--repeat {repeat}: must be >= 1")
    if plot:
        from .plots import check_plot

        check_plot(plot, force)
    names = [n.strip() for n in strategies_.split(",") if n.strip()]
    if not names:
        raise EplbError("--strategies: give at least one strategy, e.g. deepseek,balanced")
    tr, topo = _trace_and_topology(trace, input_format, window, windows, gpus, nodes, slots, redundant, groups,
                                   policy, exclude_gpus)
    _warn(load_warnings(tr.total(), trace), quiet, strict, trace)
    show = sys.stderr.isatty() and not quiet
    with _progress(len(names), show) as step:
        rows = run_compare(tr, topo, names, repeat=repeat, seed=seed, device=device, oos=oos_pairs > 0,
                           max_pairs=oos_pairs or None, progress=step, dispatch=dispatch)
    dicts = [r.as_dict() for r in rows]
    if plot:
        from .plots import compare_figure

        compare_figure(dicts, plot, title=f"{Path(trace).name}: {report.topology_line(topo)}", force=force)
    if json_out:
        base = {"policy": topo.policy, "layers": tr.layers, "experts": tr.experts, "windows": tr.windows,
                "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes, "groups": topo.groups, "output": None,
                "dispatch": dispatch}
        _out(report.to_json({"rows": [base | d for d in dicts]}))
        return
    columns = COMPARE_COLUMNS + (OOS_COLUMNS if rows and rows[0].oos is not None else [])
    style = "csv" if csv_out else "markdown" if markdown else "simple"
    table = report.rows_table(dicts, columns, style)
    if style != "simple":
        _out(table)
        return
    if quiet:
        return
    pairs = rows[0].oos["oos_pairs"] if rows and rows[0].oos else 0
    head = (f"{trace}: {tr.layers} layers x {tr.experts} experts, {tr.windows} window(s); "
            f"{report.topology_line(topo)}; policy {report.policy_line(topo)}")
    notes = ["imb. = max/mean GPU load (1.0 is perfect), mean over layers; gap = sum of max / sum of lower bound - 1."]
    if dispatch != "even":
        notes.append(f"dispatch: {report.DISPATCH_LINES[dispatch]}.")
    if pairs:
        notes.append(f"next-window: planned on window t, scored on t+1, averaged over {pairs} pair(s).")
    _out(report.join_blocks([head, table, "\n".join(notes)]))


class _progress:
    """A progress bar on stderr when it is a terminal; a no-op otherwise."""

    def __init__(self, total: int, show: bool) -> None:
        self.total, self.show, self.bar = total, show, None

    def __enter__(self):
        if self.show:
            self.bar = typer.progressbar(length=self.total, label="strategies", file=sys.stderr)
            self.bar.__enter__()
        return self.step

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.label = label
            self.bar.update(1)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)



# ---------------------------------------------------------------- evaluate, replay (plans over time)
Previous = Annotated[Optional[str], typer.Option("--previous", help="The placement served now: keep its replicas where that costs no balance (GPUs relabelled, replicas swapped back) and report the moves.", metavar="PLACEMENT", show_default=False)]
MaxMoves = Annotated[Optional[int], typer.Option("--max-moves", help="Move at most M replicas per layer from the placement served now, taking the moves that most lower the busiest GPU (fewer moves, some balance lost).", metavar="M", show_default=False)]
Robust = Annotated[bool, typer.Option("--robust", help="Make the plan scenario-robust: swap replicas to lower the mean over the recorded windows of each window's busiest GPU (see README, robust planning).")]
Scenarios = Annotated[Optional[int], typer.Option("--scenarios", help="With --robust: use only the last H recorded windows as scenarios (default: all).", metavar="H", show_default=False)]
RobustTolerance = Annotated[float, typer.Option("--robust-tolerance", help="With --robust: no GPU's load on the forecast may end above (1 + X) x the forecast plan's busiest GPU.", metavar="X")]
Dispatch = Annotated[str, typer.Option("--dispatch", help="How tokens split over an expert's replicas: even (load / replicas) | lp (the split that minimises each window's busiest GPU, as an LP dispatcher would).")]
MaxImbalance = Annotated[Optional[float], typer.Option("--max-imbalance", help="CI gate: exit 1 when the mean GPU imbalance (max/mean) is above X.", metavar="X", show_default=False)]
MinBalancedness = Annotated[Optional[float], typer.Option("--min-balancedness", help="CI gate: exit 1 when balancedness (sum of mean / sum of max) is below X.", metavar="X", show_default=False)]

def _read_placement_for(path: str, tr, trace: str, defaults: dict, flag_gpus: Optional[int] = None):
    """Read a placement and check that it fits the trace: same layers and experts (exit 2 naming both files)."""
    from .placement import load_placement

    p = load_placement(path, defaults=defaults)
    if flag_gpus is not None and p.topology.gpus != flag_gpus:
        raise EplbError(f"{path}: made for {p.topology.gpus} GPUs but --gpus {flag_gpus} was given; drop --gpus or fix it")
    if p.layers != tr.layers or p.topology.experts != tr.experts:
        raise EplbError(
            f"{path} ({p.layers} layers x {p.topology.experts} experts) does not match {trace} "
            f"({tr.layers} layers x {tr.experts} experts); give the placement and trace of one model"
        )
    return p


def _follow_previous(res, load, tr, trace: str, previous: Optional[str], max_moves: Optional[int]):
    """``plan --previous``: the new plan moved as little as possible from the placement served now."""
    import dataclasses
    import time

    from .metrics import migration, score
    from .migration import check_compatible, follow

    if previous is None:
        if max_moves is not None:
            raise EplbError("--max-moves needs --previous: moves are counted from the placement served now")
        return res, None
    if max_moves is not None and max_moves < 0:
        raise EplbError(f"--max-moves {max_moves}: must be >= 0")
    topo = res.placement.topology
    old = _read_placement_for(previous, tr, trace, {"gpus": topo.gpus, "nodes": topo.nodes, "groups": topo.groups})
    check_compatible(old, res.placement, previous, f"--gpus {topo.gpus} --slots {topo.slots}")
    t0 = time.perf_counter()
    placement = follow(old, res.placement, load, max_moves)
    ms = (time.perf_counter() - t0) * 1e3
    res = dataclasses.replace(res, placement=placement, score=score(placement, load), runtime_ms=res.runtime_ms + ms)
    return res, migration(old, placement)


def _robust_plan(res, load, tr, trace: str, previous: Optional[str], max_moves: Optional[int], scenarios: Optional[int],
                 tolerance: float):
    """``plan --robust``: the plan made robust on the trace's windows, then (with --previous) followed."""
    import dataclasses
    import time

    from .forecast import Forecast
    from .metrics import migration, score
    from .migration import check_compatible
    from .robust import robust_rebalance, robust_summary

    if max_moves is not None and previous is None:
        raise EplbError("--max-moves needs --previous: moves are counted from the placement served now")
    if max_moves is not None and max_moves < 0:
        raise EplbError(f"--max-moves {max_moves}: must be >= 0")
    if not tolerance >= 0:
        raise EplbError(f"--robust-tolerance {tolerance}: must be >= 0")
    topo = res.placement.topology
    old = None
    if previous is not None:
        old = _read_placement_for(previous, tr, trace, {"gpus": topo.gpus, "nodes": topo.nodes, "groups": topo.groups})
        check_compatible(old, res.placement, previous, f"--gpus {topo.gpus} --slots {topo.slots}")
    t0 = time.perf_counter()
    placement = robust_rebalance(res.placement, old, tr.load, load, Forecast("mean"), scenarios=scenarios,
                                 tolerance=tolerance, max_moves=max_moves)
    ms = (time.perf_counter() - t0) * 1e3
    doc = robust_summary(res.placement, placement, tr.load, load, scenarios=scenarios, tolerance=tolerance)
    res = dataclasses.replace(res, placement=placement, score=score(placement, load), runtime_ms=res.runtime_ms + ms)
    return res, (migration(old, placement) if old is not None else None), doc


def _check_gates(max_imbalance: Optional[float], min_balancedness: Optional[float]) -> None:
    """Reject gate values no placement could meet or miss."""
    if max_imbalance is not None and not max_imbalance >= 1.0:
        raise EplbError(f"--max-imbalance {max_imbalance}: must be >= 1.0 (max/mean GPU load; 1.0 is perfect)")
    if min_balancedness is not None and not 0.0 < min_balancedness <= 1.0:
        raise EplbError(f"--min-balancedness {min_balancedness}: must be in (0, 1] (1.0 is perfect)")


def _gates(value_imbalance: float, value_balancedness: float, max_imbalance: Optional[float],
           min_balancedness: Optional[float]) -> list[dict]:
    """Each requested gate with its limit, the measured value and whether it passed."""
    out = []
    if max_imbalance is not None:
        out.append({"gate": "--max-imbalance", "limit": max_imbalance, "value": value_imbalance,
                    "passed": bool(value_imbalance <= max_imbalance)})
    if min_balancedness is not None:
        out.append({"gate": "--min-balancedness", "limit": min_balancedness, "value": value_balancedness,
                    "passed": bool(value_balancedness >= min_balancedness)})
    return out


def _enforce(gates: list[dict], what: str) -> None:
    """Exit 1 (GateFailed) with one line naming the first gate ``what`` missed."""
    from .errors import GateFailed

    for g in gates:
        if not g["passed"]:
            name, side = ("GPU imbalance", "above") if g["gate"] == "--max-imbalance" else ("balancedness", "below")
            raise GateFailed(f"gate failed: {what}: {name} {g['value']:.4f} is {side} {g['gate']} {g['limit']:g}")


@app.command()
def evaluate(
    placement: Annotated[str, typer.Argument(help="Placement file: .safetensors (eplb), SGLang .json/.pt, TensorRT-LLM .yaml, .csv.", show_default=False)],
    trace: TraceArg,
    gpus: Annotated[Optional[int], typer.Option("--gpus", "-g", help="GPUs the placement was made for, when the file does not record it (SGLang, TensorRT-LLM).", show_default=False)] = None,
    nodes: Annotated[Optional[int], typer.Option("--nodes", "-n", help="Nodes, when the file does not record them.", show_default=False)] = None,
    groups: Groups = None,
    input_format: InputFormat = None,
    window: Window = None,
    windows: Windows = None,
    layer: Annotated[Optional[int], typer.Option("--layer", help="Show this layer's GPUs and the experts they hold.", show_default=False)] = None,
    exclude_gpus: Annotated[Optional[str], typer.Option("--exclude-gpus", help="GPUs that fail, e.g. 3,17: name the experts left with no replica and score the load re-spread over the surviving replicas.", show_default=False)] = None,
    max_imbalance: MaxImbalance = None,
    min_balancedness: MinBalancedness = None,
    dispatch: Dispatch = "even",
    plot: PlotOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --plot file.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Score an existing placement on a trace (e.g. the next day's load), optionally as a CI gate."""
    from . import api
    from .checks import load_warnings
    from .dispatch import check_dispatch
    from .topology import parse_gpu_list

    _check_gates(max_imbalance, min_balancedness)
    check_dispatch(dispatch)
    if plot:
        from .plots import check_plot

        check_plot(plot, force)
    for flag, value in (("--gpus", gpus), ("--nodes", nodes), ("--groups", groups)):
        if value is not None and value < 1:
            raise EplbError(f"{flag} {value}: must be >= 1")
    tr = api.load_trace(trace, input_format, window=window, windows=windows)
    defaults = {k: v for k, v in (("gpus", gpus), ("nodes", nodes), ("groups", groups if groups is not None else tr.groups))
                if v is not None}
    p = _read_placement_for(placement, tr, trace, defaults, gpus)
    topo = p.topology
    load = tr.total()
    _warn(load_warnings(load, trace), quiet, strict, trace)
    if layer is not None and not 0 <= layer < tr.layers:
        raise EplbError(f"--layer {layer}: the trace has layers 0 to {tr.layers - 1}")
    failed = parse_gpu_list(exclude_gpus)
    bad = [g for g in failed if not 0 <= g < topo.gpus]
    if bad:
        raise EplbError(f"--exclude-gpus {bad[0]}: {placement} has GPUs 0 to {topo.gpus - 1}")
    if failed and len(set(failed) | set(topo.excluded_gpus)) >= topo.gpus:
        raise EplbError("--exclude-gpus fails every GPU: leave at least one")
    p, sc, failure = api.evaluate_failure(p, load, failed, dispatch=dispatch)
    summary = sc.summary()
    gates = _gates(summary["gpu_imbalance"], summary["balancedness"], max_imbalance, min_balancedness)
    if plot:
        from .plots import score_heatmap

        score_heatmap(sc, topo, plot, label=f"{Path(placement).name} on {Path(trace).name}",
                      layer_ids=tr.meta.get("layer_ids"), force=force)
    if json_out:
        doc = {
            "placement": placement, "trace": trace, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
            "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes, "groups": topo.groups,
            **summary, "dispatch": dispatch, "excluded_gpus": list(p.topology.excluded_gpus), "failure": failure,
            "gates": gates,
            "passed": all(g["passed"] for g in gates),
        }
        _out(report.to_json(doc))
    elif not quiet:
        head = [
            ("placement", f"{placement}: {p.layers} layers x {topo.slots} slots"),
            ("trace", f"{trace}: {tr.layers} layers x {tr.experts} experts, {tr.windows} window{'s' if tr.windows != 1 else ''} summed"),
            ("cluster", report.topology_line(topo)),
            *([("dispatch", report.DISPATCH_LINES[dispatch])] if dispatch != "even" else []),
        ]
        if failure:
            head += [
                ("failed GPUs", ", ".join(map(str, failure["failed_gpus"]))),
                ("failure model", failure["model"]),
                ("lost experts", report.lost_experts_line(failure["lost_experts"])),
                ("lost load", f"{report.fmt_pct(failure['lost_load_share'])} of all tokens"),
                ("before failure", f"GPU imbalance {report.fmt_ratio(failure['gpu_imbalance_before'])}, "
                                   f"balancedness {report.fmt_ratio(failure['balancedness_before'])}"),
            ]
        head += report.score_rows(summary)
        head += [("gate", f"{g['gate']} {g['limit']:g}: {'passed' if g['passed'] else 'FAILED'}") for g in gates]
        _out(report.score_report(head, p, sc, load, layer))
    _enforce(gates, f"{placement} on {trace}")


@app.command()
def replay(
    trace: TraceArg,
    gpus: Gpus,
    nodes: Nodes = 1,
    slots: Slots = None,
    redundant: Redundant = None,
    groups: Groups = None,
    policy: Policy = "auto",
    strategy: StrategyOpt = "balanced",
    every: Annotated[int, typer.Option("--every", help="Rebalance every N windows; each plan serves the N windows after it.", metavar="N")] = 1,
    history: Annotated[Optional[int], typer.Option("--history", help="Plan from the forecast of the last H windows (default: all windows so far).", metavar="H", show_default=False)] = None,
    forecast: Annotated[str, typer.Option("--forecast", help="last | mean | ema:ALPHA | oracle (plans on the windows it serves: the upper bound).")] = "last",
    start: Annotated[Optional[int], typer.Option("--start", help="First rebalance at this window (default: N, after N recorded windows).", show_default=False)] = None,
    migration_aware: Annotated[bool, typer.Option("--migration-aware/--no-migration-aware", help="Keep replicas of the plan being served in place where that costs no balance.")] = True,
    max_moves: MaxMoves = None,
    expert_bytes: Annotated[Optional[str], typer.Option("--expert-bytes", help="Weight bytes of one expert replica (e.g. 44040192 or 42MiB), to report bytes moved.", show_default=False)] = None,
    previous: Annotated[Optional[str], typer.Option("--previous", help="The placement served before the first rebalance (its moves are counted too).", metavar="PLACEMENT", show_default=False)] = None,
    exclude_gpus: ExcludeGpus = None,
    seed: Seed = 0,
    device: Device = "cpu",
    threads: Annotated[int, typer.Option("--threads", help="Torch threads for the replay: its many small tensor operations run fastest on one.")] = 1,
    robust: Annotated[bool, typer.Option("--robust", help="Make each plan scenario-robust on the history windows, weighted as the forecast weighs them (see README, robust planning).")] = False,
    scenarios: Scenarios = None,
    robust_tolerance: RobustTolerance = 0.05,
    dispatch: Dispatch = "even",
    input_format: InputFormat = None,
    window: Window = None,
    windows: Windows = None,
    max_imbalance: MaxImbalance = None,
    min_balancedness: MinBalancedness = None,
    plot: PlotOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --plot file.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Replay a trace as a server would: plan from a forecast every N windows, serve the next ones, count moves."""
    from .checks import check_device, load_warnings
    from .forecast import parse_forecast
    from .replay import parse_bytes, replay as run_replay

    from .dispatch import check_dispatch

    check_device(device)
    _check_gates(max_imbalance, min_balancedness)
    check_dispatch(dispatch)
    fc = parse_forecast(forecast)
    if plot:
        from .plots import check_plot

        check_plot(plot, force)
    size = parse_bytes(expert_bytes) if expert_bytes is not None else None
    tr, topo = _trace_and_topology(trace, input_format, window, windows, gpus, nodes, slots, redundant, groups,
                                   policy, exclude_gpus)
    _warn(load_warnings(tr.total(), trace), quiet, strict, trace)
    old = None
    if previous is not None:
        from .replay import check_previous

        old = _read_placement_for(previous, tr, trace, {"gpus": topo.gpus, "nodes": topo.nodes, "groups": topo.groups})
        check_previous(old, tr, topo, previous, trace)
    result = run_replay(tr, topo, every=every, forecast=fc, strategy=strategy, history=history, start=start,
                        migration_aware=migration_aware, max_moves=max_moves, expert_bytes=size, previous=old,
                        seed=seed, device=device, threads=threads, robust=robust, scenarios=scenarios,
                        robust_tolerance=robust_tolerance, dispatch=dispatch)
    s = result.summary
    gates = _gates(s["served_gpu_imbalance"], s["served_balancedness"], max_imbalance, min_balancedness)
    if plot:
        from .plots import replay_figure

        replay_figure({f"{strategy}, forecast {forecast}": result.to_dict()["rebalances"]}, plot,
                      title=f"{Path(trace).name}: replay every {every} window(s); {report.topology_line(topo)}",
                      force=force)
    if json_out:
        doc = result.to_dict()
        doc["summary"] = {"trace": trace, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
                          "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes,
                          "groups": topo.groups, "excluded_gpus": list(topo.excluded_gpus), **s, "gates": gates,
                          "passed": all(g["passed"] for g in gates)}
        _out(report.to_json(doc))
    elif not quiet:
        head = [
            ("strategy", strategy),
            ("policy", report.policy_line(topo)),
            ("trace", f"{trace}: {tr.layers} layers x {tr.experts} experts, {tr.windows} window(s)"),
            ("cluster", report.topology_line(topo)),
            *report.replay_rows(s),
            *[("gate", f"{g['gate']} {g['limit']:g} (served): {'passed' if g['passed'] else 'FAILED'}") for g in gates],
        ]
        table = report.rebalance_table(result.to_dict()["rebalances"], with_bytes=size is not None)
        _out(report.join_blocks(["Rebalances\n" + table, report.summary_table(head)]))
    _enforce(gates, f"replay of {trace} (served load)")


# ---------------------------------------------------------------- inspect, convert (engine files)


@app.command()
def inspect(
    trace: TraceArg,
    input_format: InputFormat = None,
    window: Window = None,
    windows: Windows = None,
    top: Annotated[int, typer.Option("--top", help="How many of the hottest experts (and most skewed layers) to list.")] = 10,
    json_out: Json = False,
) -> None:
    """Describe a trace: shape, tokens per layer, zero layers, skew, hottest experts, drift between windows."""
    from . import api
    from .inspection import inspect_trace, render

    if top < 0:
        raise EplbError(f"--top {top}: must be >= 0")
    doc = inspect_trace(api.load_trace(trace, input_format, window=window, windows=windows), top=top)
    _out(report.to_json(doc) if json_out else render(doc, top_layers=min(top, 5)))


@app.command()
def convert(
    src: Annotated[str, typer.Argument(metavar="IN", help="Trace or placement to read: a file, an engine dump folder, or - for stdin.", show_default=False)],
    dst: Annotated[str, typer.Argument(metavar="OUT", help="File to write, or - for stdout; its extension picks the format unless --format.", show_default=False)],
    fmt: Annotated[Optional[str], typer.Option("--format", help="Output format. Traces: safetensors, csv, csv-wide, sglang, vllm. Placements: safetensors, sglang, sglang-pt, trtllm, vllm-ascend, csv.", show_default=False)] = None,
    input_format: InputFormat = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", "-g", help="GPUs the placement was made for, when IN does not record it (SGLang, TensorRT-LLM).", show_default=False)] = None,
    nodes: Annotated[Optional[int], typer.Option("--nodes", "-n", help="Nodes, when IN does not record them.", show_default=False)] = None,
    groups: Annotated[Optional[int], typer.Option("--groups", help="Expert groups, when IN does not record them.", show_default=False)] = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Convert a trace or a placement between file formats (which one IN is, is read from its content)."""
    from .convert import convert as run_convert

    if json_out and dst == "-":
        raise EplbError("--json with OUT -: both would go to standard output; write OUT to a file")
    for flag, value in (("--gpus", gpus), ("--nodes", nodes), ("--groups", groups)):
        if value is not None and value < 1:
            raise EplbError(f"{flag} {value}: must be >= 1")
    defaults = {k: v for k, v in (("gpus", gpus), ("nodes", nodes), ("groups", groups)) if v is not None}
    done = run_convert(src, dst, fmt=fmt, input_format=input_format, force=force, defaults=defaults)
    if json_out:
        _out(report.to_json(done))
        return
    if done["kind"] == "trace":
        shape = f"trace, {done['windows']} window(s) x {done['layers']} layers x {done['experts']} experts"
    else:
        shape = (f"placement, {done['layers']} layers x {done['slots']} slots on {done['gpus']} GPUs "
                 f"(read as {done['input_format']})")
    _out(f"wrote {dst} ({done['format']}): {shape}", to_stderr=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with warnings.catch_warnings():
            if not debug:  # library warnings would break the one-line stderr contract
                warnings.simplefilter("ignore")
            app(args=args, prog_name="eplb", standalone_mode=False)
        return 0
    except EplbError as exc:
        if debug:
            raise
        typer.echo(f"eplb: error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("eplb: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("eplb: interrupted", err=True)
        return 130
    except MemoryError:
        if debug:
            raise
        typer.echo("eplb: error: out of memory; use --windows or --window to read less of the trace", err=True)
        return 2
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if _is_usage_error(exc):
            typer.echo(f"eplb: error: {_usage_message(exc)}", err=True)
            return 2
        if "can't allocate memory" in str(exc) or type(exc).__name__ == "OutOfMemoryError":
            if debug:
                raise
            typer.echo("eplb: error: out of memory; use --windows or --window to read less of the trace, "
                       "or fewer slots", err=True)
            return 2
        if debug:  # a bug: still one line, with a way to get the details
            raise
        typer.echo(f"eplb: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)".replace("\n", " "), err=True)
        return 3


def _is_usage_error(exc: Exception) -> bool:
    """Typer's argument errors (click's UsageError, vendored or not) carry these two attributes."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _usage_message(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    name = getattr(ctx, "info_name", None)
    hint = f" (see 'eplb {name} --help')" if name and name != "eplb" else " (see 'eplb --help')"
    return " ".join(f"{exc.format_message()}{hint}".split())


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    run()
