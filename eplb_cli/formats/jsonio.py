"""JSON in and out: one parser with one-line errors, and compact, reproducible output."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import EplbError, listing, quote

if TYPE_CHECKING:
    import torch

EXACT_INT = 1 << 53
"""Largest magnitude below which every float64 integer is exact."""


class DuplicateKey(ValueError):
    """A JSON object names one key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: a dict, refusing a key given twice ("last one wins" hides errors)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def parse_json(data: bytes, source: str, nesting: str = "a trace is at most 3 levels of lists") -> Any:
    """Parse JSON bytes with one-line errors naming the file.

    A key repeated in one object is an error, and so is ``true``/``false``
    inside a list (where every format eplb reads has numbers). ``nesting``
    says what the file should look like when it is nested too deeply.
    """
    try:
        doc = json.loads(data, object_pairs_hook=unique_pairs)
    except DuplicateKey as exc:
        raise EplbError(f"{source}: key {quote(exc.key)} appears twice in one JSON object; keep one") from None
    except UnicodeDecodeError:
        raise EplbError(f"{source}: not UTF-8 text; save the JSON as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise EplbError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); fix or re-export the file"
        ) from None
    except RecursionError:
        raise EplbError(f"{source}: JSON nested too deeply; {nesting}") from None
    if b"true" in data or b"false" in data:
        from .trees import check_tree

        check_tree(doc, source, len(data))
    return doc


def json_bytes(obj: Any) -> bytes:
    """Compact JSON with a trailing newline."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def nested_numbers(values: torch.Tensor) -> list:
    """Nested lists of ints when every value is an exact integer, else floats (round-trip exact)."""
    import torch

    if bool(((values == values.round()) & (values.abs() < EXACT_INT)).all()):
        return values.to(torch.int64).tolist()
    return values.tolist()


def keys_found(doc: Any, limit: int = 8) -> str:
    """The first keys of a JSON object (or what it is instead), for messages."""
    if isinstance(doc, dict):
        return listing(list(doc)[:limit]) or "none"
    return f"a JSON {type(doc).__name__}, not an object"
