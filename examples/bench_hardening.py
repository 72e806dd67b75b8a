"""Hostile inputs: how fast eplb refuses them, how little memory refusing takes, how fast Ctrl-C ends a run.

Three tables, all measured in this run:

1. A wide CSV (200,000 expert columns, 1.9 MB, one row): the time ``eplb
   inspect`` takes to refuse it, in-process (median of 5), against the time
   pandas takes to parse the same bytes (what eplb did before it read the
   header first).
2. Memory bombs (files from ``tests/corpus`` and endless standard input):
   each refused in its own subprocess; peak resident memory (``ru_maxrss``)
   against a process that only imports the CLI and torch, and what the input
   would have made eplb allocate.
3. SIGINT during a replay of a 1000-window trace and during start-up: time
   from the signal to the exit (median of 5), with the exit code.

Run ``python examples/bench_hardening.py`` from a checkout.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "tests" / "corpus"
MIB = 1 << 20
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

BOMBS = [
    ("deflated .pt (62 KiB)", ["plan", str(CORPUS / "traces/pt-deflated-bomb.pt"), "--gpus", "4"], 122),
    ("stride-0 tensor in .pt (2 KiB)", ["plan", str(CORPUS / "traces/pt-stride0-bomb.pt"), "--gpus", "4"], 7629),
    ("shared pickle lists (1 KiB)", ["plan", str(CORPUS / "traces/pt-shared-lists-bomb.pt"), "--gpus", "4"], 153),
    ("CSV column e99999999", ["plan", str(CORPUS / "traces/csv-wide-column-bomb.csv"), "--gpus", "4"], 1526),
    ("CSV expert id 99999999999", ["plan", str(CORPUS / "traces/csv-huge-id.csv"), "--gpus", "4"], 762_940),
    ("YAML aliases (billion laughs)", ["convert", str(CORPUS / "placements/pl-yaml-laughs-bomb.yaml"), "x.json",
                                       "--gpus", "1"], 7629),
    ("SGLang map id 10**12", ["convert", str(CORPUS / "placements/pl-id-width-bomb.json"), "x.yaml", "--gpus", "1"],
     7_629_395),
    ("stdin < /dev/zero", ["plan", "-", "--gpus", "4", "--input-format", "csv"], None),
    ("endless stdin (yes | eplb)", ["plan", "-", "--gpus", "4", "--input-format", "csv"], None),
]
"""(case, eplb arguments, MiB the input would have made eplb allocate; None: without end).

The MiB are what the readers of main allocated for these inputs: the unpacked
archive and its float64 copy, 10**9 expanded values as float64, 10**7 list
entries as int64 then float64, a [1, 10**8] float64 row and the trace, a
[1, 10**11] float64 trace, 10**9 int64 expert ids, an int64 [1, 10**12]
replica count."""


def peak(args: list[str], cwd: Path, stdin: int | None = None) -> tuple[int, float, float, str]:
    """Run ``python -m eplb_cli ARGS`` (or only the imports); return exit code, peak RSS MiB, wall ms, last line."""
    cmd = [sys.executable, "-m", "eplb_cli", *args] if args else [sys.executable, "-c", "import eplb_cli.cli, torch"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter() - t0) * 1e3
        err.seek(0)
        tail = (err.read().decode(errors="replace").strip().splitlines() or [""])[-1]
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, wall, tail


def wide_csv(folder: Path) -> None:
    """Table 1: refusing a 200,000-column CSV, against parsing it."""
    import pandas as pd

    from eplb_cli.cli import main

    path = folder / "wide.csv"
    path.write_text("layer," + ",".join(f"e{i}" for i in range(200_000)) + "\n0," + ",".join(["1"] * 200_000) + "\n")
    with contextlib.redirect_stdout(io.StringIO()):
        main(["inspect", str(ROOT / "traces" / "small.safetensors")])  # load the modules a refusal uses
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            code = main(["inspect", str(path)])
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    pd.read_csv(path)
    parse = time.perf_counter() - t0
    refuse = statistics.median(times)
    print(f"\n1. CSV with 200,000 columns ({path.stat().st_size / 1e6:.1f} MB), eplb inspect")
    print(f"{'step':<40} {'seconds':>9} {'exit':>5}")
    print(f"{'eplb refuses it (median of 5)':<40} {refuse:>9.4f} {code:>5}")
    print(f"{'pandas.read_csv of the same file':<40} {parse:>9.2f} {'':>5}")
    print(f"ratio: refusing takes 1/{parse / refuse:,.0f} of the parse alone")


def bombs(folder: Path) -> None:
    """Table 2: peak memory of refused bombs against the interpreter's own."""
    _, base, _, _ = peak([], folder)
    print(f"\n2. Memory bombs, each in its own process (import only: {base:.0f} MiB peak RSS)")
    print(f"{'input':<32} {'asks MiB':>10} {'peak MiB':>9} {'above import':>13} {'ms':>7} {'exit':>5}")
    for name, args, asks in BOMBS:
        if "zero" in name:
            with open("/dev/zero", "rb") as zero:
                code, rss, wall, tail = peak(args, folder, zero.fileno())
        elif "yes" in name:
            feeder = subprocess.Popen(["yes", "0,0,1"], stdout=subprocess.PIPE)
            assert feeder.stdout is not None
            code, rss, wall, tail = peak(args, folder, feeder.stdout.fileno())
            feeder.kill()
            feeder.wait()
        else:
            code, rss, wall, tail = peak(args, folder)
        shown = "endless" if asks is None else f"{asks:,}"
        print(f"{name:<32} {shown:>10} {rss:>9.0f} {rss - base:>13.0f} {wall:>7.0f} {code:>5}")
        assert code == 2, tail


def open_files(pid: int) -> set[str]:
    try:
        return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return set()


def caught(pid: int) -> bool:
    """Whether eplb's handlers are installed (SIGTERM is in the process's caught-signal mask)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def interrupts(folder: Path) -> None:
    """Table 3: from SIGINT to exit, during start-up and during a long replay."""
    trace = folder / "long.safetensors"
    subprocess.run([sys.executable, "-m", "eplb_cli", "generate", str(trace), "--windows", "1000", "--layers", "8",
                    "--experts", "64"], env=ENV, check=True, capture_output=True)
    print("\n3. SIGINT, from the signal to the exit (median of 5)")
    print(f"{'moment':<44} {'ms':>7} {'exit':>5}  line")
    for moment in ("while importing (handlers just installed)", "during a 1000-window replay"):
        waits, codes, lines = [], set(), set()
        for _ in range(5):
            proc = subprocess.Popen([sys.executable, "-m", "eplb_cli", "replay", str(trace), "--gpus", "8"], cwd=folder,
                                    env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            while not caught(proc.pid):
                time.sleep(0.001)
            if moment.startswith("during"):
                while str(trace) not in open_files(proc.pid):
                    time.sleep(0.001)
                while str(trace) in open_files(proc.pid):
                    time.sleep(0.001)
                time.sleep(0.5)
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate()
            waits.append((time.perf_counter() - t0) * 1e3)
            codes.add(proc.returncode)
            lines.add(err.strip())
        print(f"{moment:<44} {statistics.median(waits):>7.0f} {','.join(map(str, sorted(codes))):>5}  "
              f"{' | '.join(sorted(lines))}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bombs(folder)  # first: a child's peak RSS starts from its parent's, so the parent must still be small
        interrupts(folder)
        wide_csv(folder)


if __name__ == "__main__":
    main()
