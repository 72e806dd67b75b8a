"""Benchmark of plans over time: forecasts, migration-aware planning, the move budget, replay speed,
scenario-robust planning and LP token dispatch.

Run ``python examples/bench_replay.py`` from a checkout (``--skip-real`` when
``../shared/traces`` is absent; ``--only robust`` etc. for one table). It prints:

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
   of a rebalance goes (``--production-windows`` sets the length);
7. ``replay --robust`` against its forecast on every ESFT series at 8 GPUs / 72
   slots and 16 / 80 (``--every 1``, forecast ``mean``): served balancedness,
   the share of the mean-to-oracle gap it closes per case and on average, p95
   of per-window imbalance, moves; then the shipped drifting synthetic trace
   (``--every 4``, forecasts ``last`` and ``ema:0.5``), where it must not lose;
8. the cost of the robust step per rebalance (CPU and wall time, best of 3,
   torch on one thread) against the plan itself, at 26 x 64 / 72 slots and 58 x 256 / 288 slots / 32 GPUs;
9. LP dispatch against even dispatch on the shipped and real traces, with how
   many replicated experts have replicas on more than one GPU (the room a
   dispatcher has).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from eplb_cli.dispatch import lp_gpu_loads  # noqa: E402
from eplb_cli.formats import read_trace  # noqa: E402  (needs ROOT on sys.path in a bare checkout)
from eplb_cli.metrics import ServedTally, count_moves, live_gpus, score, window_gpu_loads  # noqa: E402
from eplb_cli.placement import replica_counts  # noqa: E402
from eplb_cli.planning.budget import MoveBudget  # noqa: E402
from eplb_cli.planning.forecast import parse_forecast  # noqa: E402
from eplb_cli.planning.frontier import frontier  # noqa: E402
from eplb_cli.planning.migration import budgeted, relabel, swap_back  # noqa: E402
from eplb_cli.planning.replay import replay  # noqa: E402
from eplb_cli.planning.robust import robust_swaps, scenario_weights  # noqa: E402
from eplb_cli.report import rows_table  # noqa: E402
from eplb_cli.strategies import get_strategy, plan  # noqa: E402
from eplb_cli.synthetic import generate  # noqa: E402
from eplb_cli.threads import one_thread  # noqa: E402
from eplb_cli.topology import resolve  # noqa: E402

REAL = ROOT.parent / "shared" / "traces" / "esft-deepseek-v2-lite"
V3 = ROOT / "traces" / "deepseek-v3-synthetic.safetensors"
SHARED = ROOT.parent / "shared" / "traces"
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


def robust_table(strategy: str, style: str) -> str:
    """replay --robust against its forecast: ESFT series (share of the mean-to-oracle gap closed), then drift."""
    rows = []
    shares = []
    for name in ("intent.json", "summary.json"):
        trace = read_trace(str(REAL / name))
        for gpus, slots in ((8, 72), (16, 80)):
            topo = resolve(trace.experts, gpus, slots=slots)
            runs = {label: replay(trace, topo, every=1, forecast=parse_forecast(fc), strategy=strategy,
                                  robust=robust).summary
                    for label, fc, robust in (("mean", "mean", False), ("robust", "mean", True),
                                              ("oracle", "oracle", False))}
            mean, robust, oracle = (runs[k]["served_balancedness"] for k in ("mean", "robust", "oracle"))
            share = (robust - mean) / (oracle - mean)
            shares.append(share)
            rows.append({"case": f"{name} ({trace.windows} w), {gpus} GPUs / {slots} slots",
                         "mean": mean, "robust": robust, "oracle": oracle, "closed": f"{100 * share:.1f}%",
                         "p95": f"{runs['mean']['served_gpu_imbalance_p95']:.4f} -> "
                                f"{runs['robust']['served_gpu_imbalance_p95']:.4f}",
                         "moves": f"{runs['mean']['moves_per_rebalance']:,.0f} -> {runs['robust']['moves_per_rebalance']:,.0f}",
                         "ms": f"{_rebalance_ms(runs['mean']):.0f} -> {_rebalance_ms(runs['robust']):.0f}"})
    columns = [("case", "ESFT, --every 1, forecast mean"), ("mean", "mean bal."), ("robust", "--robust bal."),
               ("oracle", "oracle bal."), ("closed", "gap closed"), ("p95", "p95 window imb."),
               ("moves", "moves / rebalance"), ("ms", "ms / rebalance")]
    table = rows_table(rows, columns, style)
    note = (f"served balancedness; gap closed = (robust - mean) / (oracle - mean); average over the "
            f"{len(shares)} cases: {100 * sum(shares) / len(shares):.1f}%, smallest {100 * min(shares):.1f}%")
    drift = []
    trace = read_trace(str(V3))
    for policy in ("hierarchical", "global"):
        topo = resolve(trace.experts, 32, 4, slots=288, groups=trace.groups, policy=policy)
        for fc in ("last", "ema:0.5"):
            base = replay(trace, topo, every=4, forecast=parse_forecast(fc), strategy=strategy).summary
            rob = replay(trace, topo, every=4, forecast=parse_forecast(fc), strategy=strategy, robust=True).summary
            drift.append({"case": f"{V3.name}, {policy}, forecast {fc}", "base": base["served_balancedness"],
                          "robust": rob["served_balancedness"],
                          "diff": f"{rob['served_balancedness'] - base['served_balancedness']:+.4f}",
                          "moves": f"{base['moves_per_rebalance']:,.0f} -> {rob['moves_per_rebalance']:,.0f}",
                          "ms": f"{_rebalance_ms(base):.0f} -> {_rebalance_ms(rob):.0f}"})
    columns = [("case", "drifting synthetic trace, --every 4, 32 GPUs / 4 nodes / 288 slots"),
               ("base", "forecast bal."), ("robust", "--robust bal."), ("diff", "change"),
               ("moves", "moves / rebalance"), ("ms", "ms / rebalance")]
    return "\n".join([table, note, "", rows_table(drift, columns, style)])


def _rebalance_ms(summary: dict) -> float:
    """Wall ms per rebalance of a replay (planning, robust step, follow step and scoring)."""
    return summary["runtime_s"] / summary["rebalances"] * 1e3


def robust_cost_table(strategy: str, style: str) -> str:
    """CPU and wall time of one robust step (best of 3 each) against the plan itself, at the issue's two shapes."""
    def best(fn) -> tuple[float, float]:
        cpu, wall = [], []
        with one_thread():
            for _ in range(3):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
        return min(cpu) * 1e3, min(wall) * 1e3

    cases = []
    if REAL.is_dir():
        trace = read_trace(str(REAL / "intent.json"))
        history = trace.load[:-1]
        topo = resolve(trace.experts, 8, slots=72)
        cases.append((f"26 x 64, 72 slots / 8 GPUs, {history.shape[0]} scenarios (ESFT intent, mean)", topo,
                       history, history.mean(dim=0), None))
    trace = read_trace(str(V3))
    fc = parse_forecast("ema:0.5")
    history = trace.load[:20]
    for policy in ("global", "hierarchical"):
        topo = resolve(trace.experts, 32, 4, slots=288, groups=trace.groups, policy=policy)
        cases.append((f"58 x 256, 288 slots / 32 GPUs {policy}, 20 scenarios (synthetic, ema:0.5)", topo, history,
                      fc.predict(history), scenario_weights(fc, 20)))
        cases.append((f"58 x 256, 288 slots / 32 GPUs {policy}, 20 scenarios (synthetic, mean)", topo, history,
                      history.mean(dim=0), None))
    strat = get_strategy(strategy)
    rows = []
    for label, topo, history, forecast, weights in cases:
        planned = plan(forecast, topo, strat)
        plan_ms, _ = best(partial(plan, forecast, topo, strat))
        robust_ms, robust_wall = best(partial(robust_swaps, planned, history, forecast, weights=weights))
        rows.append({"case": label, "plan": plan_ms, "robust": robust_ms, "wall": robust_wall,
                     "ratio": robust_ms / plan_ms})
    columns = [("case", "one rebalance"), ("plan", "plan CPU ms"), ("robust", "robust step CPU ms"),
               ("wall", "robust step wall ms"), ("ratio", "robust / plan (CPU)")]
    return rows_table(rows, columns, style) + ("\nCPU time of this process and wall time, each the best of 3, torch on "
                                               "one thread (threads.one_thread); the first call also loads the "
                                               "robust step's compiled (Numba) kernel.")


