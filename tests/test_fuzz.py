"""Hostile inputs through the real CLI: exit 2, one line naming the file, no traceback, nothing written.

The corpus in tests/corpus/ (made by tests/corpus/make_corpus.py) holds small
bad files; hypothesis mutates good files and draws odd shapes, values and
flags. Every case runs ``eplb_cli.cli.main`` in-process (a few run
``python -m eplb_cli`` in a subprocess) and checks the same contract: exit
code 2, exactly one ``eplb: error:`` line on stderr that names the input, no
traceback, no output file or temporary left, and the input file unchanged.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eplb_cli.cli import main
from eplb_cli.errors import MAX_MESSAGE, EplbError
from eplb_cli.formats import limits, load_placement, read_trace, safetensors_file
from eplb_cli.formats.safetensors_file import encode

CORPUS = ROOT / "tests" / "corpus"
MARKER = "eplb-pwned-marker"
BOMBS = ("traces/pt-deflated-bomb.pt", "traces/pt-stride0-bomb.pt", "traces/pt-shared-lists-bomb.pt",
         "traces/csv-wide-column-bomb.csv", "traces/csv-huge-id.csv", "placements/pl-yaml-laughs-bomb.yaml",
         "placements/pl-id-width-bomb.json")
"""Corpus files that would make eplb allocate far more than they hold (tests/corpus/make_corpus.py BOMBS)."""

EXPECTED: dict[str, str] = {
    "traces/st-truncated-data.safetensors": "truncated",
    "traces/st-truncated-header.safetensors": "truncated",
    "traces/st-four-bytes.safetensors": "truncated",
    "traces/st-garbage-header.safetensors": "truncated",
    "traces/st-implausible-header-size.safetensors": "implausible",
    "traces/st-header-not-object.safetensors": "not a JSON object",
    "traces/st-offsets-disagree-with-shape.safetensors": "header is corrupt",
    "traces/st-offsets-past-end.safetensors": "truncated",
    "traces/st-negative-shape.safetensors": "non-negative integers",
    "traces/st-unknown-dtype.safetensors": "F8_E4M3",
    "traces/st-header-lies-huge.safetensors": "GiB is available",
    "traces/st-no-load-tensor.safetensors": "found: weights",
    "traces/st-rank1.safetensors": "shape",
    "traces/st-rank4.safetensors": "shape",
    "traces/st-zero-experts.safetensors": "empty",
    "traces/st-zero-layers.safetensors": "empty",
    "traces/st-zero-windows.safetensors": "empty",
    "traces/st-nan.safetensors": "NaN or inf",
    "traces/st-inf.safetensors": "NaN or inf",
    "traces/st-negative.safetensors": "negative",
    "traces/st-bool.safetensors": "bool",
    "traces/st-groups-not-int.safetensors": "groups",
    "traces/st-metadata-not-strings.safetensors": "__metadata__",
    "traces/json-truncated.json": "JSON",
    "traces/json-not-an-object.json": "not an object",
    "traces/json-wrong-keys.json": "found: counts",
    "traces/json-ragged.json": "rectangular",
    "traces/json-strings.json": "rectangular",
    "traces/json-nan.json": "NaN or inf",
    "traces/json-infinity.json": "NaN or inf",
    "traces/json-overflow.json": "NaN or inf",
    "traces/json-negative.json": "negative",
    "traces/json-rank1.json": "shape",
    "traces/json-rank4.json": "shape",
    "traces/json-zero-experts.json": "empty",
    "traces/json-deeply-nested.json": "nested too deeply",
    "traces/json-placement-not-trace.json": "placement",
    "traces/json-latin1.json": "UTF-8",
    "traces/vllm-empty-history.json": "empty",
    "traces/vllm-shapes-differ.json": "same layers",
    "traces/vllm-missing-key.json": "logical_expert_load",
    "traces/pt-truncated.pt": "torch.save",
    "traces/pt-garbage.pt": "torch.save",
    "traces/pt-tensor-not-dict.pt": "logical_count",
    "traces/pt-nan.pt": "NaN or inf",
    "traces/pt-zip-without-pickle.pt": "torch.save",
    "traces/csv-missing-load.csv": "lacks column load",
    "traces/csv-missing-layer.csv": "lacks column layer",
    "traces/csv-no-layer-column.csv": "no 'layer' column",
    "traces/csv-header-only.csv": "no rows",
    "traces/csv-duplicate-cell.csv": "line 4 repeats",
    "traces/csv-duplicate-window-cell.csv": "(window, layer, expert)",
    "traces/csv-non-numeric.csv": "'lots'",
    "traces/csv-nan.csv": "line 2",
    "traces/csv-inf.csv": "'inf'",
    "traces/csv-negative.csv": "'-3'",
    "traces/csv-blank-cell.csv": "line 2",
    "traces/csv-fractional-id.csv": "'1.5'",
    "traces/csv-negative-id.csv": "'-1'",
    "traces/csv-huge-id.csv": "too many",
    "traces/csv-ragged.csv": "CSV",
    "traces/csv-unclosed-quote.csv": "CSV",
    "traces/csv-binary.csv": "UTF-8",
    "traces/csv-wide-repeated-layer.csv": "repeats the layer",
    "traces/csv-wide-bad-column.csv": "'weird'",
    "traces/csv-wide-no-experts.csv": "no expert columns",
    "traces/empty.safetensors": "empty",
    "traces/empty.json": "empty",
    "traces/whitespace.csv": "empty",
    "traces/no-extension-garbage": "cannot tell",
    "unplannable/all-zero.safetensors": "zero load",
    "unplannable/all-zero.json": "zero load",
    "unplannable/all-zero.csv": "zero load",
    "warn/gap-in-expert-ids.csv": "received no tokens",
    "warn/gap-in-layer-ids.csv": "no load",
    "warn/zero-layer.json": "no load",
    "warn/zero-layer-3-windows.json": "no load",
    "placements/pl-id-out-of-range.safetensors": "out of range",
    "placements/pl-expert-without-replica.safetensors": "no replica",
    "placements/pl-empty-slot-on-live-gpu.safetensors": "empty slot",
    "placements/pl-slots-disagree.safetensors": "slots",
    "placements/pl-truncated.safetensors": "safetensors",
    "placements/pl-float-ids.safetensors": "integer",
    "placements/pl-metadata-not-json.safetensors": "metadata",
    "placements/pl-gpus-do-not-divide.safetensors": "do not divide",
    "placements/pl-logcnt-disagrees.safetensors": "logcnt",
    "placements/pl-ragged.json": "rectangular",
    "placements/pl-float-ids.json": "integer",
    "placements/pl-strings.json": "integer",
    "placements/pl-truncated.json": "JSON",
    "mismatch/pl-32-experts.json": "does not match",
    "mismatch/pl-8-layers.safetensors": "does not match",
    "evil/evil-reduce.pt": "weights_only",
    "evil/evil-legacy-pickle.pt": "weights_only",
    "evil/evil-placement.pt": "weights_only",
    "traces/pt-deflated-bomb.pt": "EPLB_MAX_INPUT_BYTES",
    "traces/pt-stride0-bomb.pt": "EPLB_MAX_CELLS",
    "traces/pt-shared-lists-bomb.pt": "EPLB_MAX_CELLS",
    "traces/csv-wide-column-bomb.csv": "EPLB_MAX_CELLS",
    "traces/pt-sparse.pt": "sparse",
    "traces/pt-quantized.pt": "quantized",
    "traces/pt-meta-device.pt": "meta device",
    "traces/pt-bool-in-list.pt": "logical_count[0][1] is true",
    "traces/json-duplicate-key.json": "'logical_count' appears twice",
    "traces/json-bool-in-row.json": "logical_count[0][1] is true",
    "traces/json-id-beyond-int64.json": "beyond the 64-bit integer range",
    "traces/json-huge-load.json": "2**63",
    "traces/st-huge-load.safetensors": "2**63",
    "traces/st-u64-beyond-int64.safetensors": "beyond the int64 range",
    "traces/st-header-nested-deeply.safetensors": "nested too deeply",
    "traces/st-header-duplicate-key.safetensors": "'load' twice",
    "traces/st-layer-ids-negative.safetensors": "layer_ids[0] is -1",
    "traces/st-layer-ids-not-numbers.safetensors": "layer_ids[0] is 'a'",
    "traces/st-groups-overflow.safetensors": "groups='1e400'",
    "traces/csv-duplicate-column.csv": "'load' twice",
    "traces/csv-id-beyond-2-53.csv": "2**53",
    "traces/csv-huge-cell.csv": "'7x7x7x",
    "placements/pl-yaml-laughs-bomb.yaml": "EPLB_MAX_CELLS",
    "placements/pl-id-width-bomb.json": "out of range for 2 slots",
    "placements/pl-duplicate-key.json": "'physical_to_logical_map' appears twice",
    "placements/pl-id-beyond-int64.json": "beyond the 64-bit integer range",
    "placements/pl-bool-id.json": "[0][1] is true",
    "placements/pl-meta-gpus-overflow.safetensors": "metadata gpus is inf",
    "placements/pl-meta-gpus-bool.safetensors": "metadata gpus is True",
    "placements/pl-meta-gpus-fraction.safetensors": "metadata gpus is 2.5",
    "placements/pl-meta-gpus-negative.safetensors": "metadata gpus is -4",
    "placements/pl-meta-layer-ids-negative.safetensors": "layer_ids[0] is -3",
    "placements/pl-meta-layer-ids-text.safetensors": "layer_ids[0] is 'a'",
    "placements/pl-yaml-duplicate-key.yaml": "key 0 appears twice",
    "placements/pl-yaml-mixed-keys.yaml": "layer 0 twice",
    "placements/pl-yaml-nested-deeply.yaml": "nested too deeply",
    "placements/pl-yaml-recursive.yaml": "contains itself",
    "placements/pl-yaml-bool-id.yaml": "[0][1] is true",
    "placements/pl-ascend-layer-id-text.json": "layer_id is 'zero'",
    "placements/pl-ascend-device-id-bool.json": "device_id",
    "placements/pl-csv-duplicate-column.csv": "'expert' twice",
    "placements/pl-csv-id-huge.csv": "2**53",
    "readable/st-u16.safetensors": "",
    "readable/st-u32.safetensors": "",
    "readable/st-u64.safetensors": "",
    "readable/st-layer-ids.safetensors": "",
    "readable/csv-many-ids-few-rows.csv": "",
}
"""Corpus file -> a phrase its one-line error must contain (warn/: the warning; readable/: none, they read)."""


@dataclass(frozen=True)
class Command:
    """How to feed an input to a subcommand: ``{in}`` is the input, ``{out}`` a file it would write,
    ``{placement}`` a valid placement and ``{trace}`` a valid trace (both for traces/small.safetensors)."""

    name: str
    args: tuple[str, ...]
    plans: bool = False

    def argv(self, src: Path, folder: Path, placement: Path) -> list[str]:
        values = {"{in}": str(src), "{out}": str(folder / "out.json"), "{placement}": str(placement),
                  "{trace}": str(SMALL)}
        return [self.name, *(values.get(a, a) for a in self.args)]


TRACE_COMMANDS = [
    Command("plan", ("{in}", "--gpus", "2", "--strategy", "deepseek", "-o", "{out}"), plans=True),
    Command("compare", ("{in}", "--gpus", "2", "--strategies", "deepseek", "--repeat", "1"), plans=True),
    Command("replay", ("{in}", "--gpus", "2", "--strategy", "deepseek"), plans=True),
    Command("evaluate", ("{placement}", "{in}")),
    Command("inspect", ("{in}",)),
    Command("convert", ("{in}", "{out}")),
]
"""Every command that reads a trace; ``plans``: it also refuses a trace with no load."""
PLACEMENT_COMMANDS = [
    Command("convert", ("{in}", "{out}", "--gpus", "4")),
    Command("evaluate", ("{in}", "{trace}", "--gpus", "4")),
    Command("plan", ("{trace}", "--gpus", "4", "--strategy", "deepseek", "--previous", "{in}", "-o", "{out}")),
    Command("replay", ("{trace}", "--gpus", "4", "--strategy", "deepseek", "--previous", "{in}")),
]
"""Every command that reads a placement."""


FULL_MATRIX = ("plan", "convert")
"""Trace commands run on every corpus file; the others share plan's reader and get a sample of each family."""
READ_AS_PLACEMENTS = {"json-placement-not-trace.json": ("convert", "inspect")}
"""Corpus files that hold a valid placement, which these commands read as such (convert needs no GPU count for a
format that records none)."""
SAMPLE = {"st-truncated-data.safetensors", "st-header-lies-huge.safetensors", "st-zero-experts.safetensors",
          "json-nan.json", "vllm-shapes-differ.json", "pt-tensor-not-dict.pt", "csv-duplicate-cell.csv",
          "csv-wide-bad-column.csv", "empty.json", "no-extension-garbage"}


