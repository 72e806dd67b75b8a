"""The Python API: what the CLI calls, and what notebooks and engines import."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .metrics import Score, score
from .placement import Placement
from .strategies import get_strategy, plan
from .topology import Topology, resolve
from .trace import Trace


def load_trace(path: str, fmt: str | None = None, *, window: int | None = None, windows: str | None = None) -> Trace:
    """Read a trace file (any supported format), summing every ``window`` steps and keeping ``windows`` A:B.

    The reader applies both while reading where the format allows (safetensors),
    so they also bound the memory a huge trace needs.
    """
    from .traces import read_trace

    return read_trace(path, fmt, window=window, windows=windows)


@dataclass
class PlanResult:
    """A placement with its score on the load it was planned from."""

    placement: Placement
    score: Score
    runtime_ms: float
    strategy: str


def plan_load(load: torch.Tensor, topo: Topology, strategy: str = "balanced", *, seed: int = 0,
              device: str = "cpu") -> PlanResult:
    """Plan ``load`` [L, E] with a named strategy, timing only the strategy itself."""
    strat = get_strategy(strategy)
    load = load.to(torch.float64)
    t0 = time.perf_counter()
    placement = plan(load, topo, strat, seed=seed, device=device)
    ms = (time.perf_counter() - t0) * 1e3
    return PlanResult(placement, score(placement, load), ms, strategy)


def evaluate(placement: Placement, load: torch.Tensor | Trace) -> Score:
    """Score an existing placement on a load matrix [L, E] or on a trace's summed windows."""
    if isinstance(load, Trace):
        load = load.total()
    return score(placement, load.to(torch.float64))


FAILURE_MODEL = ("replicas on the failed GPUs are gone; each expert's load is shared evenly by its surviving replicas; "
                 "experts with no surviving replica are lost and their tokens served by no GPU (left out of the loads)")


def evaluate_failure(placement: Placement, load: torch.Tensor, failed: list[int],
                     dispatch: str = "even") -> tuple[Placement, Score, dict | None]:
    """Score ``placement`` on ``load`` [L, E] as it runs once ``failed`` GPUs are gone.

    Returns the placement as it runs (failed slots empty), its score, and a
    summary of the loss (lost experts, lost load share, figures before the
    failure); with no failed GPUs, the placement, its score and None.
    ``dispatch`` is ``even`` or ``lp`` (:mod:`eplb_cli.dispatch`).
    """
    from .metrics import fail_gpus, lost_experts

    from .dispatch import check_dispatch, lp_score

    scorer = lp_score if check_dispatch(dispatch) == "lp" else score
    before = scorer(placement, load)
    if not failed:
        return placement, before, None
    broken = fail_gpus(placement, failed)
    lost = lost_experts(broken)
    summary = before.summary()
    failure = {
        "failed_gpus": sorted(set(failed)), "model": FAILURE_MODEL,
        "lost_experts": lost.nonzero().tolist(),
        "lost_load_share": float((load * lost).sum() / load.sum()),
        "gpu_imbalance_before": summary["gpu_imbalance"], "balancedness_before": summary["balancedness"],
    }
    return broken, scorer(broken, load), failure


def rebalance_experts(weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int,
                      *, strategy: str = "balanced", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop-in for DeepSeek's ``rebalance_experts``: returns (phy2log, log2phy, logcnt).

    Same arguments and return shapes as DeepSeek's function (vLLM and SGLang
    call it this way); the policy follows DeepSeek's rule (hierarchical when
    ``num_groups % num_nodes == 0``), read as ``eplb plan --policy auto`` reads
    it: one group on one node is the global policy, which is what DeepSeek's
    hierarchical code computes in that case. So the result is exactly what
    ``eplb plan`` writes for the same load, topology and strategy.
    ``log2phy`` is padded to ``num_replicas - experts + 1`` columns as
    DeepSeek's is; each expert's slots are listed in increasing order.
    """
    weight = torch.as_tensor(weight)
    layers, experts = weight.shape
    topo = resolve(experts=experts, gpus=num_gpus, nodes=num_nodes, slots=num_replicas, groups=num_groups,
                   policy="auto")
    placement = plan(weight.to(torch.float64), topo, get_strategy(strategy), seed=seed, device=str(weight.device))
    width = num_replicas - experts + 1
    compact = placement.log2phy
    log2phy = torch.full((layers, experts, width), -1, dtype=torch.int64)
    log2phy[:, :, : compact.shape[2]] = compact
    dev = weight.device
    return placement.phy2log.to(dev), log2phy.to(dev), placement.logcnt.to(dev)
