"""Atomic output: a failed, interrupted or killed write leaves the old file intact and no temporary behind."""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT, SMALL, SYNTHETIC

from eplb_cli.cli import main
from eplb_cli.errors import EplbError
from eplb_cli.formats import atomic, load_placement
from eplb_cli.formats.atomic import write_bytes_atomic, write_with

OLD = b"old contents, must survive\n"


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def plan_args(out: Path, *extra: str) -> list[str]:
    return ["plan", str(SMALL), "--gpus", "4", "--strategy", "deepseek", "--quiet", "-o", str(out), *extra]


@pytest.fixture(params=["anonymous", "named"])
def temp_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with O_TMPFILE files, and again with the named-temporary fallback other systems use."""
    if request.param == "named":
        monkeypatch.setattr(atomic, "_open_anonymous", lambda folder: None)
    elif atomic._open_anonymous(Path(".")) is None:
        pytest.skip("no O_TMPFILE here")
    return request.param


def half_then_fail(fd: int, data: bytes) -> None:
    """Stands in for atomic._write_all: writes half the bytes, then the disk is full."""
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_fault_mid_write_keeps_the_old_file(temp_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.safetensors"
    out.write_bytes(OLD)
    monkeypatch.setattr(atomic, "_write_all", half_then_fail)
    code = main(plan_args(out, "--force"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"eplb: error: {out}: cannot write (No space left on device); the old file is unchanged"
    assert out.read_bytes() == OLD
    assert listing(tmp_path) == ["p.safetensors"]


def test_fault_in_a_path_writer_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    out.write_bytes(OLD)
    seen: list[Path] = []

    def writer(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"partial")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(EplbError, match=r"cannot write .*old file is unchanged"):
        write_with(out, writer, force=True)
    assert out.read_bytes() == OLD
    assert listing(tmp_path) == ["plot.png"]
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".plot.png.") and seen[0].suffix == ".png"


def test_interrupt_mid_write_keeps_the_old_file(temp_kind: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "t.json"
    out.write_bytes(OLD)

    def interrupted(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(out, b"new" * 1000, force=True)
    assert out.read_bytes() == OLD
    assert listing(tmp_path) == ["t.json"]

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_with(out, writer, force=True)
    assert out.read_bytes() == OLD
    assert listing(tmp_path) == ["t.json"]


def test_overwrite_needs_force_for_every_writing_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = {
        "p.json": plan_args(tmp_path / "p.json"),
        "t.safetensors": ["generate", str(tmp_path / "t.safetensors"), "--layers", "2", "--experts", "4"],
        "c.csv": ["convert", str(SMALL), str(tmp_path / "c.csv")],
    }
    for name, args in runs.items():
        out = tmp_path / name
        out.write_bytes(OLD)
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and f"{out}: file exists; pass --force" in err, err
        assert out.read_bytes() == OLD
        assert main([*args, "--force"]) == 0, capsys.readouterr().err
        assert out.read_bytes() != OLD
    assert listing(tmp_path) == sorted(runs)


def test_written_files_are_complete_and_follow_the_umask(temp_kind: str, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x" * 100_000)
        write_with(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"y" * 10))
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").read_bytes() == b"x" * 100_000
    assert (tmp_path / "b.bin").read_bytes() == b"y" * 10
    for name in ("a.bin", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
    assert listing(tmp_path) == ["a.bin", "b.bin"]


def test_file_appearing_during_the_write_is_not_clobbered(temp_kind: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "p.json"
    real = atomic._write_all

    def racing(fd: int, data: bytes) -> None:
        real(fd, data)
        out.write_bytes(OLD)

    monkeypatch.setattr(atomic, "_write_all", racing)
    with pytest.raises(EplbError, match="appeared while writing"):
        write_bytes_atomic(out, b"new")
    assert out.read_bytes() == OLD
    assert listing(tmp_path) == ["p.json"]


def test_unwritable_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(plan_args(tmp_path / "missing" / "p.json"))
    assert code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "dir.json").mkdir()
    code = main(plan_args(tmp_path / "dir.json", "--force"))
    assert code == 2 and "is a folder" in capsys.readouterr().err


def test_stale_named_temporaries_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".p.json.eplb-{dead.stdout.strip()}-abcd.tmp.json"
    alive = tmp_path / f".p.json.eplb-{os.getppid()}-abcd.tmp.json"
    other = tmp_path / ".q.json.eplb-1-abcd.tmp.json"
    for f in (stale, alive, other):
        f.write_bytes(b"left over")
    write_with(tmp_path / "p.json", lambda tmp: tmp.write_bytes(b"{}"))
    assert listing(tmp_path) == sorted([alive.name, other.name, "p.json"])


KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from eplb_cli.formats import atomic
    from eplb_cli.cli import main

    if sys.argv[1] == "named":
        atomic._open_anonymous = lambda folder: None

    def slow(fd, data):
        os.write(fd, data[: len(data) // 2])
        print("writing", flush=True)
        time.sleep(120)

    atomic._write_all = slow
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("kind", ["anonymous", "named"])
def test_sigkill_mid_write_keeps_the_old_file(kind: str, tmp_path: Path) -> None:
    """A run killed while writing its output: the old file is intact; no temporary is left (anonymous),
    or the next write removes it (named fallback)."""
    if kind == "anonymous" and atomic._open_anonymous(tmp_path) is None:
        pytest.skip("no O_TMPFILE here")
    out = tmp_path / "p.safetensors"
    out.write_bytes(OLD)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, kind, *plan_args(out, "--force")],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert out.read_bytes() == OLD
    if kind == "anonymous":
        assert listing(tmp_path) == ["p.safetensors"]
        return
    left = [n for n in listing(tmp_path) if n != "p.safetensors"]
    assert len(left) == 1 and left[0].startswith(".p.safetensors.eplb-")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    assert main(plan_args(out, "--force")) == 0
    assert listing(tmp_path) == ["p.safetensors"]
    assert load_placement(str(out)).topology.gpus == 4


def test_standard_output_is_not_a_file(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_bytes_atomic("-", b"to stdout")
    assert capfdbinary.readouterr().out == b"to stdout"
    with pytest.raises(EplbError, match="standard output"):
        write_with("-", lambda tmp: tmp.write_bytes(b"x"))
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------- output targets


def make_device(path: Path) -> bool:
    """A character device like /dev/null at ``path`` (needs root); False where it cannot be made."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.parametrize("kind", ["device", "fifo", "socket", "folder"])
