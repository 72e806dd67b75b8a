"""Run several strategies on the same trace and topology and tabulate the results.

In-sample figures plan and score on the summed windows. Out-of-sample figures
plan on window t and score on window t + 1, as a server that rebalances every
window experiences; all pairs are planned in one batched call per chunk by
stacking windows along the layer dimension.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..dispatch import check_dispatch, lp_gpu_loads, lp_score
from ..metrics import ServedTally, count_moves, gpu_loads, live_gpus, score
from ..placement import Placement
from ..strategies import get_strategy, plan
from ..topology import Topology
from ..trace import Trace
from .migration import relabel

ROWS_PER_CALL = 1024  # rows (windows x layers) planned per call: bounds the working memory


@dataclass
class CompareRow:
    """One strategy's figures; ``as_dict`` gives the keys shared with ``plan --json``."""

    strategy: str
    placement: Placement
    summary: dict
    runtime_ms: float
    runtimes_ms: list[float]
    moves: int | None
    oos: dict | None

    def as_dict(self) -> dict:
        d = {"strategy": self.strategy, **self.summary, "runtime_ms": self.runtime_ms,
             "runtimes_ms": self.runtimes_ms, "moves": self.moves}
        if self.oos is not None:
            d.update(self.oos)
        return d


def time_plan(load: torch.Tensor, topo: Topology, name: str, *, repeat: int, seed: int, device: str) -> tuple[Placement, list[float]]:
    """Plan ``repeat`` times after one untimed warm-up; return the placement and each call's ms."""
    strat = get_strategy(name)
    placement = plan(load, topo, strat, seed=seed, device=device)
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        placement = plan(load, topo, strat, seed=seed, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return placement, times


def out_of_sample(trace: Trace, topo: Topology, name: str, *, seed: int = 0, device: str = "cpu",
                  max_pairs: int | None = None, dispatch: str = "even") -> dict | None:
    """Plan on window t, score on window t + 1; figures averaged over the pairs (None for one window).

    ``dispatch`` is ``even`` or ``lp`` (:mod:`eplb_cli.dispatch`).
    """
    w, layers, experts = trace.load.shape
    if w < 2:
        return None
    starts = torch.arange(w - 1)
    if max_pairs and len(starts) > max_pairs:
        starts = torch.linspace(0, w - 2, max_pairs).round().long().unique()
    strat = get_strategy(name)
    live = live_gpus(topo)
    tally = ServedTally()
    for chunk in starts.split(max(1, ROWS_PER_CALL // layers)):
        stacked = plan(trace.load[chunk].reshape(-1, experts), topo, strat, seed=seed, device=device)
        served = trace.load[chunk + 1].reshape(-1, experts)
        tally.add(lp_gpu_loads(stacked, served) if dispatch == "lp" else gpu_loads(stacked, served), live)
    return {"oos_gpu_imbalance": tally.imbalance, "oos_balancedness": tally.balancedness, "oos_pairs": len(starts)}


def compare(trace: Trace, topo: Topology, names: list[str], *, repeat: int = 3, seed: int = 0, device: str = "cpu",
            oos: bool = True, max_pairs: int | None = 64,
            progress: Callable[[str], None] | None = None, dispatch: str = "even") -> list[CompareRow]:
    """Run each named strategy on ``trace``.

    Moves are the replicas that differ from the first strategy's placement
    after relabelling GPUs to keep as many in place as possible. ``dispatch``
    (``even`` or ``lp``) is how every figure splits an expert's tokens.
    """
    check_dispatch(dispatch)
    scorer = lp_score if dispatch == "lp" else score
    for name in names:
        get_strategy(name)  # fail on a bad name before any work
    load = trace.total()
    rows: list[CompareRow] = []
    for name in names:
        if progress:
            progress(name)
        placement, times = time_plan(load, topo, name, repeat=repeat, seed=seed, device=device)
        # GPUs are interchangeable: count the moves left after the free relabelling.
        moves = count_moves(rows[0].placement, relabel(rows[0].placement, placement))["moves"] if rows else None
        rows.append(CompareRow(
            strategy=name,
            placement=placement,
            summary=scorer(placement, load).summary(),
            runtime_ms=statistics.median(times) if times else float("nan"),
            runtimes_ms=times,
            moves=moves,
            oos=out_of_sample(trace, topo, name, seed=seed, device=device, max_pairs=max_pairs,
                              dispatch=dispatch) if oos else None,
        ))
    return rows
