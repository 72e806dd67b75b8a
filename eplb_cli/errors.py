"""Error types the CLI turns into exit codes, and parameter names that each caller spells its own way.

Library code raises these with a message a user can act on; the CLI prints the
message as one line on stderr and exits with the code the class carries.

A message names the parameter it is about with :func:`arg`, not with a flag:
``EplbError(f"{arg('gpus', 0)}: needs at least one GPU")`` reads
``gpus=0: needs at least one GPU`` from Python, and the CLI renders the same
error as ``--gpus 0: needs at least one GPU`` (:meth:`EplbError.render`).
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Mapping

_OPEN, _SEP, _CLOSE = "\x1e", "\x1f", "\x1d"
_MARK = re.compile("\x1e([^\x1f\x1d]*)(?:\x1f([^\x1d]*))?\x1d")
_NO_VALUE = object()


def arg(name: str, value: object = _NO_VALUE) -> str:
    """A reference to parameter ``name`` (with the value it had, or one to use) inside an error message."""
    if value is _NO_VALUE:
        return f"{_OPEN}{name}{_CLOSE}"
    text = shorten(str(value), 80)  # a value from a file or a pasted flag may be huge: its ends name it
    return f"{_OPEN}{name}{_SEP}{text}{_CLOSE}"


def python_style(name: str, value: str | None) -> str:
    """``gpus`` or ``gpus=0``: how the Python API names a parameter."""
    return name if value is None else f"{name}={value}"


def render(message: str, style: Callable[[str, str | None], str] = python_style) -> str:
    """``message`` with every :func:`arg` reference spelled by ``style(name, value)``."""
    return _MARK.sub(lambda m: style(m.group(1), m.group(2)), message)


def renamed(names: Mapping[str, str]) -> Callable[[str, str | None], str]:
    """The Python style with some parameters renamed (``gpus`` -> ``num_gpus`` for DeepSeek's signature)."""
    return lambda name, value: python_style(names.get(name, name), value)


MAX_MESSAGE = 300
"""Longest error line eplb prints (characters); longer ones are cut (:func:`one_line`)."""
ELLIPSIS = "..."

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 4, 4, 3
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 40, 40, 40


def quote(value: object, limit: int = 40) -> str:
    """``value`` as Python spells it (``'abc'``, ``[1, 2]``), cut to about ``limit`` characters with an ellipsis.

    For cells, keys and values taken from a file: a 50 MB cell or a list nested
    10,000 deep is shown by its start, never whole, and never recursed into.
    """
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        return text if len(value) <= limit else repr(value[:limit]) + ELLIPSIS
    try:
        text = _REPR.repr(value)
    except Exception:  # a hostile object's repr may fail in any way; its type still names it
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def count_text(n: int) -> str:
    """A count for a message: ``1,234`` when it is of any sensible size, ``1e+100`` when it is not."""
    return f"{n:,}" if abs(n) < 10**15 else f"{float(n):.3g}"


def shorten(text: str, limit: int = 120) -> str:
    """``text`` (a path, a list of names) cut in the middle to ``limit`` characters, keeping its start and end."""
    text = str(text)
    if len(text) <= limit:
        return text
    head = (limit - len(ELLIPSIS)) * 2 // 5
    return text[:head] + ELLIPSIS + text[len(text) - (limit - len(ELLIPSIS) - head):]


def listing(items: object, limit: int = 80) -> str:
    """Names joined by commas for a message (``found: a, b, c``), cut to ``limit`` characters."""
    names = []
    size = 0
    for item in items:  # type: ignore[attr-defined]  # any iterable of names
        name = quote(item, 30) if not isinstance(item, str) else shorten(item, 30)
        size += len(name) + 2
        if size > limit:
            names.append(ELLIPSIS)
            break
        names.append(name)
    return ", ".join(names)


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` on one line (white space runs become one space), cut to ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


class EplbError(Exception):
    """Bad input: a file, flag or combination the user must change (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(render(message))

    def render(self, style: Callable[[str, str | None], str]) -> str:
        """The message with parameters spelled by ``style`` (the CLI passes flag names)."""
        return render(self.message, style)


class GateFailed(EplbError):
    """A quality gate (``max_imbalance``, ``min_balancedness``) was not met (exit code 1)."""

    exit_code = 1


class OutputError(EplbError):
    """Standard output is closed, full or a broken pipe: nothing more can be printed (exit code 2)."""

