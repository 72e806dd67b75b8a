"""Token dispatch: how an expert's tokens are split over its replicas, and the GPU loads that follow.

``even``
    every replica of expert e carries load[e] / count[e] (DeepSeek's EPLB
    model and the one every other figure in eplb uses);
``lp``
    the split that minimises the busiest GPU of each window and layer, given
    the placement. SGLang's ``--ep-dispatch-algorithm lp`` sets up this LP per
    layer (python/sglang/srt/eplb/lp_matrices_prep.py in sgl-project/sglang:
    minimise t such that every GPU's load, fixed single-replica experts plus
    the replicated experts' shares, is at most t) and solves it with ECOS
    (absolute tolerance 3e-2, at most 100 iterations), then sends each token
    to a replica drawn with the solved shares (expert_location_dispatch.py).
    Here it is the exact optimum of that LP for each window, so it bounds
    what such a dispatcher can recover from a placement.

The LP per (window, layer) is a min-max flow: experts with replicas on one GPU
only put all their load there (a base load b[g]); an expert with replicas on
several GPUs may send any share of its load to each of them. The least
achievable busiest GPU is T* = max over GPU sets U of (b(U) + the load of
experts whose replicas all lie in U) / |U|. :func:`lp_gpu_loads` finds it by
augmenting paths, batched over every row at once: start from the even split
and a lower bound T (the mean GPU load, the largest base load); while some GPU
is above T, move load along a shortest path of GPUs that share an expert
(GPU g can pass load to GPU h through any expert that has tokens on g and a
replica on h) to a GPU below T; when no GPU below T is reachable, the GPUs
that are reachable form a closed set whose load cannot leave, so their mean
load is a better lower bound and T rises to it. At the end every GPU is at
most T (up to 1e-10 of the mean GPU load), T is a lower bound, so the busiest GPU is
optimal. Under the hierarchical policy the GPU is still the unit (replicas of
one expert sit on one node, so the flow stays inside it).
"""

from __future__ import annotations

import torch

from .errors import EplbError
from .metrics import Score, live_gpus, lower_bound, node_loads, window_gpu_loads
from .placement import Placement
from .threads import one_thread
from .validation import DISPATCH_MODES, dispatch_mode

__all__ = ["DISPATCH_MODES", "check_dispatch", "dispatch_gpu_loads", "lp_gpu_loads", "lp_score", "lp_split"]

_TOL = 1e-10
"""Relative slack (of the mean GPU load) below which a GPU counts as at the target level."""


def check_dispatch(mode: str) -> str:
    """``mode`` if it is a dispatch model eplb knows (:data:`DISPATCH_MODES`); else an :class:`EplbError`."""
    return dispatch_mode(mode)


def _replicas_per_gpu(placement: Placement) -> torch.Tensor:
    """Replicas of each expert on each GPU, float64 [L, E, G]."""
    topo = placement.topology
    layers, slots = placement.phy2log.shape
    e = topo.experts
    gpu_of = torch.arange(slots) // topo.slots_per_gpu
    key = torch.where(placement.phy2log >= 0, placement.phy2log, e)
    cnt = torch.zeros(layers, (e + 1) * topo.gpus, dtype=torch.float64)
    cnt.scatter_add_(1, key * topo.gpus + gpu_of, torch.ones(layers, slots, dtype=torch.float64))
    return cnt.view(layers, e + 1, topo.gpus)[:, :e]


def lp_gpu_loads(placement: Placement, loads: torch.Tensor, max_steps: int | None = None) -> torch.Tensor:
    """GPU loads under the optimal (min-max) split of each expert's tokens over its replicas.

    ``loads`` is float [W, L, E] (or [L, E]); returns float64 [W, L, G] (or
    [L, G]). Every expert's load goes to GPUs that hold a replica of it, each
    (window, layer) row gets the split that minimises its busiest GPU, and
    the total per row is unchanged. See the module doc for the method;
    ``max_steps`` bounds its loop (default 4 G (R + G) + 64 for G GPUs and R
    experts with replicas on several GPUs, far more than it takes), past
    which the split is feasible but may not be optimal.
    """
    base, y, _ = _solve(placement, loads, max_steps)
    return base + y.sum(dim=-2)


def lp_split(placement: Placement, load: torch.Tensor, max_steps: int | None = None) -> torch.Tensor:
    """The optimal split itself: tokens of each expert sent to each GPU, float64 [L, E, G] for ``load`` [L, E]."""
    _, y, order = _solve(placement, load, max_steps)
    per_gpu = _replicas_per_gpu(placement)
    even = per_gpu / per_gpu.sum(dim=2, keepdim=True).clamp(min=1)
    split = load.to(torch.float64).unsqueeze(2) * even
    index = order.unsqueeze(2).expand(-1, -1, split.shape[2])
    real = (per_gpu > 0).sum(dim=2).gather(1, order) > 1  # padding columns keep their even split
    return split.scatter(1, index, torch.where(real.unsqueeze(2), y, split.gather(1, index)))


