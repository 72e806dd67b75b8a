"""Write the corpus of hostile input files that tests/test_fuzz.py feeds to every command.

Run ``python tests/corpus/make_corpus.py`` from a checkout to regenerate it;
the files are committed, so the tests never depend on this script. Folders:

``traces/``       files no trace reader accepts (every trace command exits 2)
``unplannable/``  readable traces with nothing to balance (planning commands exit 2)
``warn/``         readable traces that only warn (``--strict`` makes them exit 2)
``placements/``   placement files no placement reader accepts
``mismatch/``     valid placements for another model than traces/small.safetensors
``evil/``         pickles that would run code if unpickled without ``weights_only``
``readable/``     unusual but valid traces every command must read (unsigned safetensors, ...)

Each file's expected error lies in ``EXPECTED`` in test_fuzz.py. Memory bombs
(a deflated ``.pt``, a stride-0 tensor, shared pickle lists, YAML aliases, ids
that set an array's width) are among them; their names are in ``BOMBS``.
:func:`hostile_cases` generates, on the fly, one file per (template, value)
for the values a file can hold that once made eplb crash (huge, overflowing,
boolean, fractional, negative, text, nested): the fuzz suite walks them
through every reader.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eplb_cli.formats.safetensors_file import encode  # noqa: E402  (needs ROOT on sys.path in a bare checkout)

HERE = Path(__file__).resolve().parent
MARKER = "eplb-pwned-marker"
"""File the evil pickles would create in the working folder if they ever ran."""


def st_raw(header: object, data: bytes = b"", size: int | None = None) -> bytes:
    """A safetensors file with an arbitrary (possibly lying) header."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if size is None else size) + text + data


def st_text(header: bytes, data: bytes = b"") -> bytes:
    """A safetensors file whose header is the given JSON text, exactly (duplicate keys, deep nesting)."""
    return struct.pack("<Q", len(header)) + header + data


def st_load(load: torch.Tensor, meta: dict[str, str] | None = None, name: str = "load") -> bytes:
    return encode({name: load}, meta)


def good_load() -> torch.Tensor:
    """2 windows x 3 layers x 4 experts of counts."""
    return torch.arange(1, 25, dtype=torch.float32).reshape(2, 3, 4)


class Evil:
    """Unpickling this would run a shell command."""

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {MARKER}",))


def torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def deflated(data: bytes) -> bytes:
    """A zip archive (a torch.save file) re-packed with its entries deflated: small on disk, large unpacked."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for info in src.infolist():
            zf.writestr(zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0)), src.read(info.filename),
                        compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def shared_lists(levels: int, width: int = 10) -> list:
    """``width**levels`` list entries built from ``levels`` shared lists: a pickle or YAML alias bomb."""
    node: list = [1] * width
    for _ in range(levels - 1):
        node = [node] * width
    return node


def yaml_laughs(levels: int = 8) -> bytes:
    """TensorRT-LLM YAML whose aliases expand to 10**(levels + 1) expert ids ("billion laughs")."""
    lines = ["a0: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    lines += ["num_slots: 10", "initial_global_assignments:", f"  0: *a{levels}"]
    return ("\n".join(lines) + "\n").encode()


def quantized() -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated, but old dumps may hold them
        return torch.quantize_per_tensor(torch.ones(2, 3), 0.1, 0, torch.quint8)


def trace_files() -> dict[str, bytes]:
    """Unreadable traces, by file name."""
    good = st_load(good_load())
    huge = [10_000_000, 94, 512]
    files = {
        "st-truncated-data.safetensors": good[:-10],
        "st-truncated-header.safetensors": good[:20],
        "st-four-bytes.safetensors": good[:4],
        "st-garbage-header.safetensors": struct.pack("<Q", 16) + b"\x00\xff{not json}\x01\x02",
        "st-implausible-header-size.safetensors": struct.pack("<Q", 1 << 60) + b'{"load": {}}',
        "st-header-not-object.safetensors": st_raw([1, 2, 3]),
        "st-offsets-disagree-with-shape.safetensors": st_raw(
            {"load": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 8]}}, b"\x00" * 8),
        "st-offsets-past-end.safetensors": st_raw(
            {"load": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}}, b"\x00" * 16),
        "st-negative-shape.safetensors": st_raw(
            {"load": {"dtype": "F32", "shape": [-3, 4], "data_offsets": [0, 0]}}),
        "st-unknown-dtype.safetensors": st_raw(
            {"load": {"dtype": "F8_E4M3", "shape": [2, 2], "data_offsets": [0, 4]}}, b"\x00" * 4),
        "st-header-lies-huge.safetensors": st_raw(
            {"load": {"dtype": "F32", "shape": huge, "data_offsets": [0, 4 * huge[0] * huge[1] * huge[2]]}},
            b"\x00" * 64),
        "st-no-load-tensor.safetensors": st_load(good_load(), name="weights"),
        "st-rank1.safetensors": st_load(torch.ones(4)),
        "st-rank4.safetensors": st_load(torch.ones(1, 1, 2, 2)),
        "st-zero-experts.safetensors": st_load(torch.ones(1, 2, 0)),
        "st-zero-layers.safetensors": st_load(torch.ones(1, 0, 4)),
        "st-zero-windows.safetensors": st_load(torch.ones(0, 2, 4)),
        "st-nan.safetensors": st_load(torch.tensor([[[1.0, float("nan")], [2.0, 3.0]]])),
        "st-inf.safetensors": st_load(torch.tensor([[1.0, float("inf")], [2.0, 3.0]])),
        "st-negative.safetensors": st_load(torch.tensor([[1, -5], [2, 3]], dtype=torch.int32)),
        "st-bool.safetensors": st_load(torch.ones(2, 2, dtype=torch.bool)),
        "st-groups-not-int.safetensors": st_load(good_load(), {"groups": "eight"}),
        "st-metadata-not-strings.safetensors": st_raw(
            {"__metadata__": {"groups": 8}, "load": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}},
            b"\x00\x00\x80?"),
        "json-truncated.json": b'{"logical_count": [[1, 2], [3',
        "json-not-an-object.json": b"[[1, 2], [3, 4]]",
        "json-wrong-keys.json": b'{"counts": [[1, 2]]}',
        "json-ragged.json": b'{"logical_count": [[1, 2], [3]]}',
        "json-strings.json": b'{"logical_count": [["1", "2"]]}',
        "json-nan.json": b'{"logical_count": [[NaN, 1]]}',
        "json-infinity.json": b'{"logical_count": [[Infinity, 1]]}',
        "json-overflow.json": b'{"logical_count": [[1e400, 1]]}',
        "json-negative.json": b'{"logical_count": [[-1, 1]]}',
        "json-rank1.json": b'{"logical_count": [1, 2, 3]}',
        "json-rank4.json": b'{"logical_count": [[[[1]]]]}',
        "json-zero-experts.json": b'{"logical_count": [[], []]}',
        "json-deeply-nested.json": b'{"logical_count": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        "json-placement-not-trace.json": b'{"physical_to_logical_map": [[0, 1]]}',
        "json-latin1.json": '{"logical_count": [[1]], "model": "\xe9"}'.encode("latin-1"),
        "vllm-empty-history.json": b'{"load_history": []}',
        "vllm-shapes-differ.json": b'{"load_history": [{"logical_expert_load": [[1, 2]]}, '
                                   b'{"logical_expert_load": [[1, 2, 3]]}]}',
        "vllm-missing-key.json": b'{"load_history": [{"load": [[1]]}]}',
        "pt-truncated.pt": torch_bytes({"logical_count": torch.ones(2, 3)})[:-40],
        "pt-garbage.pt": b"this is not a torch.save file at all",
        "pt-tensor-not-dict.pt": torch_bytes(torch.ones(2, 3)),
        "pt-nan.pt": torch_bytes({"logical_count": torch.tensor([[1.0, float("nan")]])}),
        "pt-zip-without-pickle.pt": _zip_without_pickle(),
        "csv-missing-load.csv": b"layer,expert,count\n0,0,1\n",
        "csv-missing-layer.csv": b"expert,load\n0,1\n",
        "csv-no-layer-column.csv": b"a,b\n1,2\n",
        "csv-header-only.csv": b"layer,expert,load\n",
        "csv-duplicate-cell.csv": b"layer,expert,load\n0,0,1\n0,1,1\n0,0,2\n",
        "csv-duplicate-window-cell.csv": b"window,layer,expert,load\n0,0,0,1\n1,0,0,1\n1,0,0,2\n",
        "csv-non-numeric.csv": b"layer,expert,load\n0,0,1\n0,1,lots\n",
        "csv-nan.csv": b"layer,expert,load\n0,0,nan\n",
        "csv-inf.csv": b"layer,expert,load\n0,0,1\n0,1,inf\n",
        "csv-negative.csv": b"layer,expert,load\n0,0,-3\n",
        "csv-blank-cell.csv": b"layer,expert,load\n0,0,\n",
        "csv-fractional-id.csv": b"layer,expert,load\n0,1.5,3\n",
        "csv-negative-id.csv": b"layer,expert,load\n-1,0,3\n",
        "csv-huge-id.csv": b"layer,expert,load\n0,99999999999,3\n",
        "csv-ragged.csv": b"layer,expert,load\n0,0,1,5,6\n",
        "csv-unclosed-quote.csv": b'layer,expert,load\n0,0,"1\n0,1,2\n',
        "csv-binary.csv": bytes(range(256)) * 4,
        "csv-wide-repeated-layer.csv": b"layer,e0,e1\n0,1,2\n0,3,4\n",
        "csv-wide-bad-column.csv": b"layer,e0,weird\n0,1,2\n",
        "csv-wide-no-experts.csv": b"layer\n0\n",
        "empty.safetensors": b"",
        "empty.json": b"",
        "whitespace.csv": b"  \n\n",
        "no-extension-garbage": b"\x00\x01\x02garbage that is no format\n",
        # memory bombs (BOMBS): small files that would make a reader allocate far more than they hold
        "pt-deflated-bomb.pt": deflated(torch_bytes({"logical_count": torch.zeros(8_000_000, dtype=torch.float64)})),
        "pt-stride0-bomb.pt": torch_bytes({"logical_count": torch.zeros(1).expand(10**9)}),
        "pt-shared-lists-bomb.pt": torch_bytes({"logical_count": shared_lists(7)}),
        "csv-wide-column-bomb.csv": b"layer,e0,e99999999\n0,1,1\n",
        # values a file can hold that once ended in "internal error"
        "pt-sparse.pt": torch_bytes({"logical_count": torch.ones(4, 4).to_sparse()}),
        "pt-quantized.pt": torch_bytes({"logical_count": quantized()}),
        "pt-meta-device.pt": torch_bytes({"logical_count": torch.ones(2, 3, device="meta")}),
        "pt-bool-in-list.pt": torch_bytes({"logical_count": [[1, True], [2, 3]]}),
        "json-duplicate-key.json": b'{"logical_count": [[1, 2]], "logical_count": [[3, 4]]}',
        "json-bool-in-row.json": b'{"logical_count": [[1, true], [2, 3]]}',
        "json-id-beyond-int64.json": b'{"logical_count": [[1, 18446744073709551616]]}',
        "json-huge-load.json": b'{"logical_count": [[1.7e308, 1], [2, 3]]}',
        "st-huge-load.safetensors": st_load(torch.tensor([[[1.7e308, 1.0], [2.0, 3.0]]], dtype=torch.float64)),
        "st-u64-beyond-int64.safetensors": st_raw(
            {"load": {"dtype": "U64", "shape": [1, 2], "data_offsets": [0, 16]}}, struct.pack("<QQ", 1, 1 << 63)),
        "st-header-nested-deeply.safetensors": st_text(
            b'{"load": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16], "x": '
            + b"[" * 20_000 + b"]" * 20_000 + b"}}", b"\x00" * 16),
        "st-header-duplicate-key.safetensors": st_text(
            b'{"load": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            b'"load": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}', b"\x00" * 16),
        "st-layer-ids-negative.safetensors": st_load(good_load(), {"layer_ids": "[-1, 2, 3]"}),
        "st-layer-ids-not-numbers.safetensors": st_load(good_load(), {"layer_ids": '["a", "b", "c"]'}),
        "st-groups-overflow.safetensors": st_load(good_load(), {"groups": "1e400"}),
        "csv-duplicate-column.csv": b"layer,expert,load,load\n0,0,1,2\n",
        "csv-id-beyond-2-53.csv": b"layer,expert,load\n0,9223372036854775808,1\n",
        "csv-huge-cell.csv": b"layer,expert,load\n0,0," + b"7x" * 45_000 + b"\n",
    }
    return files


BOMBS = ("traces/pt-deflated-bomb.pt", "traces/pt-stride0-bomb.pt", "traces/pt-shared-lists-bomb.pt",
         "traces/csv-wide-column-bomb.csv", "traces/csv-huge-id.csv", "placements/pl-yaml-laughs-bomb.yaml",
         "placements/pl-id-width-bomb.json")
"""Corpus files that would once make eplb allocate far more memory than they hold."""


def _zip_without_pickle() -> bytes:
    """A zip archive shaped like torch.save output but with no data.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("archive/version", date_time=(2024, 1, 1, 0, 0, 0)), "3\n")
    return buf.getvalue()


