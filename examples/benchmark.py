"""Strategy benchmark at DeepSeek-V3 scale: runtime, imbalance and gap per strategy and shape.

Usage:  python examples/benchmark.py [--repeat 20] [--markdown] [--device cpu]

Shapes (issue 3): 58 MoE layers x 256 experts, 8 groups, in three clusters:
prefill 288 slots / 32 GPUs / 4 nodes; 320 slots / 64 GPUs / 8 nodes; decode
288 slots / 144 GPUs / 18 nodes (2 per GPU; 8 groups cannot cover 18 nodes,
so decode is global only). Traces: the six real DeepSeek-V3 workloads in
../shared/traces/sglang-deepseek-v3 (when present) and the shipped synthetic
trace. Runtimes are in-process medians after a warm-up, taken in the same run
as the baseline; imbalance is max/mean GPU load averaged over loaded layers;
gap = sum of max GPU load / sum of lower bound - 1. When SGLang or vLLM is
installed (`pip install --no-deps sglang vllm`), their shipped algorithms
(SGLang's deepseek and deepseek_vec, vLLM's default policy) are timed and
scored too.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from engine_baselines import engine_planners  # noqa: E402

from eplb_cli.formats import read_trace  # noqa: E402
from eplb_cli.metrics import gpu_loads, lower_bound  # noqa: E402
from eplb_cli.placement import Placement  # noqa: E402
from eplb_cli.strategies import get_strategy  # noqa: E402
from eplb_cli.topology import resolve  # noqa: E402

SHAPES = [
    ("prefill 32 GPUs", dict(gpus=32, nodes=4, slots=288)),
    ("64 GPUs", dict(gpus=64, nodes=8, slots=320)),
    ("decode 144 GPUs", dict(gpus=144, nodes=18, slots=288)),
]
STRATEGIES = ["deepseek", "fast", "balanced", "thorough"]


def load_traces() -> dict[str, torch.Tensor]:
    """name -> loaded layers [L, E] (the real dumps' dense layers dropped)."""
    out = {}
    shared = ROOT.parent / "shared" / "traces" / "sglang-deepseek-v3"
    for path in sorted(shared.glob("*.json")):
        w = read_trace(path).total()
        out[path.stem] = w[w.sum(-1) > 0]
    out["synthetic"] = read_trace(ROOT / "traces" / "deepseek-v3-synthetic.safetensors").total()
    return out


def timed(fn, repeat: int, device: str) -> tuple[torch.Tensor, float]:
    result = fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times) * 1e3


def measure(w: torch.Tensor, topo, phy2log: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    p = Placement(phy2log.cpu(), topo).validate()
    g = gpu_loads(p, w)
    mx, mean = g.max(-1).values, g.mean(-1)
    lb = lower_bound(w, topo)
    return float((mx / mean).mean()), float(mx.sum() / lb.sum() - 1), mx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    args = ap.parse_args()
    names = args.strategies.split(",")
    engines = engine_planners()
    traces = load_traces()
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {args.device}")
    print(f"# traces: {', '.join(traces)}; repeat {args.repeat}; engines: {', '.join(engines) or 'none installed'}")
    fmt = "| {:<16} | {:<12} | {:<20} | {:>9} | {:>9} | {:>10} | {:>9} | {:>10} | {:>9} | {:>12} |"
    print(fmt.format("shape", "policy", "strategy", "ms median", "x faster", "imb. real", "gap real", "imb. synth",
                     "gap synth", "worse layers"))
    print(fmt.format(*["-" * n for n in (16, 12, 20, 9, 9, 10, 9, 10, 9, 12)]))
    for shape_name, kw in SHAPES:
        for policy in ("hierarchical", "global"):
            if policy == "hierarchical" and 8 % kw["nodes"]:
                continue
            topo = resolve(256, groups=8, policy=policy, **kw)
            base_ms, base_max = None, {}
            rows = [(n, None) for n in names] + [(n, f) for n, f in engines.items()]
            for name, engine in rows:
                ms_all, imb, gap, worse = [], {"real": [], "synth": []}, {"real": [], "synth": []}, 0
                for tname, w in traces.items():
                    wd = w.to(args.device)
                    if engine is None:
                        strat = get_strategy(name)
                        phy, ms = timed(functools.partial(strat.plan, wd, topo, seed=0), args.repeat, args.device)
                    else:
                        call = functools.partial(engine, w, topo.slots, 8, topo.nodes, topo.gpus, policy == "hierarchical")
                        phy, ms = timed(call, max(3, args.repeat // 4), "cpu")
                    i, g, mx = measure(w, topo, phy)
                    kind = "synth" if tname == "synthetic" else "real"
                    imb[kind].append(i)
                    gap[kind].append(g)
                    ms_all.append(ms)
                    if name == "deepseek" and engine is None:
                        base_max[tname] = mx
                    elif tname in base_max:
                        worse += int((mx > base_max[tname] * (1 + 1e-12)).sum())
                ms = statistics.median(ms_all)
                if name == "deepseek" and engine is None:
                    base_ms = ms
                mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
                print(fmt.format(shape_name, policy, name, f"{ms:.2f}", f"{base_ms / ms:.1f}x" if base_ms else "",
                                 f"{mean(imb['real']):.4f}", f"{100 * mean(gap['real']):.2f}%",
                                 f"{mean(imb['synth']):.4f}", f"{100 * mean(gap['synth']):.2f}%",
                                 "" if name == "deepseek" and engine is None else str(worse)), flush=True)


if __name__ == "__main__":
    main()