def dispatch_table(strategy: str, style: str) -> str:
    """Even against LP dispatch: in-sample (plan and score the summed load) and served (replay), and the room."""
    cases = [("deepseek-v3-synthetic", str(V3), 32, 4, 288, "hierarchical", 4, "ema:0.5"),
             ("deepseek-v3-synthetic", str(V3), 32, 4, 288, "global", 4, "ema:0.5")]
    if SHARED.is_dir():
        cases += [("ESFT intent", str(REAL / "intent.json"), 8, 1, 72, "global", 1, "mean"),
                  ("ESFT intent", str(REAL / "intent.json"), 16, 1, 80, "global", 1, "mean"),
                  ("ESFT summary", str(REAL / "summary.json"), 8, 1, 72, "global", 1, "mean"),
                  ("SGLang V3 prefill_in1024", str(SHARED / "sglang-deepseek-v3" / "prefill_in1024.json"), 32, 4, 288,
                   "global", None, None),
                  ("SGLang V3 decode_in1000out1000", str(SHARED / "sglang-deepseek-v3" / "decode_in1000out1000.json"),
                   32, 4, 288, "global", None, None),
                  ("Qwen3-30B-A3B", str(SHARED / "qwen" / "qwen3-30b-a3b.csv"), 8, 1, 136, "global", None, None),
                  ("Mixtral-8x7B", str(SHARED / "mixtral-8x7b" / "humaneval.csv"), 4, 1, 12, "global", None, None)]
    rows = []
    for label, path, gpus, nodes, slots, policy, every, fc in cases:
        trace = read_trace(path)
        topo = resolve(trace.experts, gpus, nodes, slots=slots, groups=trace.groups, policy=policy)
        for strat_name in (strategy, "deepseek"):
            load = trace.total()
            placement = plan(load, topo, get_strategy(strat_name))
            even, lp = score(placement, load).summary(), _lp_summary(placement, load)
            row = {"case": f"{label}, {gpus} GPUs / {slots} slots, {policy}", "strategy": strat_name,
                   "in_even": even["balancedness"], "in_lp": lp, "spread": _spread(placement, load)}
            if every is not None:
                served = [replay(trace, topo, every=every, forecast=parse_forecast(fc), strategy=strat_name,
                                 dispatch=d).summary["served_balancedness"] for d in ("even", "lp")]
                row.update(out_even=served[0], out_lp=served[1], served=f"--every {every}, {fc}")
            rows.append(row)
    columns = [("case", "trace, cluster"), ("strategy", "strategy"), ("in_even", "in-sample even"),
               ("in_lp", "in-sample lp"), ("served", "replay"), ("out_even", "served even"), ("out_lp", "served lp"),
               ("spread", "hot replicas on >1 GPU")]
    note = ("balancedness (sum of mean / sum of max GPU load) with each expert's tokens split evenly over its replicas "
            "(even) or by the min-max split of each window (lp); last column: share of the load of replicated "
            "experts whose replicas sit on more than one GPU (what an LP dispatcher can move)")
    return rows_table(rows, columns, style) + "\n" + note