def unplannable_files() -> dict[str, bytes]:
    """Readable traces with no load at all."""
    return {
        "all-zero.safetensors": st_load(torch.zeros(2, 3, 4)),
        "all-zero.json": b'{"logical_count": [[0, 0], [0, 0]]}',
        "all-zero.csv": b"layer,expert,load\n0,0,0\n1,3,0\n",
    }


def warn_files() -> dict[str, bytes]:
    """Readable traces that plan, with a warning (gaps in the ids become zero load)."""
    return {
        "gap-in-expert-ids.csv": b"layer,expert,load\n0,0,5\n0,1,7\n0,3,2\n1,0,1\n1,1,1\n1,2,1\n1,3,1\n",
        "gap-in-layer-ids.csv": b"layer,expert,load\n0,0,5\n0,1,7\n2,0,1\n2,1,3\n",
        "zero-layer.json": b'{"logical_count": [[0, 0, 0, 0], [4, 1, 2, 3]]}',
        "zero-layer-3-windows.json": json.dumps(
            {"logical_count": [[[0, 0, 0, 0], [4 + w, 1, 2, 3 * w]] for w in range(3)]}).encode(),
    }


def placement_files() -> dict[str, bytes]:
    """Placements for 16 experts on 20 slots and 4 GPUs (traces/small.safetensors) that no reader accepts."""
    topo = {"format": "eplb-placement", "version": 1, "experts": 16, "slots": 20, "gpus": 4, "nodes": 1,
            "groups": 1, "policy": "global", "excluded_gpus": []}
    meta = {k: json.dumps(v) for k, v in topo.items()}
    good = torch.cat([torch.arange(16), torch.tensor([0, 1, 2, 3])]).repeat(4, 1)
    out_of_range = good.clone()
    out_of_range[2, 5] = 99
    no_replica = good.clone()
    no_replica[1, 7] = 0
    negative = good.clone()
    negative[0, 0] = -1

    def st(phy2log: torch.Tensor, m: dict[str, str] = meta) -> bytes:
        return encode({"phy2log": phy2log}, m)

    return {
        "pl-id-out-of-range.safetensors": st(out_of_range),
        "pl-expert-without-replica.safetensors": st(no_replica),
        "pl-empty-slot-on-live-gpu.safetensors": st(negative),
        "pl-slots-disagree.safetensors": st(good[:, :16]),
        "pl-truncated.safetensors": st(good)[:-7],
        "pl-float-ids.safetensors": st(good.to(torch.float32)),
        "pl-metadata-not-json.safetensors": st(good, {**meta, "gpus": "four"}),
        "pl-gpus-do-not-divide.safetensors": st(good, {**meta, "gpus": "3"}),
        "pl-logcnt-disagrees.safetensors": encode(
            {"phy2log": good, "logcnt": torch.ones(4, 16, dtype=torch.int64)}, meta),
        "pl-ragged.json": b'{"physical_to_logical_map": [[0, 1, 2], [0, 1]]}',
        "pl-float-ids.json": b'{"physical_to_logical_map": [[0.5, 1.0]]}',
        "pl-strings.json": b'{"physical_to_logical_map": [["a", "b"]]}',
        "pl-truncated.json": b'{"physical_to_logical_map": [[0, 1, 2',
        "pl-yaml-laughs-bomb.yaml": yaml_laughs(),
        "pl-id-width-bomb.json": b'{"physical_to_logical_map": [[0, 1000000000000]]}',
        "pl-duplicate-key.json": b'{"physical_to_logical_map": [[0, 1]], "physical_to_logical_map": [[1, 0]]}',
        "pl-id-beyond-int64.json": b'{"physical_to_logical_map": [[0, 9223372036854775808]]}',
        "pl-bool-id.json": b'{"physical_to_logical_map": [[0, true]]}',
        "pl-meta-gpus-overflow.safetensors": st(good, {**meta, "gpus": "1e400"}),
        "pl-meta-gpus-bool.safetensors": st(good, {**meta, "gpus": "true"}),
        "pl-meta-gpus-fraction.safetensors": st(good, {**meta, "gpus": "2.5"}),
        "pl-meta-gpus-negative.safetensors": st(good, {**meta, "gpus": "-4"}),
        "pl-meta-layer-ids-negative.safetensors": st(good, {**meta, "layer_ids": "[-3, 0, 1, 2]"}),
        "pl-meta-layer-ids-text.safetensors": st(good, {**meta, "layer_ids": '["a", "b", "c", "d"]'}),
        "pl-yaml-duplicate-key.yaml": b"num_slots: 2\ninitial_global_assignments:\n  0: [0, 1]\n  0: [1, 0]\n",
        "pl-yaml-mixed-keys.yaml": b"num_slots: 2\ninitial_global_assignments:\n  0: [0, 1]\n  '0': {a: 1}\n",
        "pl-yaml-nested-deeply.yaml": b"num_slots: 2\ninitial_global_assignments:\n  0: "
                                      + b"[" * 20_000 + b"]" * 20_000 + b"\n",
        "pl-yaml-recursive.yaml": b"num_slots: 2\ninitial_global_assignments:\n  0: &row [0, *row]\n",
        "pl-yaml-bool-id.yaml": b"num_slots: 2\ninitial_global_assignments:\n  0: [0, true]\n",
        "pl-ascend-layer-id-text.json": json.dumps({"moe_layer_count": 1, "layer_list": [{
            "layer_id": "zero", "device_count": 1, "device_list": [{"device_id": 0, "device_expert": [0, 1]}]}]}).encode(),
        "pl-ascend-device-id-bool.json": json.dumps({"moe_layer_count": 1, "layer_list": [{
            "layer_id": 0, "device_count": 2, "device_list": [{"device_id": True, "device_expert": [0]},
                                                              {"device_id": 0, "device_expert": [1]}]}]}).encode(),
        "pl-csv-duplicate-column.csv": b"layer,slot,expert,expert\n0,0,0,0\n0,1,1,1\n",
        "pl-csv-id-huge.csv": b"layer,slot,expert\n0,0,0\n0,1,99999999999999999999\n",
    }


