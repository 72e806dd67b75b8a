"""Memory checks the readers run before they parse a file, and the caps on what a small file may ask for.

A reader weighs what a file will need (its declared tensor size, or its size
times a measured parse factor) against the memory this process can still
allocate, and fails with one line before the work instead of running the
machine out of memory.

Three caps stop a small input from asking for far more than it holds; each
refusal names the cap and the environment variable that lifts it:

``EPLB_MAX_INPUT_BYTES`` (default 1 GiB)
    bytes read from a stream (standard input, a pipe, ``<(...)``); for a
    ``.pt`` archive, what its entries unpack to (default: 4 times the file,
    at least 1 MiB, since torch.save stores them uncompressed).
``EPLB_MAX_CELLS`` (default: 64 per value the input spells out, at least 2**20)
    values that ids, column names, YAML aliases or shared pickle objects
    expand to: a CSV row ``0,99999999,1`` would otherwise make a dense trace of
    10**8 cells, and ten nested YAML aliases a billion list entries.
``EPLB_MAX_OUTPUT_BYTES`` (default: 16 times the input, at least 1 MiB)
    text ``convert`` writes: a sparse CSV becomes a dense table.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EplbError, arg, count_text

GIB = float(1 << 30)
MAX_INPUT_BYTES = 1 << 30
"""Default of ``EPLB_MAX_INPUT_BYTES``."""
CELLS_PER_VALUE = 64
MIN_CELLS = 1 << 20
"""Default of ``EPLB_MAX_CELLS``: this many cells per value given, and never fewer than ``MIN_CELLS``."""
OUTPUT_RATIO = 16
MIN_OUTPUT = 1 << 20
"""Default of ``EPLB_MAX_OUTPUT_BYTES``: this many times the input, and never less than ``MIN_OUTPUT``."""
PARSE_FACTOR = {"json": 16, "csv": 14, "torch": 4, "yaml": 16}
"""Peak memory over file size when parsing each container (measured: JSON 16x, CSV 14x)."""


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit; None if unknown."""
    avail = _meminfo_available()
    headroom = _cgroup_headroom()
    if avail is None or (headroom is not None and headroom < avail):
        return headroom
    return avail


def _meminfo_available() -> int | None:
    """MemAvailable from /proc/meminfo, else free pages from sysconf."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_headroom(proc_file: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Limit minus non-reclaimable usage of this process's memory cgroup (v2, then v1), if limited."""
    try:
        entries = proc_file.read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for entry in entries:
        hid, controllers, path = ([*entry.split(":", 2), "", ""])[:3]
        rel = path.lstrip("/")
        if hid == "0" and not controllers:
            candidates += [(root / rel, "memory.max", "memory.current"), (root, "memory.max", "memory.current")]
        elif "memory" in controllers.split(","):
            v1 = root / "memory"
            candidates += [(v1 / rel, "memory.limit_in_bytes", "memory.usage_in_bytes"),
                           (v1, "memory.limit_in_bytes", "memory.usage_in_bytes")]
    for folder, limit_name, usage_name in candidates:
        try:
            limit_text = (folder / limit_name).read_text().strip()
            usage = int((folder / usage_name).read_text())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 1 << 60:
            return None
        return max(int(limit_text) - usage + _reclaimable(folder), 0)
    return None


def _reclaimable(folder: Path) -> int:
    """Page cache a cgroup can drop (``inactive_file`` in memory.stat), counted as free."""
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


READ_ADVICE = (f"use {arg('windows', 'A:B')} to read fewer windows or {arg('window', 'N')} to sum N steps into one "
               "(safetensors traces are read a slice at a time), or run on a machine with more memory")


def check_memory(source: str, needed: int, doing: str = "to load", advice: str = READ_ADVICE) -> None:
    """Fail before the work when ``source`` needs more memory than is available (``doing``: what for)."""
    avail = available_memory()
    if avail is None or needed <= avail:
        return
    raise EplbError(f"{source}: needs about {size_text(needed)} {doing} but only {size_text(avail)} is available; {advice}")


def env_limit(name: str) -> int | None:
    """The value of environment variable ``name`` (bytes or a count; ``K``/``M``/``G`` suffixes), or None when unset."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(text[-1].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or len(digits) > 20:
        raise EplbError(f"environment variable {name}={text[:40]!r}: expected a whole number, e.g. 4G or 100000000")
    return int(digits) * scale


def max_input_bytes() -> int:
    """Most bytes read from a stream or unpacked from an archive (``EPLB_MAX_INPUT_BYTES``)."""
    value = env_limit("EPLB_MAX_INPUT_BYTES")
    return MAX_INPUT_BYTES if value is None else value


def archive_limit(size: int) -> int:
    """Most bytes a ``size``-byte archive may unpack to: ``EPLB_MAX_INPUT_BYTES`` if set, else 4x, at least 1 MiB."""
    value = env_limit("EPLB_MAX_INPUT_BYTES")
    return max(4 * size, 1 << 20) if value is None else value


def input_too_big(source: str, what: str, limit: int) -> EplbError:
    """The refusal for input beyond ``EPLB_MAX_INPUT_BYTES``."""
    return EplbError(f"{source}: {what}, more than the limit of {size_text(limit)} (EPLB_MAX_INPUT_BYTES); "
                     "set EPLB_MAX_INPUT_BYTES higher to allow it")


def cells_limit(given: int) -> int:
    """Most values an input that spells out ``given`` values (rows, list entries, bytes) may expand to."""
    value = env_limit("EPLB_MAX_CELLS")
    return max(given * CELLS_PER_VALUE, MIN_CELLS) if value is None else value


def check_cells(cells: int, source: str, given: int, what: str = "ids imply", per: str = "row",
                unit: str = "load cells", fix: str = "check the ids") -> None:
    """Refuse when a small input expands to ``cells`` values.

    ``what`` says how ("ids imply"), ``per`` what ``given`` counts ("row"),
    ``unit`` what is counted and ``fix`` what the user should look at.
    """
    limit = cells_limit(given)
    if cells <= limit:
        return
    rule = "EPLB_MAX_CELLS" if env_limit("EPLB_MAX_CELLS") is not None else f"{CELLS_PER_VALUE} per {per}, at least 2**20"
    plural = "" if given == 1 else "s"
    raise EplbError(f"{source}: {what} {count_text(cells)} {unit} from {given:,} {per}{plural}: too many (limit {limit:,}: "
                    f"{rule}); {fix}, or raise EPLB_MAX_CELLS")


def check_output(output: str, estimate: int, given: int) -> None:
    """Refuse a text output of about ``estimate`` bytes made from ``given`` bytes of input, beyond the cap."""
    value = env_limit("EPLB_MAX_OUTPUT_BYTES")
    limit = max(given * OUTPUT_RATIO, MIN_OUTPUT) if value is None else value
    if estimate <= limit:
        return
    rule = "EPLB_MAX_OUTPUT_BYTES" if value is not None else f"{OUTPUT_RATIO} times the input, at least {size_text(MIN_OUTPUT)}"
    raise EplbError(f"{output}: would be at least {size_text(estimate)} of text from {size_text(given)} of input, more than "
                    f"the limit of {size_text(limit)} ({rule}); write .safetensors instead, or set "
                    "EPLB_MAX_OUTPUT_BYTES higher to allow it")


def size_text(n: int) -> str:
    """Bytes in GiB, MiB or KiB, one decimal (plain bytes below 1 KiB)."""
    for unit, scale in (("GiB", GIB), ("MiB", float(1 << 20)), ("KiB", 1024.0)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"

