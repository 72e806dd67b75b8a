"""PNG figures for ``--plot``: a GPU-load heatmap, strategy bars, imbalance over windows.

matplotlib is an optional extra (``pip install 'eplb-cli[plot]'``) and is only
imported here, inside the functions, so ``import eplb_cli`` and every command
without ``--plot`` stay fast and work without it. Figures are drawn on the Agg
canvas directly (no pyplot, no global state, no display needed) and written
atomically like every other output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import EplbError, arg
from .formats.atomic import write_with
from .validation import plot_file, plot_hint

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

    from .metrics import Score
    from .topology import Topology

MISSING = f"{arg('plot')} needs matplotlib: {plot_hint()}"
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
DPI = 100
_BAD = "#d9d9d9"


def check_plot(path: str, force: bool = False, reads: Sequence[str | None] = ()) -> None:
    """Fail before any work when ``--plot`` cannot be honoured (no matplotlib, bad name, existing file).

    ``reads`` are the command's input files, which the plot may not replace.
    """
    plot_file(path, force, reads)


def heatmap_size(layers: int, gpus: int) -> tuple[float, float]:
    """Figure size in inches for ``layers`` x ``gpus`` cells: grows with the grid, within readable bounds."""
    width = min(max(4.0 + 0.22 * gpus, 7.0), 16.0)
    height = min(max(2.0 + 0.14 * layers, 4.5), 12.0)
    return width, height


def _figure(size: tuple[float, float]) -> Figure:
    """A figure on the Agg canvas, without touching pyplot's global state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EplbError(MISSING) from None
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str, force: bool) -> None:
    fmt = FORMATS.get(Path(path).suffix.lower(), "png")
    write_with(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI), force)


def relative_gpu_load(gpu_load: torch.Tensor, live: torch.Tensor | None = None) -> torch.Tensor:
    """GPU load / mean load of the layer's live GPUs, [L, G]; NaN for excluded GPUs and layers with no load."""
    load = gpu_load.detach().to("cpu", torch.float64)
    live = torch.ones(load.shape[1], dtype=torch.bool) if live is None else live.to("cpu")
    mean = load[:, live].mean(-1, keepdim=True)
    rel = load / torch.where(mean > 0, mean, torch.ones_like(mean))
    rel = torch.where(mean > 0, rel, torch.full_like(rel, float("nan")))
    return rel.masked_fill(~live.unsqueeze(0), float("nan"))


def heatmap_top(rel: torch.Tensor) -> float:
    """Top of the heatmap's colour scale: 2.0 (twice the mean, as far above 1.0 as an idle GPU is below), or the
    busiest GPU's relative load when higher. Loads are never negative, so the scale starts at 0."""
    finite = rel[~torch.isnan(rel)]
    return max(2.0, float(finite.max())) if finite.numel() else 2.0


def gpu_heatmap(gpu_load: torch.Tensor, path: str, *, title: str, live: torch.Tensor | None = None,
                layer_ids: Sequence[int] | None = None, gpus_per_node: int | None = None,
                force: bool = False) -> None:
    """Heatmap of GPU load per layer relative to the layer mean (layers x GPUs).

    Diverging colours centred at 1.0 (blue under, red over the mean) on a
    scale from 0 (an idle GPU) to :func:`heatmap_top`; grey cells are excluded
    GPUs or layers with no load; black lines separate nodes.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rel = relative_gpu_load(gpu_load, live)
    layers, gpus = rel.shape
    fig = _figure(heatmap_size(layers, gpus))
    ax = fig.add_subplot()
    cmap = _colormap("RdBu_r")
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=heatmap_top(rel))
    image = ax.imshow(rel.numpy(), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest", origin="upper")
    grey = bool(torch.isnan(rel).any())
    ax.set_xlabel("GPU" + ("    (grey: excluded GPU or layer with no load)" if grey else ""))
    ax.set_ylabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(gpus, 16)))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(layers, 20)))
    if layer_ids is not None and len(layer_ids) == layers:
        ids = list(layer_ids)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: str(ids[int(v)]) if 0 <= int(v) < layers and v == int(v) else ""))
    if gpus_per_node and gpus_per_node < gpus:
        for edge in range(gpus_per_node, gpus, gpus_per_node):
            ax.axvline(edge - 0.5, color="black", linewidth=1.2)
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("GPU load / layer mean (1.0 = balanced)")
    ax.set_title(title, fontsize=11)
    _save(fig, path, force)


def _colormap(name: str):
    """A copy of a named colormap that paints NaN cells grey."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=_BAD)


