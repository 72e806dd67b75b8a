"""Standard output that never fails silently: a closed, full or broken stream is an :class:`OutputError`.

Python's buffered writer returns a short count instead of raising when a pipe
breaks after part of a large write, so a plain ``write`` can lose the rest of
a placement without a word; :func:`write_stdout` loops until every byte is out
or the failure is named. Standard library only: the CLI prints through it
without loading torch.
"""

from __future__ import annotations

import sys

from . import interrupts
from .errors import OutputError

CHUNK = 1 << 20


def stdout_failed(exc: OSError) -> OutputError:
    """The error for a failed write to standard output: a closed pipe, a full disk, a closed descriptor."""
    if isinstance(exc, BrokenPipeError):
        return OutputError("standard output was closed by the program reading it (broken pipe); "
                           "the output is incomplete")
    return OutputError(f"cannot write to standard output ({exc.strerror or exc}); the output is incomplete")


def write_stdout(data: bytes, closed: str = "-: standard output is closed; give a file name instead of -") -> None:
    """Write all of ``data`` to standard output and flush it; ``closed`` is the error when there is none."""
    stream = sys.stdout
    if stream is None:
        raise OutputError(closed)
    interrupts.note_stdout()
    try:
        stream.flush()
        raw = getattr(stream, "buffer", None)
        if raw is None:
            stream.write(data.decode("utf-8", errors="replace"))
            stream.flush()
            return
        view = memoryview(data)
        while view:
            written = raw.write(view[:CHUNK])
            if not written:
                raise BrokenPipeError(32, "standard output accepts no more data")
            view = view[written:]
        raw.flush()
    except OSError as exc:
        raise stdout_failed(exc) from None


def print_stdout(text: str, closed: str) -> None:
    """``text`` and a newline on standard output, in its encoding (see :func:`write_stdout`)."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    write_stdout((text + "\n").encode(encoding, errors="replace"), closed)
