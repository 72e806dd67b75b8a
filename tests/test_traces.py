"""Trace readers and writers: round trips, engine dump folders, every error path, real traces."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import SMALL
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.errors import EplbError
from eplb_cli.formats import (
    FOLDER_FORMATS,
    TRACE_FORMATS,
    WRITE_FORMATS,
    detect_format,
    read_trace,
    write_trace,
)
from eplb_cli.formats.sglang import read_token_routing
from eplb_cli.trace import Trace

EXTENSION = {"safetensors": ".safetensors", "csv": ".csv", "csv-wide": ".csv", "sglang": ".json", "vllm": ".json"}


def make_trace(windows: int = 2, layers: int = 3, experts: int = 4, meta: dict | None = None) -> Trace:
    """A small integer trace with a zero layer and a zero expert, like real dumps."""
    load = torch.arange(windows * layers * experts, dtype=torch.float64).reshape(windows, layers, experts)
    load[:, 0] = 0
    return Trace(load, "<test>", meta or {})


def expect_error(path: Path | str, *args, match: str | None = None, shown: str | None = None, **kwargs) -> str:
    """Read ``path``; assert a one-line EplbError that names the file (or ``shown``) and says what to do."""
    with pytest.raises(EplbError) as info:
        read_trace(str(path), *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(shown or path)), message
    assert ";" in message
    if match is not None:
        assert match in message, message
    return message


class FakeStdin:
    """Stands in for ``sys.stdin``: readers take bytes from ``.buffer``."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


# ----------------------------------------------------------------------------- round trips

