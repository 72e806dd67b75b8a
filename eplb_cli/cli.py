"""The `eplb` command line: parse arguments, call the library, print.

Exit codes: 0 ok, 1 a quality gate failed, 2 bad input (one line on stderr).
With --json, stdout holds exactly one JSON document and human text goes to stderr.
"""

from __future__ import annotations

import sys
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

_DEBUG = {"on": False}

# ------------------------------------------------------------ shared options
TraceArg = Annotated[str, typer.Argument(help="Load trace file or folder (safetensors, CSV, SGLang, vLLM, TensorRT-LLM); - reads stdin.", show_default=False)]
Gpus = Annotated[int, typer.Option("--gpus", "-g", help="Number of GPUs (expert-parallel ranks).", show_default=False)]
Nodes = Annotated[int, typer.Option("--nodes", "-n", help="Number of nodes; GPUs divide evenly over them.")]
Slots = Annotated[Optional[int], typer.Option("--slots", help="Physical expert slots in all (default: experts + one per GPU, rounded to a multiple of GPUs).", show_default=False)]
Redundant = Annotated[Optional[int], typer.Option("--redundant", help="Redundant slots beyond one per expert (instead of --slots).", show_default=False)]
Groups = Annotated[Optional[int], typer.Option("--groups", help="Expert groups (DeepSeek-V3: 8); default from the trace, else 1.", show_default=False)]
Policy = Annotated[str, typer.Option("--policy", help="auto | hierarchical | global. auto = hierarchical when groups > 1 and groups % nodes == 0.")]
StrategyOpt = Annotated[str, typer.Option("--strategy", "-s", help="Preset or stage chain; see 'eplb strategies'.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for randomised stages.")]
Device = Annotated[str, typer.Option("--device", help="Torch device for the strategy: cpu or cuda.")]
InputFormat = Annotated[Optional[str], typer.Option("--input-format", help="Force the trace format (default: detect).", show_default=False)]
Window = Annotated[Optional[int], typer.Option("--window", help="Sum every N recorded steps into one window.", show_default=False)]
Windows = Annotated[Optional[str], typer.Option("--windows", help="Keep windows A:B (Python slice, after --window).", show_default=False)]
Output = Annotated[Optional[str], typer.Option("--output", "-o", help="Write the placement here (.safetensors or .json).", show_default=False)]
Format = Annotated[Optional[str], typer.Option("--format", help="Output format (default: from the file extension).", show_default=False)]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print no warnings and no tables (results still go to files / --json).")]
Strict = Annotated[bool, typer.Option("--strict", help="Treat warnings (zero-load layers or experts) as errors, for CI.")]
ExcludeGpus = Annotated[Optional[str], typer.Option("--exclude-gpus", help="Failed or drained GPUs, e.g. 3,17: their slots stay empty.", show_default=False)]


def _out(text: str, to_stderr: bool = False) -> None:
    typer.echo(text, err=to_stderr)


def _warn(messages: list[str], quiet: bool, strict: bool, source: str) -> None:
    """Print warnings to stderr, or fail on the first one under --strict."""
    if strict and messages:
        raise EplbError(f"{source}: {messages[0]} (--strict)")
    if not quiet:
        for m in messages:
            typer.echo(f"eplb: warning: {source}: {m}", err=True)


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    """Expert-parallel load balancing for MoE serving."""
    _DEBUG["on"] = debug


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
    json_out: Json = False,
    quiet: Quiet = False,
    strict: Strict = False,
) -> None:
    """Compute a placement from a load trace and show how balanced it is."""
    from . import api
    from .atomic import check_writable
    from .checks import check_device, load_warnings
    from .placement import placement_format, save_placement
    from .topology import parse_gpu_list, resolve

    check_device(device)
    if output:
        placement_format(output, fmt)
        check_writable(output, force)
    tr = api.load_trace(trace, input_format, window=window, windows=windows)
    topo = resolve(tr.experts, gpus, nodes, slots, redundant, groups if groups is not None else tr.groups, policy,
                   parse_gpu_list(exclude_gpus))
    load = tr.total()
    _warn(load_warnings(load), quiet or json_out and quiet, strict, trace)
    if layer is not None and not 0 <= layer < tr.layers:
        raise EplbError(f"--layer {layer}: the trace has layers 0 to {tr.layers - 1}")
    res = api.plan_load(load, topo, strategy, seed=seed, device=device)
    if output:
        save_placement(res.placement, output, force=force, fmt=fmt, extra={"strategy": strategy, "source": trace})
    summary = res.score.summary()
    if json_out:
        doc = {
            "strategy": strategy, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
            "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes,
            "groups": topo.groups, **summary, "runtime_ms": res.runtime_ms, "output": output,
            "excluded_gpus": list(topo.excluded_gpus),
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
        ("runtime", f"{res.runtime_ms:.1f} ms"),
    ]
    if output:
        head.append(("written", output))
    blocks = [report.summary_table(head)]
    if layer is not None:
        blocks.append(f"Layer {layer}\n" + report.layer_table(res.placement, res.score, load, layer))
    else:
        if topo.nodes > 1:
            blocks.append("Per node\n" + report.node_table(res.score, topo))
        blocks.append("Per GPU\n" + report.gpu_table(res.score, topo))
    _out(report.join_blocks(blocks))


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
    from .synthetic import generate as make
    from .traces import write_trace

    for flag, value in (("--layers", layers), ("--experts", experts), ("--windows", windows)):
        if value < 1:
            raise EplbError(f"{flag} {value}: must be >= 1")
    if skew < 0 or drift < 0:
        raise EplbError("--skew and --drift must be >= 0")
    check_writable(output, force)
    tr = make(layers, experts, windows, seed, skew=skew, drift=drift, groups=groups)
    write_trace(tr, output, fmt, force=force)
    _out(f"wrote {output}: {windows} windows x {layers} layers x {experts} experts (seed {seed})", to_stderr=output == "-")


@app.command()
def strategies() -> None:
    """List the strategy presets and the stages a chain can use."""
    from .strategies import describe_strategies

    _out(report.rows_table([{"name": n, "what": d} for n, d in describe_strategies()],
                           [("name", "strategy"), ("what", "what it does")]))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
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
