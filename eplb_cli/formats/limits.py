"""Memory checks the readers run before they parse a file, and the caps on what a file may ask for.

A reader weighs what a file will need (its declared tensor size, or its size
times a measured parse factor) against the memory this process can still
allocate, and fails with one line before the work instead of running the
machine out of memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EplbError, arg

GIB = float(1 << 30)
MAX_CELLS = 1 << 28
"""Largest W*L*E a reader will allocate: ids beyond this are surely a typo."""
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
    raise EplbError(f"{source}: needs about {_size(needed)} {doing} but only {_size(avail)} is available; {advice}")


def check_cells(cells: int, source: str) -> None:
    """Refuse absurd dense shapes caused by a stray huge id."""
    if cells > MAX_CELLS:
        raise EplbError(f"{source}: ids imply {cells} load cells (too many); check the layer and expert ids")


def _size(n: int) -> str:
    """Bytes in GiB, MiB or KiB, one decimal."""
    for unit, scale in (("GiB", GIB), ("MiB", float(1 << 20))):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1024:.1f} KiB"