@pytest.fixture(scope="session")
def placement(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid placement of traces/small.safetensors on 4 GPUs."""
    path = tmp_path_factory.mktemp("good") / "small.safetensors"
    assert main(["plan", str(SMALL), "--gpus", "4", "--strategy", "deepseek", "--quiet", "-o", str(path)]) == 0
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, src: Path | str, needle: str = "") -> str:
    """Exit 2 and exactly one ``eplb: error:`` line naming ``src`` (and containing ``needle``)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("eplb: error: "), err
    assert len(lines[0]) <= MAX_MESSAGE, lines[0]
    assert "Traceback" not in err
    assert str(src) in lines[0], lines[0]
    assert needle in lines[0], lines[0]
    return lines[0]


def run_rejected(capsys: pytest.CaptureFixture[str], cmd: Command, src: Path, needle: str,
                 placement: Path = SMALL) -> None:
    """Run ``cmd`` on ``src`` in a fresh folder; check the error contract and that nothing was written."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before = digest(src)
        code, _, err = run_cli(capsys, cmd.argv(src, folder, placement))
        assert_clean_error(code, err, src, needle)
        assert list(folder.iterdir()) == []
        assert digest(src) == before


def corpus(folder: str) -> list[Path]:
    return sorted((CORPUS / folder).iterdir())


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# ----------------------------------------------------------------------------- the corpus


def test_corpus_and_expectations_match() -> None:
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".py"}
    assert files == set(EXPECTED)
    assert all(p.stat().st_size < 100_000 for p in CORPUS.rglob("*") if p.is_file())


@pytest.mark.parametrize("src", corpus("traces"), ids=ids(corpus("traces")))
def test_unreadable_trace_is_rejected_by_every_command(src: Path, placement: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in TRACE_COMMANDS:
        if cmd.name in READ_AS_PLACEMENTS.get(src.name, ()):
            continue
        if cmd.name in FULL_MATRIX or src.name in SAMPLE:
            run_rejected(capsys, cmd, src, EXPECTED[f"traces/{src.name}"], placement)


@pytest.mark.parametrize("src", corpus("unplannable"), ids=ids(corpus("unplannable")))
def test_trace_without_load_cannot_be_planned(src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in TRACE_COMMANDS:
        if cmd.plans:
            run_rejected(capsys, cmd, src, EXPECTED[f"unplannable/{src.name}"])
        elif cmd.name != "evaluate":
            with tempfile.TemporaryDirectory() as tmp:
                code, _, err = run_cli(capsys, cmd.argv(src, Path(tmp), SMALL))
                assert code == 0, err


def test_evaluate_refuses_a_trace_without_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = CORPUS / "unplannable" / "all-zero.safetensors"
    fitting = tmp_path / "p.json"
    fitting.write_text(json.dumps({"physical_to_logical_map": [[0, 1, 2, 3, 0, 1]] * 3}))
    run_rejected(capsys, Command("evaluate", (str(fitting), "{in}", "--gpus", "2")), src, "zero load")


@pytest.mark.parametrize("src", corpus("placements"), ids=ids(corpus("placements")))
def test_bad_placement_is_rejected_by_every_command(src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmds = PLACEMENT_COMMANDS
    assert cmds, "no command reads placements"
    for cmd in cmds:
        run_rejected(capsys, cmd, src, EXPECTED[f"placements/{src.name}"])


@pytest.mark.parametrize("src", corpus("mismatch"), ids=ids(corpus("mismatch")))
def test_placement_for_another_model_is_rejected(src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Readable, but made for other layers or experts than the trace: only convert may take it."""
    for cmd in PLACEMENT_COMMANDS:
        if cmd.name == "convert":
            with tempfile.TemporaryDirectory() as tmp:
                code, _, err = run_cli(capsys, cmd.argv(src, Path(tmp), SMALL))
                assert code == 0, err
        else:
            run_rejected(capsys, cmd, src, EXPECTED[f"mismatch/{src.name}"])


@pytest.mark.parametrize("src", corpus("evil"), ids=ids(corpus("evil")))
def test_malicious_pickle_is_refused_and_never_run(
    src: Path, placement: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for cmd in TRACE_COMMANDS + PLACEMENT_COMMANDS:
        run_rejected(capsys, cmd, src, "weights_only", placement)
    assert not (tmp_path / MARKER).exists()


def test_every_unpickling_in_the_package_is_weights_only() -> None:
    """No torch.load without weights_only=True and no pickle loading anywhere in eplb_cli."""
    calls = 0
    for path in (ROOT / "eplb_cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            where = f"{path.name}:{node.lineno}"
            assert not (owner in ("pickle", "dill", "marshal") and node.func.attr.startswith("load")), where
            if owner == "torch" and node.func.attr == "load":
                calls += 1
                flags = {k.arg: k.value for k in node.keywords}
                value = flags.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, where
    assert calls >= 1


class Payload:
    """Pickles to a call of ``os.system`` (``__reduce__``): loading it without weights_only runs a command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


class Custom:
    """A plain custom class: weights_only must refuse it too."""

    value = 3


def test_custom_classes_in_pickles_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    cases = {
        "system.pt": {"logical_count": Payload(f"touch {marker}")},
        "custom.pt": {"logical_count": Custom()},
    }
    for name, obj in cases.items():
        src = tmp_path / name
        torch.save(obj, src)
        run_rejected(capsys, TRACE_COMMANDS[0], src, "weights_only")
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"logical_count": Payload(f"touch {marker}")}))
    run_rejected(capsys, TRACE_COMMANDS[0], legacy, "weights_only")
    assert not marker.exists()


def cli_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m eplb_cli ARGS`` from this checkout, run in ``cwd``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "eplb_cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_malicious_pickle_in_a_subprocess(tmp_path: Path) -> None:
    """The real entry point, not just main(): exit 2, one line (torch's pickle warning silenced), payload never ran."""
    marker = tmp_path / "ran"
    src = tmp_path / "dump.pt"
    src.write_bytes(pickle.dumps({"logical_count": Payload(f"touch {marker}")}, protocol=4))
    proc = cli_subprocess(["plan", str(src), "--gpus", "2", "-o", str(tmp_path / "p.json")], tmp_path)
    assert_clean_error(proc.returncode, proc.stderr, src, "weights_only")
    assert proc.stdout == ""
    assert not marker.exists() and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("src", corpus("readable"), ids=ids(corpus("readable")))
def test_unusual_but_valid_traces_are_read_by_every_command(src: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Unsigned 16/32/64-bit safetensors (real exports), layer ids in metadata, sparse ids: read, not refused."""
    for cmd in TRACE_COMMANDS:
        if cmd.name in ("plan", "inspect", "convert"):
            code, _, err = run_cli(capsys, [*cmd.argv(src, tmp_path, SMALL), "--quiet"][:-1]
                                   if cmd.name == "inspect" else cmd.argv(src, tmp_path, SMALL))
            assert code == 0, err
            (tmp_path / "out.json").unlink(missing_ok=True)
    if src.name.startswith("st-u"):
        assert torch.equal(read_trace(str(src)).load, torch.arange(1, 25, dtype=torch.float64).reshape(2, 3, 4))


def hostile() -> dict[str, tuple[str, bytes]]:
    """The generated corpus of hostile values (tests/corpus/make_corpus.py: hostile_cases)."""
    sys.path.insert(0, str(CORPUS.parent))
    try:
        from corpus.make_corpus import hostile_cases
    finally:
        sys.path.remove(str(CORPUS.parent))
    return hostile_cases()


HOSTILE = hostile()


def test_every_hostile_value_through_its_reader(tmp_path: Path) -> None:
    """Each (field, value) file is read or refused with one short line: never any other exception."""
    refused = 0
    for name, (kind, data) in HOSTILE.items():
        src = tmp_path / name
        src.write_bytes(data)
        try:
            if kind == "trace":
                read_trace(str(src))
            else:
                load_placement(str(src), defaults={"gpus": 2})
        except EplbError as exc:
            refused += 1
            text = exc.render(lambda n, v: n)
            assert text.startswith(f"{src}: "), (name, text)
            assert "\n" not in text and len(text) - len(str(src)) <= 200, (name, text)
        src.unlink()
    assert 0.5 * len(HOSTILE) < refused < len(HOSTILE)


HOSTILE_SAMPLE = sorted(HOSTILE)[::9]
"""Every ninth case (a spread over fields and values), for the slower walk through every command."""


@pytest.mark.parametrize("name", HOSTILE_SAMPLE)
def test_hostile_values_through_every_command(name: str, tmp_path: Path, placement: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0, or exit 2 with one line; never "internal error" (exit 3); never a half-written file."""
    kind, data = HOSTILE[name]
    src = tmp_path / name
    src.write_bytes(data)
    cmds = TRACE_COMMANDS if kind == "trace" else PLACEMENT_COMMANDS
    for cmd in cmds:
        folder = tmp_path / cmd.name
        folder.mkdir(exist_ok=True)
        code, _, err = run_cli(capsys, cmd.argv(src, folder, placement))
        assert code in (0, 2), (cmd.name, err)
        if code == 2:  # one error line (warnings about the input may come first)
            lines = [line for line in err.splitlines() if line.strip()]
            assert [line.startswith("eplb: warning: ") for line in lines] == [True] * (len(lines) - 1) + [False], err
            assert_clean_error(code, lines[-1], "")
            assert list(folder.iterdir()) == [], cmd.name
        for made in folder.iterdir():
            made.unlink()
    assert src.read_bytes() == data


@pytest.mark.parametrize("src", corpus("warn"), ids=ids(corpus("warn")))
def test_gaps_in_ids_warn_and_strict_fails(src: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Missing ids are zero load: a warning naming the file, an error under --strict, silence under --quiet."""
    needle = EXPECTED[f"warn/{src.name}"]
    out = tmp_path / "p.json"
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", "2", "--strategy", "deepseek", "-o", str(out)])
    assert code == 0, err
    assert f"eplb: warning: {src}: " in err and needle in err
    assert out.exists()
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", "2", "--strategy", "deepseek", "--quiet"])
    assert code == 0 and err == ""
    strict = Command("plan", ("{in}", "--gpus", "2", "--strategy", "deepseek", "--strict", "-o", "{out}"))
    run_rejected(capsys, strict, src, "--strict")


# ----------------------------------------------------------------------------- shapes and flags


@pytest.mark.parametrize(
    "shape, gpus",
    [((1, 3, 1), 2), ((1, 1, 1), 1), ((2, 1, 5), 8), ((1, 2, 3), 3)],
    ids=["one-expert", "one-of-everything", "more-gpus-than-experts", "experts-equal-gpus"],
)
def test_tiny_shapes_plan(shape: tuple[int, ...], gpus: int, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t.safetensors"
    src.write_bytes(encode({"load": torch.arange(1, 1 + torch.Size(shape).numel()).float().reshape(shape)}))
    out = tmp_path / "p.safetensors"
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", str(gpus), "--strategy", "deepseek", "-o", str(out)])
    assert code == 0, err
    assert load_placement(str(out)).phy2log.shape[0] == shape[1]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (("--gpus", "8", "--slots", "20"), "do not divide over 8 GPUs"),
        (("--gpus", "32", "--slots", "16"), "do not divide over 32 GPUs"),
        (("--gpus", "4", "--slots", "12"), "fewer than the 16 experts"),
        (("--gpus", "0"), "--gpus 0"),
        (("--gpus", "1000000000"), "--gpus 1000000000"),
        (("--gpus", "4", "--redundant", "99999999996"), "slots"),
        (("--gpus", "4", "--slots", "100000000"), "slots"),
        (("--gpus", "4", "--nodes", "3"), "--nodes"),
        (("--gpus", "4", "--groups", "3"), "--groups 3"),
        (("--gpus", "4", "--window", "0"), "--window 0"),
        (("--gpus", "4", "--windows", "5:2"), "--windows 5:2"),
        (("--gpus", "4", "--windows", "a:b"), "--windows a:b"),
        (("--gpus", "4", "--layer", "99"), "--layer 99"),
        (("--gpus", "4", "--exclude-gpus", "0,1,2,3"), "--exclude-gpus"),
        (("--gpus", "4", "--exclude-gpus", "9"), "--exclude-gpus 9"),
        (("--gpus", "4", "--device", "tpu"), "--device tpu"),
        (("--gpus", "4", "--strategy", "nope"), "--strategy nope"),
        (("--gpus", "4", "--input-format", "xml"), "--input-format xml"),
        (("--gpus", "four",), "--gpus"),
    ],
)
def test_impossible_flags_are_one_line_errors(flags: tuple[str, ...], needle: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    code, _, err = run_cli(capsys, ["plan", str(SMALL), *flags, "-o", str(out)])
    line = assert_clean_error(code, err, "", needle)
    assert "internal error" not in line
    assert not out.exists()


@pytest.mark.parametrize("flags", [("--window", str(10**20)), ("--windows", f"0:{10**20}"),
                                   ("--windows", f"-{10**20}:"), ("--seed", str(10**20)), ("--window", "1")])
def test_extreme_but_valid_flags(flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, ["plan", str(SMALL), "--gpus", "4", "--strategy", "deepseek", "--quiet", *flags])
    assert code == 0, err


# ----------------------------------------------------------------------------- memory


def test_generating_more_than_memory_fails_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.safetensors"
    code, _, err = run_cli(capsys, ["generate", str(out), "--windows", str(10**9), "--layers", "94"])
    line = assert_clean_error(code, err, out, "to generate but only")
    assert "--windows" in line and not out.exists()


def test_header_declaring_more_than_memory_fails_before_reading(capsys: pytest.CaptureFixture[str]) -> None:
    src = CORPUS / "traces" / "st-header-lies-huge.safetensors"
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", "2"])
    line = assert_clean_error(code, err, src, "needs about")
    assert "--windows" in line and "--window" in line


def test_header_lie_fails_cleanly_once_the_memory_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for one window passes the memory check; then the missing data is reported, not crashed on."""
    src = CORPUS / "traces" / "st-header-lies-huge.safetensors"
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", "2", "--windows", "0:1"])
    assert_clean_error(code, err, src, "truncated")
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", "2", "--window", "100000"])
    assert_clean_error(code, err, src, "truncated")


@pytest.mark.parametrize("name", ["trace.safetensors", "trace.json", "trace.csv"])
def test_memory_check_names_sizes_and_the_way_out(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / name
    assert run_cli(capsys, ["generate", str(src), "--layers", "8", "--experts", "32", "--windows", "20"])[0] == 0
    monkeypatch.setattr(limits, "available_memory", lambda: 4096)
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", "4", "--strategy", "deepseek"])
    line = assert_clean_error(code, err, src, "to load but only 4.0 KiB is available")
    assert "--windows" in line
    monkeypatch.setattr(limits, "available_memory", lambda: None)
    assert run_cli(capsys, ["plan", str(src), "--gpus", "4", "--strategy", "deepseek"])[0] == 0


def test_window_selection_shrinks_what_a_safetensors_read_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With small read slices, --windows and --window turn a refused read into one that fits."""
    src = tmp_path / "t.safetensors"
    assert run_cli(capsys, ["generate", str(src), "--layers", "8", "--experts", "64", "--windows", "100"])[0] == 0
    monkeypatch.setattr(safetensors_file, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(limits, "available_memory", lambda: 100 * 8 * 64 * 8 // 2)
    args = ["plan", str(src), "--gpus", "4", "--strategy", "deepseek", "--quiet"]
    assert_clean_error(*run_cli(capsys, args)[::2], src, "needs about")
    assert run_cli(capsys, [*args, "--windows", "-10:"])[0] == 0
    assert run_cli(capsys, [*args, "--window", "10"])[0] == 0


PEAK_SCRIPT = """
import sys
from pathlib import Path
import torch
from eplb_cli.formats import read_trace, safetensors_file

def status(key):
    line = [x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key)][0]
    return int(line.split()[1]) * 1024

safetensors_file.CHUNK_BYTES = 1 << 20
for windows in sys.argv[2:]:
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    total = read_trace(sys.argv[1], windows=windows or None).total()
    print(status("VmHWM:") - before)
"""
"""Prints how far resident memory rose above its level before each read (the peak is reset via clear_refs)."""


def test_reading_a_trace_holds_one_float64_copy_and_a_slice(tmp_path: Path) -> None:
    """Peak growth while reading a float32 file: the float64 result plus one slice, not several copies."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc to reset the peak RSS")
    src = tmp_path / "t.safetensors"
    load = torch.randint(0, 1000, (200, 64, 512), generator=torch.Generator().manual_seed(0)).float()
    src.write_bytes(encode({"load": load}))
    result = load.numel() * 8
    del load
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(src), "", "0:10"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    whole, ten = (int(line) for line in proc.stdout.split())
    assert whole < 1.4 * result, f"peak {whole / result:.2f}x the float64 trace"
    assert ten < 0.3 * result, f"10 of 200 windows peaked at {ten / result:.2f}x the whole trace"


BOMB_SCRIPT = """
import io, os, sys
from pathlib import Path
from eplb_cli.cli import main

def status(key):
    line = [x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key)][0]
    return int(line.split()[1]) * 1024

class Endless(io.RawIOBase):
    def readable(self):
        return True
    def readinto(self, buf):
        line = b"0,0,1\\n" * (len(buf) // 6)
        buf[: len(line)] = line
        return len(line)

def stdin(kind):
    if kind == "zero":
        return open("/dev/zero")
    return io.TextIOWrapper(io.BufferedReader(Endless()))

small, out = sys.argv[1], sys.argv[2]
for warm in (["inspect", small], ["convert", small, out + ".csv"], ["inspect", out + ".csv"],
             ["plan", small, "--gpus", "4", "-q", "-o", out + ".yaml"], ["convert", out + ".yaml", out + ".pl.json", "--gpus", "4"]):
    assert main(warm) == 0, warm  # load the modules every case shares, so only the case itself is measured
for case in sys.argv[3:]:
    kind, _, arg = case.partition(":")
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    if kind in ("stdin-zero", "stdin-endless"):
        sys.stdin = stdin(kind[6:])
        code = main(["plan", "-", "--gpus", "2", "--input-format", "csv", "-o", out])
    elif kind == "placement":
        code = main(["convert", arg, out, "--gpus", "4"])
    elif kind == "convert":
        code = main(["convert", arg, out + ".sparse.csv"])
    else:
        code = main(["plan", arg, "--gpus", "2", "-o", out])
    print("PEAK", case, code, status("VmHWM:") - before, flush=True)
"""
"""Runs each refused case in one process and prints how far its peak memory rose above where it started."""


def test_memory_bombs_are_refused_before_they_allocate(tmp_path: Path) -> None:
    """Each bomb ends in exit 2 while resident memory stays within a few MiB of the interpreter's own."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc to reset the peak RSS")
    sparse = tmp_path / "sparse.csv"
    sparse.write_bytes(b"layer,expert,load\n0,0,1\n0,900000,2\n")
    cases = [f"{'placement' if b.startswith('placements/') else 'trace'}:{CORPUS / b}" for b in BOMBS]
    cases += ["trace:/dev/zero", "trace:/dev/urandom", "stdin-zero", "stdin-endless", f"convert:{sparse}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), EPLB_MAX_INPUT_BYTES="8M")
    proc = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(SMALL), str(tmp_path / "out.json"), *cases],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("PEAK ")]
    assert [r[0] for r in rows] == cases
    errors = [line for line in proc.stderr.splitlines() if line.startswith("eplb: error: ")]
    assert len(errors) == len(cases), proc.stderr
    for (case, code, rise), line in zip(rows, errors):
        assert code == "2", (case, line)
        assert int(rise) < 48 << 20, f"{case}: peak rose {int(rise) >> 20} MiB ({line})"
    assert not (tmp_path / "out.json").exists()


def test_limits_are_named_with_the_variable_that_lifts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal names the environment variable, and setting it lets the same input through."""
    bomb = CORPUS / "traces" / "csv-wide-column-bomb.csv"
    small = tmp_path / "sparse.csv"
    small.write_bytes(b"layer,e0,e3000000\n0,1,1\n")
    code, _, err = run_cli(capsys, ["inspect", str(small)])
    assert_clean_error(code, err, small, "EPLB_MAX_CELLS")
    monkeypatch.setenv("EPLB_MAX_CELLS", "4000000")
    assert run_cli(capsys, ["inspect", str(small)])[0] == 0
    assert_clean_error(*run_cli(capsys, ["inspect", str(bomb)])[::2], bomb, "limit 4,000,000: EPLB_MAX_CELLS")
    monkeypatch.setenv("EPLB_MAX_CELLS", "lots")
    assert_clean_error(*run_cli(capsys, ["inspect", str(small)])[::2], "EPLB_MAX_CELLS='lots'")
    monkeypatch.delenv("EPLB_MAX_CELLS")
    sparse = tmp_path / "long.csv"
    sparse.write_bytes(b"layer,expert,load\n0,0,1\n0,500000,2\n")
    out = tmp_path / "dense.csv"
    assert_clean_error(*run_cli(capsys, ["convert", str(sparse), str(out)])[::2], out, "EPLB_MAX_OUTPUT_BYTES")
    assert not out.exists()
    monkeypatch.setenv("EPLB_MAX_OUTPUT_BYTES", "64M")
    assert run_cli(capsys, ["convert", str(sparse), str(out)])[0] == 0
    assert len(out.read_bytes().splitlines()) == 500_002


def test_wide_csv_is_refused_before_pandas_parses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """200,000 columns (1.9 MB): refused from the header line alone; pandas never sees it."""
    import pandas as pd

    src = tmp_path / "wide.csv"
    src.write_text("layer," + ",".join(f"e{i}" for i in range(200_000)) + "\n0," + ",".join(["1"] * 200_000) + "\n")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("pandas.read_csv was called")

    monkeypatch.setattr(pd, "read_csv", never)
    for cmd in ("plan", "inspect", "convert"):
        argv = [cmd, str(src), *(["--gpus", "4"] if cmd == "plan" else []),
                *([str(tmp_path / "o.json")] if cmd == "convert" else [])]
        assert_clean_error(*run_cli(capsys, argv)[::2], src, "200,001 columns")


@pytest.mark.parametrize("window, windows", [(None, None), (None, "3:-2"), (7, None), (7, "-3:"), (100, None)])
def test_slice_by_slice_read_equals_whole_read(window: int | None, windows: str | None, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "t.safetensors"
    load = torch.rand(23, 3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    src.write_bytes(encode({"load": load}))
    whole = read_trace(str(src)).rebin(window).select(windows).load
    monkeypatch.setattr(safetensors_file, "CHUNK_BYTES", 200)
    sliced = read_trace(str(src), window=window, windows=windows).load
    assert torch.equal(sliced, whole)


# ----------------------------------------------------------------------------- hypothesis


def good_files() -> dict[str, bytes]:
    """One small valid trace per format, to mutate."""
    load = torch.tensor([[[5, 0, 3, 9], [1, 2, 3, 4]], [[7, 1, 0, 2], [0, 8, 8, 1]]], dtype=torch.float32)
    counts = load.to(torch.int64).tolist()
    pt = tempfile.SpooledTemporaryFile()
    torch.save({"logical_count": load.to(torch.int64)}, pt)
    pt.seek(0)
    rows = "".join(f"{w},{l},{e},{int(load[w, l, e])}\n" for w in range(2) for l in range(2) for e in range(4))
    wide = "".join(f"{w},{l}," + ",".join(str(int(v)) for v in load[w, l]) + "\n" for w in range(2) for l in range(2))
    return {
        "t.safetensors": encode({"load": load}, {"groups": "2"}),
        "t.json": json.dumps({"logical_count": counts}).encode(),
        "v.json": json.dumps({"load_history": [{"logical_expert_load": c} for c in counts]}).encode(),
        "t.pt": pt.read(),
        "long.csv": ("window,layer,expert,load\n" + rows).encode(),
        "wide.csv": ("window,layer,e0,e1,e2,e3\n" + wide).encode(),
    }


GOOD = good_files()
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A good file with a few bytes overwritten, inserted or cut, or truncated."""
    name = draw(st.sampled_from(sorted(GOOD)))
    data = bytearray(GOOD[name])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return name, bytes(data)


def plan_contract(capsys: pytest.CaptureFixture[str], src: Path, data: bytes, *extra: str) -> int:
    """Write ``data`` to ``src``, plan it; exit 0 with a valid placement, or exit 2 by the error contract."""
    src.write_bytes(data)
    out = src.parent / "out.safetensors"
    code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", "2", "--strategy", "deepseek", "--quiet",
                                    "-o", str(out), *extra])
    assert code in (0, 2), err
    if code == 0:
        assert load_placement(str(out)).phy2log.shape[1] >= 2
        out.unlink()
    else:
        assert_clean_error(code, err, src)
        assert not out.exists()
    assert src.read_bytes() == data
    assert sorted(p.name for p in src.parent.iterdir()) == [src.name]
    return code


@FUZZ
@given(case=mutated())
def test_mutated_files_never_crash(case: tuple[str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        plan_contract(capsys, Path(tmp) / name, data)


@st.composite
def mutated_placements(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid placement of traces/small.safetensors, as eplb safetensors or SGLang JSON, then mutated."""
    phy2log = torch.cat([torch.arange(16), torch.tensor([0, 1, 2, 3])]).repeat(4, 1)
    good = {
        "p.json": json.dumps({"physical_to_logical_map": phy2log.tolist()}).encode(),
        "p.safetensors": encode({"phy2log": phy2log}, {k: json.dumps(v) for k, v in {
            "experts": 16, "slots": 20, "gpus": 4, "nodes": 1, "groups": 1, "policy": "global"}.items()}),
    }
    name = draw(st.sampled_from(sorted(good)))
    data = bytearray(good[name])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return name, bytes(data)


@FUZZ
@given(case=mutated_placements())
def test_mutated_placements_never_crash(case: tuple[str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        src.write_bytes(data)
        code, out, err = run_cli(capsys, ["evaluate", str(src), str(SMALL), "--gpus", "4", "--json"])
        assert code in (0, 2), err
        if code == 0:
            assert json.loads(out)["layers"] == 4
        else:
            assert_clean_error(code, err, src)
        assert src.read_bytes() == data


DTYPES = [torch.float32, torch.float64, torch.float16, torch.int32, torch.int64, torch.uint8, torch.bool]


@st.composite
def stored_tensors(draw: st.DrawFn) -> torch.Tensor:
    """Any rank 0-4, sizes 0-3, any dtype, values including NaN, inf and negatives."""
    shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=4))
    values = st.one_of(st.integers(-3, 70000), st.sampled_from([float("nan"), float("inf"), -0.5, 1e6, 0.0]))
    n = int(torch.Size(shape).numel())
    flat = torch.tensor(draw(st.lists(values, min_size=n, max_size=n)) or [0.0], dtype=torch.float64)[:n]
    return flat.reshape(shape).to(draw(st.sampled_from(DTYPES)))


def plannable(t: torch.Tensor) -> bool:
    """What the readers must accept: rank 2 or 3, no empty side, finite, >= 0 and some load."""
    if t.dim() not in (2, 3) or 0 in t.shape or t.dtype == torch.bool:
        return False
    v = t.to(torch.float64)
    return bool(torch.isfinite(v).all() and (v >= 0).all() and v.sum() > 0)


@FUZZ
@given(load=stored_tensors())
def test_safetensors_of_any_shape_dtype_and_value(load: torch.Tensor, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        code = plan_contract(capsys, Path(tmp) / "t.safetensors", encode({"load": load}))
    assert code == (0 if plannable(load) else 2)


CELLS = st.one_of(
    st.integers(-2, 5).map(str), st.sampled_from(["", "nan", "inf", "-inf", "1.5", "x", "1e3", " 2", '"3"']),
)


@st.composite
def csv_tables(draw: st.DrawFn) -> bytes:
    """Long or wide CSV with a random header and random cells, including duplicates and gaps."""
    header = draw(st.sampled_from([
        ["layer", "expert", "load"], ["window", "layer", "expert", "load"], ["step", "layer", "expert", "load"],
        ["layer", "expert"], ["layer", "e0", "e1"], ["window", "layer", "0", "2"], ["load", "expert", "layer"],
    ]))
    rows = draw(st.lists(st.lists(CELLS, min_size=len(header), max_size=len(header)), min_size=0, max_size=8))
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode()


@FUZZ
@given(table=csv_tables())
def test_random_csv_tables(table: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plan_contract(capsys, Path(tmp) / "t.csv", table)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    gpus=st.integers(-1, 40), nodes=st.integers(-1, 5), slots=st.one_of(st.none(), st.integers(-2, 80)),
    groups=st.one_of(st.none(), st.integers(-1, 17)), policy=st.sampled_from(["auto", "global", "hierarchical", "x"]),
)
def test_random_topology_flags(gpus: int, nodes: int, slots: int | None, groups: int | None, policy: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--nodes", str(nodes), "--policy", policy]
    flags += ["--slots", str(slots)] if slots is not None else []
    flags += ["--groups", str(groups)] if groups is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.safetensors"
        data = SMALL.read_bytes()
        src.write_bytes(data)
        out = Path(tmp) / "p.json"
        code, _, err = run_cli(capsys, ["plan", str(src), "--gpus", str(gpus), "--strategy", "deepseek", "--quiet",
                                        "-o", str(out), *flags])
        assert code in (0, 2), err
        if code == 2:
            assert_clean_error(code, err, "")
        assert out.exists() == (code == 0)
        assert src.read_bytes() == data


def test_safetensors_header_size_field_lies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Header length fields that overrun, undercut or point into the data."""
    good = encode({"load": torch.ones(2, 3)})
    (size,) = struct.unpack("<Q", good[:8])
    for n in (size + 8, size - 3, len(good), 1 << 40):
        src = tmp_path / f"h{n}.safetensors"
        src.write_bytes(struct.pack("<Q", n) + good[8:])
        run_rejected(capsys, TRACE_COMMANDS[0], src, "safetensors")
