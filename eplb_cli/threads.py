"""Torch threads for loops of small tensor operations."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body on one torch intra-op thread, restoring the setting after.

    Loops of many small operations (robust swaps, LP dispatch) run fastest on
    one thread: handing each operation to others costs more than it saves,
    several times more on a busy machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
