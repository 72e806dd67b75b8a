"""Peak memory of `eplb` commands on a Qwen3-235B-sized trace with a long history.

Writes a synthetic trace of 1000 windows x 94 layers x 512 experts (float32
safetensors, about 190 MB) into a temporary folder, then runs ``plan`` (and
``compare`` and ``replay`` when this checkout has them) each in its own
subprocess, and prints one row per command: peak resident memory (the child's
``ru_maxrss`` from ``os.wait4``), the trace file size, their ratio, the ratio
of what the command needs beyond importing the CLI (the "import only" row),
and the wall time.

Run ``python examples/bench_memory.py`` from a checkout (``--help`` for the
shape and cluster options); it needs about 1.5 GB of free memory and disk.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def run_measured(args: list[str], cwd: Path) -> tuple[int, float, float, str]:
    """Run ``python -m eplb_cli ARGS``; return (exit code, peak RSS MiB, wall s, stderr tail)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "eplb_cli", *args] if args else [sys.executable, "-c", "import eplb_cli.cli, torch"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
    return proc.returncode, usage.ru_maxrss / 1024, wall, tail[0]


def has_command(name: str, cwd: Path) -> bool:
    """Whether this checkout's CLI has subcommand ``name``."""
    code, _, _, _ = run_measured([name, "--help"], cwd)
    return code == 0


def main() -> None:
    """Generate the trace, run each command, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=94)
    ap.add_argument("--experts", type=int, default=512)
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--strategy", default="balanced", help="strategy for plan and replay")
    ap.add_argument("--compare", default="deepseek,balanced", help="strategies for compare, comma separated")
    ap.add_argument("--every", type=int, default=100, help="replay: rebalance every N windows")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="eplb-bench-") as tmp:
        folder = Path(tmp)
        trace = folder / "trace.safetensors"
        shape = ["--windows", str(args.windows), "--layers", str(args.layers), "--experts", str(args.experts)]
        rows: list[tuple[str, int, float, float, str]] = []
        code, rss, wall, tail = run_measured(["generate", str(trace), *shape, "--seed", "0"], folder)
        if code:
            sys.exit(f"generate failed ({code}): {tail}")
        rows.append(("generate", code, rss, wall, tail))
        size = trace.stat().st_size / MIB
        cluster = ["--gpus", str(args.gpus), "--quiet"]
        commands: list[tuple[str, list[str]]] = [
            ("import only", []),
            ("plan", ["plan", str(trace), *cluster, "--strategy", args.strategy, "-o", str(folder / "p.json")]),
            ("plan --windows -100:", ["plan", str(trace), *cluster, "--strategy", args.strategy, "--windows", "-100:"]),
        ]
        if has_command("compare", folder):
            commands.append(("compare", ["compare", str(trace), *cluster, "--strategies", args.compare,
                                         "--repeat", "1"]))
        if has_command("replay", folder):
            commands.append((f"replay --every {args.every}", ["replay", str(trace), *cluster, "--strategy",
                                                              args.strategy, "--every", str(args.every)]))
        for name, cmd in commands:
            code, rss, wall, tail = run_measured(cmd, folder)
            rows.append((name, code, rss, wall, tail))

    print(f"trace: {args.windows} windows x {args.layers} layers x {args.experts} experts, float32 safetensors, "
          f"{size:.0f} MiB; cluster {args.gpus} GPUs; {os.cpu_count()} CPUs\n")
    base = next(rss for name, _, rss, _, _ in rows if name == "import only")
    print(f"| {'command':<22} | peak RSS MiB | trace MiB | ratio | above import | wall s | exit |")
    print(f"|{'-' * 24}|-------------:|----------:|------:|-------------:|-------:|-----:|")
    for name, code, rss, wall, _ in rows:
        above = (rss - base) / size
        print(f"| {name:<22} | {rss:12.0f} | {size:9.0f} | {rss / size:5.2f} | {above:12.2f} | {wall:6.1f} "
              f"| {code:4d} |")
    for name, code, _, _, tail in rows:
        if code:
            print(f"{name}: exit {code}: {tail}")


if __name__ == "__main__":
    main()
