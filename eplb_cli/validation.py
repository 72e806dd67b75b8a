"""Checks of a command's options that need no model and no torch: run first, so a typo fails in milliseconds.

Each ``*_options`` function checks what one command can know before it reads
a trace: numbers in range, names of formats, policies and devices, input
files that exist, output files that may be written. The CLI calls it before
anything heavy is imported; the matching :mod:`eplb_cli.api` function calls it
again, so Python users meet the same errors. What depends on the model
(slots against experts, ``--layer`` against the layers) or on torch (whether
CUDA is there, strategy chains, forecasts) is checked later, still before any
planning. Errors name library parameters (:func:`~eplb_cli.errors.arg`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from .errors import EplbError, arg
from .formats import catalog
from .formats.atomic import check_writable
from .formats.source import Source
from .topology import check_cluster, parse_gpu_list


def positive(**values: int | None) -> None:
    """Every given value is >= 1."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise EplbError(f"{arg(name, value)}: must be >= 1")


def non_negative(**values: int | float | None) -> None:
    """Every given value is >= 0."""
    for name, value in values.items():
        if value is not None and not value >= 0:
            raise EplbError(f"{arg(name, value)}: must be >= 0")


def gpu_list(exclude_gpus: str | Sequence[int] | None) -> list[int]:
    """``exclude_gpus`` as a list of ids (parsed when it is text)."""
    return parse_gpu_list(exclude_gpus) if isinstance(exclude_gpus, str) or exclude_gpus is None else list(exclude_gpus)


OTHER_TORCH_DEVICES = frozenset({"mps", "xpu", "meta", "xla", "hpu", "mtia", "ipu", "lazy", "vulkan", "hip", "ve",
                                 "maia", "privateuseone"})
"""Device kinds torch knows that eplb does not run on."""


def device_name(device: str) -> None:
    """``device`` names a device kind eplb runs on (whether this machine has it is checked with torch)."""
    kind, _, index = device.strip().lower().partition(":")
    if kind in ("cpu", "cuda") and (not index or index.isdigit()):
        return
    if kind in OTHER_TORCH_DEVICES:
        raise EplbError(f"{arg('device', device)}: only cpu and cuda are supported")
    raise EplbError(f"{arg('device', device)}: not a torch device; use cpu or cuda")


def windows_spec(spec: str | None) -> None:
    """``windows`` is ``A:B`` with integer (or empty) ends; whether it selects a window depends on the trace."""
    if not spec:
        return
    parts = spec.split(":")
    if len(parts) != 2:
        raise EplbError(f"{arg('windows', spec)}: expected A:B, e.g. 0:10 or 5: or :-1")
    for part in parts:
        try:
            int(part) if part.strip() else None
        except ValueError:
            raise EplbError(f"{arg('windows', spec)}: A and B must be integers, e.g. 0:10") from None


def gate_limits(max_imbalance: float | None, min_balancedness: float | None) -> None:
    """Reject gate values no placement could meet or miss."""
    if max_imbalance is not None and not max_imbalance >= 1.0:
        raise EplbError(f"{arg('max_imbalance', max_imbalance)}: must be >= 1.0 (max/mean GPU load; 1.0 is perfect)")
    if min_balancedness is not None and not 0.0 < min_balancedness <= 1.0:
        raise EplbError(f"{arg('min_balancedness', min_balancedness)}: must be in (0, 1] (1.0 is perfect)")


DISPATCH_MODES = ("even", "lp")
"""How tokens may split over an expert's replicas (:mod:`eplb_cli.dispatch`)."""


def dispatch_mode(dispatch: str) -> str:
    """``dispatch`` is a known token split: ``even`` or ``lp``."""
    if dispatch not in DISPATCH_MODES:
        raise EplbError(f"{arg('dispatch', dispatch)}: use one of {', '.join(DISPATCH_MODES)}")
    return dispatch


def robust_options(robust: bool, scenarios: int | None = None, robust_tolerance: float | None = None) -> None:
    """Scenario-robust planning: ``scenarios`` >= 1 and only with ``robust``; ``robust_tolerance`` >= 0."""
    if scenarios is not None and not robust:
        raise EplbError(f"{arg('scenarios')} needs {arg('robust', True)}: it picks the windows the robust plan is "
                        "made for")
    positive(scenarios=scenarios)
    non_negative(robust_tolerance=robust_tolerance)


