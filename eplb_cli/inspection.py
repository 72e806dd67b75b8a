"""What a trace holds before anyone plans from it: shape, skew, hot experts, drift.

``eplb inspect`` prints this; everything is computed with batched tensor code
over all layers and windows at once. Figures per layer leave out layers with no
load (dense layers in SGLang dumps): their skew is undefined.
"""

from __future__ import annotations

import torch

from .formats.launch import fits, fits_line, layer_span
from .placement import Placement
from .trace import Trace

COLD_FRACTION = 0.1
"""An expert is *cold* when its load is under this fraction of its layer's mean."""


def _stats(values: torch.Tensor) -> dict[str, float | None]:
    """min / mean / max of a 1-D tensor (None for all three when it is empty)."""
    if values.numel() == 0:
        return {"min": None, "mean": None, "max": None}
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def layer_names(trace: Trace) -> list[int]:
    """The model's id of each trace layer (TensorRT-LLM folders keep them), else 0..L-1."""
    ids = trace.meta.get("layer_ids")
    if isinstance(ids, (list, tuple)) and len(ids) == trace.layers:
        return [int(i) for i in ids]
    return list(range(trace.layers))


def window_similarity(load: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each layer's expert-load vector in window t and t+1, [W-1, L].

    NaN where either window gives the layer no load.
    """
    a, b = load[:-1], load[1:]
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    dot = (a * b).sum(-1)
    return torch.where(norms > 0, dot / norms.clamp(min=torch.finfo(load.dtype).tiny), torch.full_like(dot, float("nan")))


def inspect_trace(trace: Trace, top: int = 10) -> dict:
    """Summarise ``trace`` as plain data (the ``--json`` document of ``eplb inspect``).

    Keys: shape (``windows``, ``layers``, ``experts``), ``total_tokens``,
    ``tokens_per_layer`` and ``tokens_per_window`` (min/mean/max; layers over
    loaded layers only), ``zero_layers`` (ids), ``zero_experts`` (cells of
    loaded layers with no load), ``skew`` (``hottest_over_mean`` and
    ``cold_share`` as min/mean/max over loaded layers), ``per_layer`` (one
    entry per layer), ``hottest`` (the ``top`` experts by share of their
    layer's load) and ``window_similarity`` (None for one window).
    """
    load = trace.load
    windows, layers, experts = load.shape
    names = layer_names(trace)
    total = load.sum(0)
    layer_tokens = total.sum(-1)
    active = layer_tokens > 0
    mean = layer_tokens / experts
    safe_mean = torch.where(active, mean, torch.ones_like(mean))
    hot_value, hot_expert = total.max(-1)
    hot_ratio = torch.where(active, hot_value / safe_mean, torch.full_like(mean, float("nan")))
    cold = (total < COLD_FRACTION * mean.unsqueeze(-1)).to(torch.float64).mean(-1)
    cold = torch.where(active, cold, torch.full_like(cold, float("nan")))
    share = torch.where(active.unsqueeze(-1), total / layer_tokens.clamp(min=1e-300).unsqueeze(-1), torch.zeros_like(total))
    k = min(max(top, 0), int(active.sum()) * experts)
    top_share, top_flat = torch.topk(share.flatten(), k) if k else (share.new_zeros(0), torch.zeros(0, dtype=torch.int64))
    per_layer = [
        {
            "layer": names[i],
            "tokens": t,
            "hottest_expert": e if ok else None,
            "hottest_over_mean": r if ok else None,
            "cold_share": c if ok else None,
        }
        for i, (t, e, r, c, ok) in enumerate(
            zip(layer_tokens.tolist(), hot_expert.tolist(), hot_ratio.tolist(), cold.tolist(), active.tolist())
        )
    ]
    return {
        "source": trace.source,
        "windows": windows,
        "layers": layers,
        "experts": experts,
        "groups": trace.groups,
        "total_tokens": float(layer_tokens.sum()),
        "tokens_per_layer": _stats(layer_tokens[active]),
        "tokens_per_window": _stats(load.sum((1, 2))),
        "zero_layers": [names[i] for i in (~active).nonzero().flatten().tolist()],
        "zero_experts": int((total[active] == 0).sum()),
        "skew": {
            "hottest_over_mean": _stats(hot_ratio[active]),
            "cold_share": _stats(cold[active]),
            "cold_fraction": COLD_FRACTION,
        },
        "per_layer": per_layer,
        "hottest": [
            {"layer": names[f // experts], "expert": f % experts, "tokens": float(total.flatten()[f]), "share": s}
            for f, s in zip(top_flat.tolist(), top_share.tolist())
        ],
        "window_similarity": _similarity_summary(load, names),
    }


def _similarity_summary(load: torch.Tensor, names: list[int]) -> dict | None:
    """Mean and worst cosine similarity of consecutive windows, and the mean per window pair."""
    if load.shape[0] < 2:
        return None
    sim = window_similarity(load)
    valid = ~torch.isnan(sim)
    if not bool(valid.any()):
        return {"mean": None, "min": None, "min_at": None, "per_pair": [None] * sim.shape[0]}
    filled = torch.where(valid, sim, torch.zeros_like(sim))
    counts = valid.sum(-1)
    per_pair = torch.where(counts > 0, filled.sum(-1) / counts.clamp(min=1), torch.full_like(counts, float("nan"), dtype=sim.dtype))
    worst = torch.where(valid, sim, torch.full_like(sim, float("inf"))).flatten().argmin()
    w, l = divmod(int(worst), sim.shape[1])
    return {
        "mean": float(sim[valid].mean()),
        "min": float(sim[w, l]),
        "min_at": {"windows": [w, w + 1], "layer": names[l]},
        "per_pair": [None if v != v else v for v in per_pair.tolist()],
    }


def render(doc: dict, top_layers: int = 5) -> str:
    """The human form of :func:`inspect_trace`'s document: a summary and two short tables."""
    from . import report

    def nums(s: dict, fmt) -> str:
        return "n/a" if s["mean"] is None else f"min {fmt(s['min'])} / mean {fmt(s['mean'])} / max {fmt(s['max'])}"

    loaded = [r for r in doc["per_layer"] if r["hottest_over_mean"] is not None]
    w = doc["windows"]
    head = [
        ("trace", f"{doc['source']}: {w} window{'s' if w != 1 else ''} x {doc['layers']} layers x {doc['experts']} experts"
                  + (f" in {doc['groups']} groups" if doc.get("groups") else "")),
        ("tokens", f"{report.fmt_load(doc['total_tokens'])} in all; per loaded layer "
                   f"{nums(doc['tokens_per_layer'], report.fmt_load)}"),
    ]
    if w > 1:
        head.append(("per window", nums(doc["tokens_per_window"], report.fmt_load)))
    zl = doc["zero_layers"]
    if zl:
        shown = ", ".join(map(str, zl[:8])) + (", ..." if len(zl) > 8 else "")
        head.append(("zero layers", f"{len(zl)} of {doc['layers']} ({shown}): no load (dense layers?), left out below"))
    if doc["zero_experts"]:
        head.append(("zero experts", f"{doc['zero_experts']} experts of loaded layers got no tokens"))
    if loaded:
        hot = max(loaded, key=lambda r: r["hottest_over_mean"])
        cold = max(loaded, key=lambda r: r["cold_share"])
        s = doc["skew"]
        head.append(("skew", f"hottest expert / layer mean: mean {s['hottest_over_mean']['mean']:.2f}, "
                             f"max {s['hottest_over_mean']['max']:.2f} (layer {hot['layer']})"))
        head.append(("cold experts", f"under {doc['skew']['cold_fraction']:.0%} of the layer mean: "
                                     f"mean {report.fmt_pct(s['cold_share']['mean'])} of a layer's experts, "
                                     f"max {report.fmt_pct(s['cold_share']['max'])} (layer {cold['layer']})"))
    sim = doc["window_similarity"]
    if sim is None:
        head.append(("drift", "one window: nothing to compare"))
    elif sim["mean"] is None:
        head.append(("drift", "no layer has load in two consecutive windows"))
    else:
        at = sim["min_at"]
        head.append(("drift", f"cosine similarity of consecutive windows' per-layer loads: mean {sim['mean']:.4f}, "
                              f"worst {sim['min']:.4f} (windows {at['windows'][0]}->{at['windows'][1]}, layer {at['layer']})"))
    blocks = [report.summary_table(head)]
    if loaded:
        worst = sorted(loaded, key=lambda r: -r["hottest_over_mean"])[:top_layers]
        rows = [{"layer": r["layer"], "tokens": report.fmt_load(r["tokens"]), "expert": r["hottest_expert"],
                 "ratio": f"{r['hottest_over_mean']:.2f}", "cold": report.fmt_pct(r["cold_share"])} for r in worst]
        blocks.append("Most skewed layers\n" + report.rows_table(
            rows, [("layer", "layer"), ("tokens", "tokens"), ("expert", "hottest expert"),
                   ("ratio", "hottest / mean"), ("cold", "cold experts")]))
    if doc["hottest"]:
        rows = [{"layer": h["layer"], "expert": h["expert"], "tokens": report.fmt_load(h["tokens"]),
                 "share": report.fmt_pct(h["share"])} for h in doc["hottest"]]
        blocks.append("Hottest experts\n" + report.rows_table(
            rows, [("layer", "layer"), ("expert", "expert"), ("tokens", "tokens"), ("share", "share of its layer")]))
    return report.join_blocks(blocks)


def inspect_placement(placement: Placement, meta: dict, source: str) -> dict:
    """Summarise a placement file as plain data: shape, layer ids, replicas, and the GPU counts it fits.

    ``gpus`` is None when the file does not record it (engine files): ``fits``
    lists every GPU count its slots divide over evenly.
    """
    topo = placement.topology
    cnt = placement.logcnt
    known = meta.get("gpus_known", True)
    return {
        "kind": "placement", "source": source, "format": meta.get("file_format"), "layers": placement.layers,
        "layer_ids": placement.ids, "experts": topo.experts, "slots": topo.slots,
        "redundant": topo.slots - topo.experts, "gpus": topo.gpus if known else None,
        "nodes": topo.nodes if known else None, "fits": fits(topo.slots),
        "replicas": {"min": int(cnt.min()), "max": int(cnt.max())},
        "all_layers": bool(meta.get("all_layers", False)),
    }


def render_placement(doc: dict) -> str:
    """The human form of :func:`inspect_placement`'s document."""
    from . import report

    where = (f"on {doc['gpus']} GPUs in {doc['nodes']} node(s)" if doc["gpus"] is not None
             else "the file does not record GPUs")
    layers = "one map for every MoE layer" if doc["all_layers"] else f"{doc['layers']} MoE layers ({layer_span(doc['layer_ids'])})"
    rows = [
        ("placement", f"{doc['source']} ({doc['format']}): {layers}"),
        ("slots", f"{doc['slots']} = {doc['experts']} experts + {doc['redundant']} redundant, {where}"),
        ("fits", fits_line(doc["slots"])),
        ("replicas", f"{doc['replicas']['min']} to {doc['replicas']['max']} per expert"),
    ]
    return report.summary_table(rows)
