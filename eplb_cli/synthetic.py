"""Synthetic expert-load traces with the traits real MoE serving shows.

Real traces (see ``../shared/traces``) have skewed, slowly drifting expert
popularity that differs from layer to layer, integer token counts with ties and
experts that get nothing. :func:`generate` reproduces those traits from a seed,
so tests, benchmarks and the shipped example traces need no recorded data.
"""

from __future__ import annotations

import math

import torch

from .errors import EplbError, arg
from .strategies.base import torch_seed
from .trace import Trace


def generate(
    layers: int,
    experts: int,
    windows: int,
    seed: int,
    *,
    skew: float = 1.0,
    drift: float = 0.1,
    tokens: int = 8192 * 8,
    groups: int | None = None,
) -> Trace:
    """Return a deterministic synthetic trace ``[windows, layers, experts]``.

    Per layer, expert popularity is log-normal: log-weights are normal with
    standard deviation ``skew`` times a per-layer factor in [0.5, 1.5], so some
    layers have much hotter experts than others. With ``groups``, each group of
    ``experts // groups`` consecutive experts also shares a normal offset (sd
    ``skew / 2``), making whole groups hot, as the hierarchical policy assumes.
    Between windows the log-weights take a Gaussian random-walk step of sd
    ``drift``. Each window routes about ``tokens`` token-expert assignments per
    layer, scaled per window by a batch-size factor in [0.8, 1.2]; counts are
    Poisson draws around the expected loads, hence integers. Everything comes
    from one ``torch.Generator`` seeded with ``seed``: same arguments, same trace.
    """
    _check_args(layers, experts, windows, skew, drift, tokens, groups)
    gen = torch.Generator(device="cpu").manual_seed(torch_seed(seed))
    dtype = torch.float64

    layer_sigma = skew * (0.5 + torch.rand(layers, 1, generator=gen, dtype=dtype))
    logits = torch.randn(layers, experts, generator=gen, dtype=dtype) * layer_sigma
    if groups is not None:
        offsets = torch.randn(layers, groups, generator=gen, dtype=dtype) * (skew / 2)
        logits = logits + offsets.repeat_interleave(experts // groups, dim=1)
    batch = 0.8 + 0.4 * torch.rand(windows, generator=gen, dtype=dtype)

    load = torch.empty(windows, layers, experts, dtype=dtype)
    for w in range(windows):
        if w:
            logits = logits + drift * torch.randn(layers, experts, generator=gen, dtype=dtype)
        share = torch.softmax(logits, dim=-1)
        load[w] = torch.poisson(share * (tokens * batch[w]), generator=gen)

    meta: dict = {"model": "synthetic", "seed": int(seed)}
    if groups is not None:
        meta["groups"] = int(groups)
    return Trace(load, "<synthetic>", meta)


def _check_args(
    layers: int, experts: int, windows: int, skew: float, drift: float, tokens: int, groups: int | None
) -> None:
    """Reject shapes and parameters the generator cannot honour, with actionable messages."""
    for name, value in (("layers", layers), ("experts", experts), ("windows", windows)):
        if value < 1:
            raise EplbError(f"{arg(name, value)}: must be >= 1")
    if not math.isfinite(skew) or skew < 0:
        raise EplbError(f"{arg('skew', skew)}: must be >= 0 (0 gives equally popular experts)")
    if not math.isfinite(drift) or drift < 0:
        raise EplbError(f"{arg('drift', drift)}: must be >= 0 (0 keeps popularity fixed across windows)")
    if tokens < 0:
        raise EplbError(f"{arg('tokens', tokens)}: must be >= 0")
    if groups is not None and (groups < 1 or experts % groups):
        raise EplbError(f"{arg('groups', groups)}: must be >= 1 and divide {arg('experts', experts)}")
