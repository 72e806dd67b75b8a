"""Numba's ``njit``, applied on first call: importing a module with compiled loops does not import Numba.

Commands that plan nothing (``inspect``, ``convert``) import the modules that
hold compiled loops (metrics, planning) but never run them; importing Numba
costs about 0.2 s. :func:`njit` marks a function, and the first call of any
marked function of a module compiles every marked function of that module
and puts the compiled dispatchers in the module's namespace, so compiled
functions calling each other find compiled callees. The machine code is
cached by Numba as with a plain ``numba.njit(cache=True)``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _Deferred:
    """A function marked by :func:`njit` whose module has not been compiled yet."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.options = options

    def __call__(self, *args: Any) -> Any:
        return compile_module(self.fn.__module__)[self.fn.__name__](*args)


def njit(**options: Any) -> Callable[[F], F]:
    """``numba.njit(**options)``, deferred to the first call (see the module docstring)."""

    def mark(fn: F) -> F:
        return _Deferred(fn, options)  # type: ignore[return-value]

    return mark


def compile_module(name: str) -> dict[str, Any]:
    """Replace every deferred function of module ``name`` by its Numba dispatcher; return the module's namespace."""
    from numba import njit as numba_njit

    namespace = vars(sys.modules[name])
    for key, value in list(namespace.items()):
        if isinstance(value, _Deferred):
            namespace[key] = numba_njit(**value.options)(value.fn)
    return namespace
