"""Thread settings: one_thread/torch_threads narrow torch and restore it; by_rows keeps the outer count."""

import threading

import numpy as np
import pytest
import torch

from eplb_cli.threads import by_rows, one_thread, row_threads, torch_threads


def test_one_thread_restores_the_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError):
            with one_thread():
                raise ValueError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_compiled_rows_keep_the_outer_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert row_threads() == 3
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            assert row_threads() == 3
            with one_thread():  # nested narrowing still remembers the outermost count
                assert row_threads() == 3
        assert row_threads() == 3 and torch.get_num_threads() == 3
        with torch_threads(None):
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def _rows_seen(rows: int) -> tuple[np.ndarray, set[int]]:
    """by_rows on ``rows`` rows of a work that doubles each row and notes the threads it ran on."""
    names: set[int] = set()
    data = np.arange(rows * 3, dtype=np.int64).reshape(rows, 3)

    def work(at: slice) -> tuple[np.ndarray]:
        names.add(threading.get_ident())
        return (data[at] * 2,)

    (out,) = by_rows(rows, work)
    return out, names


def test_by_rows_spreads_blocks_and_joins_them_in_order():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch_threads(1):
            out, names = _rows_seen(40)
        assert len(names) == 2
        assert np.array_equal(out, np.arange(120).reshape(40, 3) * 2)
        torch.set_num_threads(1)
        out1, names1 = _rows_seen(40)
        assert len(names1) == 1 and np.array_equal(out1, out)
        torch.set_num_threads(2)
        _, few = _rows_seen(5)  # fewer rows than a thread's worth: one block
        assert len(few) == 1
    finally:
        torch.set_num_threads(before)
