"""Input checks that are warnings rather than errors (``--strict`` makes them errors)."""

from __future__ import annotations

import torch

from .errors import EplbError


def load_warnings(load: torch.Tensor) -> list[str]:
    """What a user should know about a load matrix [L, E] before trusting figures from it."""
    out = []
    zero_layers = load.sum(-1) == 0
    n_zero = int(zero_layers.sum())
    if n_zero == load.shape[0]:
        raise EplbError("every layer has zero load; nothing to balance")
    if n_zero:
        ids = zero_layers.nonzero().flatten().tolist()
        shown = ",".join(map(str, ids[:8])) + (",..." if len(ids) > 8 else "")
        out.append(f"{n_zero} layer(s) with no load (dense layers?) placed trivially and left out of the figures: {shown}")
    cold = (load[~zero_layers] == 0).sum()
    if int(cold):
        out.append(f"{int(cold)} expert(s) in loaded layers received no tokens; they still get one replica each")
    return out


def check_device(device: str) -> None:
    """Fail early and clearly when ``--device`` names a device this machine lacks."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise EplbError(f"--device {device}: not a torch device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EplbError(f"--device {device}: no CUDA device here (torch {torch.__version__}); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise EplbError(f"--device {device}: only cpu and cuda are supported")