def compare_bars(names: Sequence[str], imbalance: Sequence[float], runtime_ms: Sequence[float], path: str, *,
                 title: str = "", lower_bound: float | None = None, next_window: Sequence[float | None] | None = None,
                 force: bool = False) -> None:
    """Two bar charts side by side: GPU imbalance (max/mean) and runtime per strategy.

    Imbalance bars start at 1.0 (perfect) so small differences stay visible;
    with ``next_window`` (planned on window t, served on t+1) each strategy
    gets a second, hatched bar. Runtime switches to a log axis when
    strategies differ by more than 30x.
    """
    n = len(names)
    fig = _figure((min(max(6.0 + 0.9 * n, 8.0), 16.0), 4.5))
    left, right = fig.subplots(1, 2)
    x = list(range(n))
    colors = [_palette(i) for i in x]
    groups = [("in sample", [float(v) for v in imbalance])]
    if next_window is not None:
        groups.append(("next window", [float("nan") if v is None else float(v) for v in next_window]))
    width = 0.8 / len(groups)
    finite = [v for _, vals in groups for v in vals if math.isfinite(v)] or [1.0]
    top = max(finite + ([lower_bound] if lower_bound else []))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Artist] = []
    for k, (label, vals) in enumerate(groups):
        xs = [i - 0.4 + width * (k + 0.5) for i in x]
        hatch = "//" if k else None
        bars = left.bar(xs, [v - 1.0 for v in vals], width=width, bottom=1.0, color=colors, hatch=hatch,
                        edgecolor="white" if k else None)
        left.bar_label(bars, labels=[f"{v:.4f}" if math.isfinite(v) else "" for v in vals], fontsize=7, padding=2)
        handles.append(Patch(facecolor="#999999", edgecolor="white", hatch=hatch, label=label))
    if lower_bound is not None and math.isfinite(lower_bound):
        left.axhline(lower_bound, color="black", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1, label=f"lower bound {lower_bound:.4f}"))
    if len(groups) == 1:
        handles = handles[1:]
    left.set_ylim(1.0, 1.0 + (top - 1.0) * (1.4 if handles else 1.18) + 1e-4)
    if handles:
        left.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    left.set_ylabel("GPU imbalance (max / mean, 1.0 = perfect)")
    left.set_title("balance (lower is better)", fontsize=10)
    times = [max(float(v), 1e-3) for v in runtime_ms]
    bars = right.bar(x, times, color=colors)
    right.bar_label(bars, labels=[f"{v:.1f} ms" if v >= 1 else f"{v:.2f} ms" for v in times], fontsize=8, padding=2)
    if max(times) / min(times) > 30:
        right.set_yscale("log")
        right.set_ylim(min(times) / 2, max(times) * 4)
    else:
        right.set_ylim(0, max(times) * 1.18)
    right.set_ylabel("runtime (ms)")
    right.set_title("runtime (lower is better)", fontsize=10)
    for ax in (left, right):
        ax.set_xticks(x, list(names), rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    _save(fig, path, force)


def compare_figure(rows: Sequence[Mapping], path: str, *, title: str = "", force: bool = False) -> None:
    """:func:`compare_bars` from ``eplb compare``'s rows (keys ``strategy``, ``gpu_imbalance``,
    ``runtime_ms``, ``lower_bound`` and, when scored, ``oos_gpu_imbalance``)."""
    oos = [r.get("oos_gpu_imbalance") for r in rows]
    compare_bars([str(r["strategy"]) for r in rows], [r["gpu_imbalance"] for r in rows],
                 [r["runtime_ms"] for r in rows], path, title=title,
                 lower_bound=rows[0].get("lower_bound") if rows else None,
                 next_window=oos if any(v is not None for v in oos) else None, force=force)


def window_lines(series: Mapping[str, Sequence[float | None]], path: str, *, title: str = "",
                 ylabel: str = "served GPU imbalance (max / mean)", xlabel: str = "window",
                 x: Sequence[float] | Mapping[str, Sequence[float]] | None = None, force: bool = False) -> None:
    """One line per series (a forecast or a rebalance policy) over windows, e.g. replay's served imbalance.

    ``x`` gives the windows: one sequence for every series, one per series
    name, or None for 0, 1, 2, ... None points (windows with no load) leave
    gaps; a dotted line marks 1.0.
    """
    from matplotlib.ticker import MaxNLocator

    length = max((len(v) for v in series.values()), default=0)
    fig = _figure((min(max(6.0 + 0.05 * length, 8.0), 16.0), 4.5))
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(series.items()):
        xs = x.get(name) if isinstance(x, Mapping) else x
        xs = list(xs) if xs is not None else list(range(len(values)))
        ys = [float("nan") if v is None else float(v) for v in values]
        ax.plot(xs[: len(ys)], ys, label=name, color=_palette(i), linewidth=1.6,
                marker="o" if len(ys) <= 40 else None, markersize=3)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=9, loc="best")
    if title:
        ax.set_title(title, fontsize=11)
    _save(fig, path, force)


