"""What a file format is to eplb: a name, a container, a reader, a writer, and how to recognise it.

Each engine module (:mod:`.sglang`, :mod:`.vllm`, ...) describes its formats
with these two records; :mod:`.registry` lists them. Detection runs in two
steps: the container (JSON, CSV, safetensors, a ``torch.save`` zip, YAML or a
folder) from the extension or the first bytes, then the formats of that
container in registry order, each asked whether it claims the content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .source import Source

if TYPE_CHECKING:
    from ..placement import Placement
    from ..trace import Trace

CONTAINERS = ("safetensors", "csv", "json", "torch", "yaml", "folder")
_BY_EXTENSION = {
    ".safetensors": "safetensors", ".csv": "csv", ".json": "json", ".pt": "torch", ".pth": "torch",
    ".yaml": "yaml", ".yml": "yaml",
}


@dataclass(frozen=True)
class TraceFormat:
    """A load-trace format.

    ``claims`` says whether content of this ``container`` is this format (None:
    all of it); ``extensions`` choose it as the writer for a file name;
    ``read_windows`` reads only the windows asked for, where the format allows.
    ``hint`` names what identifies it, for messages when nothing matches.
    """

    name: str
    container: str
    read: Callable[[Source], Trace]
    write: Callable[[Trace], bytes] | None = None
    claims: Callable[[Source], bool] | None = None
    extensions: tuple[str, ...] = ()
    read_windows: Callable[[Source, int | None, str | None], Trace] | None = None
    hint: str = ""


@dataclass(frozen=True)
class PlacementFormat:
    """A placement format: ``read`` gives phy2log [L, S] and the file's metadata; ``write`` the file's bytes.

    ``write(placement, extra, name)`` gets eplb's metadata to keep (``strategy``,
    ``source``, ``layer_ids``) and the output name for messages. ``binary``
    formats are not written to a terminal. ``topology``: the file records the
    GPU count, so writing one needs it. ``launch(placement, path, gpus)`` says how the
    engine must be started for the file to mean what eplb planned (None: not
    an engine's file; ``gpus`` None: not known).
    """

    name: str
    container: str
    read: Callable[[Source], tuple[torch.Tensor, dict]]
    write: Callable[[Placement, dict, str], bytes]
    claims: Callable[[Source], bool] | None = None
    extensions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    binary: bool = False
    topology: bool = False
    launch: Callable[[Placement, str, int | None], dict] | None = None


def container_of(src: Source) -> str | None:
    """The container of ``src``: by extension, else by its first bytes; None when nothing fits."""
    if src.is_folder:
        return "folder"
    if src.suffix in _BY_EXTENSION:
        return _BY_EXTENSION[src.suffix]
    head = src.head()
    text = head[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith((b"{", b"[")):
        return "json"
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if len(head) > 10 and head[8:10] == b'{"':
        return "safetensors"
    if "," in csv_header_line(head):
        return "csv"
    if b"initial_global_assignments" in head:
        return "yaml"
    return None


def csv_header_line(head: bytes) -> str:
    """The first line of text content, or "" when it is not UTF-8 text."""
    line = head.lstrip(b"\r\n").split(b"\n", 1)[0]
    try:
        return line.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError:
        return ""


def csv_columns(src: Source) -> list[str]:
    """The lower-cased column names of a CSV source's header."""
    return [c.strip().strip('"').lower() for c in csv_header_line(src.head()).split(",")]


def is_text(head: bytes) -> bool:
    """Whether ``head`` (the start of a file) is UTF-8 text without control characters other than white space."""
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end of the head
            return False
        text = head[: exc.start].decode("utf-8-sig")
    return not any(ord(c) < 32 and c not in "\t\r\n" for c in text)
