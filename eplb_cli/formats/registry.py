"""The two registries: every trace format and every placement format eplb reads or writes, with detection.

Order matters only within a container: the first format that claims the
content wins. Adding an engine is one module beside this one and one line in
each list it has formats for.
"""

from __future__ import annotations

from ..errors import EplbError, arg, listing
from . import catalog, csv_file, safetensors_file, sglang, trtllm, vllm, vllm_ascend
from .base import PlacementFormat, TraceFormat, container_of, csv_header_line, is_text
from .jsonio import keys_found
from .source import Source

TRACES: tuple[TraceFormat, ...] = (
    safetensors_file.TRACE,
    csv_file.LONG,
    csv_file.WIDE,
    sglang.STAT_JSON,
    sglang.STAT_PT,
    vllm.LOAD_HISTORY,
    sglang.PER_PASS,
    trtllm.STATISTICS,
)
PLACEMENTS: tuple[PlacementFormat, ...] = (
    safetensors_file.PLACEMENT,
    sglang.MAP_JSON,
    sglang.MAP_PT,
    trtllm.YAML,
    vllm_ascend.MAP,
    vllm.EXPERT_MAP,
    csv_file.PLACEMENT,
)

TRACE_FORMATS: tuple[str, ...] = tuple(f.name for f in TRACES)
"""Trace format names accepted by ``--input-format`` and ``--format``."""
WRITE_FORMATS: tuple[str, ...] = tuple(f.name for f in TRACES if f.write is not None)
"""Trace formats eplb can write."""
FOLDER_FORMATS: tuple[str, ...] = tuple(f.name for f in TRACES if f.container == "folder")
"""Trace formats whose input is a folder of engine dumps (readers only)."""
PLACEMENT_FORMATS: tuple[str, ...] = tuple(f.name for f in PLACEMENTS)
"""Placement format names accepted by ``--format``."""


# ---------------------------------------------------------------- by name and by file name (writing)


def trace_format(name: str, param: str = "input_format", *, writing: bool = False) -> TraceFormat:
    """The trace format called ``name`` (any case); ``writing`` also requires a writer."""
    return _trace_record(catalog.trace_name(name, param, writing=writing))


def placement_format(name: str, param: str = "fmt") -> PlacementFormat:
    """The placement format called ``name`` or one of its aliases (json, pt, yaml, yml, ascend)."""
    return _placement_record(catalog.placement_name(name, param))


def trace_writer_for(path: str) -> TraceFormat:
    """The trace writer a file name's extension implies."""
    return _trace_record(catalog.trace_writer_name(path))


def placement_writer_for(path: str) -> PlacementFormat:
    """The placement writer a file name's extension implies."""
    return _placement_record(catalog.placement_writer_name(path))


placement_extensions = catalog.placement_extensions


def _trace_record(name: str) -> TraceFormat:
    return next(f for f in TRACES if f.name == name)


def _placement_record(name: str) -> PlacementFormat:
    return next(f for f in PLACEMENTS if f.name == name)


# ---------------------------------------------------------------- by content (reading)


def detect_placement(src: Source) -> PlacementFormat | None:
    """The placement format of ``src``, or None when it holds no placement (a trace, say)."""
    if src.is_folder:
        return None
    container = container_of(src)
    for fmt in PLACEMENTS:
        if fmt.container == container and (fmt.claims is None or fmt.claims(src)):
            return fmt
    return None


def detect_trace(src: Source) -> TraceFormat:
    """The trace format of ``src``, from its container and content; a one-line error when none fits."""
    container = container_of(src)
    if container is None:
        raise EplbError(
            f"{src.name}: cannot tell the trace format from the content; pass {arg('input_format')} ({', '.join(TRACE_FORMATS)})"
        )
    for fmt in TRACES:
        if fmt.container == container and (fmt.claims is None or fmt.claims(src)):
            return fmt
    raise _no_trace_format(src, container)


def _no_trace_format(src: Source, container: str) -> EplbError:
    """Why no trace format claims ``src``: what it holds instead, or what a trace of its container needs."""
    hints = [f.hint for f in TRACES if f.container == container and f.hint]
    if container == "folder":
        return EplbError(
            f"{src.name}: folder holds neither {' nor '.join(hints)}; give a trace file or an engine dump folder"
        )
    placement = detect_placement(src)
    if placement is not None:
        what = {"sglang": "physical_to_logical_map", "vllm": "a JSON list: vLLM's expert map"}.get(
            placement.name, f"a {placement.name} placement")
        return EplbError(f"{src.name}: holds a placement ({what}), not loads; give a load trace"
                         + (f" (a JSON object with {' or '.join(hints)})" if container == "json" else ""))
    if container == "json":
        return EplbError(
            f"{src.name}: JSON has neither {' nor '.join(hints)} (found: {keys_found(src.json())}); "
            "give an expert-load JSON"
        )
    if container == "csv":
        line = csv_header_line(src.head())
        if not line or not is_text(src.head()):
            return EplbError(f"{src.name}: not a UTF-8 CSV file; save it as UTF-8 text")
        columns = listing(c.strip().strip('"').lower() for c in line.split(","))
        return EplbError(
            f"{src.name}: CSV header has no 'layer' column (found: {columns}); use {' or '.join(hints)}"
        )
    return EplbError(
        f"{src.name}: cannot tell the trace format from the content; pass {arg('input_format')} ({', '.join(TRACE_FORMATS)})"
    )
