"""The policy trade-off on real traces: balance against token span, and what computing it costs.

Usage:  python examples/bench_policies.py [--repeat 3] [--markdown]

For every trace (the shipped synthetic DeepSeek-V3 trace, and the real traces
in ../shared/traces when present) and cluster, plans with the ``balanced``
strategy under both policies and prints the GPU imbalance (max/mean GPU load,
mean over loaded layers) and the expected nodes and GPUs per token of each
(:mod:`eplb_cli.span`: the model's routing, maximum-entropy expert sets fitted
to the loads, replicas picked uniformly). The cost columns are in-process
medians after a warm-up, all from the same run: planning under the other
policy (what ``plan`` adds to show the alternative), fitting the routing model
(once per trace), and the span of one placement.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eplb_cli.api import plan_load  # noqa: E402
from eplb_cli.formats import read_trace  # noqa: E402
from eplb_cli.span import expected_span, fit, routing_for  # noqa: E402
from eplb_cli.topology import resolve  # noqa: E402

SHARED = ROOT.parent / "shared" / "traces"
CASES = [
    # (name, path, groups for the placement, clusters as (gpus, nodes))
    ("synthetic V3", ROOT / "traces" / "deepseek-v3-synthetic.safetensors", 8, [(32, 4), (64, 8)]),
    *[(f"V3 {p.stem}", p, 8, [(32, 4), (64, 8)]) for p in sorted((SHARED / "sglang-deepseek-v3").glob("*.json"))],
    ("Qwen3-30B-A3B", SHARED / "qwen" / "qwen3-30b-a3b.csv", 8, [(32, 4)]),
    ("V2-Lite intent", SHARED / "esft-deepseek-v2-lite" / "intent.json", 8, [(16, 2)]),
]


def median_ms(fn, repeat: int):
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rows = []
    for name, path, groups, clusters in CASES:
        if not path.exists():
            continue
        trace = read_trace(str(path))
        load = trace.total()
        routing = routing_for(trace, groups=groups)
        if routing is None:
            continue
        model, fit_ms = median_ms(partial(fit, load, routing), args.repeat)
        for gpus, nodes in clusters:
            cells = {}
            for policy in ("hierarchical", "global"):
                topo = resolve(trace.experts, gpus, nodes, groups=groups, policy=policy)
                result, plan_ms = median_ms(partial(plan_load, load, topo), args.repeat)
                span, span_ms = median_ms(partial(expected_span, result.placement, model), args.repeat)
                cells[policy] = (result.score.summary()["gpu_imbalance"], span, plan_ms, span_ms)
            h, g = cells["hierarchical"], cells["global"]
            rows.append([name, f"{gpus}/{nodes}", routing.describe(trace.experts).split(",")[0],
                         f"{h[0]:.4f}", f"{h[1].node_span:.2f}", f"{h[1].gpu_span:.2f}",
                         f"{g[0]:.4f}", f"{g[1].node_span:.2f}", f"{g[1].gpu_span:.2f}",
                         f"{g[2]:.1f}", f"{fit_ms:.0f}", f"{model.iterations}",
                         f"{statistics.median([h[3], g[3]]):.0f}", f"{model.residual:.0e}"])
    head = ["trace", "GPUs/nodes", "routing", "hier. imb.", "hier. nodes", "hier. GPUs", "global imb.",
            "global nodes", "global GPUs", "global plan ms", "fit ms", "fit steps", "span ms", "fit residual"]
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"median of {args.repeat} after a warm-up")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
