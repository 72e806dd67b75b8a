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
    body = [[_cell(r.get(k)) for k in keys] for r in rows]
    return tabulate(body, headers=heads, tablefmt="github" if style == "markdown" else "simple", disable_numparse=True)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def join_blocks(blocks: Iterable[str]) -> str:
    return "\n\n".join(b for b in blocks if b)
