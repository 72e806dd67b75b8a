"""Strategy names on the command line: the DeepSeek baseline, presets and stage chains.

``--strategy`` takes a preset (``deepseek``, ``fast``, ``balanced``,
``thorough``, ``diverse``) or a chain of stages joined by ``+`` such as
``kk+swap`` or ``restarts:64+swap`` (see :mod:`.chains` for the stages).
"""

from __future__ import annotations

from ..errors import EplbError, arg
from .base import Strategy
from .chains import PRESETS, STAGE_HELP, ChainStrategy, parse_chain
from .deepseek import DeepSeekStrategy


def get_strategy(name: str) -> Strategy:
    """Return the strategy for a preset name or a stage chain such as ``kk+swap``."""
    key = name.strip().lower()
    if key == DeepSeekStrategy.name:
        return DeepSeekStrategy()
    if key in PRESETS:
        return ChainStrategy(PRESETS[key][0], name=key, description=PRESETS[key][1])
    if not key:
        raise EplbError(f"{arg('strategy')}: empty; run 'eplb strategies' to list them")
    try:
        return ChainStrategy(parse_chain(key), name=key)
    except EplbError as exc:
        raise EplbError(f"{arg('strategy', name)}: {exc}; run 'eplb strategies' to list them") from None


def describe_strategies() -> list[tuple[str, str]]:
    """(name, one-line description) for every preset, then the stages chains can use."""
    rows = [(DeepSeekStrategy.name, DeepSeekStrategy.description)]
    rows += [(name, f"{desc} [{chain}]") for name, (chain, desc) in PRESETS.items()]
    rows.append(("A+B+...", f"a chain of stages: {STAGE_HELP}"))
    return rows

