"""Benchmark of plans over time: forecasts, migration-aware planning, the move budget, replay speed.

Run ``python examples/bench_replay.py`` from a checkout (``--skip-real`` when
``../shared/traces`` is absent). It prints four tables:

1. forecasts on the real ESFT DeepSeek-V2-Lite time series (served figures,
   every forecast including the oracle upper bound);
2. replicas moved between plans of consecutive windows of the shipped
   synthetic DeepSeek-V3 trace: from scratch, relabelled, relabelled and
   swapped back, with the in-sample imbalance of each;
3. the ``--max-moves`` trade-off in a replay of that trace;
4. the wall time of ``replay`` on 100 windows of a DeepSeek-V3-shaped trace;
5. the moves-versus-balance frontier (``plan --previous --frontier``) on
   consecutive windows of the shipped synthetic trace, both policies, with
   the time of the whole frontier and of one plan at 25% of the unlimited
   plan's moves (``--max-moves P%``);
6. a production-length replay: 1000 windows x 94 layers x 512 experts,
   64 GPUs, ``--every 1``, ``balanced``, its wall time and where the time
   of a rebalance goes (``--production-windows`` sets the length).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from eplb_cli.formats import read_trace  # noqa: E402  (needs ROOT on sys.path in a bare checkout)
from eplb_cli.metrics import ServedTally, count_moves, live_gpus, score, window_gpu_loads  # noqa: E402
from eplb_cli.planning.budget import MoveBudget  # noqa: E402
from eplb_cli.planning.forecast import parse_forecast  # noqa: E402
from eplb_cli.planning.frontier import frontier  # noqa: E402
from eplb_cli.planning.migration import budgeted, relabel, swap_back  # noqa: E402
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
    runs += [(f"--max-moves {100 * s:g}%", True, MoveBudget(share=s)) for s in (0.05, 0.01)]
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


def frontier_tables(strategy: str, style: str) -> str:
    """The frontier on consecutive windows (t, t + 1) of the shipped trace, mean over pairs, both policies."""
    trace = read_trace(str(V3))
    strat = get_strategy(strategy)
    pairs = list(range(0, trace.windows - 1, 4))
    blocks = []
    for policy in ("global", "hierarchical"):
        topo = resolve(trace.experts, 32, 4, slots=288, groups=trace.groups, policy=policy)
        sums: dict[str, dict[str, float]] = {}
        seconds, plan_s, plan_gap, plan_share = [], [], [], []
        for t in pairs:
            old, new, load = plan(trace.load[t], topo, strat), plan(trace.load[t + 1], topo, strat), trace.load[t + 1]
            t0 = time.perf_counter()
            rows = frontier(old, new, load)
            seconds.append(time.perf_counter() - t0)
            for r in rows:
                acc = sums.setdefault(r.budget, {})
                for key in ("gpu_imbalance", "gap", "moves", "moves_inter_node", "bytes_moved", "transfer_s"):
                    acc[key] = acc.get(key, 0.0) + getattr(r, key)
            # One plan at a quarter of the unlimited plan's moves, as plan --previous --max-moves P% makes it.
            goal = swap_back(old, relabel(old, new), load)
            quarter = MoveBudget(share=rows[-1].moves / 4 / (trace.layers * topo.slots))
            t0 = time.perf_counter()
            got = budgeted(old, goal, load, quarter)
            plan_s.append(time.perf_counter() - t0)
            plan_gap.append(score(got, load).summary()["gpu_imbalance"] / rows[-1].gpu_imbalance - 1)
            plan_share.append(quarter.share)
        n = len(pairs)
        table = [{"budget": b, **{k: v / n for k, v in acc.items()}} for b, acc in sums.items()]
        for row in table:
            row["moves"] = f"{row['moves']:,.0f}"
            row["moves_inter_node"] = f"{row['moves_inter_node']:,.0f}"
            row["bytes_moved"] = f"{row['bytes_moved'] / 2**30:,.1f} GiB"
            row["transfer_s"] = f"{row['transfer_s']:.3f}"
        columns = [("budget", f"{policy}: budget (of all slots)"), ("gpu_imbalance", "GPU imb."),
                   ("gap", "gap to unlimited"), ("moves", "moves"), ("moves_inter_node", "inter-node"),
                   ("bytes_moved", "bytes"), ("transfer_s", "transfer s")]
        note = (f"{n} pairs (t, t+1), t = {pairs[0]}, {pairs[1]}, ..., {pairs[-1]}; 32 GPUs / 4 nodes / 288 slots; "
                f"42 MiB per replica, 450 GB/s NVLink, 50 GB/s network per GPU. Whole frontier: median "
                f"{statistics.median(seconds):.2f} s (max {max(seconds):.2f}). One plan at 25% of the unlimited "
                f"plan's moves (~{100 * statistics.median(plan_share):.1f}% of slots): median "
                f"{statistics.median(plan_s):.2f} s (max {max(plan_s):.2f}), gap to unlimited median "
                f"{100 * statistics.median(plan_gap):.3f}% (max {100 * max(plan_gap):.3f}%)")
        blocks.append(rows_table(table, columns, style) + "\n" + note)
    return "\n\n".join(blocks)


def production_table(strategy: str, style: str, windows: int = 1000, gpus: int = 64) -> str:
    """Wall time of replay --every 1 on a 1000 x 94 x 512 trace, and the CPU time of each part of a rebalance."""
    t0 = time.perf_counter()
    trace = generate(94, 512, windows, seed=0)
    made = time.perf_counter() - t0
    topo = resolve(trace.experts, gpus)
    fc = parse_forecast("last")
    runs = []
    for aware in (True, False):
        t0 = time.perf_counter()
        s = replay(trace, topo, every=1, forecast=fc, strategy=strategy, migration_aware=aware).summary
        runs.append((aware, s, time.perf_counter() - t0))
    # Where a rebalance's time goes, on the first 20 rebalances (process CPU time, so other load on the machine
    # does not count).
    strat = get_strategy(strategy)
    parts = dict.fromkeys(("plan", "relabel", "swap back", "scoring"), 0.0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    serving = plan(trace.load[0], topo, strat)
    live = live_gpus(topo)
    count = min(20, windows - 1)
    for w in range(1, count + 1):
        c0 = time.process_time()
        fresh = plan(trace.load[w - 1], topo, strat)
        c1 = time.process_time()
        moved = relabel(serving, fresh)
        c2 = time.process_time()
        moved = swap_back(serving, moved, trace.load[w - 1])
        c3 = time.process_time()
        ServedTally().add(window_gpu_loads(moved, trace.load[w:w + 1]), live)
        count_moves(serving, moved)
        c4 = time.process_time()
        for key, dt in zip(parts, (c1 - c0, c2 - c1, c3 - c2, c4 - c3)):
            parts[key] += dt
        serving = moved
    torch.set_num_threads(before)
    rows = [{"run": "--every 1" + ("" if aware else " --no-migration-aware"), "rebalances": s["rebalances"],
             "wall_s": f"{wall:,.1f}", "ms": f"{wall / s['rebalances'] * 1e3:,.1f}",
             "moves": f"{s['moves_per_rebalance']:,.0f}", "served": s["served_balancedness"]}
            for aware, s, wall in runs]
    columns = [("run", f"replay, {windows} windows x 94 x 512, {gpus} GPUs"), ("rebalances", "rebalances"),
               ("wall_s", "wall s"), ("ms", "ms / rebalance"), ("moves", "moves / rebalance"),
               ("served", "served bal.")]
    split = ", ".join(f"{k} {v / count * 1e3:,.1f} ms" for k, v in parts.items())
    return (rows_table(rows, columns, style) + f"\nCPU time of one migration-aware rebalance (mean of the first {count}): "
            f"{split}; trace generated in {made:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="balanced")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--skip-real", action="store_true", help="skip the real ESFT traces")
    parser.add_argument("--only", choices=("forecasts", "previous", "budget", "speed", "frontier", "production"),
                        default=None)
    parser.add_argument("--production-windows", type=int, default=1000, help="length of the production-length replay")
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
        ("frontier", "5. Moves versus balance (plan --previous --frontier)", frontier_tables),
        ("production", "6. Production-length replay", production_table),
    ]
    for key, title, fn in sections:
        if args.only and key != args.only:
            continue
        if key == "forecasts" and (args.skip_real or not REAL.is_dir()):
            print(f"\n{title}: skipped ({'--skip-real' if args.skip_real else f'{REAL} not present'})")
            continue
        t0 = time.perf_counter()
        body = (fn(args.strategy, style, args.production_windows) if key == "production" else fn(args.strategy, style))
        print(f"\n{title}  [{time.perf_counter() - t0:.1f} s]\n{body}")


if __name__ == "__main__":
    main()
