"""The failure model: a placement as it runs once some GPUs are gone, nothing re-planned.

Replicas on the failed GPUs are gone; each expert's load is shared evenly by
its surviving replicas; experts with no surviving replica are lost, and their
tokens are served by no GPU (left out of the loads).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .metrics import Score, score
from .placement import Placement, replica_counts

FAILURE_MODEL = ("replicas on the failed GPUs are gone; each expert's load is shared evenly by its surviving replicas; "
                 "experts with no surviving replica are lost and their tokens served by no GPU (left out of the loads)")


def fail_gpus(placement: Placement, gpus: list[int] | tuple[int, ...]) -> Placement:
    """``placement`` as it runs once ``gpus`` fail: their slots empty (-1), nothing re-planned.

    Each expert's load is then shared by its surviving replicas (scoring
    divides by the live replica count), and experts with no surviving replica
    are lost: their load is served by no GPU. The result is deliberately not
    validated, since lost experts make it an invalid plan; the topology uses
    the global policy so that the lower bound is that of any placement on the
    surviving GPUs.
    """
    topo = placement.topology
    dead = tuple(sorted(set(topo.excluded_gpus) | {int(g) for g in gpus}))
    failed = replace(topo, excluded_gpus=dead, policy="global")
    phy2log = placement.phy2log.clone()
    if dead:
        gone = torch.isin(torch.arange(topo.slots) // topo.slots_per_gpu, torch.tensor(dead))
        phy2log[:, gone] = -1
    return Placement(phy2log, failed)


def lost_experts(placement: Placement) -> torch.Tensor:
    """Bool [L, E]: experts with no replica on a live slot."""
    return replica_counts(placement.phy2log, placement.topology.experts) == 0


def evaluate_failure(placement: Placement, load: torch.Tensor, failed: list[int],
                     dispatch: str = "even") -> tuple[Placement, Score, dict | None]:
    """Score ``placement`` on ``load`` [L, E] as it runs once ``failed`` GPUs are gone.

    Returns the placement as it runs (failed slots empty), its score, and a
    summary of the loss (lost experts, lost load share, figures before the
    failure); with no failed GPUs, the placement, its score and None.
    ``dispatch`` is how tokens split over an expert's (surviving) replicas:
    ``even`` or ``lp`` (:mod:`eplb_cli.dispatch`).
    """
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
