"""Where a file's bytes come from: a path, a folder or standard input, read once.

Every reader gets a :class:`Source`: the name to put in messages, the
extension, and the content, read at most once. Format detection and parsing
share those bytes, so standard input, a FIFO or ``<(zcat trace.csv.gz)`` work
like files. Regular files can also be opened for streaming: a safetensors
trace far larger than memory is read a slice at a time.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EplbError, shorten
from .jsonio import parse_json
from .limits import PARSE_FACTOR, archive_limit, check_memory, input_too_big, max_input_bytes, size_text
from .trees import check_tree

STDIN = "-"
STDIN_NAME = "-"
HEAD_BYTES = 1 << 16
"""How much of a file format detection looks at."""
CHUNK = 1 << 20
"""Bytes read from a stream per step."""
_DEVICES = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def first_line(exc: BaseException) -> str:
    """First line of an exception's text, trimmed, for one-line messages."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 120 else line[:117] + "..."


@dataclass
class Source:
    """One input: ``path`` as given (``-`` for standard input), ``name`` for messages.

    ``what`` names the kind of file expected ("trace", "placement file"), for
    messages about missing or empty input. Regular files are read or opened
    as needed; anything else (standard input, a FIFO, ``<(...)``) is a stream,
    read once, in steps, and at most ``EPLB_MAX_INPUT_BYTES``: its first
    :data:`HEAD_BYTES` serve format detection before the rest is read, so a
    stream of garbage is refused after 64 KiB. Devices (``/dev/zero``) are
    refused: they are not files and may never end.
    """

    path: str
    what: str = "trace"
    name: str = field(init=False)
    _data: bytes | None = field(default=None, init=False, repr=False)
    _parsed: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _prefix: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _stream: Any = field(default=None, init=False, repr=False)
    _eof: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = STDIN_NAME if self.is_stdin else shorten(self.path)
        if self.is_stdin:
            return
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            what = "file or folder" if self.what == "trace" else self.what
            raise EplbError(f"{self.name}: no such {what}; check the path") from None
        except OSError as exc:
            raise EplbError(f"{self.name}: cannot read it ({exc.strerror or exc}); check the path") from None
        for test, kind in _DEVICES:
            if test(mode):
                raise EplbError(f"{self.name}: is {kind}, not a file; give a file, or - to read standard input")

    @classmethod
    def of_bytes(cls, data: bytes, name: str = STDIN_NAME, what: str = "trace") -> Source:
        """A source whose content is already in memory (e.g. standard input read by the caller)."""
        src = cls(STDIN, what)
        src.name = name
        src._data = data
        return src

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIN

    @property
    def is_folder(self) -> bool:
        return not self.is_stdin and Path(self.path).is_dir()

    @property
    def is_regular_file(self) -> bool:
        """A file that can be reopened and seeked (not a pipe, FIFO or device)."""
        if self.is_stdin:
            return False
        try:
            return stat.S_ISREG(Path(self.path).stat().st_mode)
        except OSError:
            return False

    @property
    def suffix(self) -> str:
        return "" if self.is_stdin else Path(self.path).suffix.lower()

    def _check_file(self) -> None:
        if self.is_folder:
            raise EplbError(f"{self.name}: is a folder, not a {self.what}")

    def size(self) -> int:
        """Bytes of content (a regular file's size without reading it)."""
        if self._data is None and self.is_regular_file:
            return Path(self.path).stat().st_size
        return len(self.data())

    def head(self, n: int = HEAD_BYTES) -> bytes:
        """The first ``n`` bytes; an empty file is an error."""
        if self._data is None and self.is_regular_file:
            self._check_file()
            with self.open() as fh:
                try:
                    head = fh.read(n)
                    rest = fh.read(1)
                except OSError as exc:
                    raise EplbError(f"{self.name}: cannot read the file ({exc.strerror or exc}); check it") from None
            if not rest and (not head or head.isspace()):
                raise self._empty()
            return head
        if self._data is not None:
            return self._data[:n]
        self._fill(n)
        head = bytes(self._prefix[:n])
        if self._eof and (not head or head.isspace()):
            raise self._empty()
        return head

    def _empty(self) -> EplbError:
        if self.is_stdin:
            return EplbError(f"{self.name}: standard input is empty; pipe a {self.what} into it or give a file")
        if self.what == "trace":
            return EplbError(f"{self.name}: file is empty; give a trace with at least one window, layer and expert")
        return EplbError(f"{self.name}: file is empty")

    def data(self) -> bytes:
        """All of the content, read once."""
        if self._data is None:
            if self.is_regular_file:
                self._data = self._read_file()
            else:
                self._check_file()
                self._fill(None)
                self._data = bytes(self._prefix)
                self._prefix = bytearray()
            if not self._data or self._data.isspace():
                raise self._empty()
        return self._data

    def _read_file(self) -> bytes:
        self._check_file()
        try:
            return Path(self.path).read_bytes()
        except OSError as exc:
            raise EplbError(f"{self.name}: cannot read the file ({exc.strerror or exc}); check its permissions") from None

    def _open_stream(self) -> Any:
        """Standard input or the FIFO, opened once."""
        if self._stream is None:
            if self.is_stdin:
                if sys.stdin is None:
                    raise EplbError(f"{self.name}: there is no standard input; give a file instead")
                self._stream = getattr(sys.stdin, "buffer", sys.stdin)
            else:
                try:
                    self._stream = open(self.path, "rb")  # closed at the end of the stream
                except OSError as exc:
                    raise EplbError(f"{self.name}: cannot read it ({exc.strerror or exc}); check the path") from None
        return self._stream

    def _fill(self, want: int | None) -> None:
        """Read the stream until ``want`` bytes are held (None: to its end), at most ``EPLB_MAX_INPUT_BYTES``."""
        limit = max_input_bytes()
        stream = self._open_stream()
        checked = 0
        while not self._eof and (want is None or len(self._prefix) < want):
            step = CHUNK if want is None else min(CHUNK, want - len(self._prefix))
            try:
                chunk = stream.read(min(step, limit + 1 - len(self._prefix)))
            except (OSError, ValueError) as exc:
                raise EplbError(f"{self.name}: cannot read it ({exc}); give a file instead") from None
            if isinstance(chunk, str):
                chunk = chunk.encode()
            if not chunk:
                self._eof = True
                if not self.is_stdin:
                    stream.close()
                break
            self._prefix += chunk
            if len(self._prefix) > limit:
                raise input_too_big(self.name, "the stream went on", limit)
            if len(self._prefix) - checked >= 64 * CHUNK:
                checked = len(self._prefix)
                check_memory(self.name, 2 * checked, "to hold what arrived so far",
                             "give a smaller input or a file eplb can read in slices (.safetensors)")
            if len(self._prefix) >= HEAD_BYTES and self.is_stdin:
                self._refuse_device_stdin()

    def _refuse_device_stdin(self) -> None:
        """Standard input redirected from a device (``< /dev/zero``) is endless: refuse it after the head."""
        try:
            fd = sys.stdin.fileno()
            mode = os.fstat(fd).st_mode
        except (AttributeError, OSError, ValueError):
            return
        if stat.S_ISCHR(mode) and not os.isatty(fd):
            raise EplbError(f"{self.name}: standard input is a character device (such as /dev/zero), not a file or "
                            "pipe; redirect a file into it or give a file")

    def open(self) -> io.BufferedIOBase:
        """A binary stream over the content: the file itself when it is regular, else the bytes read once."""
        if self._data is None and self.is_regular_file:
            self._check_file()
            try:
                return open(self.path, "rb")
            except OSError as exc:
                raise EplbError(f"{self.name}: cannot read the file ({exc.strerror or exc}); check its permissions") from None
        return io.BytesIO(self.data())

    def parse_cost(self, container: str) -> None:
        """Fail before parsing when the content needs more memory than is available."""
        check_memory(self.name, self.size() * PARSE_FACTOR[container])

    def json(self, nesting: str = "a trace is at most 3 levels of lists") -> Any:
        """The content parsed as JSON, once."""
        if "json" not in self._parsed:
            self.parse_cost("json")
            self._parsed["json"] = parse_json(self.data(), self.name, nesting)
        return self._parsed["json"]

    def torch_object(self) -> Any:
        """The content loaded with ``torch.load(weights_only=True)``, once (see :func:`load_torch`)."""
        if "torch" not in self._parsed:
            self.parse_cost("torch")
            self._parsed["torch"] = load_torch(self.data(), self.name)
        return self._parsed["torch"]


