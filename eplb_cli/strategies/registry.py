"""Strategy names on the command line: presets and stage chains."""

from __future__ import annotations

from ..errors import EplbError
from .base import Strategy
from .deepseek import DeepSeekStrategy

_NAMED: dict[str, type[Strategy]] = {"deepseek": DeepSeekStrategy}


def get_strategy(name: str) -> Strategy:
    """Return the strategy for a preset name or a stage chain such as ``kk+swap``."""
    key = name.strip().lower()
    if key in _NAMED:
        return _NAMED[key]()
    raise EplbError(f"--strategy {name}: unknown; run 'eplb strategies' to list them")


def describe_strategies() -> list[tuple[str, str]]:
    """(name, one-line description) for every preset, for ``eplb strategies``."""
    return [(name, cls.description) for name, cls in _NAMED.items()]