def _solve(placement: Placement, loads: torch.Tensor,
           max_steps: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Base loads [.., L, G], the optimal split of the multi-GPU experts [.., L, R, G], and their ids [L, R].

    Padding columns of the split (layers with fewer than R multi-GPU experts) are zero and repeat a real id.
    """
    flat = loads.dim() == 2
    if flat:
        loads = loads.unsqueeze(0)
    topo = placement.topology
    windows, layers, e = loads.shape
    if layers != placement.layers or e != topo.experts:
        raise EplbError(f"loads: expected [windows, {placement.layers}, {topo.experts}], got {tuple(loads.shape)}")
    g = topo.gpus
    per_gpu = _replicas_per_gpu(placement)  # [L, E, G]
    holds = per_gpu > 0
    even = per_gpu / per_gpu.sum(dim=2, keepdim=True).clamp(min=1)
    x = loads.to(torch.float64)
    # Experts on one GPU: fixed base load. Experts on several: free to split (at most S - E per layer).
    multi = holds.sum(dim=2) > 1  # [L, E]
    width = max(int(multi.sum(dim=1).max()), 1)
    order = torch.sort(multi.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :width]  # [L, R]
    real = multi.gather(1, order)  # [L, R]
    fixed = torch.where(multi.unsqueeze(2), 0.0, even)  # [L, E, G]
    base = torch.einsum("wle,leg->wlg", x, fixed)
    adj = holds.gather(1, order.unsqueeze(2).expand(-1, -1, g)) & real.unsqueeze(2)  # [L, R, G]
    frac = even.gather(1, order.unsqueeze(2).expand(-1, -1, g)) * real.unsqueeze(2)
    xm = x.gather(2, order.unsqueeze(0).expand(windows, -1, -1)) * real  # [W, L, R]
    y = (xm.unsqueeze(3) * frac).reshape(-1, width, g)  # [W * L, R, G], starts at the even split
    rows = windows * layers
    with one_thread():
        _min_max(base.reshape(rows, g), y, adj.unsqueeze(0).expand(windows, -1, -1, -1).reshape(rows, width, g),
                 live_gpus(topo), max_steps)
    y = y.view(windows, layers, width, g)
    if flat:
        return base.squeeze(0), y.squeeze(0), order
    return base, y, order


def _min_max(base: torch.Tensor, y: torch.Tensor, adj: torch.Tensor, live: torch.Tensor,
             max_steps: int | None) -> None:
    """Make ``y`` [B, R, G] (expert r's tokens on each GPU) a min-max split, in place.

    ``base`` [B, G] is the fixed load, ``adj`` [B, R, G] says which GPUs may
    take expert r's tokens; ``y`` must start as a feasible split (e.g. even).
    Rows leave the loop as soon as no GPU is above their target.
    """
    g = base.shape[1]
    load = base + y.sum(dim=1)
    mean = load[:, live].sum(dim=1) / int(live.sum())
    tol = _TOL * mean.clamp(min=1e-300)
    target = torch.maximum(mean, base.max(dim=1).values)
    idx = torch.arange(base.shape[0])
    state = [base, y.clone(), adj.to(torch.float64), load, tol, target]
    steps = max_steps if max_steps is not None else 4 * g * (y.shape[1] + g) + 64
    for _ in range(steps):
        going = (state[3] > (state[5] + state[4]).unsqueeze(1)).any(dim=1)
        if not bool(going.all()):
            y[idx] = state[1]
            keep = going.nonzero().squeeze(1)
            idx = idx[keep]
            state = [t.index_select(0, keep) for t in state]
        if idx.numel() == 0:
            return
        _augment(state[0], state[1], state[2], state[3], state[4], state[5], live)
    y[idx] = state[1]


def _augment(base: torch.Tensor, y: torch.Tensor, adj: torch.Tensor, load: torch.Tensor, tol: torch.Tensor,
             target: torch.Tensor, live: torch.Tensor) -> None:
    """One step for rows that have a GPU above their target: push load along one shortest path, or raise the target.

    Updates ``y``, ``load`` and ``target`` in place.
    """
    b, g = base.shape
    rows = torch.arange(b)
    over = load > (target + tol).unsqueeze(1)
    under = load < (target - tol).unsqueeze(1)
    # Residual edges g -> h: some expert has tokens on g and a replica on h.
    has = (y > tol.view(-1, 1, 1)).to(torch.float64)
    edge = (torch.bmm(has.transpose(1, 2), adj) > 0) & ~torch.eye(g, dtype=torch.bool)
    # Breadth-first search from every GPU above the target, recording parents, until each row reaches one below.
    reached, frontier = over.clone(), over.clone()
    parent = torch.full((b, g), -1, dtype=torch.int64)
    for _ in range(g):
        step = frontier.unsqueeze(2) & edge  # [B, from, to]
        new = step.any(dim=1) & ~reached
        if not bool(new.any()):
            break
        parent = torch.where(new, step.to(torch.int8).argmax(dim=1), parent)
        reached |= new
        frontier = new
        if bool((reached & under).any(dim=1).all()):
            break
    hit = reached & under
    found = hit.any(dim=1)
    # No GPU below the target is reachable: the reachable GPUs are closed (their load cannot leave),
    # so their mean load is a lower bound on the optimum, and the target rises to it.
    if not bool(found.all()):
        closed = reached & live
        level = (load * closed).sum(dim=1) / closed.sum(dim=1).clamp(min=1)
        target.copy_(torch.where(found, target, torch.maximum(target, level)))
    if not bool(found.any()):
        return
    # The path from sink back to source; -1 past the source.
    sink = hit.to(torch.int8).argmax(dim=1)
    nodes = [torch.where(found, sink, -1)]
    cur, alive = sink, found.clone()
    for _ in range(g):
        prev = parent[rows, cur]
        alive &= prev >= 0
        if not bool(alive.any()):
            break
        nodes.append(torch.where(alive, prev, -1))
        cur = torch.where(alive, prev, cur)
    path = torch.stack(nodes, dim=1)  # [B, n]
    source = _last_valid(path)
    amount = torch.minimum(load.gather(1, source.clamp(min=0).unsqueeze(1)).squeeze(1) - target,
                           target - load.gather(1, sink.unsqueeze(1)).squeeze(1))
    for i in range(path.shape[1] - 1):
        to, src = path[:, i].clamp(min=0), path[:, i + 1]
        cap = (y[rows, :, src.clamp(min=0)] * adj[rows, :, to]).sum(dim=1)
        amount = torch.where(src >= 0, torch.minimum(amount, cap), amount)
    amount = torch.where(found, amount.clamp(min=0), 0.0)
    for i in range(path.shape[1] - 1):
        to, src = path[:, i].clamp(min=0), path[:, i + 1]
        on = (src >= 0).to(torch.float64).unsqueeze(1)
        src = src.clamp(min=0)
        movable = y[rows, :, src] * adj[rows, :, to] * on  # [B, R]
        take = torch.minimum((amount.unsqueeze(1) - (torch.cumsum(movable, dim=1) - movable)).clamp(min=0), movable)
        y[rows, :, src] -= take
        y[rows, :, to] += take
    load.copy_(base + y.sum(dim=1))


def _last_valid(nodes: torch.Tensor) -> torch.Tensor:
    """The last entry >= 0 of each row of ``nodes`` [B, n] (-1 when none)."""
    valid = nodes >= 0
    last = (valid.to(torch.int64) * torch.arange(nodes.shape[1])).argmax(dim=1)
    return torch.where(valid.any(dim=1), nodes.gather(1, last.unsqueeze(1)).squeeze(1), -1)


def dispatch_gpu_loads(placement: Placement, loads: torch.Tensor, mode: str = "even") -> torch.Tensor:
    """GPU loads [W, L, G] of ``placement`` on windows ``loads`` [W, L, E] under a dispatch ``mode``."""
    check_dispatch(mode)
    if mode == "lp":
        return lp_gpu_loads(placement, loads)
    return window_gpu_loads(placement, loads)


def lp_score(placement: Placement, load: torch.Tensor) -> Score:
    """:func:`eplb_cli.metrics.score` under LP dispatch, for ``load`` [L, E].

    A replica carries its GPU's share of the expert divided by the expert's
    replicas on that GPU. The lower bound is unchanged: it holds for any
    split (the busiest of an expert's c replicas carries at least load / c).
    """
    topo = placement.topology
    load = load.to(torch.float64)
    split = lp_split(placement, load)  # [L, E, G]
    per_gpu = _replicas_per_gpu(placement)
    per_replica = torch.where(per_gpu > 0, split / per_gpu.clamp(min=1), 0.0)  # [L, E, G]
    layers, slots = placement.phy2log.shape
    gpu_of = torch.arange(slots) // topo.slots_per_gpu
    key = placement.phy2log.clamp(min=0)
    slot = per_replica[torch.arange(layers).unsqueeze(1), key, gpu_of.unsqueeze(0)]
    slot = torch.where(placement.phy2log >= 0, slot, 0.0)
    gpu = split.sum(dim=1)
    return Score(gpu_load=gpu, node_load=node_loads(gpu, topo), slot_load=slot, lower=lower_bound(load, topo),
                 active=load.sum(-1) > 0, live=live_gpus(topo))