def load_torch(data: bytes, source: str) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; any failure is one line.

    A pickle that asks for anything but tensors and plain containers is refused
    by torch before any of it runs; the message says why, in one line.
    """
    import re
    import warnings

    import torch

    _check_archive(data, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle, zip and torch raise many unrelated types for bad files
        text = str(exc)
        if "Weights only load failed" in text:
            blocked = re.search(r"GLOBAL ([\w.]+)", text)
            skip = ("Please file an issue", "Check the documentation")
            detail = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith(skip)]
            reason = f"it asks for Python object {blocked.group(1)}" if blocked else (
                detail[0][:120] if detail else "unsupported content")
            raise EplbError(
                f"{source}: refused to load this torch.save file ({reason}); eplb loads .pt files with "
                "weights_only=True, which allows plain tensors, lists and dicts and never runs code from them; "
                "re-dump it with torch.save"
            ) from None
        raise EplbError(
            f"{source}: not a readable torch.save file ({first_line(exc)}); "
            "re-dump it (only plain tensors, lists and dicts load)"
        ) from None
    check_tree(obj, source, len(data))
    return obj


def _check_archive(data: bytes, source: str) -> None:
    """Refuse a ``torch.save`` zip whose entries unpack to far more than the file before unpacking any.

    torch.save stores its entries uncompressed, so their sizes add up to about
    the file's; a compressed archive that unpacks to gigabytes is a bomb.
    """
    import zipfile

    if data[:4] != b"PK\x03\x04":
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load names the damage
    limit = archive_limit(len(data))
    if unpacked > limit:
        raise input_too_big(source, f"unpacks to {size_text(unpacked)} from a {size_text(len(data))} file "
                            "(torch.save never compresses; re-save it with torch.save)", limit)
    check_memory(source, unpacked * PARSE_FACTOR["torch"])