def plot_hint() -> str:
    """How to install matplotlib for ``--plot``: from a source checkout, or for an installed package."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        where = "." if root == Path.cwd().resolve() else str(root)
        return f"pip install -e '{where}[plot]'"
    return "pip install 'eplb-cli[plot]'"


def plot_file(plot: str | None, force: bool, reads: Sequence[str | None] = ()) -> None:
    """``--plot`` can be honoured: matplotlib is there, the name is a figure's, the file may be written.

    ``reads`` are the command's input files, which the plot may not replace.
    """
    if not plot:
        return
    if importlib.util.find_spec("matplotlib") is None:
        raise EplbError(f"{arg('plot')} needs matplotlib: {plot_hint()}")
    if Path(plot).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise EplbError(f"{arg('plot', plot)}: give a .png (or .svg, .pdf) file name")
    check_writable(plot, force, reads)


def reading(trace: str, input_format: str | None, window: int | None, windows: str | None) -> None:
    """A trace to read: it exists, its forced format is known, the window options parse."""
    if input_format is not None:
        catalog.trace_name(input_format)
    positive(window=window)
    windows_spec(windows)
    Source(str(trace))


def cluster(gpus: int, nodes: int = 1, slots: int | None = None, redundant: int | None = None,
            groups: int | None = None, policy: str = "auto", exclude_gpus: str | Sequence[int] | None = None) -> None:
    """The cluster flags that need no model (see :func:`~eplb_cli.topology.check_cluster`)."""
    check_cluster(gpus, nodes, slots, redundant, groups, policy, gpu_list(exclude_gpus))


def placement_output(output: str | None, fmt: str | None, force: bool, reads: Sequence[str | None] = ()) -> None:
    """A placement to write: its format is known from ``fmt`` or the extension, and the file may be written
    (it is none of ``reads``, the command's inputs)."""
    if output:
        catalog.placement_output(output, fmt)
        check_writable(output, force, reads)


def plan_options(trace: str, *, device: str = "cpu", input_format: str | None = None, window: int | None = None,
                 windows: str | None = None, layer: int | None = None, output: str | None = None,
                 fmt: str | None = None, force: bool = False, plot: str | None = None, previous: str | None = None,
                 max_moves: int | str | None = None, robust: bool = False, scenarios: int | None = None,
                 robust_tolerance: float | None = None) -> None:
    """``eplb plan``: everything but the cluster (:func:`cluster`) that is known before the trace is read."""
    device_name(device)
    robust_options(robust, scenarios, robust_tolerance)
    placement_output(output, fmt, force, (trace,))  # replacing --previous in place is allowed
    plot_file(plot, force, (trace, previous))
    if output and plot and str(output) != "-" and Path(output).absolute() == Path(plot).absolute():
        raise EplbError(f"{arg('plot', plot)}: is also the placement output; give the figure another name")
    non_negative(layer=layer)
    move_budget(max_moves)
    if previous is None and max_moves is not None:
        raise EplbError(f"{arg('max_moves')} needs {arg('previous')}: moves are counted from the placement served now")
    if previous is not None:
        Source(str(previous), "placement file")
    reading(trace, input_format, window, windows)


def evaluate_options(placement: str, trace: str, *, gpus: int | None = None, nodes: int | None = None,
                     groups: int | None = None, input_format: str | None = None, window: int | None = None,
                     windows: str | None = None, layer: int | None = None,
                     exclude_gpus: str | Sequence[int] | None = None, max_imbalance: float | None = None,
                     min_balancedness: float | None = None, plot: str | None = None, force: bool = False,
                     dispatch: str = "even") -> None:
    """``eplb evaluate``: the options known before the files are read."""
    gate_limits(max_imbalance, min_balancedness)
    dispatch_mode(dispatch)
    plot_file(plot, force, (placement, trace))
    positive(gpus=gpus, nodes=nodes, groups=groups)
    non_negative(layer=layer)
    gpu_list(exclude_gpus)
    Source(str(placement), "placement file")
    reading(trace, input_format, window, windows)


def replay_options(trace: str, *, every: int | list[int] = 1, history: int | None = None, device: str = "cpu",
                   threads: int | None = 1, input_format: str | None = None, window: int | None = None,
                   windows: str | None = None, max_imbalance: float | None = None,
                   min_balancedness: float | None = None, max_moves: int | str | None = None,
                   previous: str | None = None, plot: str | None = None, force: bool = False,
                   min_gain: float | None = None, robust: bool = False, scenarios: int | None = None,
                   robust_tolerance: float | None = None, dispatch: str = "even") -> None:
    """``eplb replay``: the options known before the trace is read (forecasts and strategies are parsed later)."""
    device_name(device)
    robust_options(robust, scenarios, robust_tolerance)
    dispatch_mode(dispatch)
    gate_limits(max_imbalance, min_balancedness)
    for interval in every if isinstance(every, list) else [every]:
        positive(every=interval)
    positive(history=history)
    threads_count(threads)
    move_budget(max_moves)
    if min_gain is not None and not min_gain < 1.0:
        raise EplbError(f"{arg('min_gain', min_gain)}: must be below 1 (a relative gain; 0.01 skips rebalances that "
                        "gain under 1%)")
    plot_file(plot, force, (trace, previous))
    if previous is not None:
        Source(str(previous), "placement file")
    reading(trace, input_format, window, windows)


def compare_options(trace: str, strategies: str | Sequence[str], *, repeat: int = 5, oos_pairs: int = 64,
                    device: str = "cpu", input_format: str | None = None, window: int | None = None,
                    windows: str | None = None, plot: str | None = None, force: bool = False,
                    dispatch: str = "even") -> list[str]:
    """``eplb compare``: the options known before the trace is read; returns the strategy names."""
    device_name(device)
    dispatch_mode(dispatch)
    positive(repeat=repeat)
    non_negative(oos_pairs=oos_pairs)
    names = [n.strip() for n in strategies.split(",") if n.strip()] if isinstance(strategies, str) else list(strategies)
    if not names:
        raise EplbError(f"{arg('strategies')}: give at least one strategy, e.g. deepseek,balanced")
    plot_file(plot, force, (trace,))
    reading(trace, input_format, window, windows)
    return names


def inspect_options(trace: str, *, input_format: str | None = None, window: int | None = None,
                    windows: str | None = None, top: int = 10) -> None:
    """``eplb inspect``."""
    non_negative(top=top)
    reading(trace, input_format, window, windows)


def convert_options(src: str, dst: str, *, fmt: str | None = None, input_format: str | None = None,
                    gpus: int | None = None, nodes: int | None = None, groups: int | None = None,
                    force: bool = False) -> None:
    """``eplb convert``: whether IN is a trace or a placement is read from it, so ``fmt`` may name either."""
    positive(gpus=gpus, nodes=nodes, groups=groups)
    for name, param in ((fmt, "fmt"), (input_format, "input_format")):
        if name is not None:
            known = {e.name for e in catalog.TRACES} | {n for e in catalog.PLACEMENTS for n in (e.name, *e.aliases)}
            if name.strip().lower() not in known:
                raise EplbError(f"{arg(param, name)}: unknown format; use a trace format "
                                f"({', '.join(e.name for e in catalog.TRACES if e.writable)}) or a placement format "
                                f"({', '.join(e.name for e in catalog.PLACEMENTS)})")
    if str(dst) != catalog.STDIN:
        check_writable(dst, force, reads=(src,))
    Source(str(src), "file")


def generate_options(output: str, *, layers: int, experts: int, windows: int, skew: float, drift: float,
                     groups: int | None = None, fmt: str | None = None, force: bool = False) -> None:
    """``eplb generate``."""
    positive(layers=layers, experts=experts, windows=windows, groups=groups)
    if skew < 0 or drift < 0:
        raise EplbError(f"{arg('skew')} and {arg('drift')} must be >= 0")
    if fmt is not None:
        catalog.trace_name(fmt, "fmt", writing=True)
    else:
        catalog.trace_writer_name(str(output))
    check_writable(output, force)


def move_budget(max_moves: int | str | None) -> tuple[int | None, float | None]:
    """``max_moves`` as (moves per layer, None) for a count such as 64, or (None, share) for a share such as 5%."""
    if max_moves is None:
        return None, None
    if isinstance(max_moves, int):
        non_negative(max_moves=max_moves)
        return max_moves, None
    raw = max_moves.strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1])
            if 0.0 <= share <= 100.0:
                return None, share / 100.0
        elif int(raw) >= 0:
            return int(raw), None
    except ValueError:
        pass
    raise EplbError(f"{arg('max_moves', max_moves)}: expected a move count per layer (e.g. 64) or a share of all "
                    "slots (e.g. 5%)")


def intervals(text: str | int) -> list[int]:
    """``every``: one rebalance interval (``4``) or several to compare (``1,2,4,8``), each >= 1, no repeats."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise EplbError(f"{arg('every', text)}: expected a number of windows >= 1 (e.g. 4) or several to compare "
                        "(e.g. 1,2,4,8)")
    return values


MAX_THREADS = 1024
"""Most torch threads a run may ask for."""


def threads_count(threads: int | None) -> None:
    """``threads`` must be a thread count torch can set (None leaves torch's own)."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise EplbError(f"{arg('threads', threads)}: must be between 1 and {MAX_THREADS}")
