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
from collections.abc import Callable, Mapping

_OPEN, _SEP, _CLOSE = "\x1e", "\x1f", "\x1d"
_MARK = re.compile("\x1e([^\x1f\x1d]*)(?:\x1f([^\x1d]*))?\x1d")
_NO_VALUE = object()


def arg(name: str, value: object = _NO_VALUE) -> str:
    """A reference to parameter ``name`` (with the value it had, or one to use) inside an error message."""
    if value is _NO_VALUE:
        return f"{_OPEN}{name}{_CLOSE}"
    return f"{_OPEN}{name}{_SEP}{value}{_CLOSE}"


def python_style(name: str, value: str | None) -> str:
    """``gpus`` or ``gpus=0``: how the Python API names a parameter."""
    return name if value is None else f"{name}={value}"


def render(message: str, style: Callable[[str, str | None], str] = python_style) -> str:
    """``message`` with every :func:`arg` reference spelled by ``style(name, value)``."""
    return _MARK.sub(lambda m: style(m.group(1), m.group(2)), message)


def renamed(names: Mapping[str, str]) -> Callable[[str, str | None], str]:
    """The Python style with some parameters renamed (``gpus`` -> ``num_gpus`` for DeepSeek's signature)."""
    return lambda name, value: python_style(names.get(name, name), value)


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