def _lp_summary(placement, load: torch.Tensor) -> float:
    """Balancedness under LP dispatch over the layers with load."""
    gpu = lp_gpu_loads(placement, load)
    active = load.sum(dim=1) > 0
    return float(gpu[active].mean(dim=1).sum() / gpu[active].max(dim=1).values.sum())


def _spread(placement, load: torch.Tensor) -> float:
    """Share of the load of experts with several replicas that sit on more than one GPU."""
    topo = placement.topology
    cnt = replica_counts(placement.phy2log, topo.experts)
    gpu_of = torch.arange(topo.slots) // topo.slots_per_gpu
    seen = torch.zeros(placement.layers, topo.experts, topo.gpus, dtype=torch.bool)
    key = placement.phy2log.clamp(min=0)
    seen[torch.arange(placement.layers).unsqueeze(1), key, gpu_of.unsqueeze(0)] = placement.phy2log >= 0
    replicated = cnt > 1
    spread = replicated & (seen.sum(dim=2) > 1)
    total = float((load * replicated).sum())
    return float((load * spread).sum()) / total if total > 0 else float("nan")
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
    parser.add_argument("--only", choices=("forecasts", "previous", "budget", "speed", "frontier", "production",
                                           "robust", "robust-cost", "dispatch"), default=None)
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
        ("robust", "7. replay --robust against its forecast", robust_table),
        ("robust-cost", "8. Cost of the robust step per rebalance", robust_cost_table),
        ("dispatch", "9. LP against even token dispatch", dispatch_table),
    ]
    for key, title, fn in sections:
        if args.only and key != args.only:
            continue
        if key in ("forecasts", "robust") and (args.skip_real or not REAL.is_dir()):
            print(f"\n{title}: skipped ({'--skip-real' if args.skip_real else f'{REAL} not present'})")
            continue
        t0 = time.perf_counter()
        body = (fn(args.strategy, style, args.production_windows) if key == "production" else fn(args.strategy, style))
        print(f"\n{title}  [{time.perf_counter() - t0:.1f} s]\n{body}")


if __name__ == "__main__":
    main()
