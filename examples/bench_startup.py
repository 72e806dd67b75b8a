"""Start-up time of the `eplb` command, whole process, against `python -c pass` and `python -c 'import torch'`.

Each command runs REPEAT times in a fresh process; the table shows the median
wall time and the median CPU time (user + system, which a busy machine
disturbs less), each as a ratio to `import torch` in the same run, and whether
torch was loaded (read from `python -X importtime`). ``--before SRC`` also runs
the eplb commands from the source tree SRC (an earlier version, e.g. from
``git archive``) and adds its CPU time. Usage:

    python examples/bench_startup.py [--repeat 7] [--before /tmp/eplb-before]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = str(ROOT / "traces" / "small.safetensors")


def eplb() -> list[str]:
    """The installed `eplb` console script, else `python -m eplb_cli`."""
    script = shutil.which("eplb", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "eplb_cli"]


def source_env(src: str | None) -> dict[str, str]:
    """The environment that imports eplb_cli from ``src`` (None: the installed one)."""
    return dict(os.environ, PYTHONPATH=src) if src else dict(os.environ)


def timed(argv: list[str], src: str | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv`` (its output discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=source_env(src),
                   check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def loads_torch(argv: list[str], src: str | None = None) -> bool:
    """Whether running ``argv`` imports torch (``-X importtime`` lists every module imported)."""
    env = dict(source_env(src), PYTHONPROFILEIMPORTTIME="1")
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    return any(line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == "torch"
               for line in proc.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--before", help="source tree of an earlier eplb to time as well")
    args = parser.parse_args()
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
        ("eplb --help", [*eplb(), "--help"]),
        ("eplb plan --help", [*eplb(), "plan", "--help"]),
        ("eplb --version", [*eplb(), "--version"]),
        ("eplb plan TRACE --gpus 0 (bad flag)", [*eplb(), "plan", TRACE, "--gpus", "0"]),
        ("eplb plan missing.json --gpus 8", [*eplb(), "plan", "missing.json", "--gpus", "8"]),
        ("eplb plan TRACE --gpus 4 -o x.txt", [*eplb(), "plan", TRACE, "--gpus", "4", "-o", "x.txt"]),
    ]
    rows = []
    for name, argv in cases:
        runs = [timed(argv) for _ in range(args.repeat)]
        old = ""
        if args.before and name.startswith("eplb"):
            cpu = statistics.median(timed(argv, args.before)[1] for _ in range(args.repeat))
            old = f" | {cpu:.3f} | {'yes' if loads_torch(argv, args.before) else 'no'}"
        elif args.before:
            old = " | | "
        rows.append((name, statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs),
                     loads_torch(argv), old))
    torch_wall, torch_cpu = rows[1][1], rows[1][2]
    extra = " | CPU s before | torch before" if args.before else ""
    print(f"| command | wall s (median of {args.repeat}) | CPU s | wall / import torch | loads torch{extra} |")
    print("|---|---:|---:|---:|:---:|" + ("---:|:---:|" if args.before else ""))
    for name, wall, cpu, torch_loaded, old in rows:
        print(f"| `{name}` | {wall:.3f} | {cpu:.3f} | {wall / torch_wall:.2f} | {'yes' if torch_loaded else 'no'}{old} |")
    print(f"\n(import torch: {torch_wall:.2f} s wall, {torch_cpu:.2f} s CPU; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