def test_only_a_regular_file_is_replaced(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Even with --force: a device, FIFO, socket or folder at -o is refused, named, and left as it was."""
    import socket

    target = tmp_path / "p.json"
    if kind == "device" and not make_device(target):
        pytest.skip("cannot make a device node here (needs root)")
    if kind == "fifo":
        os.mkfifo(target)
    if kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        try:
            server.bind(str(target))
        except OSError:
            pytest.skip("cannot bind a UNIX socket in the temporary folder")
        server.close()
    if kind == "folder":
        target.mkdir()
    before = os.lstat(target)
    code = main(plan_args(target, "--force"))
    err = capsys.readouterr().err.strip()
    what = {"device": "a character device", "fifo": "a FIFO", "socket": "a socket", "folder": "a folder"}[kind]
    assert code == 2 and err.startswith(f"eplb: error: {target}: is {what}"), err
    assert ("- for standard output" in err) == (kind != "folder") and "file exists" not in err
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert listing(tmp_path) == ["p.json"]


def test_a_link_is_written_through_to_its_file(temp_kind: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A symlink stays a link: the new placement replaces the file it points to, atomically, beside it."""
    real = tmp_path / "store" / "v1.json"
    real.parent.mkdir()
    real.write_bytes(OLD)
    link = tmp_path / "current.json"
    link.symlink_to(real)
    code = main(plan_args(link))
    assert code == 2 and f"{link}: file exists" in capsys.readouterr().err
    assert main(plan_args(link, "--force")) == 0, capsys.readouterr().err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load_placement(str(real), defaults={"gpus": 4}).phy2log.shape == (4, 20)
    assert listing(tmp_path) == ["current.json", "store"] and listing(real.parent) == ["v1.json"]


def test_dangling_link_and_link_loop_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dangling = tmp_path / "p.json"
    dangling.symlink_to(tmp_path / "nowhere.json")
    code = main(plan_args(dangling, "--force"))
    err = capsys.readouterr().err
    assert code == 2 and "is a symbolic link to" in err and "does not exist" in err, err
    assert dangling.is_symlink() and not (tmp_path / "nowhere.json").exists()
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    code = main(plan_args(loop, "--force"))
    assert code == 2 and "symbolic links loop" in capsys.readouterr().err


def test_output_may_not_be_an_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-o (or --plot, or convert's OUT) naming the input trace is refused even with --force; the trace survives."""
    trace = tmp_path / "t.safetensors"
    trace.write_bytes(SMALL.read_bytes())
    hard = tmp_path / "same.safetensors"
    os.link(trace, hard)
    runs = [
        ["plan", str(trace), "--gpus", "4", "-o", str(trace), "--force"],
        ["plan", str(trace), "--gpus", "4", "-o", str(hard), "--force"],
        ["convert", str(trace), str(trace), "--force"],
    ]
    if importlib.util.find_spec("matplotlib") is not None:
        placement = tmp_path / "p.json"
        assert main(plan_args(placement)) == 0
        png = tmp_path / "t.png"  # a trace whose name is a valid --plot name; its content says safetensors
        os.link(trace, png)
        runs.append(["evaluate", str(placement), str(png), "--plot", str(png), "--force"])
    for args in runs:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and "is also an input of this command" in err, (args, err)
        assert trace.read_bytes() == SMALL.read_bytes()


def test_previous_placement_may_be_replaced_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Planning from the placement served now and writing the next one over it is the usual update."""
    out = tmp_path / "p.safetensors"
    assert main(plan_args(out)) == 0
    assert main(plan_args(out, "--previous", str(out), "--force")) == 0, capsys.readouterr().err
    assert listing(tmp_path) == ["p.safetensors"]


def test_name_too_long_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / ("x" * 300 + ".json")
    code = main(plan_args(out))
    err = capsys.readouterr().err
    assert code == 2 and "file name too long" in err and err.count("\n") == 1 and len(err) < 320, err
    assert listing(tmp_path) == []


STDOUT_WRITER = textwrap.dedent("""
    import sys
    from eplb_cli.entry import run
    sys.argv = ["eplb", *sys.argv[1:]]
    run()
""")


def run_eplb(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", STDOUT_WRITER, *args], text=True, env=env, timeout=120,
                          stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize("args", [["convert", str(SMALL), "-", "--format", "csv"], ["inspect", str(SMALL)]],
                         ids=["placement-bytes", "table"])
def test_full_standard_output_is_exit_2(args: list[str]) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = run_eplb(args, stdout=full)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("wrote ")]
    assert lines == ["eplb: error: cannot write to standard output (No space left on device); "
                     "the output is incomplete"], proc.stderr


@pytest.mark.parametrize("args", [["convert", str(SMALL), "-", "--format", "csv"], ["inspect", str(SMALL)]],
                         ids=["placement-bytes", "table"])
def test_closed_standard_output_is_exit_2(args: list[str]) -> None:
    proc = run_eplb(args, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "standard output is closed" in proc.stderr, proc.stderr


def test_broken_pipe_is_exit_2_and_one_line() -> None:
    """The reader of the pipe quits early (``| head -c 10``): exit 2, one line, not exit 0 and not a traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", STDOUT_WRITER, "convert", str(SYNTHETIC), "-", "--format", "csv"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 2, err
    assert err.splitlines() == ["eplb: error: standard output was closed by the program reading it (broken pipe); "
                                "the output is incomplete"]
