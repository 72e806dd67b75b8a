"""Torch threads for loops of small tensor operations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread(device: torch.device | str | None = None) -> Iterator[None]:
    """Run the body on one torch intra-op thread, restoring the setting after (even after an error).

    Loops of many small operations (strategy chains, budget walks, LP
    dispatch, token spans: tensors of ~10^4 elements) run fastest on
    one thread: a second OpenMP thread saves nothing on them but adds a barrier
    per operation, which costs several times more when another process holds
    the other core. With a CUDA ``device`` the setting is left alone.
    """
    threads = torch.get_num_threads()
    if (device is not None and torch.device(device).type != "cpu") or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
