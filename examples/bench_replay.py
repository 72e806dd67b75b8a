"""Benchmark of plans over time: forecasts, migration-aware planning, the move budget, replay speed.

Run ``python examples/bench_replay.py`` from a checkout (``--skip-real`` when
``../shared/traces`` is absent). It prints four tables:

1. forecasts on the real ESFT DeepSeek-V2-Lite time series (served figures,
   every forecast including the oracle upper bound);
2. replicas moved between plans of consecutive windows of the shipped
   synthetic DeepSeek-V3 trace: from scratch, relabelled, relabelled and
   swapped back, with the in-sample imbalance of each;
3. the ``--max-moves`` trade-off in a replay of that trace;
4. the wall time of ``replay`` on 100 windows of a DeepSeek-V3-shaped trace.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from eplb_cli.formats import read_trace  # noqa: E402
from eplb_cli.metrics import count_moves, score  # noqa: E402
from eplb_cli.planning.forecast import parse_forecast  # noqa: E402  (needs ROOT on sys.path in a bare checkout)
from eplb_cli.planning.migration import relabel, swap_back  # noqa: E402
from eplb_cli.planning.replay import replay  # noqa: E402
from eplb_cli.report import rows_table  # noqa: E402
from eplb_cli.strategies import get_strategy, plan  # noqa: E402
from eplb_cli.synthetic import generate  # noqa: E402
from eplb_cli.topology import resolve  # noqa: E402

REAL = ROOT.parent / "shared" / "traces" / "esft-deepseek-v2-lite"
V3 = ROOT / "traces" / "deepseek-v3-synthetic.safetensors"
FORECASTS = ("last", "mean", "ema:0.5", "ema:0.2", "ema:0.05", "oracle")


def forecasts_table(strategy: str, style: str) -> str:
    """Served figures of every forecast on the ESFT series, rebalancing every window."""
    rows = []
    for name in ("intent.json", "summary.json"):
        trace = read_trace(str(REAL / name))
        for gpus, slots in ((8, 72), (16, 80)):
            topo = resolve(trace.experts, gpus, slots=slots)
            for spec in FORECASTS:
                s = replay(trace, topo, every=1, forecast=parse_forecast(spec), strategy=strategy).summary
                rows.append({"trace": f"{name} ({trace.windows} w)", "cluster": f"{gpus} GPUs / {slots} slots",
                             "forecast": spec, "served_gpu_imbalance": s["served_gpu_imbalance"],
                             "served_balancedness": s["served_balancedness"],
                             "moves_per_rebalance": f"{s['moves_per_rebalance']:,.0f}"})
    columns = [("trace", "trace"), ("cluster", "cluster"), ("forecast", "forecast"),
               ("served_gpu_imbalance", "served imb."), ("served_balancedness", "served bal."),
               ("moves_per_rebalance", "moves / rebalance")]
    return rows_table(rows, columns, style)


def previous_table(strategy: str, style: str) -> str:
    """Moves between plans of consecutive windows, from scratch vs migration-aware, and in-sample imbalance."""
    trace = read_trace(str(V3))
    topo = resolve(trace.experts, 32, 4, slots=288, groups=trace.groups)
    strat = get_strategy(strategy)
    plans = [plan(trace.load[w], topo, strat) for w in range(trace.windows)]
    names = ("from scratch", "--previous: GPUs relabelled", "--previous: relabelled + swapped back")
    moves = dict.fromkeys(names, 0)
    imbalance = dict.fromkeys(names, 0.0)
    worst_rise = 0.0
    seconds = 0.0
    for w in range(1, trace.windows):
        old, new, load = plans[w - 1], plans[w], trace.load[w]
        t0 = time.perf_counter()
        rel = relabel(old, new)
        aware = swap_back(old, rel, load)
        seconds += time.perf_counter() - t0
        base = score(new, load).summary()["gpu_imbalance"]
        for name, p in zip(names, (new, rel, aware)):
            moves[name] += count_moves(old, p)["moves"]
            imb = score(p, load).summary()["gpu_imbalance"]
            imbalance[name] += imb
            worst_rise = max(worst_rise, imb - base)
    pairs = trace.windows - 1
    slots = trace.layers * topo.slots
    scratch = moves[names[0]]
    rows = [{"plan": name, "moves": f"{moves[name] / pairs:,.0f}", "share": moves[name] / pairs / slots,
             "vs": moves[name] / scratch, "imbalance": imbalance[name] / pairs} for name in names]
    columns = [("plan", "plan of window t given window t-1's"), ("moves", "replicas moved per rebalance"),
               ("share", "of all slots"), ("vs", "vs scratch"), ("imbalance", "in-sample GPU imb.")]
    note = (f"{pairs} consecutive pairs of {V3.name} ({topo.policy}, 32 GPUs / 4 nodes / 288 slots, strategy "
            f"{strategy}); largest rise of any layer-mean in-sample imbalance over the plan from scratch: "
            f"{worst_rise:+.1e}; relabel + swap-back {seconds / pairs * 1e3:.0f} ms per pair")
    return rows_table(rows, columns, style) + "\n" + note


def budget_table(strategy: str, style: str) -> str:
    """Replay of the shipped synthetic trace with several move budgets."""
    trace = read_trace(str(V3))
    topo = resolve(trace.experts, 32, 4, slots=288, groups=trace.groups)
    fc = parse_forecast("last")
    rows = []
    runs = [("from scratch", False, None), ("aware, no cap", True, None)]
    runs += [(f"--max-moves {m}", True, m) for m in (256, 64, 16, 4, 0)]
    for label, aware, cap in runs:
        s = replay(trace, topo, every=1, forecast=fc, strategy=strategy, migration_aware=aware, max_moves=cap).summary
        rows.append({"run": label, "moves_per_rebalance": f"{s['moves_per_rebalance']:,.0f}",
                     "served_gpu_imbalance": s["served_gpu_imbalance"], "served_balancedness": s["served_balancedness"],
                     "runtime_s": s["runtime_s"]})
    columns = [("run", "replay (every window, forecast last)"), ("moves_per_rebalance", "moves / rebalance"),
               ("served_gpu_imbalance", "served imb."), ("served_balancedness", "served bal."), ("runtime_s", "s")]
    return rows_table(rows, columns, style)


def speed_table(strategy: str, style: str) -> str:
    """Wall time of replay on 100 windows of a DeepSeek-V3-shaped trace (58 x 256), 32 GPUs / 4 nodes / 288 slots."""
    trace = generate(58, 256, 100, seed=0)
    topo = resolve(trace.experts, 32, 4, slots=288)
    fc = parse_forecast("last")
    rows = []
    for every, aware in ((1, True), (1, False), (4, True)):
        t0 = time.perf_counter()
        s = replay(trace, topo, every=every, forecast=fc, strategy=strategy, migration_aware=aware).summary
        rows.append({"run": f"--every {every}" + ("" if aware else " --no-migration-aware"),
                     "rebalances": s["rebalances"], "seconds": time.perf_counter() - t0,
                     "ms_per_rebalance": (time.perf_counter() - t0) / s["rebalances"] * 1e3,
                     "served_gpu_imbalance": s["served_gpu_imbalance"],
                     "moves_per_rebalance": f"{s['moves_per_rebalance']:,.0f}"})
    columns = [("run", f"replay, 100 windows, strategy {strategy}"), ("rebalances", "rebalances"),
               ("seconds", "wall s"), ("ms_per_rebalance", "ms / rebalance"),
               ("served_gpu_imbalance", "served imb."), ("moves_per_rebalance", "moves / rebalance")]
    return rows_table(rows, columns, style)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="balanced")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--skip-real", action="store_true", help="skip the real ESFT traces")
    parser.add_argument("--only", choices=("forecasts", "previous", "budget", "speed"), default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 is faster on a busy machine: these are small tensors)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    style = "markdown" if args.markdown else "simple"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    sections = [
        ("forecasts", "1. Forecasts on real ESFT DeepSeek-V2-Lite steps (rebalance every step, history: all)",
         forecasts_table),
        ("previous", "2. plan --previous on consecutive windows", previous_table),
        ("budget", "3. The move budget in replay", budget_table),
        ("speed", "4. replay speed", speed_table),
    ]
    for key, title, fn in sections:
        if args.only and key != args.only:
            continue
        if key == "forecasts" and (args.skip_real or not REAL.is_dir()):
            print(f"\n{title}: skipped ({'--skip-real' if args.skip_real else f'{REAL} not present'})")
            continue
        t0 = time.perf_counter()
        body = fn(args.strategy, style)
        print(f"\n{title}  [{time.perf_counter() - t0:.1f} s]\n{body}")


if __name__ == "__main__":
    main()
