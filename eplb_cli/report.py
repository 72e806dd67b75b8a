"""Human tables (tabulate) and machine output (JSON, CSV, Markdown) for every command."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable, Sequence

import torch
from tabulate import tabulate

from .metrics import Score
from .placement import Placement
from .topology import Topology


def fmt_ratio(x: float) -> str:
    """Imbalance-style figure (1.0 is perfect) with four decimals."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def fmt_pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def fmt_load(x: float) -> str:
    """Token counts: thousands separators, no decimals for large values."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def topology_line(topo: Topology) -> str:
    excluded = f", GPUs {','.join(map(str, topo.excluded_gpus))} excluded" if topo.excluded_gpus else ""
    return (
        f"{topo.slots} slots on {topo.gpus} GPUs ({topo.slots_per_gpu} per GPU) in {topo.nodes} "
        f"node{'s' if topo.nodes != 1 else ''}{excluded}"
    )


def policy_line(topo: Topology) -> str:
    if topo.hierarchical:
        return f"hierarchical ({topo.groups} groups over {topo.nodes} nodes)"
    return "global" + (f" ({topo.groups} groups ignored)" if topo.groups > 1 else "")


def summary_table(rows: Sequence[tuple[str, str]]) -> str:
    return tabulate(rows, tablefmt="plain")


def score_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """The balance lines shared by plan and evaluate."""
    rows = [
        ("GPU imbalance", f"{fmt_ratio(s['gpu_imbalance'])} mean, {fmt_ratio(s['gpu_imbalance_worst'])} worst layer   (max/mean GPU load; 1.0 is perfect)"),
        ("node imbalance", f"{fmt_ratio(s['node_imbalance'])} mean, {fmt_ratio(s['node_imbalance_worst'])} worst layer"),
        ("balancedness", f"{fmt_ratio(s['balancedness'])}   (sum of mean / sum of max GPU load)"),
        ("slot balancedness", fmt_ratio(s["slot_balancedness"])),
        ("lower bound", f"{fmt_ratio(s['lower_bound'])} mean imbalance; gap to it {fmt_pct(s['gap'])}"),
    ]
    if s.get("skipped_layers"):
        rows.append(("skipped layers", f"{s['skipped_layers']} with no load (dense layers), left out of these figures"))
    return rows


def node_table(score: Score, topo: Topology) -> str:
    total, share = score.per_node()
    mean = total.mean()
    rows = [
        (n, f"{n * topo.gpus_per_node}-{(n + 1) * topo.gpus_per_node - 1}", fmt_load(float(t)),
         fmt_ratio(float(t / mean)) if mean > 0 else "n/a", fmt_pct(float(b)))
        for n, (t, b) in enumerate(zip(total, share))
    ]
    return tabulate(rows, headers=["node", "GPUs", "load (all layers)", "vs mean", "busiest on"], tablefmt="simple", disable_numparse=True,
                    colalign=("right", "left", "right", "right", "right"))


def gpu_table(score: Score, topo: Topology) -> str:
    total, share = score.per_gpu()
    mean = total[score.live].mean() if bool(score.live.any()) else total.mean()
    rows = []
    for g, (t, b) in enumerate(zip(total, share)):
        dead = not bool(score.live[g])
        rows.append((g, g // topo.gpus_per_node, "excluded" if dead else fmt_load(float(t)),
                     "" if dead or mean <= 0 else fmt_ratio(float(t / mean)), "" if dead else fmt_pct(float(b))))
    return tabulate(rows, headers=["GPU", "node", "load (all layers)", "vs mean", "busiest on"], tablefmt="simple", disable_numparse=True,
                    colalign=("right", "right", "right", "right", "right"))


def layer_table(placement: Placement, score: Score, load: torch.Tensor, layer: int) -> str:
    """One layer's GPUs with the experts (and replica shares) they hold."""
    topo = placement.topology
    row = placement.phy2log[layer].view(topo.gpus, topo.slots_per_gpu)
    cnt = placement.logcnt[layer]
    gl = score.gpu_load[layer]
    live = score.live
    mean = gl[live].mean() if bool(live.any()) else gl.mean()
    rows = []
    for g in range(topo.gpus):
        if not bool(live[g]):
            rows.append((g, g // topo.gpus_per_node, "excluded", "", ""))
            continue
        experts = " ".join(f"{int(e)}" + (f"/{int(cnt[e])}" if cnt[e] > 1 else "") for e in row[g])
        rows.append((g, g // topo.gpus_per_node, fmt_load(float(gl[g])),
                     fmt_ratio(float(gl[g] / mean)) if mean > 0 else "n/a", experts))
    return tabulate(rows, headers=["GPU", "node", "load", "vs mean", "experts (e/k = one of k replicas)"],
                    tablefmt="simple", disable_numparse=True, colalign=("right", "right", "right", "right", "left"))


def to_json(obj: Any) -> str:
    """One JSON document; NaN becomes null so every JSON parser accepts it."""
    return json.dumps(_clean(obj), indent=2)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def rows_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]], style: str = "simple") -> str:
    """Render dict rows as a table; ``columns`` is (key, header); style 'csv' or 'markdown' too."""
    keys = [k for k, _ in columns]
    heads = [h for _, h in columns]
    if style == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(keys)
        for r in rows:
            w.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
        return buf.getvalue().rstrip("\n")
    body = [[_cell(r.get(k), k) for k in keys] for r in rows]
    return tabulate(body, headers=heads, tablefmt="github" if style == "markdown" else "simple", disable_numparse=True)


