"""The `eplb` command line: parse arguments, call one :mod:`eplb_cli.api` function, print.

Exit codes: 0 ok, 1 a quality gate failed, 2 bad input (one line on stderr),
3 a bug. With --json, stdout holds exactly one JSON document and human text
goes to stderr. Nothing heavy is imported at module level: ``eplb --help`` and
every argument error finish before torch loads.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any

import typer

from . import validation
from .errors import EplbError, OutputError, one_line, render
from .output import print_stdout, stdout_failed

app = typer.Typer(
    name="eplb",
    help="Expert-parallel load balancing for MoE serving: traces in, placements out, imbalance tables.",
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's renderer costs ~0.5 s of imports, reads [plot] as markup and cuts option names at 80 columns.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

FLAG_NAMES = {"fmt": "--format"}
"""Library parameters whose flag is not ``--`` + the name with dashes."""


def flag(name: str) -> str:
    """The flag for library parameter ``name``."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def flag_style(name: str, value: str | None) -> str:
    """How an error names a parameter on the command line: ``--gpus 0``, or the bare flag for a switch."""
    return flag(name) if value in (None, "True") else f"{flag(name)} {value}"


# ------------------------------------------------------------ shared options
TraceArg = Annotated[str, typer.Argument(help="Load trace file or folder (safetensors, CSV, SGLang, vLLM, TensorRT-LLM); - reads stdin.", show_default=False)]
Gpus = Annotated[int, typer.Option("--gpus", "-g", help="Number of GPUs (expert-parallel ranks).", show_default=False)]
Nodes = Annotated[int, typer.Option("--nodes", "-n", help="Number of nodes; GPUs divide evenly over them.")]
Slots = Annotated[int | None, typer.Option("--slots", help="Physical expert slots in all (default: experts + one per GPU, rounded to a multiple of GPUs).", show_default=False)]
Redundant = Annotated[int | None, typer.Option("--redundant", help="Redundant slots beyond one per expert (instead of --slots).", show_default=False)]
Groups = Annotated[int | None, typer.Option("--groups", help="Expert groups (DeepSeek-V3: 8); default from the trace, else 1.", show_default=False)]
Policy = Annotated[str, typer.Option("--policy", help="auto | hierarchical | global. auto = hierarchical when groups > 1, nodes > 1 and groups % nodes == 0.")]
StrategyOpt = Annotated[str, typer.Option("--strategy", "-s", help="Preset or stage chain; see 'eplb strategies'.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for randomised stages.")]
Device = Annotated[str, typer.Option("--device", help="Torch device for the strategy: cpu or cuda.")]
InputFormat = Annotated[str | None, typer.Option("--input-format", help="Force the trace format (default: detect).", show_default=False)]
Window = Annotated[int | None, typer.Option("--window", help="Sum every N recorded steps into one window.", show_default=False)]
Windows = Annotated[str | None, typer.Option("--windows", help="Keep windows A:B (Python slice, after --window).", show_default=False)]
Output = Annotated[str | None, typer.Option("--output", "-o", help="Write the placement here: .safetensors (eplb), .json / .pt (SGLang), .yaml (TensorRT-LLM), .csv; --format vllm-ascend or vllm for their JSON. Prints the engine's launch settings.", show_default=False)]
Format = Annotated[str | None, typer.Option("--format", help="Output format (default: from the file extension).", show_default=False)]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print no warnings and no tables (results still go to files / --json).")]
Strict = Annotated[bool, typer.Option("--strict", help="Treat warnings (zero-load layers or experts) as errors, for CI.")]
ExcludeGpus = Annotated[str | None, typer.Option("--exclude-gpus", help="Failed or drained GPUs, e.g. 3,17: their slots stay empty.", show_default=False)]
TopK = Annotated[int | None, typer.Option("--topk", help="Experts each token is routed to, for the token span (default: from the trace, or its model: DeepSeek-V3 8, V2-Lite 6, Qwen3 8, Mixtral 2).", show_default=False)]
TopKGroups = Annotated[int | None, typer.Option("--topk-groups", help="Expert groups a token may draw from (group-limited routing; DeepSeek-V3: 4 of 8 --groups).", show_default=False)]
PlotOpt = Annotated[str | None, typer.Option("--plot", help=f"Also draw a figure to FILE.png (needs matplotlib: {validation.plot_hint()}).", metavar="FILE.png", show_default=False)]


