"""The moves-versus-balance frontier: what each move budget buys when planning from the placement served now.

:func:`frontier` plans from the old placement under a ladder of budgets,
each a share of all slots in total (``--max-moves 5%`` plans exactly these),
plus the unlimited plan: the plan from scratch, relabelled and swapped back
(``plan --previous`` without a budget). One greedy walk from the old
placement serves every budgeted row (:mod:`eplb_cli.planning.budget`). Each row
carries the GPU imbalance on the load, its gap to the unlimited plan, the
moves (intra-/inter-node), the bytes and the estimated transfer time
(:mod:`eplb_cli.planning.transfer`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import EplbError, arg
from ..metrics import count_moves, score
from ..placement import Placement
from ..threads import one_thread
from .budget import MoveBudget, budget_path
from .migration import check_compatible, follow
from .transfer import Links, transfer

SHARES = (0.0, 0.01, 0.02, 0.05, 0.10, 0.25, 0.50)
"""The budget ladder, as shares of all slots (layers x slots), before the unlimited row."""


@dataclass
class FrontierRow:
    """One budget of the frontier and the plan it buys."""

    budget: str  # "5%" (of all slots, in total) or "unlimited"
    max_moves: int | None  # moves allowed in total (None: unlimited)
    gpu_imbalance: float  # mean over layers of busiest / mean GPU load, on the load planned for
    gap: float  # gpu_imbalance / the unlimited plan's - 1
    balancedness: float
    moves: int
    moves_intra_node: int
    moves_inter_node: int
    bytes_moved: int
    transfer_s: float  # estimated (see eplb_cli.planning.transfer)


def frontier(old: Placement, new: Placement, load: torch.Tensor, *, shares: tuple[float, ...] = SHARES,
             links: Links | None = None) -> list[FrontierRow]:
    """Rows for ``shares`` of all slots and the unlimited plan, planning from ``old`` towards ``new`` on ``load`` [L, E].

    ``new`` is the plan from scratch for ``load``. Returns the rows in order
    of growing budget, the unlimited one last. The budgeted rows never get
    less balanced as the budget grows; the unlimited row continues them
    wherever the plan from scratch is at least as balanced as ``old`` in
    every layer (a weak strategy, or a load the old placement still suits,
    can make it the worse one: the budgeted walk then keeps the better).
    """
    if any(not 0.0 <= s <= 1.0 for s in shares):
        raise EplbError(f"{arg('shares', list(shares))}: each must be between 0 and 1")
    links = links or Links()
    check_compatible(old, new)
    load = load.to(torch.float64)
    totals = [MoveBudget(share=s).total(old.layers, old.topology.slots) for s in shares]
    with one_thread():
        goal = follow(old, new, load)
        plans = budget_path(old, goal, load).within_each(totals)
        reference = score(goal, load).summary()["gpu_imbalance"]
        rows = [_row(f"{100 * share:g}%", total, old, placement, load, reference, links)
                for share, total, placement in zip(shares, totals, plans)]
        rows.append(_row("unlimited", None, old, goal, load, reference, links))
    return rows


def _row(budget: str, total: int | None, old: Placement, placement: Placement, load: torch.Tensor, reference: float,
         links: Links) -> FrontierRow:
    summary = score(placement, load).summary()
    moves = count_moves(old, placement)
    sent = transfer(old, placement, links)
    return FrontierRow(
        budget=budget, max_moves=total, gpu_imbalance=summary["gpu_imbalance"],
        gap=summary["gpu_imbalance"] / reference - 1.0, balancedness=summary["balancedness"], **moves,
        bytes_moved=sent["bytes_moved"], transfer_s=sent["transfer_s"],
    )


def rows_as_dicts(rows: list[FrontierRow]) -> list[dict]:
    """Plain dicts for JSON and tables."""
    return [asdict(r) for r in rows]
