"""The ``--device`` check: fail early and clearly when the machine lacks the device asked for."""

from __future__ import annotations

import torch

from .errors import EplbError, arg
from .validation import device_name


def check_device(device: str) -> None:
    """Fail early and clearly when ``device`` names a device this machine lacks."""
    device_name(device)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise EplbError(f"{arg('device', device)}: not a torch device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EplbError(f"{arg('device', device)}: no CUDA device here (torch {torch.__version__}); use {arg('device', 'cpu')}")
    if dev.type not in ("cpu", "cuda"):
        raise EplbError(f"{arg('device', device)}: only cpu and cuda are supported")