def _out(text: str, to_stderr: bool = False) -> None:
    """Print ``text`` (parameters named as flags); a closed, full or broken standard output is an :class:`OutputError`."""
    text = render(text, flag_style)
    if to_stderr:
        typer.echo(text, err=True)
        return
    print_stdout(text, "cannot print the results: standard output is closed; redirect it (> FILE) or pass --quiet")


def _warner(quiet: bool, source: str) -> Callable[[str], None]:
    """Print each warning about ``source`` on stderr, unless ``quiet``."""
    def warn(message: str) -> None:
        if not quiet:
            typer.echo(f"eplb: warning: {source}: {message}", err=True)
    return warn


def _reading(input_format: str | None, window: int | None, windows: str | None):
    from .api import TraceOptions

    return TraceOptions(input_format, window, windows)


def _cluster(gpus: int, nodes: int, slots: int | None, redundant: int | None, groups: int | None,
             policy: str, exclude_gpus: str | None):
    from .api import ClusterOptions

    return ClusterOptions(gpus, nodes, slots, redundant, groups, policy, exclude_gpus)


def _robust(robust: bool, scenarios: int | None, robust_tolerance: float):
    from .api import RobustOptions

    return RobustOptions(scenarios, robust_tolerance) if robust else None


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"eplb {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
          version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version,
                                                is_eager=True)] = False) -> None:
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
    layer: Annotated[int | None, typer.Option("--layer", help="Show this layer's GPUs and the experts they hold.", show_default=False)] = None,
    output: Output = None,
    fmt: Format = None,
    force: Force = False,
    exclude_gpus: ExcludeGpus = None,
    plot: PlotOpt = None,
    previous: Previous = None,
    max_moves: MaxMoves = None,
    frontier: Annotated[bool, typer.Option("--frontier", help="With --previous: plan under a ladder of move budgets (0% to 50% of all slots, and unlimited) and print what each buys: imbalance, moves, bytes, transfer time.")] = False,
    expert_bytes: ExpertBytes = None,
    nvlink_gbps: NvlinkGbps = 450.0,
    network_gbps: NetworkGbps = 50.0,
    topk: TopK = None,
    topk_groups: TopKGroups = None,
    robust: Annotated[bool, typer.Option("--robust", help="Make the plan scenario-robust: swap replicas to lower the mean over the recorded windows of each window's busiest GPU (see README, robust planning).")] = False,
    scenarios: Scenarios = None,
    robust_tolerance: RobustTolerance = 0.05,
    json_out: Json = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Compute a placement from a load trace and show how balanced it is.

    Where both policies apply, the other one's plan is computed too, and one
    line says what it would reach and what the choice trades.
    """
    validation.cluster(gpus, nodes, slots, redundant, groups, policy, exclude_gpus)
    validation.plan_options(trace, device=device, input_format=input_format, window=window, windows=windows,
                            layer=layer, output=output, fmt=fmt, force=force, plot=plot, previous=previous,
                            max_moves=max_moves, robust=robust, scenarios=scenarios, robust_tolerance=robust_tolerance)
    from . import api, report

    cluster = _cluster(gpus, nodes, slots, redundant, groups, policy, exclude_gpus)
    if frontier:
        if previous is None:
            raise EplbError("--frontier needs --previous: budgets are moves from the placement served now")
        for name, value in (("--max-moves", max_moves), ("--output", output), ("--plot", plot), ("--layer", layer),
                            ("--robust", robust or None)):
            if value is not None:
                raise EplbError(f"--frontier prints one row per budget; drop {name} (plan one budget with --max-moves P%)")
        front = api.plan_frontier(trace, cluster, previous, strategy=strategy, seed=seed, device=device,
                                  reading=_reading(input_format, window, windows), expert_bytes=expert_bytes,
                                  nvlink_gbps=nvlink_gbps, network_gbps=network_gbps, strict=strict,
                                  warn=_warner(quiet, trace))
        if json_out:
            _out(report.frontier_json(front))
        elif not quiet:
            _out(report.frontier_text(front))
        return
    rep = api.plan_trace(trace, cluster, strategy=strategy, seed=seed, device=device,
                         reading=_reading(input_format, window, windows), previous=previous, max_moves=max_moves,
                         expert_bytes=expert_bytes, nvlink_gbps=nvlink_gbps, network_gbps=network_gbps, output=output,
                         fmt=fmt, force=force, plot=plot, layer=layer, strict=strict, warn=_warner(quiet, trace),
                         topk=topk, topk_groups=topk_groups, robust=_robust(robust, scenarios, robust_tolerance))
    if json_out:
        _out(report.plan_json(rep, flag))
    elif not quiet:
        _out(report.plan_text(rep, layer, flag))
    if rep.engine and not (json_out or quiet):
        _out(report.engine_lines(rep.engine), to_stderr=True)


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
    validation.generate_options(output, layers=layers, experts=experts, windows=windows, skew=skew, drift=drift,
                                groups=groups, fmt=fmt, force=force)
    from . import api

    api.generate_trace(output, layers=layers, experts=experts, windows=windows, seed=seed, skew=skew, drift=drift,
                       groups=groups, fmt=fmt, force=force)
    _out(f"wrote {output}: {windows} windows x {layers} layers x {experts} experts (seed {seed})", to_stderr=output == "-")


@app.command()
def strategies() -> None:
    """List the strategy presets and the stages a chain can use."""
    from . import report
    from .strategies import describe_strategies

    _out(report.rows_table([{"name": n, "what": d} for n, d in describe_strategies()],
                           [("name", "strategy"), ("what", "what it does")], width=100))


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
    seed: Seed = 0,
    device: Device = "cpu",
    input_format: InputFormat = None,
    window: Window = None,
    windows: Windows = None,
    exclude_gpus: ExcludeGpus = None,
    policies: Annotated[str | None, typer.Option("--policies", help="Run every strategy under each of these policies, e.g. hierarchical,global (instead of --policy), to weigh balance against token span.", show_default=False)] = None,
    topk: TopK = None,
    topk_groups: TopKGroups = None,
    dispatch: Dispatch = "even",
    plot: PlotOpt = None,
    force: Force = False,
    json_out: Json = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table as a Markdown table.")] = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Run several strategies on the same trace and topology and print one table."""
    if sum((json_out, csv_out, markdown)) > 1:
        raise EplbError("--json, --csv and --markdown: pick one output style")
    validation.cluster(gpus, nodes, slots, redundant, groups, policy, exclude_gpus)
    validation.compare_options(trace, strategies_, repeat=repeat, oos_pairs=oos_pairs, device=device,
                               input_format=input_format, window=window, windows=windows, plot=plot, force=force,
                               dispatch=dispatch)
    from . import api, report

    show = sys.stderr.isatty() and not quiet
    with _Progress(show, "strategies") as progress:
        rep = api.compare_strategies(trace, _cluster(gpus, nodes, slots, redundant, groups, policy, exclude_gpus),
                                     strategies_, repeat=repeat, oos_pairs=oos_pairs, seed=seed, device=device,
                                     reading=_reading(input_format, window, windows), plot=plot, force=force,
                                     strict=strict, warn=_warner(quiet, trace), progress=progress.start,
                                     policies=policies, topk=topk, topk_groups=topk_groups, dispatch=dispatch)
    if json_out:
        _out(report.compare_json(rep))
    elif csv_out or markdown:
        _out(report.compare_table(rep, "csv" if csv_out else "markdown"))
    elif not quiet:
        _out(report.compare_table(rep))


