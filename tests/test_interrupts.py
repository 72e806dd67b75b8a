"""Ctrl-C and SIGTERM: exit 130 / 143 with one honest line, at any moment, with the old files intact.

The subprocess tests run the real console script (``eplb_cli.entry``), as a
user's shell would, and find the moment to signal from ``/proc``: "early" is
as soon as eplb's handlers are installed (it is then still importing typer
and torch), "late" is after the trace has been read, while the work runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SMALL

from eplb_cli import interrupts
from eplb_cli.formats.safetensors_file import encode

OLD = b"old contents, must survive\n"
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def caught_signals(pid: int) -> int:
    """The SigCgt mask of a process (which signals it handles), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def open_files(pid: int) -> set[str]:
    try:
        return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return set()


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``eplb ARGS`` through the console-script entry point of this checkout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "import sys; from eplb_cli.entry import run; sys.argv[0] = 'eplb'; run()"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd, env=env)


def handlers_installed(proc: subprocess.Popen[str]) -> bool:
    return bool(caught_signals(proc.pid) & (1 << (signal.SIGTERM - 1))) or proc.poll() is not None


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "interrupted by SIGTERM")])
def test_signal_while_importing(sig: int, code: int, word: str, tmp_path: Path) -> None:
    """The signal lands while typer and torch still load: exit code, one line, no traceback, no file."""
    out = tmp_path / "p.safetensors"
    out.write_bytes(OLD)
    proc = start(["plan", str(SMALL), "--gpus", "4", "-o", str(out), "--force"], tmp_path)
    wait_for(lambda: handlers_installed(proc), "the signal handlers")
    assert proc.poll() is None
    proc.send_signal(sig)
    returncode, stdout, stderr = finish(proc)
    assert returncode == code, stderr
    assert stderr == f"eplb: {word}; nothing was written\n"
    assert stdout == ""
    assert out.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]


@pytest.fixture(scope="module")
def long_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 windows: a replay of it runs for minutes, so a signal a moment after the read lands in the work."""
    path = tmp_path_factory.mktemp("long") / "long.safetensors"
    load = torch.randint(0, 1000, (1000, 8, 64), generator=torch.Generator().manual_seed(0)).float()
    path.write_bytes(encode({"load": load}))
    return path


def wait_until_read(proc: subprocess.Popen[str], trace: Path) -> None:
    """Until the process has opened the trace and closed it again (it is past reading, into the work)."""
    wait_for(lambda: str(trace) in open_files(proc.pid) or proc.poll() is not None, "the trace to be opened")
    wait_for(lambda: str(trace) not in open_files(proc.pid) or proc.poll() is not None, "the trace to be read")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_a_long_replay(sig: int, code: int, long_trace: Path, tmp_path: Path) -> None:
    """Mid-replay: the old --plot file survives, no temporary is left, the line says nothing was written."""
    plot = tmp_path / "r.png"
    plot.write_bytes(OLD)
    proc = start(["replay", str(long_trace), "--gpus", "8", "--plot", str(plot), "--force"], tmp_path)
    wait_until_read(proc, long_trace)
    time.sleep(0.3)
    assert proc.poll() is None, "the replay finished before the signal"
    proc.send_signal(sig)
    returncode, stdout, stderr = finish(proc)
    assert returncode == code, stderr
    assert stderr.endswith("; nothing was written\n") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert plot.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]


def test_interrupt_during_a_plan_keeps_the_old_placement(long_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    out.write_bytes(OLD)
    proc = start(["plan", str(long_trace), "--gpus", "8", "--strategy", "thorough", "-o", str(out), "--force",
                  "--json"], tmp_path)
    wait_until_read(proc, long_trace)
    proc.send_signal(signal.SIGINT)
    returncode, _, stderr = finish(proc)
    if returncode == 0:
        pytest.skip("the plan finished before the signal landed")
    assert returncode == 130 and stderr == "eplb: interrupted; nothing was written\n", stderr
    assert out.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_a_second_signal_does_not_cut_the_cleanup(long_trace: Path, tmp_path: Path) -> None:
    """Ctrl-C pressed twice: still one line, exit 130, nothing left behind."""
    proc = start(["replay", str(long_trace), "--gpus", "8"], tmp_path)
    wait_until_read(proc, long_trace)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    returncode, _, stderr = finish(proc)
    assert returncode == 130
    assert stderr == "eplb: interrupted; nothing was written\n"
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- in-process


@pytest.fixture
def handlers():
    """Install eplb's handlers for one test, then put back pytest's and forget what was noted."""
    saved = {sig: signal.getsignal(sig) for sig in interrupts.SIGNALS}
    interrupts.reset()
    interrupts.install()
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        interrupts.reset()


def test_signal_becomes_interrupted_with_the_exit_code(handlers: None) -> None:
    with pytest.raises(interrupts.Interrupted) as info:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert info.value.exit_code == 143
    assert interrupts.received() == signal.SIGTERM


def test_a_deferred_step_finishes_before_the_interrupt(handlers: None) -> None:
    done = []
    with pytest.raises(interrupts.Interrupted) as info:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("moved into place")
    assert done == ["moved into place"]
    assert info.value.exit_code == 130


def test_signals_after_the_first_are_ignored(handlers: None) -> None:
    with pytest.raises(interrupts.Interrupted):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGINT)  # while the first one unwinds: no second exception
    time.sleep(0.05)
    assert interrupts.received() == signal.SIGINT


def test_message_says_what_was_written() -> None:
    interrupts.reset()
    try:
        assert interrupts.message() == "eplb: interrupted; nothing was written"
        interrupts.note_written("p.yaml")
        assert interrupts.message(signal.SIGTERM) == (
            "eplb: interrupted by SIGTERM; p.yaml was written complete; nothing else was written")
        interrupts.note_written("plot.png")
        interrupts.note_stdout()
        assert interrupts.message() == ("eplb: interrupted; p.yaml, plot.png were written complete; nothing else "
                                        "was written (standard output may hold part of the output)")
    finally:
        interrupts.reset()


def test_interrupt_after_the_placement_is_written_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The placement is in place when Ctrl-C hits the plot: the line names the placement, the plot is absent."""
    pytest.importorskip("matplotlib")
    from eplb_cli import plots
    from eplb_cli.cli import main

    def interrupted(*args: object, **kwargs: object) -> None:
        raise interrupts.Interrupted(signal.SIGINT)

    monkeypatch.setattr(plots, "score_heatmap", interrupted)
    out, plot = tmp_path / "p.json", tmp_path / "p.png"
    interrupts.reset()
    try:
        code = main(["plan", str(SMALL), "--gpus", "4", "-q", "-o", str(out), "--plot", str(plot)])
    finally:
        interrupts.reset()
    assert code == 130
    assert capsys.readouterr().err == f"eplb: interrupted; {out} was written complete; nothing else was written\n"
    assert out.exists() and not plot.exists()
