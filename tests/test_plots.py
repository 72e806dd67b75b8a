"""--plot: PNGs of the right size when matplotlib is there, one clear line when it is not."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SMALL, run

from eplb_cli import plots, validation
from eplb_cli.metrics import score
from eplb_cli.placement import Placement
from eplb_cli.topology import resolve


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expected(size: tuple[float, float]) -> tuple[int, int]:
    return round(size[0] * plots.DPI), round(size[1] * plots.DPI)




def test_relative_gpu_load_marks_excluded_and_empty() -> None:
    rel = plots.relative_gpu_load(torch.tensor([[1.0, 3.0, 9.0], [0.0, 0.0, 0.0]]), torch.tensor([True, True, False]))
    assert rel[0, :2].tolist() == [0.5, 1.5]
    assert math.isnan(rel[0, 2]) and torch.isnan(rel[1]).all()


def test_plan_plot_is_a_png_of_the_planned_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "heat.png"
    code, stdout, _ = run(capsys, "plan", SMALL, "--gpus", 4, "--nodes", 2, "--plot", out, "--json")
    assert code == 0 and stdout.lstrip().startswith("{")
    assert out.stat().st_size > 1000 and png_size(out) == expected(plots.heatmap_size(4, 4))
    code, _, err = run(capsys, "plan", SMALL, "--gpus", 4, "--plot", out)
    assert code == 2 and "--force" in err
    assert run(capsys, "plan", SMALL, "--gpus", 4, "--plot", out, "--force", "-q")[0] == 0


def test_heatmap_with_excluded_gpus_zero_layers_and_layer_ids(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    topo = resolve(4, 3, slots=6, exclude_gpus=[1])
    placement = Placement(torch.tensor([[0, 1, -1, -1, 2, 3]] * 3), topo).validate()
    load = torch.tensor([[5.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    out = tmp_path / "h.png"
    plots.score_heatmap(score(placement, load), topo, str(out), label="test", layer_ids=[3, 4, 5])
    assert png_size(out) == expected(plots.heatmap_size(3, 3))


def test_compare_and_window_figures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [{"strategy": "deepseek", "gpu_imbalance": 1.08, "runtime_ms": 375.0, "lower_bound": 1.001,
             "oos_gpu_imbalance": 1.2},
            {"strategy": "balanced", "gpu_imbalance": 1.01, "runtime_ms": 2.0, "lower_bound": 1.001,
             "oos_gpu_imbalance": 1.19}]
    bars = tmp_path / "c.png"
    plots.compare_figure(rows, str(bars), title="two strategies")
    assert png_size(bars) == (800, 450)
    lines = tmp_path / "r.png"
    plots.window_lines({"last window": [1.05, 1.1, None, 1.07], "mean": [1.04, 1.05, 1.06, 1.05]}, str(lines))
    assert png_size(lines) == (800, 450)
    replay = tmp_path / "replay.png"
    runs = {"last": [{"window": 2, "served_gpu_imbalance": 1.2}, {"window": 4, "served_gpu_imbalance": 1.1}],
            "ema": [{"window": 2, "served_gpu_imbalance": 1.15}, {"window": 4, "served_gpu_imbalance": 1.12}]}
    plots.replay_figure(runs, str(replay), title="replay")
    assert png_size(replay) == (800, 450)


def test_compare_plot_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "cmp.png"
    code, _, err = run(capsys, "compare", SMALL, "--gpus", 4, "--strategies", "deepseek,fast", "--repeat", 1,
                       "--oos-pairs", 2, "--plot", out, "--quiet")
    assert code == 0, err
    assert png_size(out) == (800, 450)


def test_evaluate_and_replay_plots_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    placement = tmp_path / "p.json"
    assert run(capsys, "plan", SMALL, "--gpus", 4, "-s", "deepseek", "-o", placement, "-q")[0] == 0
    heat = tmp_path / "eval.png"
    code, out, err = run(capsys, "evaluate", placement, SMALL, "--gpus", 4, "--plot", heat, "--json")
    assert code == 0 and out.lstrip().startswith("{"), err
    assert png_size(heat) == expected(plots.heatmap_size(4, 4))
    lines = tmp_path / "replay.png"
    code, _, err = run(capsys, "replay", SMALL, "--gpus", 4, "-s", "fast", "--every", 2, "--plot", lines, "-q")
    assert code == 0, err
    assert png_size(lines) == (800, 450)


def test_missing_matplotlib_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = validation.importlib.util.find_spec
    monkeypatch.setattr(validation.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    placement = tmp_path / "p.json"
    code, out, err = run(capsys, "plan", SMALL, "--gpus", 4, "-o", placement, "--plot", tmp_path / "h.png")
    assert (code, out) == (2, "")
    assert err.strip() == f"eplb: error: --plot needs matplotlib: {validation.plot_hint()}"
    assert "[plot]" in err and ("pip install -e" in err) == (ROOT / "pyproject.toml").is_file()
    assert list(tmp_path.iterdir()) == []


def test_plot_needs_an_image_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    code, _, err = run(capsys, "plan", SMALL, "--gpus", 4, "--plot", tmp_path / "h.txt")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--plot" in err and ".png" in err
    assert list(tmp_path.iterdir()) == []


def test_heatmap_scale_starts_at_zero() -> None:
    """Loads are never negative: the colour scale runs from 0 (idle) through 1.0 (the mean) to 2.0 or the busiest."""
    assert plots.heatmap_top(torch.tensor([[1.0, 1.0005], [0.9995, 1.0]])) == 2.0
    assert plots.heatmap_top(torch.tensor([[0.2, 3.5], [float("nan"), 0.3]])) == 3.5
    assert plots.heatmap_top(torch.full((2, 2), float("nan"))) == 2.0