class _Progress:
    """A progress bar on stderr when it is a terminal; a no-op otherwise."""

    def __init__(self, show: bool, label: str) -> None:
        self.show, self.label = show, label
        self.bar: Any = None

    def __enter__(self) -> _Progress:
        return self

    def start(self, total: int) -> Callable[[str], None]:
        """Open the bar for ``total`` steps; the callback labels and counts each step."""
        if self.show:
            self.bar = typer.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        return self.step

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.label = label
            self.bar.update(1)

    def advance(self, done: int, total: int) -> None:
        """Move the bar to ``done`` of ``total`` steps (opened on the first call)."""
        if not self.show:
            return
        if self.bar is None:
            self.bar = typer.progressbar(length=total, label=self.label, file=sys.stderr, show_eta=True)
            self.bar.__enter__()
            self.done = 0
        self.bar.update(done - self.done)
        self.done = done

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# ---------------------------------------------------------------- evaluate, replay (plans over time)
Previous = Annotated[str | None, typer.Option("--previous", help="The placement served now: keep its replicas where that costs no balance (GPUs relabelled, replicas swapped back) and report the moves.", metavar="PLACEMENT", show_default=False)]
MaxMoves = Annotated[str | None, typer.Option("--max-moves", help="Move at most M replicas in each layer (a count, e.g. 64) or at most a share of all slots in total (e.g. 5%, spent in the layers where it lowers the imbalance most) from the placement served now (fewer moves, some balance lost).", metavar="M|P%", show_default=False)]
ExpertBytes = Annotated[str | None, typer.Option("--expert-bytes", help="Weight bytes of one expert replica (e.g. 44040192 or 42MiB), to report bytes moved and transfer time (plan --frontier: default 42MiB, a DeepSeek-V3 expert in FP8).", show_default=False)]
NvlinkGbps = Annotated[float, typer.Option("--nvlink-gbps", help="Transfer model: NVLink bandwidth into one GPU, GB/s (H100/H200: 450 each way).", metavar="GB/S")]
NetworkGbps = Annotated[float, typer.Option("--network-gbps", help="Transfer model: network bandwidth into one GPU, GB/s (one 400 Gb/s NIC: 50).", metavar="GB/S")]
MaxImbalance = Annotated[float | None, typer.Option("--max-imbalance", help="CI gate: exit 1 when the mean GPU imbalance (max/mean) is above X.", metavar="X", show_default=False)]
MinBalancedness = Annotated[float | None, typer.Option("--min-balancedness", help="CI gate: exit 1 when balancedness (sum of mean / sum of max) is below X.", metavar="X", show_default=False)]
Scenarios = Annotated[int | None, typer.Option("--scenarios", help="With --robust: use only the last H recorded windows as scenarios (default: all).", metavar="H", show_default=False)]
RobustTolerance = Annotated[float, typer.Option("--robust-tolerance", help="With --robust: no GPU's load on the forecast may end above (1 + X) x the forecast plan's busiest GPU.", metavar="X")]
Dispatch = Annotated[str, typer.Option("--dispatch", help="How tokens split over an expert's replicas: even (load / replicas) | lp (the split that minimises each window's busiest GPU, as an LP dispatcher would).", metavar="even|lp")]


