"""safetensors: eplb's own trace and placement files, read a slice at a time and written reproducibly.

Traces hold a tensor ``load`` shaped ``[L, E]`` or ``[W, L, E]``; string
metadata may hold ``model``, ``groups`` and ``seed``. A trace is read a slice
of windows at a time, keeping only the windows asked for, so a file far larger
than memory can still be read in part. Placements hold ``phy2log``,
``log2phy`` and ``logcnt`` (DeepSeek's names) with the topology as JSON
strings in the metadata, with the model's layer id of each row
(``layer_ids``): lossless.

Layout (https://github.com/huggingface/safetensors): a little-endian u64 header
size N, N bytes of JSON header ``{name: {"dtype", "shape", "data_offsets":
[begin, end]}, "__metadata__": {str: str}}``, then the raw little-endian data,
offsets counted from the end of the header.

Every header field is checked before a byte of data is read, so a file whose
header lies (sizes that disagree with shapes, offsets past the end of the file)
fails with one line instead of a crash or a huge allocation. Readers get the
tensor's declared size first, so a caller can compare it with the memory at
hand before reading anything.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import EplbError, listing, quote
from ..placement import Placement
from ..trace import Trace, check_values, parse_window_range
from .base import PlacementFormat, TraceFormat
from .jsonio import DuplicateKey, unique_pairs
from .limits import check_memory
from .maps import check_layer_ids, int_table
from .source import Source

MAX_HEADER = 100_000_000
"""Largest header the safetensors spec allows (bytes)."""

_NUMPY_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "?",
}
_ITEMSIZE: dict[str, int] = {**{k: np.dtype(v).itemsize for k, v in _NUMPY_DTYPES.items()}, "BF16": 2}
_TAG_OF: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry, checked: ``begin``/``end`` are absolute file offsets.

    ``data_start`` is where the file's data buffer begins (just after the header).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    data_start: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(fh: io.BufferedIOBase, source: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and check the header of the safetensors stream ``fh`` (positioned at 0).

    Returns the tensors by name and the ``__metadata__`` strings. Offsets are
    checked against the shapes here; whether the data is really in the file is
    checked by :func:`check_extent` (so a caller can first weigh the declared size).
    """
    head = fh.read(8)
    if len(head) < 8:
        raise EplbError(f"{source}: truncated safetensors file ({len(head)} bytes); re-export it")
    (size,) = struct.unpack("<Q", head)
    if size > MAX_HEADER:
        raise EplbError(
            f"{source}: not a safetensors file (header size {size} is implausible); check the file and its format"
        )
    raw = fh.read(size)
    if len(raw) < size:
        raise EplbError(f"{source}: truncated safetensors file (header says {size} bytes); re-export it")
    try:
        header = json.loads(raw, object_pairs_hook=unique_pairs)
    except DuplicateKey as exc:
        raise EplbError(f"{source}: safetensors header names {quote(exc.key)} twice; the file is corrupt, "
                        "re-export it") from None
    except RecursionError:
        raise EplbError(f"{source}: not a safetensors file (header nested too deeply); check the file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EplbError(
            f"{source}: not a safetensors file (unreadable header); check the file and its format"
        ) from None
    if not isinstance(header, dict):
        raise EplbError(f"{source}: not a safetensors file (header is not a JSON object); check the file")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise EplbError(f"{source}: safetensors __metadata__ must map names to strings; re-export the file")
    start = 8 + size
    tensors = {name: _tensor_info(name, entry, start, source) for name, entry in header.items()}
    return tensors, dict(meta or {})


