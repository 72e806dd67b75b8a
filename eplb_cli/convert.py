"""Convert a trace or a placement from one file format to another.

The kind of the input is read from its content (a ``physical_to_logical_map``,
``phy2log``, ``layer_list``, ``initial_global_assignments`` or a CSV ``slot``
column make it a placement; anything else is read as a trace), so one command
covers both, and a trace never silently becomes a placement or back.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import check_writable
from .errors import EplbError
from .placement import (
    STDIN,
    detect_placement_format,
    placement_format,
    read_input_bytes,
    read_placement_bytes,
    save_placement,
)

_TRACE_EXTENSIONS = {".safetensors": "safetensors", ".csv": "csv", ".json": "sglang"}
_CARRIED_META = ("strategy", "source", "layer_ids")
"""Placement metadata worth keeping across formats (the writers that can hold it do)."""


def convert(src: str, dst: str, *, fmt: str | None = None, input_format: str | None = None, force: bool = False,
            defaults: dict | None = None) -> dict:
    """Read ``src`` (``-``: stdin), write it to ``dst`` (``-``: stdout) in ``fmt`` or the format ``dst``'s extension names.

    ``defaults`` fills the topology (``gpus``, ``nodes``, ``groups``) of
    placement files that do not record it. Returns a summary for ``--json``.
    """
    if str(dst) != STDIN:
        check_writable(dst, force)
    if str(src) != STDIN and Path(src).is_dir():
        return _convert_trace(src, None, dst, fmt=fmt, input_format=input_format, force=force)
    data = read_input_bytes(str(src), "file")
    source = "<stdin>" if str(src) == STDIN else str(src)
    suffix = "" if str(src) == STDIN else Path(src).suffix
    kind = detect_placement_format(data, source, suffix)
    if kind is None:
        return _convert_trace(src, data, dst, fmt=fmt, input_format=input_format, force=force)
    placement_format(dst, fmt)
    placement, meta = read_placement_bytes(data, source, fmt=input_format, defaults=defaults, suffix=suffix)
    extra = {k: meta[k] for k in _CARRIED_META if k in meta}
    save_placement(placement, dst, force=force, fmt=fmt, extra=extra)
    topo = placement.topology
    return {
        "kind": "placement", "input": str(src), "input_format": meta["file_format"], "output": str(dst),
        "format": placement_format(dst, fmt), "layers": placement.layers, "experts": topo.experts,
        "slots": topo.slots, "gpus": topo.gpus, "nodes": topo.nodes,
    }


def _convert_trace(src: str, data: bytes | None, dst: str, *, fmt: str | None, input_format: str | None,
                   force: bool) -> dict:
    """Trace to trace through :mod:`eplb_cli.traces` (folders and files by path, stdin from ``data``)."""
    from .traces import read_trace, read_trace_bytes, write_trace

    out_fmt = fmt.strip().lower() if fmt else _TRACE_EXTENSIONS.get(Path(dst).suffix.lower())
    if out_fmt is None:
        where = "standard output" if str(dst) == STDIN else f"the extension {Path(dst).suffix or '(none)'}"
        raise EplbError(
            f"{dst}: cannot tell the trace format from {where}; use .safetensors, .csv or .json, or pass --format"
        )
    if data is not None and str(src) == STDIN:
        trace = read_trace_bytes(data, input_format)
    else:
        trace = read_trace(src, input_format)
    write_trace(trace, dst, out_fmt, force=force)
    return {
        "kind": "trace", "input": str(src), "output": str(dst), "format": out_fmt,
        "windows": trace.windows, "layers": trace.layers, "experts": trace.experts,
    }
