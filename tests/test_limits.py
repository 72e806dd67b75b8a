"""Memory checks before reading: the message, available memory, and cgroup limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from eplb_cli.errors import EplbError
from eplb_cli.formats import limits
from eplb_cli.formats.limits import available_memory, check_memory


def test_check_memory_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "available_memory", lambda: 3 << 30)
    check_memory("t.safetensors", 2 << 30)
    with pytest.raises(EplbError) as info:
        check_memory("t.safetensors", 5 << 30)
    assert str(info.value).startswith(
        "t.safetensors: needs about 5.0 GiB to load but only 3.0 GiB is available; use windows=A:B")
    monkeypatch.setattr(limits, "available_memory", lambda: 300 << 20)
    with pytest.raises(EplbError, match=r"needs about 1\.0 GiB to load but only 300\.0 MiB is available"):
        check_memory("t.json", 1 << 30)
    monkeypatch.setattr(limits, "available_memory", lambda: None)
    check_memory("t.json", 1 << 60)


def test_available_memory_is_plausible() -> None:
    avail = available_memory()
    assert avail is None or 0 < avail < 1 << 50


def write_cgroup(tmp_path: Path, line: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "cgroup"
    proc.write_text(line + "\n")
    root = tmp_path / "sys"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


def test_cgroup_v2_limit_counts_reclaimable_cache(tmp_path: Path) -> None:
    proc, root = write_cgroup(tmp_path, "0::/job", {
        "job/memory.max": "1073741824\n", "job/memory.current": "805306368\n",
        "job/memory.stat": "anon 1\ninactive_file 134217728\n",
    })
    assert limits._cgroup_headroom(proc, root) == (1 << 30) - (768 << 20) + (128 << 20)
    (root / "job" / "memory.max").write_text("max\n")
    assert limits._cgroup_headroom(proc, root) is None


def test_cgroup_v1_limit_and_unlimited(tmp_path: Path) -> None:
    proc, root = write_cgroup(tmp_path, "4:memory:/elsewhere", {
        "memory/memory.limit_in_bytes": "2147483648\n", "memory/memory.usage_in_bytes": "1073741824\n",
    })
    assert limits._cgroup_headroom(proc, root) == 1 << 30
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert limits._cgroup_headroom(proc, root) is None
    assert limits._cgroup_headroom(tmp_path / "missing", root) is None


def test_environment_limits_parse_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPLB_MAX_INPUT_BYTES", raising=False)
    assert limits.max_input_bytes() == limits.MAX_INPUT_BYTES
    for text, value in (("4G", 4 << 30), ("512k", 512 << 10), ("1000", 1000), (" 2M ", 2 << 20)):
        monkeypatch.setenv("EPLB_MAX_INPUT_BYTES", text)
        assert limits.max_input_bytes() == value
    for bad in ("lots", "-5", "1.5G", "9" * 30):
        monkeypatch.setenv("EPLB_MAX_INPUT_BYTES", bad)
        with pytest.raises(EplbError, match=r"EPLB_MAX_INPUT_BYTES=.*expected a whole number"):
            limits.max_input_bytes()


def test_cells_limit_scales_with_what_the_input_spells_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPLB_MAX_CELLS", raising=False)
    assert limits.cells_limit(1) == limits.MIN_CELLS
    assert limits.cells_limit(100_000) == 100_000 * limits.CELLS_PER_VALUE
    limits.check_cells(limits.MIN_CELLS, "t.csv", 1)
    with pytest.raises(EplbError, match=r"^t\.csv: ids imply 1,048,577 load cells from 1 row: too many "
                                        r"\(limit 1,048,576: 64 per row, at least 2\*\*20\); check the ids, "
                                        r"or raise EPLB_MAX_CELLS$"):
        limits.check_cells(limits.MIN_CELLS + 1, "t.csv", 1)
    monkeypatch.setenv("EPLB_MAX_CELLS", "10")
    assert limits.cells_limit(10**9) == 10
    with pytest.raises(EplbError, match=r"limit 10: EPLB_MAX_CELLS"):
        limits.check_cells(11, "t.csv", 10**9)


def test_output_and_archive_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPLB_MAX_OUTPUT_BYTES", raising=False)
    monkeypatch.delenv("EPLB_MAX_INPUT_BYTES", raising=False)
    limits.check_output("o.csv", 1 << 20, 10)
    limits.check_output("o.csv", 16 << 20, 1 << 20)
    with pytest.raises(EplbError, match=r"o\.csv: would be at least 16\.0 MiB of text from 10 bytes of input"):
        limits.check_output("o.csv", 16 << 20, 10)
    monkeypatch.setenv("EPLB_MAX_OUTPUT_BYTES", "32M")
    limits.check_output("o.csv", 16 << 20, 10)
    assert limits.archive_limit(10) == 1 << 20
    assert limits.archive_limit(1 << 30) == 4 << 30
    monkeypatch.setenv("EPLB_MAX_INPUT_BYTES", "5")
    assert limits.archive_limit(1 << 30) == 5
