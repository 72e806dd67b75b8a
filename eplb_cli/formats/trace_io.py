"""Reading and writing load traces: pick the format (flag, extension or content), then call its module.

Every problem with an input file raises :class:`~eplb_cli.errors.EplbError`
with one line, ``"<path>: <what is wrong>; <what to do>"``. Before parsing,
the memory a file needs is weighed against the memory available.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EplbError, arg
from ..trace import Trace
from .atomic import check_writable, write_bytes_atomic
from .base import TraceFormat
from .registry import FOLDER_FORMATS, detect_trace, trace_format, trace_writer_for
from .source import STDIN, Source


def read_trace(path: str | Path, input_format: str | None = None, *, window: int | None = None,
               windows: str | None = None) -> Trace:
    """Read a trace from ``path`` (``-`` for standard input) in format ``input_format`` (None: detect).

    ``window`` sums every N recorded steps into one window, then ``windows``
    keeps windows ``A:B``; a safetensors file is read a slice at a time and
    only the windows kept, so those two options bound the memory a huge trace
    needs.
    """
    chosen = trace_format(input_format) if input_format is not None else None
    if window is not None and window < 1:
        raise EplbError(f"{arg('window', window)}: must be >= 1")
    return read_trace_source(Source(str(path)), chosen, window=window, windows=windows)


def read_trace_source(src: Source, fmt: TraceFormat | None = None, *, window: int | None = None,
                      windows: str | None = None) -> Trace:
    """Read a trace from a :class:`Source` (whose bytes may already be in memory)."""
    if fmt is not None and fmt.container == "folder" and src.is_stdin:
        raise EplbError(
            f"{src.name}: format {fmt.name} reads a dump folder, which cannot come from standard input; give the folder"
        )
    if fmt is None:
        fmt = detect_trace(src)
    if src.is_folder and fmt.container != "folder":
        raise EplbError(
            f"{src.name}: is a folder, not a {fmt.name} file; give a trace file, "
            f"or {arg('input_format', ' / '.join(FOLDER_FORMATS))} for an engine dump folder"
        )
    if fmt.read_windows is not None:
        return fmt.read_windows(src, window, windows)
    return fmt.read(src).rebin(window).select(windows)


def detect_format(path: str | Path) -> str:
    """Name the trace format of ``path`` from its extension, then its content."""
    if str(path) == STDIN:
        raise EplbError(f"-: cannot tell the format of standard input from a name; pass {arg('input_format')}")
    return detect_trace(Source(str(path))).name


def write_trace(trace: Trace, path: str | Path, fmt: str | None = None, force: bool = False) -> None:
    """Write ``trace`` to ``path`` atomically (``-``: standard output) in ``fmt`` or the extension's format.

    An existing file is only replaced with ``force``.
    """
    writer = trace_format(fmt, "fmt", writing=True) if fmt is not None else trace_writer_for(str(path))
    if str(path) == STDIN:
        if writer.container == "safetensors" and sys.stdout.isatty():
            raise EplbError("-: safetensors is binary and standard output is a terminal; give a file name or pipe it")
    else:
        check_writable(path, force)
    assert writer.write is not None
    write_bytes_atomic(path, writer.write(trace), force)
