"""Time the batched placement chains and measure how close they come to the lower bound.

Synthetic log-normal loads at the DeepSeek-V3 prefill shape (58 MoE layers,
256 experts in 8 groups) over three clusters, plus, when present, a real
SGLang DeepSeek-V3 trace from ``../shared/traces``. Each chain is warmed up,
then timed as the median (and minimum) of ``--repeat`` calls with torch's
default thread count. Quality is reported as

- imb: mean over layers of max GPU load / mean GPU load;
- gap: sum over layers of max GPU load / sum of the lower bound - 1, where the
  bound is max(total / G, best largest replica) (D'Hondt is optimal for the
  latter), and under the hierarchical policy also the group -> node split / (G / N);
- >lpt: layers whose busiest GPU is heavier than under DeepSeek's LPT rule.

Run: ``python examples/bench_kernels.py [--sigma 1.0] [--repeat 20] [--chains fast,balanced]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import torch

from eplb_cli.strategies.chains import PRESETS, compose
from eplb_cli.strategies.replicate import dhondt
from eplb_cli.topology import Topology

SHAPES = [
    ("288 slots / 32 GPUs / 4 nodes", dict(experts=256, slots=288, gpus=32, nodes=4, groups=8)),
    ("320 slots / 64 GPUs / 8 nodes", dict(experts=256, slots=320, gpus=64, nodes=8, groups=8)),
    ("288 slots / 144 GPUs / 18 nodes", dict(experts=256, slots=288, gpus=144, nodes=18, groups=8)),
]
TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "sglang-deepseek-v3" / "prefill_in4096.json"


def gpu_loads(load: torch.Tensor, phy2log: torch.Tensor, gpus: int) -> torch.Tensor:
    """[L, G] GPU loads when every replica of an expert carries an equal share of its load."""
    layers, slots = phy2log.shape
    count = torch.zeros(layers, load.shape[1], dtype=torch.float64)
    count.scatter_add_(1, phy2log, torch.ones(layers, slots, dtype=torch.float64))
    return (load / count.clamp(min=1)).gather(1, phy2log).view(layers, gpus, slots // gpus).sum(2)


def lower_bound(load: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Per layer: max(total / G, max_e load_e / count_e under D'Hondt counts).

    Under the hierarchical policy also (a bound on the best group -> node split) / (G / N):
    with two groups per node the best split pairs the largest group with the smallest
    (exact); otherwise the largest group plus the smallest others that must share its node.
    """
    bound = torch.maximum(load.sum(1) / topo.gpus, (load / dhondt(load, topo.slots)).amax(1))
    if not topo.hierarchical or topo.nodes == 1:
        return bound
    per_node = topo.groups // topo.nodes
    groups = load.view(load.shape[0], topo.groups, -1).sum(2).sort(dim=1).values
    if per_node == 2:
        node = (groups + groups.flip(1)).amax(1)
    else:
        node = groups[:, -1] + groups[:, : per_node - 1].sum(1)
    node = torch.maximum(node, load.sum(1) / topo.nodes)
    return torch.maximum(bound, node / topo.gpus_per_node)


def timed(fn, repeat: int) -> tuple[float, float, torch.Tensor]:
    """(median ms, min ms, last result) after three warm-up calls."""
    for _ in range(3):
        out = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times), out


def report(label: str, load: torch.Tensor, topo: Topology, chains: list[str], repeat: int) -> None:
    live = load.sum(1) > 0
    load = load[live]
    layers = load.shape[0]
    bound = lower_bound(load, topo)
    mean = load.sum(1) / topo.gpus
    lpt = gpu_loads(load, compose(load, topo, "lpt"), topo.gpus).amax(1)
    floor = float((bound / mean).mean())
    print(f"\n{label}: {layers} loaded layers, policy {topo.policy}, lower-bound imb {floor:.5f}")
    print(f"  {'chain':40s} {'median ms':>10s} {'min ms':>8s} {'imb':>8s} {'gap %':>8s} {'worst':>8s} {'>lpt':>5s}")
    for chain in chains:
        text = PRESETS[chain][0] if chain in PRESETS else chain
        med, low, phy = timed(functools.partial(compose, load, topo, chain), repeat)
        peak = gpu_loads(load, phy, topo.gpus).amax(1)
        imb = peak / mean
        gap = float(peak.sum() / bound.sum() - 1) * 100
        worse = int((peak > lpt * (1 + 1e-12)).sum())
        name = f"{chain} ({text})" if chain in PRESETS else chain
        mean_imb, worst = float(imb.mean()), float(imb.max())
        print(f"  {name:40s} {med:10.2f} {low:8.2f} {mean_imb:8.5f} {gap:8.3f} {worst:8.4f} {worse:5d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=1.0, help="std of log-load (real DeepSeek traces: ~0.6-0.8)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chains", default="fast,balanced,thorough,diverse,lpt")
    args = parser.parse_args()
    chains = [c.strip() for c in args.chains.split(",") if c.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, log-normal sigma {args.sigma}")
    gen = torch.Generator().manual_seed(args.seed)
    load = torch.exp(args.sigma * torch.randn(58, 256, generator=gen, dtype=torch.float64)) * 1000
    for label, shape in SHAPES:
        report(label, load, Topology(policy="global", **shape), chains, args.repeat)
    label, shape = SHAPES[0]
    report(label + " (hierarchical)", load, Topology(policy="hierarchical", **shape), chains, args.repeat)
    if TRACE.exists():
        counts = torch.tensor(json.loads(TRACE.read_text())["logical_count"], dtype=torch.float64)
        real = counts.reshape(-1, counts.shape[-2], counts.shape[-1]).sum(0)
        report(f"real trace {TRACE.name}", real, Topology(policy="global", **shape), chains, args.repeat)


if __name__ == "__main__":
    main()
