"""strategies/arrays.py: the first-compile notice and the cache probe behind it."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from eplb_cli.strategies import arrays


def _kernel_with_index(path: Path) -> object:
    return SimpleNamespace(_cache=SimpleNamespace(_cache_file=SimpleNamespace(_index_path=str(path))))


def test_compiled_before_reads_numbas_index(tmp_path: Path) -> None:
    index = tmp_path / "kernels.dhondt_rows-1.py311.nbi"
    assert not arrays.compiled_before(_kernel_with_index(index))
    index.write_bytes(b"")
    assert arrays.compiled_before(_kernel_with_index(index))
    assert arrays.compiled_before(object()), "an unknown cache layout must not print the notice"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("cached, tty, told", [(False, True, True), (True, True, False), (False, False, False)])
def test_the_notice_shows_once_on_a_terminal_without_cache(monkeypatch: pytest.MonkeyPatch, cached: bool,
                                                            tty: bool, told: bool) -> None:
    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(arrays, "_told", False)
    monkeypatch.setattr(arrays, "compiled_before", lambda kernel: cached)
    arrays.kernels()
    arrays.kernels()
    assert err.getvalue().count("compiling the planning kernels") == int(told)