def replay_figure(runs: Mapping[str, Sequence[Mapping]], path: str, *, title: str = "", force: bool = False) -> None:
    """Imbalance per rebalance from ``eplb replay``: one line per run (e.g. per forecast) of what was served.

    Each rebalance is a mapping with ``window`` (where the plan starts
    serving) and ``served_gpu_imbalance``, as ``ReplayResult.to_dict()`` lists
    them; for a single run, its ``in_sample_gpu_imbalance`` (the plan on its
    own forecast) is drawn too, so the gap shows what forecasting costs.
    """
    series: dict[str, list] = {}
    xs: dict[str, list] = {}
    for name, rebalances in runs.items():
        series[f"{name}: served"] = [r["served_gpu_imbalance"] for r in rebalances]
        xs[f"{name}: served"] = [r["window"] for r in rebalances]
        if len(runs) == 1 and all("in_sample_gpu_imbalance" in r for r in rebalances):
            series[f"{name}: planned (in sample)"] = [r["in_sample_gpu_imbalance"] for r in rebalances]
            xs[f"{name}: planned (in sample)"] = xs[f"{name}: served"]
    window_lines(series, path, title=title, xlabel="window (rebalance; each plan serves until the next)", x=xs,
                 force=force)


def _palette(i: int) -> str:
    """A colour-blind-safe qualitative colour (Okabe-Ito), cycling."""
    colors = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
    return colors[i % len(colors)]


def score_heatmap(score: Score, topo: Topology, path: str, *, label: str,
                  layer_ids: Sequence[int] | None = None, force: bool = False) -> None:
    """:func:`gpu_heatmap` of a scored placement, titled with ``label`` (e.g. the strategy) and its imbalance."""
    s = score.summary()
    imb, worst = s["gpu_imbalance"], s["gpu_imbalance_worst"]
    figures = "no loaded layer" if imb != imb else f"GPU imbalance {imb:.4f} mean, {worst:.4f} worst layer"
    where = f"{topo.gpus} GPUs in {topo.nodes} node{'s' if topo.nodes != 1 else ''}, {topo.policy} policy"
    gpu_heatmap(score.gpu_load, path, title=f"{label}: {figures}\n{where}", live=score.live, layer_ids=layer_ids,
                gpus_per_node=topo.gpus_per_node, force=force)
