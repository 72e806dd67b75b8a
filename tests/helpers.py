"""What several test modules share: the project's paths, running the CLI in-process, small builders.

pytest puts this folder on the import path (``from helpers import run, SMALL``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eplb_cli.cli import main
from eplb_cli.placement import Placement
from eplb_cli.topology import Topology

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root."""
SMALL = ROOT / "traces" / "small.safetensors"
"""The shipped 6-window, 4-layer, 16-expert trace."""
SYNTHETIC = ROOT / "traces" / "deepseek-v3-synthetic.safetensors"
"""The shipped DeepSeek-V3-shaped trace: 24 windows x 58 layers x 256 experts."""
COMMANDS = {"plan", "compare", "strategies", "evaluate", "replay", "inspect", "convert", "generate"}
"""Every subcommand of ``eplb``: a test fails when one disappears."""


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run ``eplb ARGS`` in this process; return the exit code, stdout and stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def random_weights(gen: torch.Generator, shape: tuple[int, ...], kind: str, *, sigma: float, ties: int) -> torch.Tensor:
    """float64 item weights of one ``kind``: ``lognormal`` (spread ``sigma``), ``ties`` (integers
    0 .. ``ties`` - 1, so many equal values) or ``zeros``."""
    if kind == "lognormal":
        return torch.exp(sigma * torch.randn(shape, generator=gen, dtype=torch.float64))
    if kind == "ties":
        return torch.randint(0, ties, shape, generator=gen).double()
    return torch.zeros(shape, dtype=torch.float64)


def random_placement(topo: Topology, layers: int, gen: torch.Generator) -> Placement:
    """A valid placement: every expert once, the redundant slots to random experts, slots shuffled."""
    rows = []
    for _ in range(layers):
        extra = torch.randint(0, topo.experts, (topo.slots - topo.experts,), generator=gen)
        row = torch.cat([torch.arange(topo.experts), extra])
        rows.append(row[torch.randperm(topo.slots, generator=gen)])
    return Placement(torch.stack(rows), topo).validate()


def pair_cases(seed: int, n: int) -> list[tuple[np.ndarray, int]]:
    """Small rows for brute force at two slots per GPU: (loads [2-5], slots up to 12, 2 per GPU).

    Half integer loads (ties, zeros), half log-normal ones.
    """
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        experts = int(rng.integers(2, 6))
        gpus = int(rng.integers(experts // 2 + 1, experts + 3))
        if 2 * gpus > 12:
            continue
        w = rng.integers(0, 20, experts).astype(np.float64) if rng.random() < 0.5 else np.exp(1.5 * rng.normal(size=experts))
        cases.append((w, 2 * gpus))
    return cases


def run_fresh(script: str) -> None:
    """Run ``script`` in a fresh Python process at the repository root; fail with its stderr unless it exits 0."""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