loads = st.integers(1, 3).flatmap(
    lambda w: st.integers(1, 4).flatmap(
        lambda l: st.integers(1, 5).flatmap(
            lambda e: st.one_of(
                st.lists(st.integers(0, 2**40), min_size=w * l * e, max_size=w * l * e),
                st.lists(
                    st.floats(0, 1e12, allow_nan=False, allow_infinity=False), min_size=w * l * e, max_size=w * l * e
                ),
            ).map(lambda v: torch.tensor(v, dtype=torch.float64).reshape(w, l, e))
        )
    )
)


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
@settings(max_examples=25, deadline=None)
@given(load=loads)
def test_round_trip_every_writer(fmt: str, load: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp(fmt) / f"t{EXTENSION[fmt]}"
    write_trace(Trace(load), str(path), fmt)
    for read_fmt in (fmt, None):
        back = read_trace(str(path), read_fmt)
        assert back.load.dtype == torch.float64
        assert torch.equal(back.load, load)


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_format_from_extension(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"t{EXTENSION[fmt]}"
    write_trace(make_trace(), str(path), fmt)
    assert detect_format(str(path)) == fmt


def test_write_picks_format_from_extension(tmp_path: Path) -> None:
    for name, fmt in (("a.safetensors", "safetensors"), ("a.csv", "csv"), ("a.json", "sglang")):
        write_trace(make_trace(), str(tmp_path / name))
        assert detect_format(str(tmp_path / name)) == fmt


def test_safetensors_keeps_meta_and_stores_float32_counts(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    write_trace(make_trace(meta={"groups": 2, "model": "m", "seed": 7}), str(path))
    assert safetensors.torch.load_file(str(path))["load"].dtype == torch.float32
    back = read_trace(str(path))
    assert back.meta == {"groups": 2, "model": "m", "seed": 7}
    assert back.groups == 2


def test_safetensors_keeps_fractions_and_huge_counts_exact(tmp_path: Path) -> None:
    load = torch.tensor([[[0.5, 2.0**30 + 1]]], dtype=torch.float64)
    path = tmp_path / "t.safetensors"
    write_trace(Trace(load), str(path))
    assert safetensors.torch.load_file(str(path))["load"].dtype == torch.float64
    assert torch.equal(read_trace(str(path)).load, load)


def test_safetensors_written_by_the_library_and_2d(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file({"load": torch.ones(3, 4, dtype=torch.int32)}, str(path), metadata={"groups": "2"})
    back = read_trace(str(path))
    assert back.load.shape == (1, 3, 4) and back.groups == 2


def test_safetensors_is_byte_identical_for_equal_traces(tmp_path: Path) -> None:
    meta = {"model": "m", "groups": 2, "seed": 1}
    write_trace(make_trace(meta=meta), str(tmp_path / "a.safetensors"))
    write_trace(make_trace(meta=dict(reversed(list(meta.items())))), str(tmp_path / "b.safetensors"))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_csv_writer_layouts(tmp_path: Path) -> None:
    write_trace(make_trace(windows=1), str(tmp_path / "one.csv"), "csv")
    write_trace(make_trace(windows=2), str(tmp_path / "two.csv"), "csv")
    write_trace(make_trace(windows=2), str(tmp_path / "wide.csv"), "csv-wide")
    assert (tmp_path / "one.csv").read_text().splitlines()[:2] == ["layer,expert,load", "0,0,0"]
    assert (tmp_path / "two.csv").read_text().splitlines()[0] == "window,layer,expert,load"
    assert (tmp_path / "wide.csv").read_text().splitlines()[0] == "window,layer,e0,e1,e2,e3"


def test_sglang_writer_is_2d_for_one_window(tmp_path: Path) -> None:
    write_trace(make_trace(windows=1), str(tmp_path / "a.json"), "sglang")
    counts = json.loads((tmp_path / "a.json").read_text())["logical_count"]
    assert len(counts) == 3 and len(counts[0]) == 4 and isinstance(counts[1][1], int)


def test_write_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_trace(make_trace(), str(path))
    before = path.read_bytes()
    with pytest.raises(EplbError, match="pass force=True"):
        write_trace(make_trace(windows=1), str(path))
    assert path.read_bytes() == before
    write_trace(make_trace(windows=1), str(path), force=True)
    assert read_trace(str(path)).windows == 1


@pytest.mark.parametrize("fmt", (*FOLDER_FORMATS, "sglang-pt", "parquet"))
def test_write_rejects_formats_it_cannot_write(fmt: str, tmp_path: Path) -> None:
    with pytest.raises(EplbError):
        write_trace(make_trace(), str(tmp_path / "x"), fmt)
    assert not (tmp_path / "x").exists()


def test_write_needs_a_known_extension_or_format(tmp_path: Path) -> None:
    with pytest.raises(EplbError, match="pass fmt"):
        write_trace(make_trace(), str(tmp_path / "x.txt"))
    with pytest.raises(EplbError, match="pass fmt"):
        write_trace(make_trace(), "-")


def test_write_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    write_trace(make_trace(windows=1), "-", "csv")
    out = capsysbinary.readouterr().out.decode()
    assert out.splitlines()[0] == "layer,expert,load"


# ----------------------------------------------------------------------------- CSV details


def test_csv_long_fills_missing_cells_and_renumbers_windows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("step,layer,expert,load\n100,2,3,5\n\n105,0,0,1.5\n")
    t = read_trace(str(path))
    assert t.load.shape == (2, 3, 4)
    assert t.load[0, 2, 3] == 5 and t.load[1, 0, 0] == 1.5 and t.load.sum() == 6.5


def test_csv_wide_column_names(tmp_path: Path) -> None:
    for header in ("layer,0,1,2", "layer,e0,e1,e2", "layer,expert_0,expert_1,expert_2", "Layer, E0 ,E1,E2"):
        path = tmp_path / "w.csv"
        path.write_text(f"{header}\n1,1,2,3\n0,4,5,6\n")
        t = read_trace(str(path))
        assert t.load.tolist() == [[[4, 5, 6], [1, 2, 3]]]
        path.unlink()


# ----------------------------------------------------------------------------- SGLang and vLLM


def test_sglang_json_and_pt(tmp_path: Path) -> None:
    counts = [[[1, 2], [3, 4]], [[0, 0], [5, 6]]]
    (tmp_path / "a.json").write_text(json.dumps({"logical_count": counts[0]}))
    torch.save({"logical_count": torch.tensor(counts, dtype=torch.int32), "rank": 0}, tmp_path / "b.pt")
    torch.save({"logical_count": counts}, tmp_path / "c.pth")
    assert read_trace(str(tmp_path / "a.json")).load.tolist() == [counts[0]]
    assert read_trace(str(tmp_path / "b.pt")).load.tolist() == counts
    assert read_trace(str(tmp_path / "c.pth"), "sglang-pt").load.tolist() == counts


def test_vllm_history(tmp_path: Path) -> None:
    history = [{"logical_expert_load": [[1, 2, 3]]}, {"logical_expert_load": [[4, 5, 6]], "step": 9}]
    (tmp_path / "expert-load.json").write_text(json.dumps({"load_history": history}))
    t = read_trace(str(tmp_path / "expert-load.json"))
    assert t.load.tolist() == [[[1, 2, 3]], [[4, 5, 6]]]


# ----------------------------------------------------------------------------- engine dump folders


def per_pass_dump(rank: int, passes: list[int]) -> dict:
    """One rank's SGLang per_pass dump: records of physical counts plus the slot->expert map."""
    phy2log = torch.tensor([[0, 1, 2, 0], [2, 1, 0, 1]])
    records = [
        {
            "forward_pass_id": fid,
            "rank": rank,
            "gatherer_key": "primary",
            "global_physical_count": torch.full((2, 4), fid + 1, dtype=torch.int32) * torch.tensor([1, 2, 3, 4]),
        }
        for fid in passes
    ]
    return {"records": records, "last_physical_to_logical_map": phy2log}


def test_sglang_per_pass_folder_sums_ranks_and_maps_slots(tmp_path: Path) -> None:
    folder = tmp_path / "dump"
    folder.mkdir()
    torch.save(per_pass_dump(0, [0, 1]), folder / "expert_distribution_recorder_1.0_0.pt")
    torch.save(per_pass_dump(1, [0, 1]), folder / "expert_distribution_recorder_1.0_1.pt")
    assert detect_format(str(folder)) == "sglang-per-pass"
    t = read_trace(str(folder))
    # slot counts per pass f (one rank): (f+1) * [1, 2, 3, 4]; two ranks double them.
    # layer 0 map [0,1,2,0] -> expert 0 gets slots 0+3, layer 1 map [2,1,0,1] -> expert 1 gets slots 1+3.
    expected = torch.tensor([[[5.0, 2, 3], [3, 6, 1]], [[10, 4, 6], [6, 12, 2]]]) * 2
    assert torch.equal(t.load, expected)
    assert torch.equal(read_trace(str(folder), "sglang-per-pass").load, expected)


def test_sglang_per_pass_single_file(tmp_path: Path) -> None:
    torch.save(per_pass_dump(0, [3]), tmp_path / "one.pt")
    assert read_trace(str(tmp_path / "one.pt")).load.tolist() == [[[20.0, 8, 12], [12, 24, 4]]]
    assert read_trace(str(tmp_path / "one.pt"), "sglang-per-pass").windows == 1


def per_token_dump(rank: int, tokens: list[list[list[int]]]) -> dict:
    """One rank's SGLang per_token dump (one forward pass): ``tokens[l][n]`` lists the physical slots token n
    went to in layer l; padded to SGLang's 8 columns with -1, counts beside them as SGLang computes them."""
    phy2log = torch.tensor([[0, 1, 2, 0], [2, 1, 0, 1]])
    ids = torch.full((2, len(tokens[0]), 8), -1, dtype=torch.int32)
    for layer, rows in enumerate(tokens):
        for n, row in enumerate(rows):
            ids[layer, n, : len(row)] = torch.tensor(row, dtype=torch.int32)
    count = torch.zeros(2, 4, dtype=torch.int32)
    for layer in range(2):
        valid = ids[layer][ids[layer] >= 0].long()
        count[layer].scatter_add_(0, valid, torch.ones_like(valid, dtype=torch.int32))
    record = {"forward_pass_id": 0, "rank": rank, "gatherer_key": "primary", "input_ids": list(range(len(tokens[0]))),
              "topk_ids_of_layer": ids, "misc_objects": [], "global_physical_count": count}
    return {"records": [record], "last_physical_to_logical_map": phy2log}


def test_sglang_per_token_folder_gives_every_tokens_slots_and_experts(tmp_path: Path) -> None:
    folder = tmp_path / "dump"
    folder.mkdir()
    torch.save(per_token_dump(0, [[[0, 1], [2, 3]], [[1, 2], [0, 3]]]), folder / "expert_distribution_recorder_1.0_0.pt")
    torch.save(per_token_dump(1, [[[3, 2]], [[2, -1]]]), folder / "expert_distribution_recorder_1.0_1.pt")
    routing = read_token_routing(str(folder))
    assert routing is not None and routing.tokens == 3
    assert routing.slots[:, :, :2].tolist() == [[[0, 1], [2, 3], [3, 2]], [[1, 2], [0, 3], [2, -1]]]
    # layer 0 map [0,1,2,0], layer 1 map [2,1,0,1]
    assert routing.experts()[:, :, :2].tolist() == [[[0, 1], [2, 0], [0, 2]], [[1, 0], [2, 1], [0, -1]]]
    assert read_trace(str(folder)).load.tolist() == [[[3.0, 1, 2], [2, 2, 1]]]  # the same dumps read as a trace


def test_per_pass_dumps_and_other_files_hold_no_token_routing(tmp_path: Path) -> None:
    torch.save(per_pass_dump(0, [0]), tmp_path / "pass.pt")
    assert read_token_routing(str(tmp_path / "pass.pt")) is None
    assert read_token_routing(str(SMALL)) is None


@pytest.mark.parametrize(("ids", "needle"), [
    (torch.zeros(3, 1, 8, dtype=torch.int32), "shape"),
    (torch.full((2, 1, 8), 4, dtype=torch.int32), "outside -1 .. 3"),
    (torch.zeros(2, 1, 8), "integer"),
])
def test_bad_per_token_records_are_one_line_errors(tmp_path: Path, ids: torch.Tensor, needle: str) -> None:
    dump = per_token_dump(0, [[[0]], [[0]]])
    dump["records"][0]["topk_ids_of_layer"] = ids
    torch.save(dump, tmp_path / "bad.pt")
    with pytest.raises(EplbError, match=needle) as info:
        read_token_routing(str(tmp_path / "bad.pt"))
    assert "bad.pt: records[0]" in str(info.value) and "\n" not in str(info.value)


def trtllm_folder(root: Path) -> Path:
    """A TensorRT-LLM statistic folder: two ranks, iterations 10-11, MoE layers 3 and 5, 4 experts."""
    folder = root / "stats"
    folder.mkdir()
    (folder / "meta_info.json").write_text(json.dumps({"num_experts": 4, "num_experts_per_token": 2}))
    for rank in range(2):
        tensors = {
            f"{it}_{layer}": torch.tensor([it, layer, rank, 1], dtype=torch.int64)
            for it in (10, 11)
            for layer in (5, 3)
        }
        safetensors.torch.save_file(tensors, str(folder / f"rank{rank}.safetensors"))
    (folder / "rank0_raw.safetensors").write_bytes(b"not read")
    return folder


def test_trtllm_folder(tmp_path: Path) -> None:
    folder = trtllm_folder(tmp_path)
    assert detect_format(str(folder)) == "trtllm"
    t = read_trace(str(folder))
    assert t.load.shape == (2, 2, 4)
    assert t.meta["layer_ids"] == [3, 5]
    assert t.load[1, 0].tolist() == [22, 6, 1, 2]
    assert t.load[0, 1].tolist() == [20, 10, 1, 2]


def test_trtllm_errors(tmp_path: Path) -> None:
    folder = trtllm_folder(tmp_path)
    expect_error(folder / "meta_info.json", "trtllm", match="folder")
    safetensors.torch.save_file({"10_3": torch.ones(5)}, str(folder / "rank2.safetensors"))
    expect_error(folder, match="num_experts")
    safetensors.torch.save_file({"layer3": torch.ones(4)}, str(folder / "rank2.safetensors"))
    expect_error(folder, match="<iteration>_<layer>")
    (folder / "rank2.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    expect_error(folder, match="rank2.safetensors")
    (folder / "meta_info.json").write_text("{}")
    expect_error(folder, match="num_experts")
    (folder / "meta_info.json").unlink()
    expect_error(folder, "trtllm", match="meta_info.json")


def test_per_pass_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(empty, match="neither")
    expect_error(empty, "sglang-per-pass", match="no .pt")
    bad = tmp_path / "bad"
    bad.mkdir()
    dump = per_pass_dump(0, [0])
    dump["records"][0]["global_physical_count"] = torch.ones(2, 5)
    torch.save(dump, bad / "r0.pt")
    expect_error(bad, match="shape")
    torch.save({"records": []}, bad / "r0.pt")
    expect_error(bad, match="last_physical_to_logical_map")
    torch.save({"records": [], "last_physical_to_logical_map": [[0, 1]]}, bad / "r0.pt")
    expect_error(bad, match="no records")


# ----------------------------------------------------------------------------- standard input


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_stdin_sniffs_every_written_format(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"t{EXTENSION[fmt]}"
    write_trace(make_trace(), str(path), fmt)
    for read_fmt in (None, fmt):
        monkeypatch.setattr(sys, "stdin", FakeStdin(path.read_bytes()))
        assert torch.equal(read_trace("-", read_fmt).load, make_trace().load)


def test_stdin_pt_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save({"logical_count": torch.ones(2, 3)}, tmp_path / "a.pt")
    monkeypatch.setattr(sys, "stdin", FakeStdin((tmp_path / "a.pt").read_bytes()))
    assert read_trace("-").load.shape == (1, 2, 3)
    monkeypatch.setattr(sys, "stdin", FakeStdin(b""))
    expect_error("-", match="empty", shown="-")
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"hello world"))
    expect_error("-", match="pass input_format", shown="-")
    monkeypatch.setattr(sys, "stdin", FakeStdin(b'{"logical_count": [[1, 2]'))
    expect_error("-", match="invalid JSON", shown="-")
    with pytest.raises(EplbError, match="folder"):
        read_trace("-", "trtllm")
    with pytest.raises(EplbError, match="pass input_format"):
        detect_format("-")


# ----------------------------------------------------------------------------- error paths


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.safetensors", match="no such file")
    with pytest.raises(EplbError, match="unknown format"):
        read_trace(str(tmp_path / "x.csv"), "parquet")


def test_folder_where_a_file_is_expected(tmp_path: Path) -> None:
    folder = tmp_path / "x.json"
    folder.mkdir()
    expect_error(folder, "sglang", match="folder")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("e.json", b"", "empty"),
        ("e.csv", b"  \n", "empty"),
        ("bad.json", b'{"logical_count": [[1, 2]', "invalid JSON"),
        ("keys.json", b'{"counts": [[1]]}', "logical_count"),
        ("list.json", b"[[1, 2]]", "logical_count"),
        ("placement.json", b'{"physical_to_logical_map": [[0]]}', "placement"),
        ("ragged.json", b'{"logical_count": [[1, 2], [3]]}', "rectangular"),
        ("text.json", b'{"logical_count": [["a", "b"]]}', "rectangular"),
        ("rank1.json", b'{"logical_count": [1, 2, 3]}', "shape"),
        ("rank4.json", b'{"logical_count": [[[[1]]]]}', "shape"),
        ("emptyrow.json", b'{"logical_count": [[]]}', "empty"),
        ("nan.json", b'{"logical_count": [[NaN, 1]]}', "NaN"),
        ("neg.json", b'{"logical_count": [[-1, 1]]}', "negative"),
        ("bool.json", b'{"logical_count": [[true, false]]}', "real numbers"),
        ("latin1.json", '{"logical_count": [[1]], "n": "\xe9"}'.encode("latin-1"), "UTF-8"),
        ("hist.json", b'{"load_history": []}', "empty"),
        ("hist2.json", b'{"load_history": [{"x": 1}]}', "logical_expert_load"),
        ("hist3.json", b'{"load_history": {"a": 1}}', "list"),
        (
            "hist4.json",
            b'{"load_history": [{"logical_expert_load": [[1, 2]]}, {"logical_expert_load": [[1, 2, 3]]}]}',
            "same layers",
        ),
        ("hist5.json", b'{"load_history": [{"logical_expert_load": [[[1]], [[2]]]}]}', "[layers, experts]"),
        ("short.safetensors", b"\x01\x02", "truncated"),
        ("header.safetensors", b"\xff\x00\x00\x00\x00\x00\x00\x00{}", "truncated"),
        ("junk.safetensors", b"\x04\x00\x00\x00\x00\x00\x00\x00zzzz", "not a safetensors"),
        ("trunc.pt", b"PK\x03\x04garbage", "torch.save"),
        ("junk.pt", b"not a pickle at all", "torch.save"),
        ("cols.csv", b"layer,expert,count\n0,0,1\n", "load"),
        ("nocols.csv", b"a,b\n1,2\n", "layer"),
        ("header.csv", b"layer,expert,load\n", "no rows"),
        ("dup.csv", b"layer,expert,load\n0,0,1\n0,1,1\n0,0,2\n", "line 4 repeats"),
        ("dupw.csv", b"window,layer,expert,load\n0,0,0,1\n1,0,0,1\n1,0,0,2\n", "(window, layer, expert)"),
        ("text.csv", b"layer,expert,load\n0,0,1\n0,1,lots\n", "line 3"),
        ("nan.csv", b"layer,expert,load\n0,0,nan\n", "line 2"),
        ("inf.csv", b"layer,expert,load\n0,0,1\n0,1,inf\n", "'inf'"),
        ("neg.csv", b"layer,expert,load\n0,0,-3\n", "'-3'"),
        ("blank.csv", b"layer,expert,load\n0,0,\n", "line 2"),
        ("frac.csv", b"layer,expert,load\n0,1.5,3\n", "expert '1.5'"),
        ("negid.csv", b"layer,expert,load\n-1,0,3\n", "layer '-1'"),
        ("huge.csv", b"layer,expert,load\n0,99999999999,3\n", "too many"),
        ("both.csv", b"window,step,layer,expert,load\n0,0,0,0,1\n", "both"),
        ("ragged.csv", b"layer,expert,load\n0,0,1,5,6\n", "CSV"),
        ("wide.csv", b"layer,e0,e1\n0,1,2\n0,3,4\n", "repeats the layer"),
        ("wide2.csv", b"layer,e0,weird\n0,1,2\n", "'weird'"),
        ("wide3.csv", b"layer,e0,expert_0\n0,1,2\n", "both name expert 0"),
        ("wide4.csv", b"layer,e0,e1\n0,1,-2\n", "line 2"),
        ("wide5.csv", b"layer\n0\n", "no expert columns"),
        ("latin1.csv", "layer,expert,load\n0,0,1\n\xe9,0,1\n".encode("latin-1"), "UTF-8"),
    ],
)
def test_bad_files(name: str, content: bytes, match: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    expect_error(path, match=match)


def test_bad_safetensors_content(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file({"weights": torch.ones(2, 2)}, str(path))
    expect_error(path, match="found: weights")
    safetensors.torch.save_file({"load": torch.ones(4)}, str(path))
    expect_error(path, match="shape")
    safetensors.torch.save_file({"load": torch.ones(2, 2)}, str(path), metadata={"groups": "eight"})
    expect_error(path, match="groups")
    full = path.read_bytes()
    path.write_bytes(full[:-3])
    expect_error(path, match="safetensors")


class NotATensor:
    """A pickled class: weights_only loading must refuse it, never execute it."""


def test_pt_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"logical_count": NotATensor()}, path)
    expect_error(path, match="torch.save")
    torch.save({"logical_count": torch.ones(2, 2)}, path)
    path.write_bytes(path.read_bytes()[:-40])
    expect_error(path, match="torch.save")
    torch.save([1, 2], path)
    expect_error(path, match="logical_count")


def test_detect_format(tmp_path: Path) -> None:
    (tmp_path / "long.csv").write_text("layer,expert,load\n0,0,1\n")
    (tmp_path / "wide.csv").write_text("layer,e0\n0,1\n")
    (tmp_path / "v.json").write_text('{"load_history": []}')
    (tmp_path / "noext").write_text('{"logical_count": [[1]]}')
    assert detect_format(str(tmp_path / "long.csv")) == "csv"
    assert detect_format(str(tmp_path / "wide.csv")) == "csv-wide"
    assert detect_format(str(tmp_path / "v.json")) == "vllm"
    assert detect_format(str(tmp_path / "noext")) == "sglang"
    assert read_trace(str(tmp_path / "noext")).load.tolist() == [[[1.0]]]
    with pytest.raises(EplbError, match="no such file"):
        detect_format(str(tmp_path / "missing.csv"))
    assert set(TRACE_FORMATS) >= set(WRITE_FORMATS) | set(FOLDER_FORMATS)


# ----------------------------------------------------------------------------- window operations


def test_select_and_rebin() -> None:
    t = make_trace(windows=5, layers=2, experts=2)
    assert t.select("1:3").windows == 2
    assert torch.equal(t.select(":-1").load, t.load[:4])
    assert t.select(None) is t
    with pytest.raises(EplbError):
        t.select("4:2")
    r = t.rebin(2)
    assert r.windows == 3
    assert torch.equal(r.load[0], t.load[0] + t.load[1])
    assert torch.equal(r.load[2], t.load[4])
    assert torch.equal(r.total(), t.total())


# ----------------------------------------------------------------------------- real traces


@pytest.mark.parametrize(
    "relpath, windows, layers, experts, zero_layers",
    [
        ("sglang-deepseek-v3/decode_in1000out1000.json", 1, 61, 256, 3),
        ("sglang-deepseek-v3/decode_in2000out100.json", 1, 61, 256, 3),
        ("sglang-deepseek-v3/prefill_in1000out1000.json", 1, 61, 256, 3),
        ("sglang-deepseek-v3/prefill_in1024.json", 1, 61, 256, 3),
        ("sglang-deepseek-v3/prefill_in4096.json", 1, 61, 256, 3),
        ("sglang-deepseek-v3/prefill_in512.json", 1, 61, 256, 3),
        ("esft-deepseek-v2-lite/intent.json", 127, 26, 64, 0),
        ("esft-deepseek-v2-lite/summary.json", 13, 26, 64, 0),
        ("qwen/qwen3-30b-a3b.csv", 1, 48, 128, 0),
        ("mixtral-8x7b/humaneval.csv", 2, 32, 8, 0),
    ],
)
def test_real_traces(
    shared_traces: Path, relpath: str, windows: int, layers: int, experts: int, zero_layers: int
) -> None:
    t = read_trace(str(shared_traces / relpath))
    assert (t.windows, t.layers, t.experts) == (windows, layers, experts)
    assert int(t.zero_layers().sum()) == zero_layers
    if zero_layers:
        assert bool(t.zero_layers()[:zero_layers].all())
    assert t.load.dtype == torch.float64 and bool((t.total().sum(-1)[zero_layers:] > 0).all())


EXTREME = st.sampled_from([0.0, 5e-324, 1e-300, 0.1, 1 / 3, 2.0**53 + 2, 1e18, 2.0**63 - 1024, 123456789.125])


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
@settings(max_examples=20, deadline=None)
@given(values=st.lists(EXTREME, min_size=6, max_size=6), groups=st.sampled_from([None, 1, 3]))
def test_extreme_values_and_meta_round_trip(fmt: str, values: list[float], groups: int | None,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """Denormals, values past 2**53 and up to just below the 2**63 cap: every writer's file reads back exactly."""
    load = torch.tensor(values, dtype=torch.float64).reshape(1, 2, 3)
    path = tmp_path_factory.mktemp(fmt) / f"t{EXTENSION[fmt]}"
    write_trace(Trace(load, meta={"groups": groups} if groups else {}), str(path), fmt)
    back = read_trace(str(path))
    assert torch.equal(back.load, load)
    if fmt == "safetensors" and groups:
        assert back.groups == groups


@pytest.mark.parametrize("dtype, numpy_type", [("U16", "<u2"), ("U32", "<u4"), ("U64", "<u8")])
def test_unsigned_safetensors_are_read(dtype: str, numpy_type: str, tmp_path: Path) -> None:
    """Unsigned counts are plausible exports (torch has no reductions for them): read as exact integers."""
    import numpy as np

    counts = np.array([[0, 7, 65535], [1, 2, 3]], dtype=numpy_type)
    header = json.dumps({"load": {"dtype": dtype, "shape": [2, 3], "data_offsets": [0, counts.nbytes]}}).encode()
    path = tmp_path / "u.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + counts.tobytes())
    assert read_trace(str(path)).load[0].tolist() == [[0, 7, 65535], [1, 2, 3]]


def test_csv_columns_given_twice_are_refused(tmp_path: Path) -> None:
    """pandas would rename the second 'load' to 'load.1' and read the first silently."""
    for header in ("layer,expert,load,load", "layer,expert,Load,load ", "layer,e0,e0", "window,layer,expert,load,window"):
        path = tmp_path / "t.csv"
        path.write_text(header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
        expect_error(path, match="twice")


def test_csv_ids_beyond_float_precision_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    for big in (2**53, 2**63, 2**64):
        path.write_text(f"layer,expert,load\n0,{big},1\n")
        expect_error(path, match=f"line 2: expert '{big}' is not an id eplb can hold")


def test_wide_csv_reads_all_columns_at_once_like_one_by_one(tmp_path: Path) -> None:
    """The block conversion of expert columns equals the column-by-column reading, including the error cell."""
    load = torch.arange(3 * 40, dtype=torch.float64).reshape(1, 3, 40)
    path = tmp_path / "w.csv"
    write_trace(Trace(load), str(path), "csv-wide")
    assert torch.equal(read_trace(str(path)).load, load)
    text = path.read_text().splitlines()
    cells = text[2].split(",")
    cells[17] = "oops"
    path.write_text("\n".join([*text[:2], ",".join(cells)]) + "\n")
    expect_error(path, match="line 3: e16 'oops' is not a finite, non-negative number")


def test_layer_ids_in_safetensors_metadata(tmp_path: Path) -> None:
    from eplb_cli.formats.safetensors_file import encode

    path = tmp_path / "t.safetensors"
    path.write_bytes(encode({"load": torch.ones(1, 3, 2)}, {"layer_ids": "[3, 4, 9]"}))
    assert read_trace(str(path)).meta["layer_ids"] == [3, 4, 9]
    for ids, needle in (("[3, 4]", "lists 2 ids for 3 layers"), ("[4, 3, 9]", "must increase"),
                        ("three", "not a JSON list")):
        path.write_bytes(encode({"load": torch.ones(1, 3, 2)}, {"layer_ids": ids}))
        expect_error(path, match=needle)
