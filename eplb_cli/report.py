"""Human tables (tabulate) and machine output (JSON, CSV, Markdown) for every command."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tabulate import tabulate

from .errors import arg
from .metrics import Score
from .placement import Placement
from .topology import Topology
from .tradeoff import BALANCE_MARGIN, SPAN_MARGIN

if TYPE_CHECKING:
    from .api import ComparisonReport, EvaluationReport, FrontierReport, Gate, IntervalReport, PlanReport, ReplayReport
    from .span import RecordedSpans, Routing, Span
    from .tradeoff import Tradeoff


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


def policy_line(topo: Topology, groups_unknown: bool = False) -> str:
    """The policy in words; ``groups_unknown``: auto fell back to global because nothing said the expert groups."""
    if topo.hierarchical:
        return f"hierarchical ({topo.groups} groups over {topo.nodes} nodes)"
    if groups_unknown:
        return (f"global: the trace records no expert groups, so none are kept on one node; pass {arg('groups')} "
                "(DeepSeek-V3: 8) for the hierarchical policy")
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


def rows_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]], style: str = "simple",
               width: int | None = None) -> str:
    """Render dict rows as a table; ``columns`` is (key, header); style 'csv' or 'markdown' too.

    ``width`` wraps the last column so that a simple table fits that many characters.
    """
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
    wrap = None
    if width is not None and style == "simple" and body:
        others = sum(max(len(h), *(len(b[i]) for b in body)) + 4 for i, h in enumerate(heads[:-1]))
        wrap = [None] * (len(keys) - 1) + [max(width - others, len(heads[-1]))]
    return tabulate(body, headers=heads, tablefmt="github" if style == "markdown" else "simple", disable_numparse=True,
                    maxcolwidths=wrap)


def _cell(v: Any, key: str = "") -> str:
    """Format one table cell; the key decides the unit (gaps as %, times in ms)."""
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if key == "gap" or key.endswith("_gap"):
            return fmt_pct(v)
        if key.endswith("_ms") or key.endswith("_span"):
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
    """The lines that say how many replicas a new placement moves (and, with ``bytes_moved``, the transfer)."""
    share = moves["moves"] / max(layers * slots, 1)
    rows = [("moves", f"{moves['moves']:,} replicas ({fmt_pct(share)} of slots): {moves['moves_intra_node']:,} "
                      f"intra-node, {moves['moves_inter_node']:,} inter-node")]
    if moves.get("bytes_moved") is not None:
        rows.append(("transfer", f"{fmt_bytes(moves['bytes_moved'])} ({fmt_bytes(moves['bytes_nvlink'])} over NVLink, "
                                 f"{fmt_bytes(moves['bytes_network'])} over the network), about {moves['transfer_s']:.3f} s"))
    return rows


def transfer_line(links: Any) -> str:
    """How ``plan --frontier`` turns moves into bytes and seconds (see eplb_cli.planning.transfer)."""
    return (f"{fmt_bytes(links.expert_bytes)} per replica; a copy goes over NVLink ({links.nvlink_gbps:g} GB/s into a GPU) "
            f"when its node held the expert, else over the network ({links.network_gbps:g} GB/s); GPUs receive in "
            "parallel, so time = max over GPUs of NVLink bytes / NVLink + network bytes / network")


FRONTIER_COLUMNS = [
    ("budget", "budget (of all slots)"), ("max_moves", "max moves"), ("gpu_imbalance", "GPU imb."),
    ("gap", "gap to unlimited"), ("moves", "moves"), ("moves_intra_node", "intra-node"),
    ("moves_inter_node", "inter-node"), ("bytes", "bytes"), ("transfer", "transfer s"),
]


def frontier_table(rows: Sequence[dict[str, Any]]) -> str:
    """One row per move budget of ``plan --frontier``."""
    shown = [{**r, "max_moves": "-" if r["max_moves"] is None else f"{r['max_moves']:,}",
              "moves": f"{r['moves']:,}", "moves_intra_node": f"{r['moves_intra_node']:,}",
              "moves_inter_node": f"{r['moves_inter_node']:,}", "bytes": fmt_bytes(r["bytes_moved"]),
              "transfer": f"{r['transfer_s']:.3f}"} for r in rows]
    return rows_table(shown, FRONTIER_COLUMNS)


REBALANCE_COLUMNS = [
    ("windows", "windows served"), ("history", "planned on"), ("in_sample_gpu_imbalance", "in-sample imb."),
    ("served_gpu_imbalance", "served imb."), ("served_balancedness", "served bal."), ("moves", "moves"),
    ("moves_inter_node", "inter-node"),
]


def rebalance_table(rebalances: Sequence[dict[str, Any]], with_bytes: bool = False, with_gain: bool = False,
                    most: int = 40) -> str:
    """One row per rebalance of ``eplb replay``; past ``most`` rows, the first and last ``most // 2`` only."""
    rows = []
    for r in rebalances:
        end = r["served_until"] - 1
        gain = r.get("forecast_gain")
        rows.append({
            **r,
            "windows": f"{r['window']}" if end == r["window"] else f"{r['window']}-{end}",
            "history": f"{r['history_from']}-{r['window'] - 1}" if r["history_from"] < r["window"] - 1 else f"{r['history_from']}",
            "moves": "-" if r["moves"] is None else f"{r['moves']:,}",
            "moves_inter_node": "-" if r["moves_inter_node"] is None else f"{r['moves_inter_node']:,}",
            "bytes": "-" if r.get("bytes_moved") is None else fmt_bytes(r["bytes_moved"]),
            "gain": "-" if gain is None else fmt_pct(gain) + (" skipped" if r.get("skipped") else ""),
        })
    hidden = len(rows) - most
    if hidden > 0:
        rows = [*rows[:most // 2], {"windows": f"... {hidden + 1:,} more (--json lists all)"}, *rows[-(most // 2 - 1):]]
    columns = (REBALANCE_COLUMNS + ([("bytes", "bytes moved")] if with_bytes else [])
               + ([("gain", "forecast gain")] if with_gain else []))
    return rows_table(rows, columns)


DISPATCH_LINES = {
    "even": "even (each replica takes load / replicas)",
    "lp": "lp (each window's tokens split over replicas to minimise its busiest GPU)",
}


INTERVAL_COLUMNS = [
    ("every", "--every"), ("rebalances", "rebalances"), ("served_balancedness", "served bal."),
    ("served_gpu_imbalance", "served imb."), ("served_gpu_imbalance_p95", "p95 imb."),
    ("moves_per_window", "moves / window"), ("moves_per_rebalance", "moves / rebalance"), ("bytes", "bytes / window"),
    ("runtime_s", "runtime s"),
]


def interval_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per rebalance interval of ``eplb replay --every 1,2,4,8`` (p95 when replay reports it)."""
    rows = []
    for s in summaries:
        # Per window: a rebalance's moves spread over the windows it serves (the first rebalance, from scratch, moves nothing).
        per_window = s["moves_per_rebalance"] / s["every"]
        size = s["bytes_moved"] / s["moves"] if s.get("bytes_moved") is not None and s["moves"] else 0
        rows.append({**s, "moves_per_window": f"{per_window:,.1f}", "moves_per_rebalance": f"{s['moves_per_rebalance']:,.1f}",
                     "bytes": "" if s.get("bytes_moved") is None else fmt_bytes(int(per_window * size))})
    columns = [c for c in INTERVAL_COLUMNS if c[0] != "served_gpu_imbalance_p95"
               or any(s.get("served_gpu_imbalance_p95") is not None for s in summaries)]
    if all(s.get("bytes_moved") is None for s in summaries):
        columns = [c for c in columns if c[0] != "bytes"]
    return rows_table(rows, columns)


def _budget_words(s: dict[str, Any]) -> str:
    """``at most 64 moves per layer`` or ``at most 5% of all slots moved per rebalance``."""
    if s.get("max_moves_scope", "per layer") == "per layer":
        return f"at most {s['max_moves']} moves per layer"
    return f"at most {s['max_moves']} of all slots moved per rebalance"


def replay_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """Summary lines of ``eplb replay``."""
    history = "all earlier windows" if s["history"] is None else f"the last {s['history']} window(s)"
    moves = f"{s['moves']:,} replicas in all, {s['moves_per_rebalance']:,.1f} per rebalance " \
            f"({s['moves_intra_node']:,} intra-node, {s['moves_inter_node']:,} inter-node)"
    rows = [
        ("schedule", f"rebalance every {s['every']} window(s) from window {s['start']}: {s['rebalances']} rebalance(s), "
                     f"{s['served_windows']} window(s) served"),
        ("forecast", f"{s['forecast']} of {history}"),
        ("migration", ("aware (relabel + swap back" + (f", {_budget_words(s)})" if s["max_moves"] is not None else ")"))
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
    if s.get("min_gain") is not None:
        rows.append(("--min-gain", f"{s['min_gain']:g}: {s['skipped']} of {s['rebalances']} rebalance(s) skipped "
                                   f"(forecast gain below it), {s['moves_saved']:,} moves saved; served balancedness "
                                   f"{fmt_ratio(s['served_balancedness'])} against {fmt_ratio(s['served_balancedness_if_taken'])} "
                                   "had they been taken"))
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


# ---------------------------------------------------------------- whole command outputs


def _windows(n: int) -> str:
    return f"{n} window{'s' if n != 1 else ''}"


def plan_json(rep: PlanReport, flag: Callable[[str], str] = str) -> str:
    """``eplb plan --json``: one object with the summary figures and what was written.

    Also the token span (``node_span``, ``gpu_span``, with the ``routing`` they
    assume; null without one), ``policy_alternative``: the same plan under
    the other policy, with the advice line when the two differ (null when only
    one policy applies), and ``robust``: what ``--robust`` changed (null without it).
    """
    tr, topo, res = rep.trace, rep.topology, rep.result
    doc = {
        "strategy": res.strategy, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
        "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes,
        "groups": topo.groups, **res.score.summary(), "runtime_ms": res.runtime_ms, "output": rep.output,
        "excluded_gpus": list(topo.excluded_gpus), "previous": rep.previous,
        **(res.moves or dict.fromkeys(("moves", "moves_intra_node", "moves_inter_node"))),
        **(rep.span.summary() if rep.span else dict.fromkeys(("node_span", "node_span_worst", "gpu_span"))),
        "routing": rep.routing.as_dict() if rep.routing else None, "span_fit_residual": rep.span_residual,
        "span_layers_left_out": rep.span_left_out if rep.routing else None,
        "recorded": rep.recorded.summary() if rep.recorded else None, "policy_alternative": None,
        "output_format": rep.output_format, "engine": rep.engine, "robust": res.robust,
    }
    if rep.tradeoff is not None:
        advice = policy_advice(rep.tradeoff, flag) if rep.tradeoff.differs else None
        doc["policy_alternative"] = {**rep.tradeoff.as_dict(), "advice": advice}
    return to_json(doc)


def span_line(span: Span, routing: Routing, experts: int, residual: float | None, flag: Callable[[str], str] = str,
              left_out: int = 0) -> str:
    """What the token span row of ``plan`` says: nodes and GPUs per token and the routing assumed."""
    text = (f"{span.node_span:.2f} of {span.of_nodes} nodes, {span.gpu_span:.2f} GPUs per token (expected; "
            f"{routing.describe(experts)}; replicas picked uniformly)")
    if left_out:
        text += f"; {left_out} layer(s) left out: their hottest experts lie in more groups than a token may use"
    if residual is not None and residual > 1e-3:
        text += (f"; the routing reproduces the loads only to {residual:.3f} experts per token: "
                 f"check {flag('topk')} and {flag('topk_groups')}")
    return text


def recorded_line(rec: RecordedSpans) -> str:
    """What the recorded span row of ``plan`` says: nodes and GPUs per recorded token, as served and as planned."""
    served = ""
    if rec.served is not None:
        served = f"{rec.served.node_span:.2f} nodes, {rec.served.gpu_span:.2f} GPUs as served (measured); "
    return (f"{served}{rec.planned.node_span:.2f} nodes, {rec.planned.gpu_span:.2f} GPUs under this plan "
            f"(replicas picked uniformly); over {rec.tokens:,} recorded tokens")


def policy_advice(t: Tradeoff, flag: Callable[[str], str] = str) -> str:
    """One line: what the other policy reaches, what the chosen one does, and what the choice trades."""
    me, other = t.chosen, t.other
    mine, theirs = me.summary["gpu_imbalance"], other.summary["gpu_imbalance"]
    text = f"{other.policy} reaches GPU imbalance {fmt_ratio(theirs)} (here {fmt_ratio(mine)})"
    delta = t.span_delta
    if delta is not None:
        where = " recorded" if me.recorded is not None else ""
        text += f" with a{where} token's experts on {other.node_span:.2f} nodes (here {me.node_span:.2f})"
    ratio = t.load_ratio
    if ratio > 1 + BALANCE_MARGIN:
        trade = f"{me.policy} puts {ratio - 1:.0%} more load on the busiest GPUs"
    elif ratio < 1 - BALANCE_MARGIN:
        trade = f"{me.policy} puts {1 - ratio:.0%} less load on the busiest GPUs"
    else:
        trade = "both balance alike"
    if delta is None:
        trade += f" (give {flag('topk')} to see how many nodes a token's experts reach)"
    elif delta < -SPAN_MARGIN:
        trade += f" for {-delta:.2f} fewer nodes per token"
    elif delta > SPAN_MARGIN:
        trade += f" and spreads a token over {delta:.2f} more nodes"
    else:
        trade += " at the same span"
    return f"{text}: {trade}; {flag('policy')} {other.policy} to switch"


def plan_text(rep: PlanReport, layer: int | None = None, flag: Callable[[str], str] = str) -> str:
    """``eplb plan``: summary, then the per-node and per-GPU tables (or one layer's GPUs).

    The summary has a token span row when the routing is known, and a policy
    choice row when the other policy's plan differs (:mod:`eplb_cli.tradeoff`).
    """
    tr, topo, res = rep.trace, rep.topology, rep.result
    head = [
        ("strategy", res.strategy),
        ("policy", policy_line(topo, rep.groups_unknown)),
        ("trace", f"{rep.source}: {tr.layers} layers x {tr.experts} experts, {_windows(tr.windows)} summed"),
        ("cluster", topology_line(topo)),
        *score_rows(res.score.summary()),
        *([("token span", span_line(rep.span, rep.routing, tr.experts, rep.span_residual, flag, rep.span_left_out))]
          if rep.span is not None and rep.routing is not None else []),
        *([("recorded span", recorded_line(rep.recorded))] if rep.recorded is not None else []),
        *([("policy choice", policy_advice(rep.tradeoff, flag))] if rep.tradeoff is not None and rep.tradeoff.differs else []),
        *(migration_rows(res.moves, tr.layers, topo.slots) if res.moves else []),
        *(robust_rows(res.robust) if res.robust else []),
        ("runtime", f"{res.runtime_ms:.1f} ms"),
    ]
    if rep.output:
        head.append(("written", f"{rep.output} ({rep.output_format})"))
    return score_report(head, res.placement, res.score, rep.load, layer)


def gate_dicts(gates: Sequence[Gate], flag: Callable[[str], str]) -> list[dict[str, Any]]:
    """Gates as JSON objects, each named by its flag."""
    return [{**g.as_dict(), "gate": flag(g.name)} for g in gates]


def gate_rows(gates: Sequence[Gate], flag: Callable[[str], str], served: bool = False) -> list[tuple[str, str]]:
    """One summary line per gate."""
    where = " (served)" if served else ""
    return [("gate", f"{flag(g.name)} {g.limit:g}{where}: {'passed' if g.passed else 'FAILED'}") for g in gates]


def evaluate_json(rep: EvaluationReport, flag: Callable[[str], str]) -> str:
    """``eplb evaluate --json``."""
    tr, p = rep.trace, rep.placement
    topo = p.topology
    doc = {
        "placement": rep.placement_path, "trace": rep.source, "policy": topo.policy, "layers": tr.layers,
        "experts": tr.experts, "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes,
        "groups": topo.groups, **rep.score.summary(), "dispatch": rep.dispatch,
        "excluded_gpus": list(topo.excluded_gpus), "failure": rep.failure, "gates": gate_dicts(rep.gates, flag), "passed": rep.passed,
    }
    return to_json(doc)


def evaluate_text(rep: EvaluationReport, flag: Callable[[str], str], layer: int | None = None) -> str:
    """``eplb evaluate``: summary (with the failure, when GPUs fail) and the tables."""
    tr, p, failure = rep.trace, rep.placement, rep.failure
    topo = p.topology
    head = [
        ("placement", f"{rep.placement_path}: {p.layers} layers x {topo.slots} slots"),
        ("trace", f"{rep.source}: {tr.layers} layers x {tr.experts} experts, {_windows(tr.windows)} summed"),
        ("cluster", topology_line(topo)),
        *([("dispatch", DISPATCH_LINES[rep.dispatch])] if rep.dispatch != "even" else []),
    ]
    if failure:
        head += [
            ("failed GPUs", ", ".join(map(str, failure["failed_gpus"]))),
            ("failure model", failure["model"]),
            ("lost experts", lost_experts_line(failure["lost_experts"])),
            ("lost load", f"{fmt_pct(failure['lost_load_share'])} of all tokens"),
            ("before failure", f"GPU imbalance {fmt_ratio(failure['gpu_imbalance_before'])}, "
                               f"balancedness {fmt_ratio(failure['balancedness_before'])}"),
        ]
    head += score_rows(rep.score.summary())
    head += gate_rows(rep.gates, flag)
    return score_report(head, p, rep.score, tr.total(), layer)


def replay_json(rep: ReplayReport, flag: Callable[[str], str]) -> str:
    """``eplb replay --json``: every rebalance and the summary."""
    tr, topo = rep.trace, rep.topology
    doc = rep.result.to_dict()
    doc["summary"] = {"trace": rep.source, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
                      "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes,
                      "groups": topo.groups, "excluded_gpus": list(topo.excluded_gpus), **rep.result.summary,
                      "gates": gate_dicts(rep.gates, flag), "passed": rep.passed}
    return to_json(doc)


def replay_text(rep: ReplayReport, flag: Callable[[str], str]) -> str:
    """``eplb replay``: one row per rebalance, then the summary."""
    tr, topo, s = rep.trace, rep.topology, rep.result.summary
    head = [
        ("strategy", s["strategy"]),
        ("policy", policy_line(topo, rep.groups_unknown)),
        ("trace", f"{rep.source}: {tr.layers} layers x {tr.experts} experts, {tr.windows} window(s)"),
        ("cluster", topology_line(topo)),
        *replay_rows(s),
        *gate_rows(rep.gates, flag, served=True),
    ]
    table = rebalance_table(rep.result.to_dict()["rebalances"], with_bytes=rep.expert_bytes is not None,
                            with_gain=s.get("min_gain") is not None)
    return join_blocks(["Rebalances\n" + table, summary_table(head)])


COMPARE_COLUMNS = [
    ("strategy", "strategy"), ("gpu_imbalance", "GPU imb."), ("gpu_imbalance_worst", "worst layer"),
    ("node_imbalance", "node imb."), ("balancedness", "balancedness"), ("gap", "gap to LB"),
    ("moves", "moves vs 1st"), ("runtime_ms", "ms (median)"),
]
OOS_COLUMNS = [("oos_gpu_imbalance", "next-window imb."), ("oos_balancedness", "next-window bal.")]
SPAN_COLUMNS = [("node_span", "nodes/token"), ("gpu_span", "GPUs/token")]


def compare_json(rep: ComparisonReport) -> str:
    """``eplb compare --json``: one object per strategy (and policy), with the trace and cluster keys of ``plan --json``."""
    tr, topo = rep.trace, rep.topology
    base = {"policy": topo.policy, "layers": tr.layers, "experts": tr.experts, "windows": tr.windows,
            "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes, "groups": topo.groups, "output": None,
            "dispatch": rep.dispatch}
    return to_json({"rows": [base | r.as_dict() for r in rep.rows],
                    "routing": rep.routing.as_dict() if rep.routing else None})


def compare_table(rep: ComparisonReport, style: str = "simple") -> str:
    """``eplb compare``: the table (``simple``, ``csv`` or ``markdown``); the simple one with a header and notes."""
    rows = [r.as_dict() for r in rep.rows]
    several = len(rep.policies) > 1
    columns = ([("policy", "policy")] if several else []) + COMPARE_COLUMNS[:6] \
        + (SPAN_COLUMNS if rep.routing is not None else []) + COMPARE_COLUMNS[6:] \
        + (OOS_COLUMNS if rep.rows and rep.rows[0].oos is not None else [])
    table = rows_table(rows, columns, style)
    if style != "simple":
        return table
    tr, topo = rep.trace, rep.topology
    pairs = rep.rows[0].oos["oos_pairs"] if rep.rows and rep.rows[0].oos else 0
    policy = (f"policies {', '.join(rep.policies)}" if several
              else f"policy {policy_line(topo, rep.groups_unknown)}")
    head = (f"{rep.source}: {tr.layers} layers x {tr.experts} experts, {tr.windows} window(s); "
            f"{topology_line(topo)}; {policy}")
    notes = ["imb. = max/mean GPU load (1.0 is perfect), mean over layers; gap = sum of max / sum of lower bound - 1."]
    if rep.routing is not None:
        notes.append(f"nodes/token, GPUs/token: expected distinct nodes and GPUs holding a token's experts "
                     f"({rep.routing.describe(tr.experts)}; replicas picked uniformly).")
    if several:
        notes.append("moves vs 1st: against the first strategy under the same policy.")
    if rep.dispatch != "even":
        notes.append(f"dispatch: {DISPATCH_LINES[rep.dispatch]}.")
    if pairs:
        notes.append(f"next-window: planned on window t, scored on t+1, averaged over {pairs} pair(s).")
    return join_blocks([head, table, "\n".join(notes)])


def convert_line(done: dict[str, Any]) -> str:
    """``eplb convert``: what was written."""
    if done["kind"] == "trace":
        shape = f"trace, {done['windows']} window(s) x {done['layers']} layers x {done['experts']} experts"
    else:
        where = f"on {done['gpus']} GPUs" if done["gpus"] is not None else "for any GPU count they divide over"
        shape = (f"placement, {done['layers']} layers x {done['slots']} slots {where} "
                 f"(read as {done['input_format']})")
    return f"wrote {done['output']} ({done['format']}): {shape}"


def frontier_json(rep: FrontierReport) -> str:
    """``eplb plan --previous OLD --frontier --json``: ``{"frontier": [...]}`` with the cluster and transfer model."""
    from .planning.frontier import rows_as_dicts

    tr, topo, links = rep.trace, rep.topology, rep.links
    return to_json({
        "strategy": rep.strategy, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
        "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes, "previous": rep.previous,
        "expert_bytes": links.expert_bytes, "nvlink_gbps": links.nvlink_gbps, "network_gbps": links.network_gbps,
        "runtime_s": rep.runtime_s, "frontier": rows_as_dicts(rep.rows),
    })


def frontier_text(rep: FrontierReport) -> str:
    """``eplb plan --previous OLD --frontier``: what each move budget buys."""
    from .planning.frontier import rows_as_dicts

    tr, topo = rep.trace, rep.topology
    rows = rows_as_dicts(rep.rows)
    head = [
        ("strategy", rep.strategy),
        ("policy", policy_line(topo)),
        ("trace", f"{rep.source}: {tr.layers} layers x {tr.experts} experts, {_windows(tr.windows)} summed"),
        ("cluster", topology_line(topo)),
        ("previous", f"{rep.previous} (budgets are moves from it; 1% = {tr.layers * topo.slots // 100:,} of "
                     f"{tr.layers * topo.slots:,} slots)"),
        ("transfer model", transfer_line(rep.links)),
        ("runtime", f"{rep.runtime_s:.2f} s"),
    ]
    blocks = [summary_table(head), "Moves versus balance\n" + frontier_table(rows)]
    if rows[-1]["gpu_imbalance"] > min(r["gpu_imbalance"] for r in rows) + 1e-9:
        blocks.append("note: the plan from scratch (unlimited) is less balanced than a budgeted plan: in some layers "
                      "the placement served now suits this load better than a new plan")
    return join_blocks(blocks)


def intervals_json(rep: IntervalReport) -> str:
    """``eplb replay --every 1,2,4 --json``: one summary per interval."""
    tr, topo = rep.trace, rep.topology
    base = {"trace": rep.source, "policy": topo.policy, "layers": tr.layers, "experts": tr.experts,
            "windows": tr.windows, "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes}
    return to_json({"rows": [base | s for s in rep.summaries]})


def intervals_text(rep: IntervalReport) -> str:
    """``eplb replay --every 1,2,4``: one summary row per rebalance interval."""
    tr, topo, s = rep.trace, rep.topology, rep.summaries[0]
    head = [
        ("strategy", s["strategy"]), ("policy", policy_line(topo)),
        ("trace", f"{rep.source}: {tr.layers} layers x {tr.experts} experts, {tr.windows} window(s)"),
        ("cluster", topology_line(topo)),
        ("served", f"windows {s['start']}-{s['start'] + s['served_windows'] - 1} by every interval "
                   f"(first rebalance at window {s['start']})"),
        ("forecast", s["forecast"]),
        *[row for row in replay_rows(s) if row[0] in ("robust", "dispatch")],
    ]
    return join_blocks([summary_table(head), "By rebalance interval\n" + interval_table(rep.summaries)])


def engine_lines(engine: dict | None) -> str:
    """The launch settings of a written engine file, one ``eplb: ENGINE: ...`` line each (for stderr)."""
    if not engine:
        return ""
    name = engine["engine"]
    lines = [f"start {name} with {engine['flags']}"] + engine["notes"]
    return "\n".join(f"eplb: {name}: {line}" for line in lines)
