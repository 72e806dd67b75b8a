"""The --device check."""

from __future__ import annotations

import pytest
import torch

from eplb_cli.device import check_device
from eplb_cli.errors import EplbError


def test_check_device() -> None:
    check_device("cpu")
    for bad, needle in (("meta", "only cpu and cuda"), ("banana", "not a torch device")):
        with pytest.raises(EplbError, match=needle):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(EplbError, match="no CUDA device"):
            check_device("cuda")
