"""one_thread runs its body on one torch thread and restores the setting, even after an error."""

import pytest
import torch

from eplb_cli.threads import one_thread


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
