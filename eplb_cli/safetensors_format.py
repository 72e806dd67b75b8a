"""The safetensors container, read a slice at a time and written byte-for-byte reproducibly.

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

import json
import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch

from .errors import EplbError

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


def read_header(fh: BinaryIO, source: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
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
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
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
    bad = f"{source}: safetensors header entry {name!r}"
    if not isinstance(entry, dict):
        raise EplbError(f"{bad} is not an object; re-export the file")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
        raise EplbError(f"{bad} has dtype {dtype!r}, which eplb cannot read; save it as F32, F64 or an integer type")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise EplbError(f"{bad} has shape {shape!r}; a shape is a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise EplbError(f"{bad} has data_offsets {offsets!r}; expected [begin, end] with begin <= end")
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
                f"{source}: truncated safetensors file ({info.name!r} needs bytes up to {info.end}, "
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


def read_rows(fh: BinaryIO, info: TensorInfo, row0: int, row1: int, source: str) -> torch.Tensor:
    """Rows ``row0:row1`` (along the first dimension) of tensor ``info`` as a native-order CPU tensor."""
    inner = math.prod(info.shape[1:])
    count = (row1 - row0) * inner
    fh.seek(info.begin + row0 * inner * info.itemsize)
    buf = bytearray(count * info.itemsize)
    got = fh.readinto(buf)
    if got != len(buf):
        raise EplbError(f"{source}: truncated safetensors file (data of {info.name!r} ends early); re-export it")
    shape = (row1 - row0, *info.shape[1:])
    if info.dtype == "BF16":
        bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
        return torch.from_numpy(bits.view(np.float32)).reshape(shape)
    array = np.frombuffer(buf, dtype=_NUMPY_DTYPES[info.dtype])
    native = array.dtype.newbyteorder("=")
    return torch.from_numpy(array.astype(native, copy=False)).reshape(shape)


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
