"""Where input bytes come from: streams read once and at most EPLB_MAX_INPUT_BYTES, devices refused, pipes work."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from helpers import SMALL, run

from eplb_cli.errors import EplbError
from eplb_cli.formats import read_placement, read_trace
from eplb_cli.formats.source import HEAD_BYTES, Source


class Counting(io.RawIOBase):
    """A stream of ``unit`` repeated ``times`` (None: forever) that counts the bytes handed out."""

    def __init__(self, unit: bytes, times: int | None = None) -> None:
        self.unit, self.left, self.given = unit, times, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self.left is not None and self.left <= 0:
            return 0
        n = len(buf) // len(self.unit)
        if self.left is not None:
            n = min(n, self.left)
            self.left -= n
        data = self.unit * n
        buf[: len(data)] = data
        self.given += len(data)
        return len(data)


def as_stdin(monkeypatch: pytest.MonkeyPatch, raw: io.RawIOBase) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(raw)))


def test_endless_stdin_stops_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPLB_MAX_INPUT_BYTES", "2M")
    stream = Counting(b"0,0,1\n")
    as_stdin(monkeypatch, stream)
    with pytest.raises(EplbError, match=r"^-: the stream went on, more than the limit of 2\.0 MiB \(EPLB_MAX_INPUT_BYTES\)"):
        read_trace("-", "csv")
    assert stream.given <= (2 << 20) + (1 << 20)


def test_stdin_under_the_limit_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPLB_MAX_INPUT_BYTES", "1M")
    body = b"layer,expert,load\n" + b"".join(b"0,%d,%d\n" % (e, e + 1) for e in range(8))
    as_stdin(monkeypatch, Counting(body, 1))
    assert read_trace("-").load.sum() == 36


def test_garbage_stream_is_refused_after_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """No format fits the first 64 KiB: refused without reading the rest of an endless stream."""
    stream = Counting(b"\x00\x01")
    as_stdin(monkeypatch, stream)
    with pytest.raises(EplbError, match="cannot tell the trace format"):
        read_trace("-")
    assert stream.given < 2 * HEAD_BYTES


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_device_paths_are_refused(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(EplbError, match=f"^{device}: is a character device, not a file; give a file, or -"):
        Source(device)


def test_stdin_from_a_device_is_refused_after_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with open("/dev/zero") as zero:
        monkeypatch.setattr("sys.stdin", zero)
        with pytest.raises(EplbError, match="standard input is a character device"):
            read_trace("-", "csv")
    with open(os.devnull) as null:
        monkeypatch.setattr("sys.stdin", null)
        with pytest.raises(EplbError, match="standard input is empty"):
            read_trace("-")


def fifo_with(tmp_path: Path, data: bytes, name: str = "fifo") -> tuple[Path, list[int]]:
    """A FIFO a thread writes ``data`` into once; the list gets the number of times a reader opened it."""
    path = tmp_path / name
    os.mkfifo(path)
    opened: list[int] = []

    def feed() -> None:
        with open(path, "wb") as fh:
            opened.append(1)
            fh.write(data)

    threading.Thread(target=feed, daemon=True).start()
    return path, opened


def test_fifo_is_read_once_and_detected_from_its_bytes(tmp_path: Path) -> None:
    """A FIFO can be read only once: detection (CSV, by its header) and parsing share those bytes."""
    csv = b"layer,expert,load\n0,0,5\n0,1,7\n1,0,1\n1,1,2\n"
    path, opened = fifo_with(tmp_path, csv)
    trace = read_trace(str(path))
    assert trace.load.tolist() == [[[5.0, 7.0], [1.0, 2.0]]]
    assert opened == [1]


def test_placement_from_a_pipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``eplb evaluate <(cat p.yaml) <(cat trace)`` and ``convert <(...)``: placements too read from pipes."""
    yaml_file = tmp_path / "p.yaml"
    assert run(capsys, "plan", SMALL, "--gpus", 4, "-q", "-o", yaml_file)[0] == 0
    placement, _ = fifo_with(tmp_path, yaml_file.read_bytes(), "placement")
    trace, _ = fifo_with(tmp_path, SMALL.read_bytes(), "trace")
    code, _, err = run(capsys, "evaluate", placement, trace, "--gpus", 4, "--json")
    assert code == 0, err
    again, _ = fifo_with(tmp_path, yaml_file.read_bytes(), "again")
    assert read_placement(str(again), defaults={"gpus": 4})[1]["file_format"] == "trtllm"
    converted = tmp_path / "p.json"
    source, _ = fifo_with(tmp_path, yaml_file.read_bytes(), "source")
    code, _, err = run(capsys, "convert", source, converted, "--gpus", 4)
    assert code == 0, err
    assert converted.read_bytes().startswith(b'{"physical_to_logical_map"')
