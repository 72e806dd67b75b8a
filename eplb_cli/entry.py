"""The ``eplb`` console script: catch SIGINT and SIGTERM first, then load the CLI.

Importing typer and torch takes a second or two; a Ctrl-C in that time must
end like one at any other moment (exit 130, one line, no traceback), so the
handlers are installed before anything but the standard library is imported.
"""

from __future__ import annotations

import os
import sys

from . import interrupts


def _reserve_standard_fds() -> None:
    """Put /dev/null on closed descriptors 0-2, so no file eplb opens later becomes its stdin, stdout or stderr.

    Python has already set ``sys.stdout`` to None for a closed descriptor, so
    the CLI still knows standard output was closed.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run() -> None:
    """Console-script entry point: exit with the CLI's code, 130 after Ctrl-C, 143 after SIGTERM."""
    interrupts.install()
    try:
        _reserve_standard_fds()
        from .cli import main

        code = main()
    except interrupts.Interrupted as exc:
        code = exc.exit_code
        _say(interrupts.message(exc.signum))
    interrupts.block()
    late = interrupts.received()
    if late is not None and code == 0:  # a signal some code swallowed: still not a success
        code = 128 + late
        _say(interrupts.message(late))
    if late is not None:
        # Interrupted: every temporary file is gone (``finally`` blocks ran while the signal unwound), so
        # leave at once instead of spending a second tearing down torch; only the standard streams need flushing.
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # no usable stderr: the exit code still tells
        pass