def mismatch_files() -> dict[str, bytes]:
    """Valid placements, but for another model than traces/small.safetensors (4 layers x 16 experts)."""
    topo = {"format": "eplb-placement", "version": 1, "experts": 16, "slots": 20, "gpus": 4, "nodes": 1,
            "groups": 1, "policy": "global", "excluded_gpus": []}
    eight_layers = torch.cat([torch.arange(16), torch.tensor([0, 1, 2, 3])]).repeat(8, 1)
    wider = torch.cat([torch.arange(32), torch.arange(8)]).repeat(4, 1)
    return {
        "pl-8-layers.safetensors": encode({"phy2log": eight_layers}, {k: json.dumps(v) for k, v in topo.items()}),
        "pl-32-experts.json": json.dumps({"physical_to_logical_map": wider.tolist()}).encode(),
    }


def evil_files() -> dict[str, bytes]:
    """Pickles whose loading would run ``touch eplb-pwned-marker``."""
    return {
        "evil-reduce.pt": torch_bytes({"logical_count": Evil()}),
        "evil-legacy-pickle.pt": pickle.dumps({"logical_count": Evil()}, protocol=2),
        "evil-placement.pt": torch_bytes({"physical_to_logical_map": Evil()}),
    }


def readable_files() -> dict[str, bytes]:
    """Unusual traces that are valid: every command must read them (unsigned integers are real exports)."""
    counts = torch.arange(1, 25, dtype=torch.int64).reshape(2, 3, 4)
    return {
        "st-u16.safetensors": st_raw({"load": {"dtype": "U16", "shape": [2, 3, 4], "data_offsets": [0, 48]}},
                                     counts.numpy().astype("<u2").tobytes()),
        "st-u32.safetensors": st_raw({"load": {"dtype": "U32", "shape": [2, 3, 4], "data_offsets": [0, 96]}},
                                     counts.numpy().astype("<u4").tobytes()),
        "st-u64.safetensors": st_raw({"load": {"dtype": "U64", "shape": [2, 3, 4], "data_offsets": [0, 192]}},
                                     counts.numpy().astype("<u8").tobytes()),
        "st-layer-ids.safetensors": st_load(good_load(), {"layer_ids": "[3, 5, 7]"}),
        "csv-many-ids-few-rows.csv": b"layer,expert,load\n0,0,5\n0,15,7\n3,15,1\n",
    }