def _cell(v: Any, key: str = "") -> str:
    """Format one table cell; the key decides the unit (gaps as %, times in ms)."""
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if key == "gap" or key.endswith("_gap"):
            return fmt_pct(v)
        if key.endswith("_ms"):
            return f"{v:.2f}"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def join_blocks(blocks: Iterable[str]) -> str:
    return "\n\n".join(b for b in blocks if b)


# ---------------------------------------------------------------- plan / evaluate / replay (shared blocks)


def score_report(head: Sequence[tuple[str, str]], placement: Placement, score: Score, load: torch.Tensor,
                 layer: int | None = None) -> str:
    """What plan and evaluate print: the summary, then one layer's GPUs or the per-node and per-GPU tables."""
    topo = placement.topology
    blocks = [summary_table(head)]
    if layer is not None:
        blocks.append(f"Layer {layer}\n" + layer_table(placement, score, load, layer))
    else:
        if topo.nodes > 1:
            blocks.append("Per node\n" + node_table(score, topo))
        blocks.append("Per GPU\n" + gpu_table(score, topo))
    return join_blocks(blocks)


def fmt_bytes(n: int | None) -> str:
    """Bytes in binary units (KiB, MiB, GiB, TiB)."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n} B"


def migration_rows(moves: dict[str, Any], layers: int, slots: int) -> list[tuple[str, str]]:
    """The lines that say how many replicas a new placement moves."""
    share = moves["moves"] / max(layers * slots, 1)
    return [("moves", f"{moves['moves']:,} replicas ({fmt_pct(share)} of slots): {moves['moves_intra_node']:,} "
                      f"intra-node, {moves['moves_inter_node']:,} inter-node")]


REBALANCE_COLUMNS = [
    ("windows", "windows served"), ("history", "planned on"), ("in_sample_gpu_imbalance", "in-sample imb."),
    ("served_gpu_imbalance", "served imb."), ("served_balancedness", "served bal."), ("moves", "moves"),
    ("moves_inter_node", "inter-node"),
]


def rebalance_table(rebalances: Sequence[dict[str, Any]], with_bytes: bool = False) -> str:
    """One row per rebalance of ``eplb replay``."""
    rows = []
    for r in rebalances:
        end = r["served_until"] - 1
        rows.append({
            **r,
            "windows": f"{r['window']}" if end == r["window"] else f"{r['window']}-{end}",
            "history": f"{r['history_from']}-{r['window'] - 1}" if r["history_from"] < r["window"] - 1 else f"{r['history_from']}",
            "moves": "-" if r["moves"] is None else f"{r['moves']:,}",
            "moves_inter_node": "-" if r["moves_inter_node"] is None else f"{r['moves_inter_node']:,}",
            "bytes": "-" if r.get("bytes_moved") is None else fmt_bytes(r["bytes_moved"]),
        })
    columns = REBALANCE_COLUMNS + ([("bytes", "bytes moved")] if with_bytes else [])
    return rows_table(rows, columns)


DISPATCH_LINES = {
    "even": "even (each replica takes load / replicas)",
    "lp": "lp (each window's tokens split over replicas to minimise its busiest GPU)",
}


def replay_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """Summary lines of ``eplb replay``."""
    history = "all earlier windows" if s["history"] is None else f"the last {s['history']} window(s)"
    moves = f"{s['moves']:,} replicas in all, {s['moves_per_rebalance']:,.1f} per rebalance " \
            f"({s['moves_intra_node']:,} intra-node, {s['moves_inter_node']:,} inter-node)"
    rows = [
        ("schedule", f"rebalance every {s['every']} window(s) from window {s['start']}: {s['rebalances']} rebalance(s), "
                     f"{s['served_windows']} window(s) served"),
        ("forecast", f"{s['forecast']} of {history}"),
        ("migration", ("aware (relabel + swap back" + (f", at most {s['max_moves']} moves per layer)" if s["max_moves"] is not None else ")"))
         if s["migration_aware"] else "plan each rebalance from scratch"),
        ("served GPU imbalance", f"{fmt_ratio(s['served_gpu_imbalance'])} mean, {fmt_ratio(s['served_gpu_imbalance_worst'])} worst "
                                 "(max/mean GPU load over served windows and layers)"),
        ("served balancedness", f"{fmt_ratio(s['served_balancedness'])}   (sum of mean / sum of max GPU load)"),
        ("per-window imbalance", f"p50 {fmt_ratio(s['served_gpu_imbalance_p50'])}, p95 {fmt_ratio(s['served_gpu_imbalance_p95'])}, "
                                 f"p99 {fmt_ratio(s['served_gpu_imbalance_p99'])}, worst {fmt_ratio(s['served_gpu_imbalance_worst_window'])} "
                                 "(each served window's GPU imbalance, over windows)"),
        ("in-sample imbalance", f"{fmt_ratio(s['in_sample_gpu_imbalance'])} mean   (each plan on its own forecast)"),
        *([("robust", f"scenario-robust on {'the last ' + str(s['scenarios']) if s.get('scenarios') else 'all'} history "
                      f"window(s), weighted as the forecast weighs them; forecast tolerance "
                      f"{100 * s['robust_tolerance']:g}%")] if s.get("robust") else []),
        *([("dispatch", DISPATCH_LINES[s["dispatch"]])] if s.get("dispatch", "even") != "even" else []),
        ("moves", moves),
    ]
    if s.get("bytes_moved") is not None:
        rows.append(("bytes moved", fmt_bytes(s["bytes_moved"])))
    rows.append(("runtime", f"{s['runtime_s']:.2f} s"))
    return rows


def robust_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The line that says what ``--robust`` changed."""
    return [("robust", f"{doc['scenarios']} scenario window(s): their mean busiest GPU {_signed_pct(doc['scenario_peak_change'])}; "
                       f"busiest GPU on the forecast {_signed_pct(doc['forecast_peak_change'])} "
                       f"(tolerance {100 * doc['robust_tolerance']:g}%)")]


def _signed_pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def lost_experts_line(lost: Sequence[tuple[int, int]], limit: int = 12) -> str:
    """``layer 3: e17, e42; layer 9: e5`` for the first ``limit`` lost (layer, expert) pairs."""
    if not lost:
        return "none: every expert keeps a live replica"
    by_layer: dict[int, list[int]] = {}
    for layer, expert in lost[:limit]:
        by_layer.setdefault(layer, []).append(expert)
    text = "; ".join(f"layer {l}: " + ", ".join(f"e{e}" for e in es) for l, es in by_layer.items())
    more = f"; and {len(lost) - limit} more" if len(lost) > limit else ""
    return f"{len(lost)}: {text}{more}"
