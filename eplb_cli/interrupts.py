"""Ctrl-C (SIGINT) and SIGTERM: one exception raised where Python can stop cleanly, and an honest last line.

The console script (:mod:`eplb_cli.entry`) calls :func:`install` before it
imports anything heavy, so a signal at any moment, even while torch loads,
raises :class:`Interrupted`. That exception unwinds through every ``finally``
(temporary files are removed), and the CLI prints one line saying what was
written, then exits with 128 + the signal number (130 for SIGINT, 143 for
SIGTERM). A second signal while the first one unwinds is ignored, so cleanup
always finishes. Steps that must not be cut in half (moving a finished file
into place) run inside :func:`deferred`: a signal there takes effect when the
step is done.

This module imports only the standard library: it must load in microseconds.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run stops (a BaseException, so ``except Exception`` never swallows it)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    """What the handler and the final message need to know."""

    def __init__(self) -> None:
        self.deferring = 0
        self.pending: int | None = None
        self.stopping = False
        self.received: int | None = None
        self.written: list[str] = []
        self.stdout_used = False


_state = _State()


def _handler(signum: int, frame: object) -> None:
    if _state.received is None:
        _state.received = signum
    if _state.stopping:
        return
    if _state.deferring:
        _state.pending = signum
        return
    _state.stopping = True
    raise Interrupted(signum)


def install() -> None:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` from now on (main thread only)."""
    for sig in SIGNALS:
        signal.signal(sig, _handler)


def received() -> int | None:
    """The first signal that arrived since :func:`install`, if any (even one some code swallowed)."""
    return _state.received


def block() -> None:
    """Hold SIGINT and SIGTERM from now on: the exit code is decided, the process is only finishing."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the block whole: a signal that arrives inside takes effect when it ends."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.pending is not None and not _state.stopping:
            signum, _state.pending = _state.pending, None
            _state.stopping = True
            raise Interrupted(signum)


def note_written(path: str) -> None:
    """Record an output file that is complete and in place, for the message after an interrupt."""
    _state.written.append(str(path))


def note_stdout() -> None:
    """Record that output has started to go to standard output."""
    _state.stdout_used = True


def message(signum: int = signal.SIGINT) -> str:
    """The one line printed after an interrupt: which signal, and what was (not) written."""
    what = "interrupted" if signum == signal.SIGINT else f"interrupted by {signal.Signals(signum).name}"
    files = _state.written
    if files:
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        done = f"{shown} {'was' if len(files) == 1 else 'were'} written complete; nothing else was written"
    else:
        done = "nothing was written"
    if _state.stdout_used:
        done += " (standard output may hold part of the output)"
    return f"eplb: {what}; {done}"


def begin_command() -> None:
    """Forget the outputs noted by an earlier command in this process (signals stay as they are)."""
    _state.written = []
    _state.stdout_used = False


def reset() -> None:
    """Forget signals and outputs noted so far (for callers that run several commands in one process)."""
    _state.__init__()  # type: ignore[misc]  # re-run the initialiser on the one shared instance