HOSTILE_VALUES: dict[str, str] = {
    "huge": "1.7e308", "overflow": "1e400", "minus-overflow": "-1e400", "int64-edge": str(1 << 63),
    "uint64-edge": str(1 << 64), "below-int64": str(-(1 << 63) - 1), "googol": "1" + "0" * 100, "true": "true",
    "false": "false", "null": "null", "text-number": '"7"', "empty-text": '""', "fraction": "1.5", "minus-one": "-1",
    "minus-zero": "-0.0", "zero": "0", "nan": "NaN", "long-text": '"' + "x" * 400 + '"', "empty-list": "[]",
    "object": '{"a": 1}', "nested": "[[[[[[1]]]]]]", "float-four": "4.0",
}
"""JSON spellings of values a file can hold, each once a crash (exit 3) somewhere."""


def _csv_cell(value: str) -> str:
    """The CSV spelling of a hostile JSON value (text unquoted, containers as text)."""
    return value.strip('"') if value.startswith('"') else value


def hostile_cases() -> dict[str, tuple[str, bytes]]:
    """One file per (template, hostile value): ``name -> (kind, bytes)``, kind ``trace`` or ``placement``.

    Every reader and every field a value can sit in: cells, ids, column names,
    metadata counts and layer ids, YAML keys and rows, vLLM-Ascend ids. Each
    file must give exit 0 or a one-line exit 2, never "internal error".
    """
    topo = {"format": "eplb-placement", "version": 1, "experts": 4, "slots": 4, "gpus": 2, "nodes": 1,
            "groups": 1, "policy": "global", "excluded_gpus": [], "layer_ids": [0, 1]}
    phy2log = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    out: dict[str, tuple[str, bytes]] = {}
    for tag, v in HOSTILE_VALUES.items():
        c = _csv_cell(v)
        traces = {
            "sglang-cell.json": f'{{"logical_count": [[{v}, 1], [2, 3]]}}',
            "sglang-whole.json": f'{{"logical_count": {v}}}',
            "sglang-model.json": f'{{"logical_count": [[1, 2]], "model": {v}}}',
            "vllm-cell.json": f'{{"load_history": [{{"logical_expert_load": [[{v}, 1]]}}]}}',
            "vllm-history.json": f'{{"load_history": {v}}}',
            "long-load.csv": f"layer,expert,load\n0,0,{c}\n0,1,2\n",
            "long-expert.csv": f"layer,expert,load\n0,{c},1\n0,1,2\n",
            "long-layer.csv": f"layer,expert,load\n{c},0,1\n0,1,2\n",
            "long-window.csv": f"window,layer,expert,load\n{c},0,0,1\n0,0,1,2\n",
            "wide-cell.csv": f"layer,e0,e1\n0,{c},1\n",
            "wide-column.csv": f"layer,e0,e{c}\n0,1,1\n",
        }
        for name, text in traces.items():
            out[f"{tag}-{name}"] = ("trace", text.encode())
        for key in ("groups", "seed", "layer_ids", "model"):
            out[f"{tag}-st-meta-{key}.safetensors"] = ("trace", st_load(good_load(), {key: c}))
        for key in ("gpus", "nodes", "slots", "experts", "groups", "policy", "excluded_gpus", "layer_ids"):
            meta = {k: json.dumps(x) for k, x in topo.items()} | {key: v}
            out[f"{tag}-pl-meta-{key}.safetensors"] = ("placement", encode({"phy2log": phy2log}, meta))
        ascend = {"moe_layer_count": 1, "layer_list": [{"layer_id": 0, "device_count": 2, "device_list": [
            {"device_id": 0, "device_expert": [0, 1]}, {"device_id": 1, "device_expert": [1, 0]}]}]}
        placements = {
            "sglang-cell.json": f'{{"physical_to_logical_map": [[0, {v}], [1, 0]]}}',
            "sglang-whole.json": f'{{"physical_to_logical_map": {v}}}',
            "yaml-cell.yaml": f"num_slots: 2\ninitial_global_assignments:\n  0: [0, {c or 'null'}]\n",
            "yaml-key.yaml": f"num_slots: 2\ninitial_global_assignments:\n  {c or 'null'}: [0, 1]\n",
            "yaml-slots.yaml": f"num_slots: {c or 'null'}\ninitial_global_assignments:\n  0: [0, 1]\n",
            "csv-expert.csv": f"layer,slot,expert\n0,0,0\n0,1,{c}\n",
            "csv-gpu.csv": f"layer,slot,gpu,expert\n0,0,0,0\n0,1,{c},1\n",
        }
        for field in ("layer_id", "device_id", "device_count", "moe_layer_count", "device_expert"):
            text = json.dumps(ascend).replace(f'"{field}": 0', f'"{field}": {v}', 1)
            if field in ("device_count", "moe_layer_count"):
                text = text.replace(f'"{field}": 2', f'"{field}": {v}').replace(f'"{field}": 1', f'"{field}": {v}')
            if field == "device_expert":
                text = text.replace('"device_expert": [0, 1]', f'"device_expert": [{v}, 1]')
            placements[f"ascend-{field}.json"] = text
        for name, text in placements.items():
            out[f"{tag}-{name}"] = ("placement", text.encode())
    return out


def main() -> None:
    """Write every corpus folder beside this script."""
    for folder, files in (("traces", trace_files()), ("unplannable", unplannable_files()), ("warn", warn_files()),
                          ("placements", placement_files()), ("mismatch", mismatch_files()),
                          ("evil", evil_files()), ("readable", readable_files())):
        target = HERE / folder
        target.mkdir(exist_ok=True)
        for name, data in files.items():
            (target / name).write_bytes(data)
        print(f"{folder}: {len(files)} files")


if __name__ == "__main__":
    main()
