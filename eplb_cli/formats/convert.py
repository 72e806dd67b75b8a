"""Convert a trace or a placement from one file format to another.

The kind of the input is read from its content (a ``physical_to_logical_map``,
``phy2log``, ``layer_list``, ``initial_global_assignments`` or a CSV ``slot``
column make it a placement; anything else is read as a trace), so one command
covers both, and a trace never silently becomes a placement or back.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EplbError, shorten
from ..trace import Trace
from .atomic import check_writable
from .limits import check_memory, check_output
from .placement_io import launch_settings, read_placement_source, save_placement, writer_for
from .registry import detect_placement, trace_format, trace_writer_for
from .source import STDIN, Source
from .trace_io import read_trace_source, write_trace

CARRIED_META = ("strategy", "source", "layer_ids", "all_layers")
"""Placement metadata worth keeping across formats (the writers that can hold it do)."""
TEXT_BYTES_PER_CELL = {"csv": 6, "csv-wide": 2, "sglang": 2, "vllm": 2}
"""Fewest bytes each text trace format spends on one load value (``l,e,v`` and a newline; ``v,``)."""
TEXT_MEMORY_PER_CELL = 120
"""Peak bytes per load value while a text writer builds its output (Python numbers and strings)."""


def check_text_output(trace: Trace, fmt: str, dst: str, source: Source) -> None:
    """Refuse a text output far larger than its input (a sparse CSV made dense), before writing any of it."""
    per_cell = TEXT_BYTES_PER_CELL.get(fmt)
    if per_cell is None:
        return
    cells = trace.load.numel()
    name = "standard output" if dst == STDIN else shorten(dst)
    check_output(name, cells * per_cell, _input_bytes(source))
    check_memory(name, cells * TEXT_MEMORY_PER_CELL, "to write as text", "write .safetensors instead")


def _input_bytes(source: Source) -> int:
    """Bytes of the input: the file, the stream, or the files of a dump folder."""
    if source.is_folder:
        return sum(p.stat().st_size for p in Path(source.path).iterdir() if p.is_file())
    return source.size()


def convert(src: str, dst: str, *, fmt: str | None = None, input_format: str | None = None, force: bool = False,
            defaults: dict | None = None) -> dict:
    """Read ``src`` (``-``: stdin), write it to ``dst`` (``-``: stdout) in ``fmt`` or the format ``dst``'s extension names.

    ``defaults`` fills the topology (``gpus``, ``nodes``, ``groups``) of
    placement files that do not record it; it is needed only when the output
    records GPUs (eplb's safetensors, CSV, vLLM-Ascend), so SGLang JSON to
    SGLang .pt or to TensorRT-LLM YAML needs no GPU count. Returns a summary
    for ``--json``, with the engine's launch settings (``engine``).
    """
    if str(dst) != STDIN:
        check_writable(dst, force, reads=(src,))
    source = Source(str(src), "file")
    if detect_placement(source) is None:
        trace_writer = trace_format(fmt, "fmt", writing=True) if fmt else trace_writer_for(str(dst))
        trace = read_trace_source(source, trace_format(input_format) if input_format else None)
        check_text_output(trace, trace_writer.name, str(dst), source)
        write_trace(trace, dst, trace_writer.name, force=force)
        return {
            "kind": "trace", "input": str(src), "output": str(dst), "format": trace_writer.name,
            "windows": trace.windows, "layers": trace.layers, "experts": trace.experts,
        }
    writer = writer_for(dst, fmt)
    placement, meta = read_placement_source(source, input_format=input_format, defaults=defaults,
                                            need_gpus=writer.topology)
    if meta.get("all_layers") and writer.name != "vllm":
        raise EplbError(f"{source.name}: one expert map shared by every MoE layer, and {writer.name} lists each "
                        "layer: plan from a trace of the model to get one map per layer, or keep it as vLLM's")
    extra = {k: meta[k] for k in CARRIED_META if k in meta}
    save_placement(placement, dst, force=force, fmt=fmt, extra=extra)
    topo = placement.topology
    gpus = topo.gpus if meta["gpus_known"] else None
    return {
        "kind": "placement", "input": str(src), "input_format": meta["file_format"], "output": str(dst),
        "format": writer.name, "layers": placement.layers, "layer_ids": placement.ids, "experts": topo.experts,
        "slots": topo.slots, "gpus": gpus, "nodes": topo.nodes if gpus is not None else None,
        "engine": launch_settings(placement, dst, fmt, gpus),
    }