def _tensor_info(name: str, entry: object, start: int, source: str) -> TensorInfo:
    """Check one header entry: known dtype, non-negative shape, offsets that match the shape."""
    bad = f"{source}: safetensors header entry {quote(name)}"
    if not isinstance(entry, dict):
        raise EplbError(f"{bad} is not an object; re-export the file")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
        raise EplbError(f"{bad} has dtype {quote(dtype)}, which eplb cannot read; save it as F32, F64 or an integer type")
    if not isinstance(shape, list) or len(shape) > 8 or not all(_is_count(d) for d in shape):
        raise EplbError(f"{bad} has shape {quote(shape)}; a shape is a short list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise EplbError(f"{bad} has data_offsets {quote(offsets)}; expected [begin, end] with begin <= end")
    declared = math.prod(shape) * _ITEMSIZE[dtype]
    if offsets[1] - offsets[0] != declared:
        raise EplbError(
            f"{bad}: shape {shape} of {dtype} needs {declared} bytes but data_offsets span "
            f"{offsets[1] - offsets[0]}; the header is corrupt, re-export the file"
        )
    return TensorInfo(name, dtype, tuple(shape), start + offsets[0], start + offsets[1], start)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_extent(tensors: dict[str, TensorInfo], file_size: int, source: str) -> None:
    """Fail unless the tensors' data lies in the file and covers it with no hole or trailing bytes.

    Like the reference implementation: a header that disagrees with the data
    (a lie about sizes, a shifted header length) is corruption, not a trace.
    """
    for info in tensors.values():
        if info.end > file_size:
            raise EplbError(
                f"{source}: truncated safetensors file ({quote(info.name)} needs bytes up to {info.end}, "
                f"the file has {file_size}); re-export it"
            )
    spans = sorted((info.begin, info.end) for info in tensors.values())
    start = min((info.data_start for info in tensors.values()), default=file_size)
    for begin, end in spans:
        if begin != start:
            break
        start = end
    else:
        if start == file_size:
            return
    raise EplbError(
        f"{source}: safetensors header does not match the data (overlaps, holes or trailing bytes); "
        "the file is corrupt, re-export it"
    )


def read_rows(fh: io.BufferedIOBase, info: TensorInfo, row0: int, row1: int, source: str) -> torch.Tensor:
    """Rows ``row0:row1`` (along the first dimension) of tensor ``info`` as a native-order CPU tensor."""
    inner = math.prod(info.shape[1:])
    count = (row1 - row0) * inner
    fh.seek(info.begin + row0 * inner * info.itemsize)
    buf = bytearray(count * info.itemsize)
    got = fh.readinto(buf)
    if got != len(buf):
        raise EplbError(f"{source}: truncated safetensors file (data of {quote(info.name)} ends early); re-export it")
    shape = (row1 - row0, *info.shape[1:])
    if info.dtype == "BF16":
        bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
        return torch.from_numpy(bits.view(np.float32)).reshape(shape)
    array = np.frombuffer(buf, dtype=_NUMPY_DTYPES[info.dtype])
    if info.dtype in _WIDE_UNSIGNED:
        return _unsigned_as_int64(array, info, source).reshape(shape)
    native = array.dtype.newbyteorder("=")
    return torch.from_numpy(array.astype(native, copy=False)).reshape(shape)


_WIDE_UNSIGNED = ("U16", "U32", "U64")
"""Unsigned types torch barely supports (no min, max or sum on CPU): read as int64, which holds their values."""


def _unsigned_as_int64(array: np.ndarray, info: TensorInfo, source: str) -> torch.Tensor:
    """U16/U32/U64 values as int64; a U64 value beyond int64 is an error naming the tensor."""
    if info.dtype == "U64" and array.size and int(array.max()) >= 1 << 63:
        raise EplbError(f"{source}: {quote(info.name)} holds the unsigned value {int(array.max())}, beyond the int64 "
                        "range eplb computes in; token counts and expert ids are far smaller, check the export")
    return torch.from_numpy(array.astype(np.int64))


def read_tensor(fh: io.BufferedIOBase, info: TensorInfo, source: str) -> torch.Tensor:
    """The whole tensor ``info`` in its declared shape."""
    if not info.shape:
        return read_rows(fh, dataclasses.replace(info, shape=(1,)), 0, 1, source).reshape(())
    return read_rows(fh, info, 0, info.shape[0], source)


def encode(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise ``tensors`` (sorted by name) and ``metadata`` (sorted keys): equal input, equal bytes.

    ``safetensors.torch.save`` writes metadata in hash order, which differs
    from one process to the next; this writer does not.
    """
    entries: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.dtype not in _TAG_OF:
            raise EplbError(f"cannot store {name} of dtype {tensor.dtype} in safetensors")
        data = _le_bytes(tensor)
        entries[name] = {"dtype": _TAG_OF[tensor.dtype], "shape": list(tensor.shape),
                         "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        entries["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return b"".join([struct.pack("<Q", len(text)), text, *chunks])


def _le_bytes(tensor: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a contiguous CPU tensor."""
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    array = tensor.numpy()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


# ---------------------------------------------------------------- traces

CHUNK_BYTES = 32 << 20
"""Raw bytes of a safetensors trace read per step."""
_FLOAT32_INT = 1 << 24


def read_trace(src: Source, window: int | None = None, windows: str | None = None) -> Trace:
    """Read tensor ``load`` from ``src``, a slice at a time, keeping only windows ``windows`` after ``window``.

    Only the raw steps that windows ``windows`` (after summing every ``window``
    steps) cover are read. Each slice is checked for NaN, inf and negatives in
    its stored dtype and summed straight into the float64 result, so the peak
    is the result plus one slice, and the memory check before the first read
    uses the header's declared shape.
    """
    with src.open() as fh:
        return _read_trace_stream(fh, src.size(), src.name, window, windows)


def _read_trace_stream(fh: io.BufferedIOBase, size: int, source: str, window: int | None, windows: str | None) -> Trace:
    tensors, strings = read_header(fh, source)
    if "load" not in tensors:
        names = listing(sorted(tensors)) or "none"
        raise EplbError(f"{source}: no tensor named 'load' (found: {names}); save the trace under the name 'load'")
    info = tensors["load"]
    meta = _trace_meta(strings, source)
    if len(info.shape) not in (2, 3):
        raise EplbError(
            f"{source}: load has shape {info.shape}; it must be [layers, experts] or [windows, layers, experts]"
        )
    if info.dtype == "BOOL":
        raise EplbError(f"{source}: load holds bool values; loads must be real numbers (token counts)")
    if 0 in info.shape:
        raise EplbError(
            f"{source}: load is empty (shape {info.shape}); need at least one window, layer and expert"
        )
    if len(info.shape) == 2:
        info = dataclasses.replace(info, shape=(1, *info.shape))
    steps, layers, experts = info.shape
    if len(meta.get("layer_ids", [None] * layers)) != layers:
        raise EplbError(f"{source}: metadata layer_ids lists {len(meta['layer_ids'])} ids for {layers} layers; "
                        "fix or remove it")
    if experts % meta.get("groups", 1):
        raise EplbError(
            f"{source}: metadata groups={meta['groups']} does not divide the {experts} experts; fix or remove it"
        )
    every = min(window or 1, steps)
    lo, hi = parse_window_range(windows, -(-steps // every), source) if windows else (0, -(-steps // every))
    first, last = lo * every, min(hi * every, steps)
    cells = layers * experts
    chunk = min(max(1, CHUNK_BYTES // (cells * info.itemsize)), last - first)
    check_memory(source, (hi - lo) * cells * 8 + chunk * cells * (info.itemsize + 8))
    check_extent(tensors, size, source)
    out = torch.zeros(hi - lo, layers, experts, dtype=torch.float64)
    for start in range(first, last, chunk):
        stop = min(start + chunk, last)
        rows = read_rows(fh, info, start, stop, source)
        check_values(rows, source)
        if every == 1:
            out[start - first : stop - first] = rows
        else:
            out.index_add_(0, (torch.arange(start, stop) - first) // every, rows.to(torch.float64))
    return Trace(out, source, meta)


def _trace_meta(meta: dict[str, str], source: str) -> dict:
    """Turn safetensors string metadata into Trace.meta (``groups``/``seed`` as int)."""
    out: dict[str, Any] = dict(meta)
    for key in ("groups", "seed"):
        if key in out:
            try:
                out[key] = int(out[key])
            except (TypeError, ValueError):
                raise EplbError(f"{source}: metadata {key}={quote(out[key])} is not an integer; fix or remove it") from None
    if "groups" in out and out["groups"] < 1:
        raise EplbError(f"{source}: metadata groups={out['groups']} must be >= 1; fix or remove it")
    if "layer_ids" in out:
        try:
            ids = json.loads(out["layer_ids"], object_pairs_hook=unique_pairs)
        except (json.JSONDecodeError, RecursionError, DuplicateKey):
            raise EplbError(f"{source}: metadata layer_ids={quote(out['layer_ids'])} is not a JSON list of layer ids; "
                            "fix or remove it") from None
        out["layer_ids"] = check_layer_ids(ids, source, "metadata layer_ids")
    return out


def write_trace(trace: Trace) -> bytes:
    """Serialise as safetensors: float32 when exact (integers < 2**24), else float64.

    :func:`encode` sorts the header, so equal traces give byte-identical files
    (``safetensors.torch.save`` does not).
    """
    load = trace.load
    exact = all(bool(((part == part.round()) & (part < _FLOAT32_INT)).all()) for part in load.split(16))
    meta = {k: str(v) for k, v in trace.meta.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    return encode({"load": load.to(torch.float32 if exact else torch.float64)}, meta)


# ---------------------------------------------------------------- placements


def holds_placement(src: Source) -> bool:
    """Whether ``src`` is a safetensors file with a ``phy2log`` tensor."""
    try:
        with src.open() as fh:
            tensors, _ = read_header(fh, src.name)
    except EplbError:
        return False
    return "phy2log" in tensors


def read_placement(src: Source) -> tuple[torch.Tensor, dict]:
    """eplb's own placement file: phy2log, its topology metadata, and the stored logcnt to cross-check."""
    with src.open() as fh:
        tensors, strings = read_header(fh, src.name)
        if "phy2log" not in tensors:
            found = listing(sorted(tensors)) or "none"
            raise EplbError(f"{src.name}: no 'phy2log' tensor (found: {found}); is this a placement written by eplb?")
        check_extent(tensors, src.size(), src.name)
        values = {name: read_tensor(fh, info, src.name) for name, info in tensors.items() if name in ("phy2log", "logcnt")}
    meta = {}
    for key, value in strings.items():
        try:
            meta[key] = json.loads(value, object_pairs_hook=unique_pairs)
        except (json.JSONDecodeError, TypeError, AttributeError, RecursionError, DuplicateKey):
            raise EplbError(f"{src.name}: placement metadata {quote(key)} is not valid JSON "
                            f"({quote(value)}); re-export the file") from None
    if "logcnt" in values:
        meta["_logcnt"] = values["logcnt"]
    return int_table(values["phy2log"], src.name, "phy2log"), meta


def write_placement(p: Placement, extra: dict, name: str) -> bytes:
    """phy2log, log2phy and logcnt with the topology and ``extra`` as JSON strings, sorted: same plan, same bytes."""
    tensors = {"phy2log": p.phy2log, "log2phy": p.log2phy.contiguous(), "logcnt": p.logcnt.contiguous()}
    meta = {"format": "eplb-placement", "version": 1, **p.topology.as_dict(), **extra}
    if p.layer_ids is not None:
        meta["layer_ids"] = list(p.layer_ids)
    return encode(tensors, {k: json.dumps(v) for k, v in meta.items()})


def _read_whole_trace(src: Source) -> Trace:
    return read_trace(src)


TRACE = TraceFormat("safetensors", "safetensors", _read_whole_trace, write_trace, extensions=(".safetensors",),
                    read_windows=read_trace)
PLACEMENT = PlacementFormat("safetensors", "safetensors", read_placement, write_placement, claims=holds_placement,
                            extensions=(".safetensors",), binary=True, topology=True)
