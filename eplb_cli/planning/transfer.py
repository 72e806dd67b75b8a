"""Weight transfers of a migration: what travels over NVLink, what over the network, and for how long.

The model (stated in the README):

- a move is a slot that holds another expert afterwards (as
  :func:`eplb_cli.metrics.count_moves` counts it); the slot's GPU receives one
  expert's weights, ``expert_bytes``;
- the copy comes over NVLink when the receiving GPU's node held that expert
  before (anywhere on the node), else over the network;
- all layers move in one rebalance, GPUs receive in parallel, and one GPU
  receives its NVLink copies and its network copies one after the other.

So the estimated time is the largest, over GPUs, of ``NVLink bytes received
/ NVLink bandwidth + network bytes received / network bandwidth``. Senders
are assumed not to be the bottleneck (each copy may come from any GPU that
holds the expert). Bandwidths are per GPU, in GB/s (10^9 bytes per second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import EplbError, arg
from ..placement import Placement

DEEPSEEK_V3_EXPERT_BYTES = 3 * 7168 * 2048
"""One DeepSeek-V3 routed expert in FP8: gate, up and down projections of 7168 x 2048 weights, one byte each (42 MiB)."""
NVLINK_GBPS = 450.0
"""NVLink into one H100/H200 GPU: NVLink 4 carries 900 GB/s in both directions together, 450 GB/s each way."""
NETWORK_GBPS = 50.0
"""Network into one GPU: one 400 Gb/s NIC per GPU (InfiniBand NDR or 400G RoCE), 50 GB/s."""


@dataclass(frozen=True)
class Links:
    """Bytes per expert replica and the per-GPU bandwidths (GB/s) of the transfer model."""

    expert_bytes: int = DEEPSEEK_V3_EXPERT_BYTES
    nvlink_gbps: float = NVLINK_GBPS
    network_gbps: float = NETWORK_GBPS

    def __post_init__(self) -> None:
        if self.expert_bytes < 0:
            raise EplbError(f"{arg('expert_bytes', self.expert_bytes)}: must be >= 0")
        for name in ("nvlink_gbps", "network_gbps"):
            value = getattr(self, name)
            if not (value > 0 and value != float("inf")):
                raise EplbError(f"{arg(name, value)}: must be a bandwidth > 0 (GB/s)")


def received(old: Placement, new: Placement) -> tuple[torch.Tensor, torch.Tensor]:
    """Replicas each GPU receives over NVLink and over the network, summed over layers, int64 [G] each."""
    topo = new.topology
    a, b = old.phy2log, new.phy2log
    layers, slots = b.shape
    e = topo.experts
    changed = (a != b) & (b >= 0)
    gpu_of = torch.arange(slots) // topo.slots_per_gpu
    node_of = (gpu_of // topo.gpus_per_node).expand(layers, slots)
    held = torch.zeros(layers, topo.nodes * (e + 1), dtype=torch.bool)
    held.scatter_(1, node_of * (e + 1) + torch.where(a >= 0, a, e), True)
    local = held.gather(1, node_of * (e + 1) + b.clamp(min=0))
    gpu = gpu_of.expand(layers, slots)
    nvlink = torch.bincount(gpu[changed & local], minlength=topo.gpus)
    network = torch.bincount(gpu[changed & ~local], minlength=topo.gpus)
    return nvlink, network


def transfer(old: Placement, new: Placement, links: Links) -> dict[str, Any]:
    """Bytes moved and the estimated transfer time of going from ``old`` to ``new`` (see the module doc)."""
    nvlink, network = received(old, new)
    seconds = (nvlink.to(torch.float64) * links.expert_bytes / (links.nvlink_gbps * 1e9)
               + network.to(torch.float64) * links.expert_bytes / (links.network_gbps * 1e9))
    moves = int(nvlink.sum() + network.sum())
    return {
        "bytes_moved": moves * links.expert_bytes,
        "bytes_nvlink": int(nvlink.sum()) * links.expert_bytes,
        "bytes_network": int(network.sum()) * links.expert_bytes,
        "transfer_s": float(seconds.max()) if seconds.numel() else 0.0,
        "busiest_receiver": int(seconds.argmax()) if moves else None,
    }
