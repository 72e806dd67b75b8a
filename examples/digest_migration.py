"""Digest of migration-aware planning on the shipped (and, when present, the real) traces.

Run ``python examples/digest_migration.py`` on two commits and compare the
lines: a refactor of :mod:`eplb_cli.planning.migration` that keeps every result
byte-identical prints the same digests. For each trace and cluster shape it
plans consecutive windows t and t+1 with ``balanced``, then hashes (SHA-256 of
phy2log) what :func:`relabel` and :func:`swap_back` return (and ``swap_back``
with ``min_gain=0``, which runs its rounds to the end).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from eplb_cli.formats import read_trace  # noqa: E402
from eplb_cli.planning.migration import relabel, swap_back  # noqa: E402  (needs ROOT on sys.path in a bare checkout)
from eplb_cli.strategies import get_strategy, plan  # noqa: E402
from eplb_cli.topology import resolve  # noqa: E402

SHARED = ROOT.parent / "shared" / "traces"
CASES = [
    # (trace, [(gpus, nodes, slots, policy, excluded GPUs)], most window pairs)
    (ROOT / "traces" / "small.safetensors", [(4, 2, 20, "auto", ()), (4, 1, 24, "global", ()), (8, 2, 24, "auto", ())], 5),
    (ROOT / "traces" / "deepseek-v3-synthetic.safetensors",
     [(32, 4, 288, "auto", ()), (32, 4, 288, "global", ()), (64, 8, 320, "auto", ()), (32, 4, 288, "global", (5,))], 6),
    (SHARED / "esft-deepseek-v2-lite" / "summary.json", [(8, 1, 72, "auto", ()), (16, 2, 80, "auto", ())], 12),
    (SHARED / "esft-deepseek-v2-lite" / "intent.json", [(8, 1, 72, "auto", ())], 20),
    (SHARED / "mixtral-8x7b" / "humaneval.csv", [(4, 1, 12, "auto", ())], 1),
]


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def main() -> None:
    strat = get_strategy("balanced")
    combined = hashlib.sha256()
    for path, shapes, pairs in CASES:
        if not path.exists():
            print(f"{path.name}: skipped (not present)")
            continue
        trace = read_trace(str(path))
        for gpus, nodes, slots, policy, excluded in shapes:
            topo = resolve(trace.experts, gpus, nodes, slots=slots, groups=trace.groups, policy=policy,
                           exclude_gpus=list(excluded))
            full = resolve(trace.experts, gpus, nodes, slots=slots, groups=trace.groups, policy=policy)
            parts = []
            for w in range(min(pairs, trace.windows - 1)):
                old = plan(trace.load[w], full, strat)
                new = plan(trace.load[w + 1], topo, strat)
                rel = relabel(old, new)
                outs = (rel, swap_back(old, rel, trace.load[w + 1]), swap_back(old, rel, trace.load[w + 1], 0.0))
                parts.append("".join(digest(p.phy2log) for p in outs))
            line = hashlib.sha256("".join(parts).encode()).hexdigest()[:16]
            combined.update(line.encode())
            print(f"{path.name} {gpus} GPUs / {nodes} nodes / {slots} slots, {policy}, excluded {list(excluded)}: "
                  f"{len(parts)} pairs {line}")
    print(f"all: {combined.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
