"""Same inputs and seed, byte-identical files: across runs, processes, hash seeds and CPU thread counts.

Each run generates the trace and writes a placement per strategy (every preset
under the global policy; two under the hierarchical one), in this process with
one thread and in two subprocesses with OMP_NUM_THREADS 1 and 2 and different
PYTHONHASHSEED, and compares the files' bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from eplb_cli.cli import main
from eplb_cli.strategies import describe_strategies

TRACE_ARGS = ["--layers", "8", "--experts", "64", "--windows", "80", "--groups", "8", "--seed", "11"]
"""80 x 8 x 64: summing the windows is large enough for torch to split it over threads."""
CLUSTERS = {
    "global.json": ["--gpus", "8", "--nodes", "2", "--policy", "global", "--redundant", "8"],
    "hier.safetensors": ["--gpus", "8", "--nodes", "2"],
}
HIERARCHICAL = ("deepseek", "balanced")
"""Strategies also run under the hierarchical policy (the others share its code path)."""


def strategy_names() -> list[str]:
    """Every preset the registry lists (chains of stages are combinations of the same code)."""
    return [name for name, _ in describe_strategies() if "+" not in name]


def run_all(trace: Path, folder: Path) -> dict[str, str]:
    """Regenerate the trace into ``folder``, plan ``trace`` with every strategy and cluster; sha256 per file.

    Every run plans the same ``trace`` path, which placement files record.
    """
    folder.mkdir(parents=True, exist_ok=True)
    assert main(["generate", str(folder / "trace.safetensors"), *TRACE_ARGS]) == 0
    for name in strategy_names():
        for out, cluster in CLUSTERS.items():
            if out.startswith("hier") and name not in HIERARCHICAL:
                continue
            args = ["plan", str(trace), *cluster, "--strategy", name, "--seed", "3", "--device", "cpu", "--quiet",
                    "-o", str(folder / f"{name}-{out}")]
            assert main(args) == 0, args
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("det") / "trace.safetensors"
    assert main(["generate", str(path), *TRACE_ARGS]) == 0
    return path


SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, sys.argv[1])
    from tests.test_determinism import run_all
    files = run_all(Path(sys.argv[2]), Path(sys.argv[3]))
    print(json.dumps({"threads": torch.get_num_threads(), "files": files}))
""")


def start(trace: Path, folder: Path, threads: int, hash_seed: int) -> subprocess.Popen[str]:
    """Run :func:`run_all` in a subprocess with ``threads`` CPU threads and hash seed ``hash_seed``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONHASHSEED=str(hash_seed), PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(ROOT), str(trace), str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=folder.parent)


def finish(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_every_strategy_is_byte_identical_across_processes_and_threads(trace: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    names = strategy_names()
    assert "deepseek" in names
    procs = [start(trace, tmp_path / "one", threads=1, hash_seed=0),
             start(trace, tmp_path / "two", threads=2, hash_seed=1)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        here = run_all(trace, tmp_path / "here")
    finally:
        torch.set_num_threads(before)
        one, two = (finish(p) for p in procs)
    capsys.readouterr()
    assert (one["threads"], two["threads"]) == (1, 2)
    assert len(here) == 1 + len(names) + len([n for n in names if n in HIERARCHICAL])
    for name, digest in here.items():
        assert one["files"][name] == digest, f"{name} differs between this process and OMP_NUM_THREADS=1"
        assert two["files"][name] == digest, f"{name} differs between 1 and 2 threads"


def test_outputs_depend_on_their_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards the tests above against passing vacuously: another trace gives another file."""
    digests = set()
    for seed in ("11", "12"):
        trace = tmp_path / f"t{seed}.safetensors"
        out = tmp_path / f"p{seed}.json"
        assert main(["generate", str(trace), *TRACE_ARGS[:-1], seed]) == 0
        assert main(["plan", str(trace), "--gpus", "8", "--strategy", "deepseek", "-o", str(out)]) == 0
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    capsys.readouterr()
    assert len(digests) == 2
