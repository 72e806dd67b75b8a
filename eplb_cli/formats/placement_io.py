"""Reading and writing placements: pick the format (flag, extension or content), then call its module.

Engine files hold only what the engine reads, so most carry no topology:
reading them needs the GPU count from the caller (``defaults``). Every
placement read is validated (shape, ids, a live replica per expert) before it
is returned.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import EplbError, arg
from ..placement import Placement
from ..topology import Topology, meta_count
from .atomic import check_writable, write_bytes_atomic
from .base import PlacementFormat
from .launch import fits_line
from .maps import check_layer_ids
from .registry import (
    PLACEMENT_FORMATS,
    detect_placement,
    placement_extensions,
    placement_format,
    placement_writer_for,
)
from .source import STDIN, Source

TOPOLOGY_KEYS = ("experts", "slots", "gpus", "nodes", "groups", "policy", "excluded_gpus")


def writer_for(path: str, fmt: str | None = None) -> PlacementFormat:
    """The writer for ``path``: ``fmt`` if given, else the extension (``.json`` is SGLang's)."""
    return placement_format(fmt) if fmt else placement_writer_for(str(path))


def save_placement(p: Placement, path: str, *, force: bool = False, fmt: str | None = None,
                   extra: dict | None = None) -> str:
    """Write ``p`` atomically (``-``: standard output); refuse to replace an existing file without ``force``.

    ``extra`` goes into eplb's own metadata. The model's layer ids of the rows
    (``p.layer_ids``, else ``extra["layer_ids"]``) key the formats indexed by
    model layer (TensorRT-LLM, SGLang, CSV). Every row is written: for a plan
    of a dump with dense (zero) rows, keep the MoE rows first with
    :func:`eplb_cli.moe_layers.moe_placement`, as ``eplb plan -o`` does.
    Returns the format name.
    """
    writer = writer_for(path, fmt)
    if p.layer_ids is None and extra and extra.get("layer_ids") is not None:
        ids = check_layer_ids(extra["layer_ids"], str(path))
        p = Placement(p.phy2log, p.topology, tuple(ids)).validate(str(path))
    if str(path) == STDIN:
        if writer.binary and sys.stdout.isatty():
            raise EplbError(f"-: {writer.name} is binary and standard output is a terminal; give a file name or pipe it")
    else:
        check_writable(path, force)
    write_bytes_atomic(path, writer.write(p, dict(extra or {}), str(path)), force)
    return writer.name


def read_placement_source(src: Source, *, input_format: str | None = None, defaults: dict | None = None,
                          need_gpus: bool = True) -> tuple[Placement, dict]:
    """Parse and validate the placement in ``src``; return it with the file's metadata.

    ``defaults`` fills topology keys the file lacks (``gpus`` from the command
    line, ``experts`` from the trace); keys in the file win. Without
    ``need_gpus`` a file that records no GPU count reads as one GPU, and
    ``meta["gpus_known"]`` is False: for writers that record none either.
    """
    reader = (placement_format(input_format, "input_format") if input_format
              else detect_placement(src) or _by_extension(src))
    if reader is None:
        raise EplbError(
            f"{src.name}: not a placement file this tool knows ({', '.join(PLACEMENT_FORMATS)}); "
            f"give a placement or pass {arg('input_format')}"
        )
    phy2log, meta = reader.read(src)
    info = dict(defaults or {})
    info.update({k: v for k, v in meta.items() if k in TOPOLOGY_KEYS})
    info.setdefault("slots", int(phy2log.shape[1]))
    info.setdefault("experts", int(phy2log.max()) + 1)
    info.setdefault("policy", "auto")
    known = "gpus" in info
    if not known and need_gpus:
        raise EplbError(f"{src.name}: the file does not say how many GPUs it was made for "
                        f"({reader.name} files hold no topology; {fits_line(int(phy2log.shape[1]))}); "
                        f"pass {arg('gpus')}")
    if not known:
        info.update(gpus=1, nodes=1)
    if meta_count(info, "slots", src.name) != phy2log.shape[1]:
        raise EplbError(f"{src.name}: metadata says {info['slots']} slots but phy2log has {phy2log.shape[1]}")
    topo = Topology.from_dict(info, source=src.name)
    ids = meta.get("layer_ids")
    if ids is not None:
        ids = meta["layer_ids"] = check_layer_ids(ids, src.name)
        if len(ids) != phy2log.shape[0]:
            raise EplbError(f"{src.name}: metadata layer_ids lists {len(ids)} ids for {phy2log.shape[0]} layers; "
                            "re-export the file")
    placement = Placement(phy2log, topo, tuple(ids) if ids is not None else None).validate(source=src.name)
    stored = meta.get("_logcnt")
    if stored is not None and (stored.shape != placement.logcnt.shape
                               or not torch.equal(stored.to(torch.int64), placement.logcnt)):
        raise EplbError(f"{src.name}: stored logcnt disagrees with phy2log; the file is corrupt")
    out = {k: v for k, v in meta.items() if not k.startswith("_") and k not in TOPOLOGY_KEYS}
    out["file_format"] = reader.name
    out["gpus_known"] = known
    return placement, out


def _by_extension(src: Source) -> PlacementFormat | None:
    """The format a file's extension names, whose reader then says what the content lacks."""
    try:
        return placement_writer_for(src.path) if src.suffix else None
    except EplbError:
        return None


def read_placement(path: str, *, input_format: str | None = None,
                   defaults: dict | None = None) -> tuple[Placement, dict]:
    """Read and validate a placement file (``-``: standard input); return it with the file's metadata."""
    suffix = "" if str(path) == STDIN else Path(path).suffix.lower()
    if input_format is None and suffix and suffix not in placement_extensions():
        raise EplbError(
            f"{path}: unknown placement extension {suffix}; use one of {', '.join(placement_extensions())} or {arg('input_format')}"
        )
    return read_placement_source(Source(str(path), "placement file"), input_format=input_format, defaults=defaults)


def load_placement(path: str, *, input_format: str | None = None, defaults: dict | None = None) -> Placement:
    """Read and validate a placement file in any supported format (detected from extension and content)."""
    return read_placement(path, input_format=input_format, defaults=defaults)[0]


def launch_settings(p: Placement, path: str, fmt: str | None = None, gpus: int | None = None) -> dict | None:
    """How the engine that reads ``path`` must be started for ``p`` to mean what was planned (None: no engine's file).

    ``gpus`` None: the GPU count is not known (a file converted between formats that record none).
    """
    writer = writer_for(path, fmt)
    return writer.launch(p, str(path), gpus) if writer.launch is not None else None
