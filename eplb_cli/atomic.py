"""Atomic file output: write to a temporary file in the same folder, then rename.

An interrupted run leaves either the old file or the new one, never a torn one,
and an existing file is only replaced when the caller passes ``force``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import EplbError


def check_writable(path: str | Path, force: bool) -> Path:
    """Fail early, before any work, when ``path`` cannot be written."""
    if str(path) == "-":
        return Path("-")
    p = Path(path)
    if p.exists() and not force:
        raise EplbError(f"{p}: file exists; pass --force to overwrite it")
    if p.is_dir():
        raise EplbError(f"{p}: is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise EplbError(f"{p}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise EplbError(f"{p}: folder {parent} is not writable")
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    p = check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        if p.exists() and not force:
            raise EplbError(f"{p}: file appeared while writing; pass --force to overwrite it")
        os.replace(tmp_path, p)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``-`` writes to standard output."""
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)


def write_with(path: str | Path, writer: Callable[[Path], None], force: bool = False) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path, force) as tmp:
        writer(tmp)
