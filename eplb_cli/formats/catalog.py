"""Format names and file extensions, known without loading any reader: what a flag or a file name can ask for.

The CLI checks ``--format``, ``--input-format`` and output extensions against
this table before torch loads, so a mistyped flag costs milliseconds, not the
seconds of a torch import. :mod:`.registry` resolves every name through these
functions and holds the readers and writers; ``tests/test_registry.py``
checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import EplbError, arg

STDIN = "-"
"""How a user names standard input and standard output."""


@dataclass(frozen=True)
class Entry:
    """A format's name, the extensions that choose it as a writer, other names for it, and whether eplb writes it."""

    name: str
    extensions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    writable: bool = True


TRACES: tuple[Entry, ...] = (
    Entry("safetensors", (".safetensors",)),
    Entry("csv", (".csv",)),
    Entry("csv-wide"),
    Entry("sglang", (".json",)),
    Entry("sglang-pt", writable=False),
    Entry("vllm"),
    Entry("sglang-per-pass", writable=False),
    Entry("trtllm", writable=False),
)
PLACEMENTS: tuple[Entry, ...] = (
    Entry("safetensors", (".safetensors",)),
    Entry("sglang", (".json",), ("json",)),
    Entry("sglang-pt", (".pt",), ("pt",)),
    Entry("trtllm", (".yaml", ".yml"), ("yaml", "yml")),
    Entry("vllm-ascend", aliases=("ascend",)),
    Entry("vllm"),
    Entry("csv", (".csv",)),
)


def _names(entries: tuple[Entry, ...]) -> str:
    return ", ".join(e.name for e in entries)


def trace_name(name: str, param: str = "input_format", *, writing: bool = False) -> str:
    """The trace format called ``name`` (any case); ``writing`` also requires that eplb writes it."""
    key = name.strip().lower()
    for entry in TRACES:
        if entry.name == key:
            if writing and not entry.writable:
                writable = ", ".join(e.name for e in TRACES if e.writable)
                raise EplbError(f"{arg(param, name)}: format {key} can only be read; write {writable}")
            return entry.name
    raise EplbError(f"{arg(param, name)}: unknown format; use one of {_names(TRACES)}")


def placement_name(name: str, param: str = "fmt") -> str:
    """The placement format called ``name`` or one of its aliases (json, pt, yaml, yml, ascend)."""
    key = name.strip().lower()
    for entry in PLACEMENTS:
        if key == entry.name or key in entry.aliases:
            return entry.name
    raise EplbError(f"{arg(param, name)}: unknown placement format; use one of {_names(PLACEMENTS)}")


def trace_writer_name(path: str) -> str:
    """The trace format a file name's extension implies."""
    if path == STDIN:
        raise EplbError(f"-: cannot tell the output format of standard output; pass {arg('fmt')}")
    suffix = Path(path).suffix.lower()
    for entry in TRACES:
        if suffix in entry.extensions:
            return entry.name
    known = ", ".join(dict.fromkeys(e for f in TRACES for e in f.extensions))
    raise EplbError(f"{path}: cannot tell the trace format from the extension {suffix or '(none)'}; "
                    f"use {known}, or pass {arg('fmt')}")


def placement_extensions() -> list[str]:
    """Every extension a placement file may have."""
    return list(dict.fromkeys(e for f in PLACEMENTS for e in f.extensions))


def placement_writer_name(path: str) -> str:
    """The placement format a file name's extension implies."""
    if path == STDIN:
        raise EplbError(f"-: cannot tell the placement format of standard output; pass {arg('fmt')}")
    suffix = Path(path).suffix.lower()
    for entry in PLACEMENTS:
        if suffix in entry.extensions:
            return entry.name
    raise EplbError(f"{path}: unknown placement extension {suffix or '(none)'}; "
                    f"use one of {', '.join(placement_extensions())} or {arg('fmt')}")


def placement_output(path: str, fmt: str | None = None) -> str:
    """The placement format written to ``path``: ``fmt`` if given, else the extension's."""
    return placement_name(fmt) if fmt else placement_writer_name(str(path))
