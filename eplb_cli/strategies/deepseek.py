"""DeepSeek's reference EPLB, written independently from its published description.

The baseline every other strategy is compared against, so it is kept exact,
not improved: greedy replication (each redundant slot goes to the expert with
the largest load per replica), LPT packing with exactly ``n / packs`` items per
pack (largest item first, to the lightest pack that still has room), and the
hierarchical policy (groups to nodes, replicate within nodes, replicas to GPUs).
Like DeepSeek's ``eplb.py`` (and the copies in vLLM and SGLang), packing loops
in Python over layers and items; its runtime is what those users pay today.
Reference: https://github.com/deepseek-ai/EPLB (README example reproduced in
tests/test_deepseek.py, and checked layer by layer against SGLang's shipped copy
on the real DeepSeek-V3 traces when SGLang is installed). To stay exact it keeps
DeepSeek's numerics: float32 loads and torch's default sort, whose order among
equal loads (common: replicas of one expert carry equal loads) decides packing.
"""

from __future__ import annotations

import torch

from ..topology import Topology
from .base import Strategy


def lpt_pack(weight: torch.Tensor, packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack each row's items into ``packs`` packs of equal item count.

    Returns (pack of each item, position of the item within its pack).
    """
    rows, n = weight.shape
    per_pack = n // packs
    if per_pack == 1:
        ids = torch.arange(n, dtype=torch.int64).expand(rows, n).clone()
        return ids, torch.zeros_like(ids)
    order = weight.sort(dim=-1, descending=True).indices.tolist()
    w = weight.tolist()
    pack_of = [[0] * n for _ in range(rows)]
    rank_of = [[0] * n for _ in range(rows)]
    for r in range(rows):
        load = [0.0] * packs
        count = [0] * packs
        wr, po, ro = w[r], pack_of[r], rank_of[r]
        for item in order[r]:
            best = -1
            for p in range(packs):
                if count[p] < per_pack and (best < 0 or load[p] < load[best]):
                    best = p
            po[item] = best
            ro[item] = count[best]
            load[best] += wr[item]
            count[best] += 1
    return torch.tensor(pack_of, dtype=torch.int64), torch.tensor(rank_of, dtype=torch.int64)


def greedy_replicate(weight: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Give each of ``slots - n`` extra replicas to the expert with the largest load per replica.

    Returns (expert of each physical slot, replica rank of each slot, replica count per expert).
    """
    rows, n = weight.shape
    phy2log = torch.arange(slots, dtype=torch.int64).repeat(rows, 1)
    rank = torch.zeros(rows, slots, dtype=torch.int64)
    count = torch.ones(rows, n, dtype=torch.int64)
    r = torch.arange(rows)
    for p in range(n, slots):
        hot = (weight / count).max(dim=-1).indices
        phy2log[:, p] = hot
        rank[:, p] = count[r, hot]
        count[r, hot] += 1
    return phy2log, rank, count


def _inverse(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv.scatter_(1, perm, torch.arange(perm.size(1), dtype=torch.int64).expand(perm.shape))
    return inv


def hierarchical(weight: torch.Tensor, slots: int, groups: int, nodes: int, gpus: int) -> torch.Tensor:
    """DeepSeek's hierarchical rebalance; returns phy2log [L, S]."""
    layers, experts = weight.shape
    group_size = experts // groups
    groups_per_node = groups // nodes
    slots_per_gpu = slots // gpus
    experts_per_node = experts // nodes

    # 1. groups to nodes, then renumber experts node-major ("mlog" ids).
    group_load = weight.unflatten(-1, (groups, group_size)).sum(-1)
    node_of_group, rank_in_node = lpt_pack(group_load, nodes)
    first_mlog = (node_of_group * groups_per_node + rank_in_node) * group_size
    log2mlog = (first_mlog.unsqueeze(-1) + torch.arange(group_size)).flatten(-2)
    mlog2log = _inverse(log2mlog)

    # 2. replicate within each node.
    node_weight = weight.gather(-1, mlog2log).view(-1, experts_per_node)
    phy2mlog, _, mlogcnt = greedy_replicate(node_weight, slots // nodes)

    # 3. replicas to the node's GPUs.
    replica_load = (node_weight / mlogcnt).gather(-1, phy2mlog)
    gpu_of, rank_in_gpu = lpt_pack(replica_load, gpus // nodes)
    pphy2phy = _inverse(gpu_of * slots_per_gpu + rank_in_gpu)
    pphy2mlog = phy2mlog.gather(-1, pphy2phy)
    offsets = torch.arange(0, experts, experts_per_node).view(1, -1, 1)
    pphy2mlog = (pphy2mlog.view(layers, nodes, -1) + offsets).flatten(-2)
    return mlog2log.gather(-1, pphy2mlog)


class DeepSeekStrategy(Strategy):
    """DeepSeek's reference EPLB: greedy replication + LPT packing."""

    name = "deepseek"
    description = "DeepSeek's reference EPLB (greedy replicas, LPT packing); the baseline, kept exact"

    def plan(self, load: torch.Tensor, topo: Topology, *, seed: int = 0) -> torch.Tensor:
        weight = load.detach().to("cpu", torch.float32)
        if topo.hierarchical:
            out = hierarchical(weight, topo.slots, topo.groups, topo.nodes, topo.gpus)
        else:
            out = hierarchical(weight, topo.slots, 1, 1, topo.gpus)
        return out.to(load.device)
