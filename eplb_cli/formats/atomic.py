"""Atomic file output: write beside the target, then move it into place in one step.

An interrupted run leaves either the old file or the new one, never a torn one,
and an existing file is only replaced when the caller passes ``force``.

Bytes (placements, traces, JSON) go to an anonymous ``O_TMPFILE`` file in the
target's folder where Linux offers one: it has no name until it is complete,
so even a run killed with SIGKILL leaves nothing behind. Writers that need a
path (plots) get a hidden named temporary file ``.NAME.eplb-PID-XXXX.tmp.EXT``
instead; one left by a killed run is removed by the next write to the same
target. Errors from the file system (disk full, permissions) become one-line
:class:`EplbError` messages that say the old file is unchanged.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import EplbError, arg

_TAG = ".eplb-"


def check_writable(path: str | Path, force: bool) -> Path:
    """Fail early, before any work, when ``path`` cannot be written."""
    if str(path) == "-":
        return Path("-")
    p = Path(path)
    if p.exists() and not force:
        raise EplbError(f"{p}: file exists; pass {arg('force', True)} to overwrite it")
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


def _failed(p: Path, exc: OSError, existed: bool) -> EplbError:
    """A one-line error for an OS failure while writing ``p``."""
    kept = "the old file is unchanged" if existed else "nothing was written"
    return EplbError(f"{p}: cannot write ({exc.strerror or exc}); {kept}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; some file systems cannot open folders, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale(p: Path) -> None:
    """Delete named temporaries of ``p`` left by runs that no longer exist (killed mid-write)."""
    for tmp in p.parent.glob(glob.escape(f".{p.name}{_TAG}") + "*"):
        pid_text = tmp.name[len(p.name) + 1 + len(_TAG):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        except OSError:
            continue


def _publish_named(tmp: Path, p: Path, force: bool) -> None:
    """Move the finished ``tmp`` to ``p``; without ``force`` never replace a file that appeared meanwhile."""
    if force:
        os.replace(tmp, p)
        return
    try:
        os.link(tmp, p)
    except FileExistsError:
        raise EplbError(f"{p}: file appeared while writing; pass {arg('force', True)} to overwrite it") from None
    except OSError:
        if p.exists():
            raise EplbError(f"{p}: file appeared while writing; pass {arg('force', True)} to overwrite it") from None
        os.replace(tmp, p)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` (same extension); move it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    if str(path) == "-":
        raise EplbError("-: this output cannot go to standard output; give a file name")
    p = check_writable(path, force)
    existed = p.exists()
    _remove_stale(p)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{p.name}{_TAG}{os.getpid()}-", suffix=f".tmp{p.suffix}", dir=p.parent)
    except OSError as exc:
        raise _failed(p, exc, existed) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        _publish_named(tmp, p, force)
        _fsync_folder(p.parent)
    except OSError as exc:
        raise _failed(p, exc, existed) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _open_anonymous(folder: Path) -> int | None:
    """An unnamed file in ``folder`` (Linux ``O_TMPFILE``), or None where the system has none."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        fd = os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError:
        return None
    if not os.path.exists(f"/proc/self/fd/{fd}"):
        os.close(fd)
        return None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 24]):]


def _link_anonymous(fd: int, p: Path, force: bool) -> None:
    """Give the finished unnamed file ``fd`` the name ``p``.

    ``linkat`` must follow the ``/proc/self/fd`` link; CPython only calls
    ``linkat`` (rather than ``link``, which does not follow) when given a
    folder descriptor, hence ``dir_fd``.
    """
    source = f"/proc/self/fd/{fd}"
    folder = os.open(p.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        if not force:
            try:
                os.link(source, p.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=True)
            except FileExistsError:
                raise EplbError(f"{p}: file appeared while writing; pass {arg('force', True)} to overwrite it") from None
            return
        for _ in range(100):
            tmp = f".{p.name}{_TAG}{os.getpid()}-{os.urandom(4).hex()}.tmp"
            try:
                os.link(source, tmp, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=True)
            except FileExistsError:
                continue
            try:
                os.replace(tmp, p.name, src_dir_fd=folder, dst_dir_fd=folder)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=folder)
            return
        raise EplbError(f"{p}: cannot find a free temporary name beside it; clean up its folder")
    finally:
        os.close(folder)


def write_bytes_atomic(path: str | Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``-`` writes to standard output."""
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    p = check_writable(path, force)
    _remove_stale(p)
    fd = _open_anonymous(p.parent)
    if fd is None:
        with atomic_path(p, force) as tmp:
            with open(tmp, "wb") as fh:
                _write_all(fh.fileno(), data)
        return
    existed = p.exists()
    try:
        _write_all(fd, data)
        os.fsync(fd)
        _link_anonymous(fd, p, force)
        _fsync_folder(p.parent)
    except OSError as exc:
        raise _failed(p, exc, existed) from None
    finally:
        os.close(fd)


def write_with(path: str | Path, writer: Callable[[Path], None], force: bool = False) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path, force) as tmp:
        writer(tmp)
