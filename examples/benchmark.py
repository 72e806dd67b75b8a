"""Strategy benchmark: eplb's planners against the engines' own, speed and balance, and how plan time scales.

Usage:  python examples/benchmark.py [--repeat 15] [--markdown] [--device cpu] [--shapes decode] [--skip-scale]
        [--skip-start] [--decode-only]

Prints three tables, each with the settings it ran under:

1. Speed and balance at DeepSeek-V3 scale: 58 MoE layers x 256 experts in 8
   groups, on the six real DeepSeek-V3 workloads in
   ../shared/traces/sglang-deepseek-v3 (dense layers dropped; when present) and
   the shipped synthetic trace, at four clusters (288 slots / 32 GPUs / 4 nodes
   and 320 / 64 / 8, each under the global and the hierarchical policy) plus
   decode (288 / 144 / 18 and 320 / 160 / 20, global only: 8 groups cannot
   cover 18 nodes). Every
   planner is timed as the whole call an engine makes, phy2log, log2phy and
   logcnt out: eplb's through ``eplb_cli.rebalance_experts``; when installed
   (``pip install --no-deps sglang vllm``), SGLang's ``deepseek`` and
   ``deepseek_vec`` and vLLM's default policy through their own
   ``rebalance_experts`` (loaded from the installed package, see
   engine_baselines.py). Runs are interleaved: each repeat calls every
   planner once on every trace, in turn, so a busy machine slows them alike;
   "ms" is the median over repeats and traces, and the "x" columns divide
   the engine's median by the planner's. Balance: "imb." is the mean over
   layers of max / mean GPU load, "gap" is sum of max GPU load / sum of the
   lower bound - 1, "worse" counts layers (over all traces) whose busiest GPU
   is heavier than under eplb's ``deepseek`` (DeepSeek's algorithm, exactly).
1b. Few slots per GPU (2 to 4: decode shapes), on the real traces only (skipped when
   absent): mean imbalance, the mean of the lower bound (``metrics.lower_bound``,
   pairing-aware at two slots per GPU) over the mean GPU load, the gap to it
   (sum of busiest GPUs / sum of the bound - 1) and to the count bound alone
   (``metrics.count_bound``), and the layers lighter / heavier than under
   DeepSeek's algorithm.
2. Scale: plan time and peak memory of each preset, one fresh process per
   case (``strategies.plan``, which returns the validated placement; the
   padded log2phy of ``rebalance_experts`` alone would take 3.9 GB at 4096
   GPUs), against GPUs and slots. "us / (slot x layer)" stays flat when plan
   time grows linearly.
3. Start-up: ``eplb --help``; a fresh process planning once (``eplb plan``)
   with the compiled kernels cached, and with an empty cache (the one-time
   compile of a new install or a changed kernels.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from engine_baselines import engine_planners  # noqa: E402

import eplb_cli  # noqa: E402
from eplb_cli.formats import read_trace  # noqa: E402
from eplb_cli.metrics import count_bound, gpu_loads, lower_bound  # noqa: E402
from eplb_cli.placement import Placement  # noqa: E402
from eplb_cli.topology import Topology, resolve  # noqa: E402

SHAPES = [
    ("288/32 global", dict(gpus=32, nodes=4, slots=288), "global"),
    ("288/32 hier.", dict(gpus=32, nodes=4, slots=288), "hierarchical"),
    ("320/64 global", dict(gpus=64, nodes=8, slots=320), "global"),
    ("320/64 hier.", dict(gpus=64, nodes=8, slots=320), "hierarchical"),
    ("288/144 decode", dict(gpus=144, nodes=18, slots=288), "global"),
    ("320/160 decode", dict(gpus=160, nodes=20, slots=320), "global"),
]
DECODE = [shape for shape in SHAPES if shape[0].endswith("decode")]
FEW_SLOTS = [*DECODE, ("288/96 3/GPU", dict(gpus=96, nodes=12, slots=288), "global"),
             ("320/80 4/GPU", dict(gpus=80, nodes=10, slots=320), "global")]
"""Table 1b: the shapes with 2 to 4 slots per GPU, where the lower bound is pairing-aware."""
STRATEGIES = ["deepseek", "fast", "balanced", "thorough"]
BASELINES = ("sglang:deepseek", "sglang:deepseek_vec")
SCALE = [  # (layers, experts, gpus, slots per GPU)
    (58, 256, 32, 9), (58, 256, 64, 9), (58, 256, 128, 9), (58, 256, 256, 9),
    (94, 512, 64, 9), (58, 256, 4096, 8),
]
SCALE_STRATEGIES = ["fast", "balanced", "thorough"]
Planner = Callable[[torch.Tensor], torch.Tensor]


def load_traces() -> dict[str, torch.Tensor]:
    """name -> loaded layers [L, E] float32, as an engine holds them (the real dumps' dense layers dropped)."""
    out = {}
    shared = ROOT.parent / "shared" / "traces" / "sglang-deepseek-v3"
    for path in sorted(shared.glob("*.json")):
        w = read_trace(path).total()
        out[path.stem] = w[w.sum(-1) > 0].float()
    out["synthetic"] = read_trace(ROOT / "traces" / "deepseek-v3-synthetic.safetensors").total().float()
    return out


def planners(names: list[str], topo: Topology, hierarchical: bool, device: str) -> dict[str, Planner]:
    """name -> f(weight [L, E]) -> phy2log, each the whole rebalancing call (log2phy and logcnt built too)."""
    groups, nodes = (8, topo.nodes) if hierarchical else (1, 1)
    out: dict[str, Planner] = {}
    for name in names:
        def eplb_planner(w: torch.Tensor, name: str = name) -> torch.Tensor:
            phy = eplb_cli.rebalance_experts(w.to(device), topo.slots, groups, nodes, topo.gpus, strategy=name)[0]
            if device == "cuda":
                torch.cuda.synchronize()
            return phy
        out[name] = eplb_planner
    for name, engine in engine_planners().items():
        out[name] = lambda w, engine=engine: engine(w, topo.slots, 8, topo.nodes, topo.gpus, hierarchical)
    return out


def table_header(heads: list[str], widths: list[int], markdown: bool) -> Callable[[list[object]], str]:
    """Print a table's header (and Markdown's rule); return the function that formats its rows."""

    def line(cells: list[object]) -> str:
        text = [f"{c:>{n}}" for c, n in zip(cells, widths)]
        return "| " + " | ".join(text) + " |" if markdown else "  ".join(text)

    print(line(list(heads)))
    if markdown:
        print("|" + "|".join("-" * (n + 2) for n in widths) + "|")
    return line


def balance(w: torch.Tensor, topo: Topology, phy2log: torch.Tensor, bound: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(mean imbalance, gap to ``bound``, busiest GPU per layer) of a placement on ``w``."""
    loads = gpu_loads(Placement(phy2log.cpu(), topo).validate(), w.double())
    busiest = loads.max(-1).values
    return float((busiest / loads.mean(-1)).mean()), float(busiest.sum() / bound.sum() - 1), busiest


def speed_table(traces: dict[str, torch.Tensor], names: list[str], repeat: int, device: str, markdown: bool,
                shapes: str = "") -> None:
    """Table 1: interleaved medians, ratios to the engines, balance."""
    heads = ["shape", "planner", "ms", "x sglang", "x vec", "imb. real", "gap real", "imb. synth", "gap synth", "worse"]
    widths = [14, 19, 8, 8, 6, 9, 8, 10, 9, 5]
    line = table_header(heads, widths, markdown)
    for shape, kw, policy in SHAPES:
        if shapes not in shape:
            continue
        topo = resolve(256, groups=8, policy=policy, **kw)
        plan = planners(names, topo, policy == "hierarchical", device)
        times: dict[str, list[float]] = {name: [] for name in plan}
        results: dict[tuple[str, str], torch.Tensor] = {}
        for tname, w in traces.items():  # warm-up, and the placements scored below
            for name, f in plan.items():
                results[name, tname] = f(w)
        for _ in range(repeat):
            for w in traces.values():
                for name, f in plan.items():
                    start = time.perf_counter()
                    f(w)
                    times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        bound = {tname: lower_bound(w.double(), topo) for tname, w in traces.items()}  # once per trace, not per planner
        base = {tname: balance(w, topo, results["deepseek", tname], bound[tname])[2] for tname, w in traces.items()} \
            if "deepseek" in plan else {}
        for name in plan:
            imb: dict[str, list[float]] = {"real": [], "synth": []}
            gap: dict[str, list[float]] = {"real": [], "synth": []}
            worse = 0
            for tname, w in traces.items():
                i, g, busiest = balance(w, topo, results[name, tname], bound[tname])
                kind = "synth" if tname == "synthetic" else "real"
                imb[kind].append(i)
                gap[kind].append(g)
                if tname in base and name != "deepseek":
                    worse += int((busiest > base[tname] * (1 + 1e-12)).sum())

            def mean(xs: list[float]) -> float:
                return sum(xs) / len(xs) if xs else float("nan")

            ratio = [f"{median[b] / median[name]:.1f}x" if b in median and name not in BASELINES else "" for b in BASELINES]
            print(line([shape, name, f"{median[name]:.2f}", *ratio, f"{mean(imb['real']):.4f}",
                        f"{100 * mean(gap['real']):.3f}%", f"{mean(imb['synth']):.4f}", f"{100 * mean(gap['synth']):.3f}%",
                        "" if name == "deepseek" else str(worse)]), flush=True)


def decode_table(traces: dict[str, torch.Tensor], names: list[str], markdown: bool) -> None:
    """Table 1b: 2 to 4 slots per GPU on the real traces, against the pairing-aware bound (``lower_bound``)."""
    real = {name: w.double() for name, w in traces.items() if name != "synthetic"}
    if not real:
        print("(skipped: no real traces in ../shared/traces/sglang-deepseek-v3)")
        return
    heads = ["shape", "planner", "imb.", "bound imb.", "gap", "count bound gap", "lighter", "heavier", "layers"]
    widths = [14, 10, 7, 10, 7, 15, 7, 7, 6]
    line = table_header(heads, widths, markdown)
    for shape, kw, policy in FEW_SLOTS:
        topo = resolve(256, groups=8, policy=policy, **kw)
        bound = {tname: lower_bound(w, topo) for tname, w in real.items()}
        old = {tname: count_bound(w, topo) for tname, w in real.items()}
        busiest = {(name, tname): balance(w, topo, eplb_cli.rebalance_experts(w, topo.slots, 1, 1, topo.gpus,
                                                                            strategy=name)[0], bound[tname])[2]
                   for name in ["deepseek", *names] for tname, w in real.items()}
        for name in dict.fromkeys(["deepseek", *names]):
            top = torch.cat([busiest[name, t] for t in real])
            base = torch.cat([busiest["deepseek", t] for t in real])
            mean = torch.cat([w.sum(-1) / topo.gpus for w in real.values()])
            low, low_old = torch.cat(list(bound.values())), torch.cat(list(old.values()))
            print(line([shape, name, f"{float((top / mean).mean()):.4f}", f"{float((low / mean).mean()):.4f}",
                        f"{100 * float(top.sum() / low.sum() - 1):.2f}%", f"{100 * float(top.sum() / low_old.sum() - 1):.2f}%",
                        int((top < base * (1 - 1e-12)).sum()), int((top > base * (1 + 1e-12)).sum()), top.numel()]),
                  flush=True)


def one_scale_case(spec: dict) -> dict:
    """Plan once in this (fresh) process after a warm-up on a small case; wall, CPU time and peak memory."""
    from eplb_cli.strategies import get_strategy, plan
    from eplb_cli.synthetic import generate

    load = generate(spec["layers"], spec["experts"], 1, seed=0, groups=8).total()
    topo = Topology(experts=spec["experts"], slots=spec["gpus"] * spec["per"], gpus=spec["gpus"])
    strategy = get_strategy(spec["strategy"])
    plan(load[:1], Topology(experts=spec["experts"], slots=2 * spec["experts"], gpus=2), strategy)  # loads the kernels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    plan(load, topo, strategy)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "before": before / 1024, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def scale_table(markdown: bool) -> None:
    """Table 2: each case in its own process, so peak memory is the plan's own."""
    heads = ["layers x experts", "GPUs", "slots", "strategy", "wall s", "CPU s", "us / (slot x layer)", "peak MiB",
             "above start MiB"]
    widths = [16, 5, 6, 8, 7, 7, 19, 8, 15]
    line = table_header(heads, widths, markdown)
    for layers, experts, gpus, per in SCALE:
        for strategy in SCALE_STRATEGIES:
            spec = {"layers": layers, "experts": experts, "gpus": gpus, "per": per, "strategy": strategy}
            proc = subprocess.run([sys.executable, __file__, "--one-case", json.dumps(spec)], capture_output=True,
                                  text=True, timeout=3600)
            if proc.returncode:
                print(f"{layers} x {experts} on {gpus} GPUs, {strategy}: failed: {proc.stderr.strip()[-300:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            slots = gpus * per
            print(line([f"{layers} x {experts}", gpus, slots, strategy, f"{r['wall']:.2f}", f"{r['cpu']:.2f}",
                        f"{r['cpu'] / (slots * layers) * 1e6:.3f}", f"{r['peak']:.0f}", f"{r['peak'] - r['before']:.0f}"]),
                  flush=True)


def timed_run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=1200)
    return time.perf_counter() - start


def start_table() -> None:
    """Table 3: what a fresh ``eplb`` process pays, with the kernel cache warm and empty."""
    eplb = [sys.executable, "-m", "eplb_cli"]
    trace = str(ROOT / "traces" / "deepseek-v3-synthetic.safetensors")
    plan_args = [*eplb, "plan", trace, "--gpus", "32", "--nodes", "4", "--strategy", "balanced", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows = [("eplb --help", timed_run([*eplb, "--help"], env))]
    probe = "import sys, eplb_cli.strategies.kernels; print(sys.modules['numba'].__version__)"
    numba_version = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    timed_run(plan_args, env)  # fills the cache beside kernels.py if it was stale
    rows.append(("eplb plan, kernels cached", statistics.median(timed_run(plan_args, env) for _ in range(3))))
    with tempfile.TemporaryDirectory() as empty:
        rows.append(("eplb plan, empty kernel cache", timed_run(plan_args, dict(env, NUMBA_CACHE_DIR=empty))))
    print(f"numba {numba_version}; plan: {Path(trace).name}, 32 GPUs in 4 nodes, balanced, 24 windows")
    for name, seconds in rows:
        print(f"{name:32s} {seconds:7.2f} s wall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15, help="interleaved repeats per trace (table 1)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--device", default="cpu", help="where eplb's planners get the load (the engines run on CPU)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--shapes", default="", help="table 1: only the shapes whose name contains this text")
    ap.add_argument("--decode-only", action="store_true", help="only table 1b (decode shapes vs the pairing bound)")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-start", action="store_true")
    ap.add_argument("--one-case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_case:
        print(json.dumps(one_scale_case(json.loads(args.one_case))))
        return
    engines = engine_planners()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}; engines: "
          f"{', '.join(engines) or 'none installed (pip install --no-deps sglang vllm)'}")
    if args.decode_only:
        print("\n## 1b. Few slots per GPU (2-4): real traces against the pairing-aware bound\n")
        decode_table(load_traces(), [n for n in args.strategies.split(",") if n != "deepseek"], args.markdown)
        return
    if not args.skip_speed:
        traces = load_traces()
        print(f"\n## 1. Speed and balance, 58 x 256 ({len(traces)} traces: {', '.join(traces)}; {args.repeat} "
              f"interleaved repeats; eplb on {args.device})\n")
        speed_table(traces, args.strategies.split(","), args.repeat, args.device, args.markdown, args.shapes)
        print("\n## 1b. Few slots per GPU (2-4): real traces against the pairing-aware bound\n")
        decode_table(traces, [n for n in args.strategies.split(",") if n != "deepseek"], args.markdown)
    if not args.skip_scale:
        print("\n## 2. Scale: one plan per fresh process (synthetic loads, global policy)\n")
        scale_table(args.markdown)
    if not args.skip_start:
        print("\n## 3. Start-up of a fresh process\n")
        start_table()


if __name__ == "__main__":
    main()
