"""`eplb inspect`: figures checked by hand on a tiny trace, JSON keys, human text, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import SMALL, run

from eplb_cli.formats import write_trace
from eplb_cli.inspection import inspect_trace, window_similarity
from eplb_cli.trace import Trace

# 2 windows x 3 layers x 4 experts; layer 1 is dense (no load).
LOAD = torch.tensor([
    [[10, 0, 5, 5], [0, 0, 0, 0], [1, 1, 1, 1]],
    [[10, 0, 0, 10], [0, 0, 0, 0], [2, 2, 2, 2]],
], dtype=torch.float64)
KEYS = {"source", "windows", "layers", "experts", "groups", "total_tokens", "tokens_per_layer", "tokens_per_window",
        "zero_layers", "zero_experts", "skew", "per_layer", "hottest", "window_similarity"}




def test_figures_by_hand() -> None:
    doc = inspect_trace(Trace(LOAD), top=1)
    assert KEYS <= doc.keys()
    assert (doc["windows"], doc["layers"], doc["experts"]) == (2, 3, 4)
    assert doc["total_tokens"] == 52
    # layer 0 totals [20, 0, 5, 15] = 40 tokens, layer 2 totals [3, 3, 3, 3] = 12; layer 1 left out
    assert doc["tokens_per_layer"] == {"min": 12, "mean": 26, "max": 40}
    assert doc["tokens_per_window"] == {"min": 24, "mean": 26, "max": 28}
    assert doc["zero_layers"] == [1] and doc["zero_experts"] == 1
    # hottest / mean: layer 0 20 / 10 = 2, layer 2 3 / 3 = 1; cold (< 10% of mean): layer 0 one of four
    assert doc["skew"]["hottest_over_mean"] == {"min": 1.0, "mean": 1.5, "max": 2.0}
    assert doc["skew"]["cold_share"] == {"min": 0.0, "mean": 0.125, "max": 0.25}
    assert doc["per_layer"][0] == {"layer": 0, "tokens": 40, "hottest_expert": 0, "hottest_over_mean": 2.0,
                                   "cold_share": 0.25}
    assert doc["per_layer"][1]["hottest_over_mean"] is None
    assert doc["hottest"] == [{"layer": 0, "expert": 0, "tokens": 20.0, "share": 0.5}]
    # layer 0: (100 + 50) / (sqrt(150) sqrt(200)) = sqrt(3)/2; layer 2 is a scaled copy (1.0)
    sim = doc["window_similarity"]
    assert sim["min"] == pytest.approx(math.sqrt(3) / 2)
    assert sim["mean"] == pytest.approx((math.sqrt(3) / 2 + 1) / 2)
    assert sim["min_at"] == {"windows": [0, 1], "layer": 0}
    assert sim["per_pair"] == [pytest.approx(sim["mean"])]


def test_similarity_is_nan_for_empty_layers_and_none_for_one_window() -> None:
    sim = window_similarity(LOAD)
    assert sim.shape == (1, 3) and math.isnan(sim[0, 1])
    assert inspect_trace(Trace(LOAD[:1]))["window_similarity"] is None


def test_layer_ids_from_the_trace_name_the_layers() -> None:
    doc = inspect_trace(Trace(LOAD, meta={"layer_ids": [3, 5, 7]}), top=1)
    assert doc["zero_layers"] == [5] and doc["hottest"][0]["layer"] == 3
    assert doc["window_similarity"]["min_at"]["layer"] == 3


def test_cli_json_is_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    write_trace(Trace(LOAD), path)
    code, out, err = run(capsys, "inspect", path, "--json", "--top", 3)
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert KEYS <= doc.keys() and len(doc["hottest"]) == 3 and doc["zero_layers"] == [1]


def test_cli_human_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.json"
    write_trace(Trace(LOAD), path)
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    for needle in ("2 windows x 3 layers x 4 experts", "zero layers", "skew", "drift", "Most skewed layers",
                   "Hottest experts", "0.8660"):
        assert needle in out
    code, out, _ = run(capsys, "inspect", path, "--windows", "0:1")
    assert "one window" in out


@pytest.mark.parametrize("args, needle", [
    (["inspect", "missing.csv"], "missing.csv"),
    (["inspect", "TRACE", "--top", "-1"], "--top -1"),
    (["inspect", "TRACE", "--windows", "5:9"], "--windows 5:9"),
])
def test_bad_input_exit_2_one_line(args: list[str], needle: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    write_trace(Trace(LOAD), path)
    code, out, err = run(capsys, *[str(path) if a == "TRACE" else a for a in args])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_inspect_a_placement_says_which_clusters_it_fits(tmp_path, capsys) -> None:
    out = tmp_path / "p.json"
    assert run(capsys, "plan", SMALL, "--gpus", 4, "-s", "fast", "-o", out, "-q")[0] == 0
    code, text, err = run(capsys, "inspect", out)
    assert code == 0, err
    assert "20 slots: fits 1, 2, 4, 5, 10 or 20 GPUs" in text and "the file does not record GPUs" in text
    doc = json.loads(run(capsys, "inspect", out, "--json")[1])
    assert doc["kind"] == "placement" and doc["gpus"] is None and doc["fits"] == [1, 2, 4, 5, 10, 20]
    assert (doc["layers"], doc["layer_ids"], doc["slots"], doc["redundant"]) == (4, [0, 1, 2, 3], 20, 4)
    own = tmp_path / "p.safetensors"
    assert run(capsys, "plan", SMALL, "--gpus", 4, "-s", "fast", "-o", own, "-q")[0] == 0
    assert json.loads(run(capsys, "inspect", own, "--json")[1])["gpus"] == 4