@app.command()
def evaluate(
    placement: Annotated[str, typer.Argument(help="Placement file: .safetensors (eplb), SGLang .json/.pt, TensorRT-LLM .yaml, .csv.", show_default=False)],
    trace: TraceArg,
    gpus: Annotated[int | None, typer.Option("--gpus", "-g", help="GPUs the placement was made for, when the file does not record it (SGLang, TensorRT-LLM).", show_default=False)] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", "-n", help="Nodes, when the file does not record them.", show_default=False)] = None,
    groups: Groups = None,
    input_format: InputFormat = None,
    window: Window = None,
    windows: Windows = None,
    layer: Annotated[int | None, typer.Option("--layer", help="Show this layer's GPUs and the experts they hold.", show_default=False)] = None,
    exclude_gpus: Annotated[str | None, typer.Option("--exclude-gpus", help="GPUs that fail, e.g. 3,17: name the experts left with no replica and score the load re-spread over the surviving replicas.", show_default=False)] = None,
    max_imbalance: MaxImbalance = None,
    min_balancedness: MinBalancedness = None,
    dispatch: Dispatch = "even",
    plot: PlotOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --plot file.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Score an existing placement on a trace, such as the next day's load; optionally a CI gate."""
    validation.evaluate_options(placement, trace, gpus=gpus, nodes=nodes, groups=groups, input_format=input_format,
                                window=window, windows=windows, layer=layer, exclude_gpus=exclude_gpus,
                                max_imbalance=max_imbalance, min_balancedness=min_balancedness, plot=plot, force=force,
                                dispatch=dispatch)
    from . import api, report

    rep = api.evaluate_placement(placement, trace, gpus=gpus, nodes=nodes, groups=groups,
                                 reading=_reading(input_format, window, windows), layer=layer,
                                 exclude_gpus=exclude_gpus, max_imbalance=max_imbalance,
                                 min_balancedness=min_balancedness, plot=plot, force=force, strict=strict,
                                 warn=_warner(quiet, trace), dispatch=dispatch)
    if json_out:
        _out(report.evaluate_json(rep, flag))
    elif not quiet:
        _out(report.evaluate_text(rep, flag, layer))
    api.enforce(rep.gates, f"{placement} on {trace}")


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
    every: Annotated[str, typer.Option("--every", help="Rebalance every N windows; each plan serves the N windows after it. Several (1,2,4,8) print one summary row each, all from the same first window, to choose an interval.", metavar="N[,N...]")] = "1",
    history: Annotated[int | None, typer.Option("--history", help="Plan from the forecast of the last H windows (default: all windows so far).", metavar="H", show_default=False)] = None,
    forecast: Annotated[str, typer.Option("--forecast", help="last | mean | ema:ALPHA | oracle (plans on the windows it serves: the upper bound).")] = "last",
    start: Annotated[int | None, typer.Option("--start", help="First rebalance at this window (default: N, after N recorded windows).", show_default=False)] = None,
    migration_aware: Annotated[bool, typer.Option("--migration-aware/--no-migration-aware", help="Keep replicas of the plan being served in place where that costs no balance.")] = True,
    max_moves: MaxMoves = None,
    expert_bytes: Annotated[str | None, typer.Option("--expert-bytes", help="Weight bytes of one expert replica (e.g. 44040192 or 42MiB), to report bytes moved.", show_default=False)] = None,
    previous: Annotated[str | None, typer.Option("--previous", help="The placement served before the first rebalance (its moves are counted too).", metavar="PLACEMENT", show_default=False)] = None,
    exclude_gpus: ExcludeGpus = None,
    seed: Seed = 0,
    device: Device = "cpu",
    threads: Annotated[int, typer.Option("--threads", help="Torch threads for the replay's many small tensor operations (fastest on one); the compiled loops use torch's usual count (OMP_NUM_THREADS).")] = 1,
    robust: Annotated[bool, typer.Option("--robust", help="Make each plan scenario-robust on the history windows, weighted as the forecast weighs them (see README, robust planning).")] = False,
    scenarios: Scenarios = None,
    robust_tolerance: RobustTolerance = 0.05,
    dispatch: Dispatch = "even",
    min_gain: Annotated[float | None, typer.Option("--min-gain", help="Skip a rebalance whose forecast gain (relative drop of the GPU imbalance on the forecast) is below X, e.g. 0.01; reports the moves saved and the balance lost.", metavar="X", show_default=False)] = None,
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
    intervals = validation.intervals(every)
    validation.cluster(gpus, nodes, slots, redundant, groups, policy, exclude_gpus)
    validation.replay_options(trace, every=intervals, history=history, device=device, threads=threads,
                              input_format=input_format, window=window, windows=windows, max_imbalance=max_imbalance,
                              min_balancedness=min_balancedness, max_moves=max_moves, previous=previous, plot=plot,
                              force=force, min_gain=min_gain, robust=robust, scenarios=scenarios,
                              robust_tolerance=robust_tolerance, dispatch=dispatch)
    from . import api, report

    cluster = _cluster(gpus, nodes, slots, redundant, groups, policy, exclude_gpus)
    common = dict(strategy=strategy, history=history, forecast=forecast, start=start, migration_aware=migration_aware,
                  max_moves=max_moves, expert_bytes=expert_bytes, previous=previous, seed=seed, device=device,
                  threads=threads, min_gain=min_gain, reading=_reading(input_format, window, windows), strict=strict,
                  warn=_warner(quiet, trace), robust=_robust(robust, scenarios, robust_tolerance), dispatch=dispatch)
    show = sys.stderr.isatty() and not quiet
    if len(intervals) > 1:
        for name, value in (("--max-imbalance", max_imbalance), ("--min-balancedness", min_balancedness),
                            ("--plot", plot)):
            if value is not None:
                raise EplbError(f"{name} takes one --every interval; drop it or give one N")
        with _Progress(show, "replay") as bar:
            several = api.replay_intervals(trace, cluster, intervals, progress=bar.advance, **common)
        if json_out:
            _out(report.intervals_json(several))
        elif not quiet:
            _out(report.intervals_text(several))
        return
    with _Progress(show, "replay") as bar:
        rep = api.replay_trace(trace, cluster, every=intervals[0], max_imbalance=max_imbalance,
                               min_balancedness=min_balancedness, plot=plot, force=force, progress=bar.advance,
                               **common)
    if json_out:
        _out(report.replay_json(rep, flag))
    elif not quiet:
        _out(report.replay_text(rep, flag))
    api.enforce(rep.gates, f"replay of {trace} (served load)")


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
    """Describe a trace (shape, tokens per layer, zero layers, skew, hottest experts, drift) or a placement file."""
    validation.inspect_options(trace, input_format=input_format, window=window, windows=windows, top=top)
    from . import api, report
    from .inspection import render, render_placement

    doc = api.inspect_file(trace, reading=_reading(input_format, window, windows), top=top)
    if json_out:
        _out(report.to_json(doc))
    else:
        _out(render_placement(doc) if doc.get("kind") == "placement" else render(doc, top_layers=min(top, 5)))


@app.command()
def convert(
    src: Annotated[str, typer.Argument(metavar="IN", help="Trace or placement to read: a file, an engine dump folder, or - for stdin.", show_default=False)],
    dst: Annotated[str, typer.Argument(metavar="OUT", help="File to write, or - for stdout; its extension picks the format unless --format.", show_default=False)],
    fmt: Annotated[str | None, typer.Option("--format", help="Output format. Traces: safetensors, csv, csv-wide, sglang, vllm. Placements: safetensors, sglang, sglang-pt, trtllm, vllm-ascend, vllm, csv.", show_default=False)] = None,
    input_format: InputFormat = None,
    gpus: Annotated[int | None, typer.Option("--gpus", "-g", help="GPUs the placement was made for, when IN does not record it (engine files) and OUT does (safetensors, csv, vllm-ascend).", show_default=False)] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", "-n", help="Nodes, when IN does not record them.", show_default=False)] = None,
    groups: Annotated[int | None, typer.Option("--groups", help="Expert groups, when IN does not record them.", show_default=False)] = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Convert a trace or a placement between file formats (which one IN is, is read from its content)."""
    if json_out and dst == "-":
        raise EplbError("--json with OUT -: both would go to standard output; write OUT to a file")
    validation.convert_options(src, dst, fmt=fmt, input_format=input_format, gpus=gpus, nodes=nodes, groups=groups,
                               force=force)
    from . import api, report

    done = api.convert_file(src, dst, fmt=fmt, input_format=input_format, gpus=gpus, nodes=nodes, groups=groups,
                            force=force)
    if json_out:
        _out(report.to_json(done))
    else:
        _out(report.convert_line(done), to_stderr=True)
        if done.get("engine"):
            _out(report.engine_lines(done["engine"]), to_stderr=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning errors into one line and an exit code.

    Every line it prints goes through :func:`_say`, which keeps it to one line
    of at most :data:`~eplb_cli.errors.MAX_MESSAGE` characters.
    """
    from . import interrupts

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        app(args=["--help"], prog_name="eplb", standalone_mode=False)
        typer.echo("eplb: error: no command given; pick one of the commands above, e.g. eplb plan TRACE --gpus 8",
                   err=True)
        return 2
    debug = "--debug" in args
    interrupts.begin_command()
    try:
        with warnings.catch_warnings():
            if not debug:  # library warnings would break the one-line stderr contract
                warnings.simplefilter("ignore")
            code = app(args=args, prog_name="eplb", standalone_mode=False)
        if code == 130:  # typer turns a Ctrl-C it caught into a return value of 130 when not standalone
            _say(interrupts.message())
            return 130
        _flush_stdout()
        return code if isinstance(code, int) else 0
    except interrupts.Interrupted as exc:
        _say(interrupts.message(exc.signum))
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        _say(interrupts.message())
        return 130
    except EplbError as exc:
        if debug:
            raise
        if isinstance(exc, OutputError):
            _silence_stdout()
        _say(f"eplb: error: {exc.render(flag_style)}")
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except MemoryError:
        if debug:
            raise
        _say(f"eplb: error: {_memory_message(None)}")
        return 2
    except Exception as exc:
        if _is_usage_error(exc):
            _say(f"eplb: error: {_usage_message(exc)}")
            return 2
        if "can't allocate memory" in str(exc) or type(exc).__name__ == "OutOfMemoryError":
            if debug:
                raise
            _say(f"eplb: error: {_memory_message(exc)}")
            return 2
        if debug:  # a bug: still one line, with a way to get the details
            raise
        _say(f"eplb: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)")
        return 3


def _say(line: str) -> None:
    """Print one line on stderr, cut to the message length limit."""
    typer.echo(one_line(line), err=True)


def _flush_stdout() -> None:
    """Push out what is still buffered for standard output, so a full disk or closed pipe is reported now."""
    if sys.stdout is not None:
        try:
            sys.stdout.flush()
        except OSError as exc:
            raise stdout_failed(exc) from None


def _silence_stdout() -> None:
    """After standard output failed, send what is left of it to /dev/null so Python's exit stays quiet."""
    stream = sys.__stdout__
    if stream is None or sys.stdout is not stream:
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


def _memory_message(exc: Exception | None) -> str:
    """What to say when an allocation failed: advice to read less only when the request could ever fit."""
    import re

    asked = re.search(r"allocate (\d+) bytes", str(exc or ""))
    total = _physical_memory()
    if asked and total and int(asked.group(1)) > total:
        return (f"this input asks for {int(asked.group(1)) / (1 << 30):.1f} GiB in one piece, more than this machine "
                "has; a size or id in it is probably wrong")
    return ("out of memory; read less of the trace with --windows A:B or --window N, "
            "or run on a machine with more memory")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _is_usage_error(exc: Exception) -> bool:
    """Typer's argument errors (click's UsageError, vendored or not) carry these two attributes."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _usage_message(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    name = getattr(ctx, "info_name", None)
    hint = f" (see 'eplb {name} --help')" if name and name != "eplb" else " (see 'eplb --help')"
    message = exc.format_message()  # type: ignore[attr-defined]  # click's UsageError, see _is_usage_error
    return " ".join(f"{message}{hint}".split())


def run() -> None:
    """Console-script wrapper (the ``eplb`` script itself is :func:`eplb_cli.entry.run`)."""
    from .entry import run as entry_run

    entry_run()


if __name__ == "__main__":
    run()
