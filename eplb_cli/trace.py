"""Trace: expert load per window, layer and logical expert, float64 [W, L, E].

Readers and writers for every file format live in :mod:`eplb_cli.formats`; this
module holds the in-memory form, the window operations every command uses, and
the warnings a load matrix deserves before anyone trusts figures from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import EplbError, arg


@dataclass
class Trace:
    """Expert load ``load[w, l, e]`` (tokens routed to expert e of layer l in window w).

    ``meta`` carries optional facts from the file, e.g. ``groups`` or ``model``.
    ``source`` names the file it came from, for error messages.
    """

    load: torch.Tensor
    source: str = "<memory>"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.load = validate_load(self.load, self.source)

    @property
    def windows(self) -> int:
        return int(self.load.shape[0])

    @property
    def layers(self) -> int:
        return int(self.load.shape[1])

    @property
    def experts(self) -> int:
        return int(self.load.shape[2])

    @property
    def groups(self) -> int | None:
        g = self.meta.get("groups")
        return int(g) if g is not None else None

    def total(self) -> torch.Tensor:
        """Load summed over all windows, [L, E]."""
        return self.load.sum(dim=0)

    def select(self, spec: str | None) -> Trace:
        """Keep windows ``A:B`` (Python slice semantics, either end optional)."""
        if not spec:
            return self
        lo, hi = parse_window_range(spec, self.windows, self.source)
        return Trace(self.load[lo:hi], self.source, dict(self.meta))

    def rebin(self, every: int | None) -> Trace:
        """Sum every ``every`` consecutive windows into one (the last may be shorter)."""
        if not every or every == 1:
            return self
        if every < 1:
            raise EplbError(f"{arg('window', every)}: must be >= 1")
        return Trace(bin_sum(self.load, every), self.source, dict(self.meta))

    def zero_layers(self) -> torch.Tensor:
        """Bool [L]: layers with no load in any window (dense layers in SGLang dumps)."""
        return self.total().sum(dim=-1) == 0


def parse_window_range(spec: str, windows: int, source: str = "the trace") -> tuple[int, int]:
    """Parse ``A:B`` into a non-empty, in-range slice of ``windows`` windows."""
    parts = spec.split(":")
    if len(parts) != 2:
        raise EplbError(f"{arg('windows', spec)}: expected A:B, e.g. 0:10 or 5: or :-1")
    try:
        lo = int(parts[0]) if parts[0].strip() else None
        hi = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise EplbError(f"{arg('windows', spec)}: A and B must be integers, e.g. 0:10") from None
    lo_i, hi_i, _ = slice(lo, hi).indices(windows)
    if hi_i <= lo_i:
        raise EplbError(f"{arg('windows', spec)}: selects no window of {source}, which has {windows}")
    return lo_i, hi_i


def bin_sum(load: torch.Tensor, every: int) -> torch.Tensor:
    """Sum every ``every`` consecutive windows of ``load`` [W, ...] into one; the last bin may be shorter.

    Each bin is accumulated window by window in order (``index_add_``), as the
    readers do slice by slice, so both give bit-identical sums.
    """
    every = min(every, load.shape[0])
    if every == 1:
        return load
    bins = torch.arange(load.shape[0]) // every
    out = load.new_zeros((-(-load.shape[0] // every), *load.shape[1:]))
    return out.index_add_(0, bins, load)


MAX_LOAD = float(1 << 63)
"""Largest load eplb accepts: engines count tokens in 64-bit integers, and loads this far below float64's
range can be summed over any trace and squared without overflowing."""


def check_values(load: torch.Tensor, source: str) -> None:
    """Reject NaN, inf, negative and absurdly large loads, in one pass and without a temporary the size of ``load``."""
    if load.numel() == 0 or load.dtype == torch.bool:
        return
    low, high = torch.aminmax(load)
    if load.is_floating_point() and not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        raise EplbError(f"{source}: load contains NaN or inf; fix or drop those entries")
    if bool(low < 0):
        raise EplbError(f"{source}: load contains negative values; loads are token counts and must be >= 0")
    if float(high) >= MAX_LOAD:
        raise EplbError(f"{source}: load holds {float(high):.4g}, at or beyond 2**63 (about 9.2e18); loads are "
                        "token counts, and sums of values this large overflow: check the export or rescale it")


def validate_load(load: object, source: str) -> torch.Tensor:
    """Return ``load`` as float64 [W, L, E]; reject NaN, inf, negatives and empty shapes."""
    if not isinstance(load, torch.Tensor):
        try:
            load = torch.as_tensor(load, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise EplbError(f"{source}: load is not a numeric array ({exc}); give token counts per layer and expert") from None
    if load.is_complex() or load.dtype == torch.bool:
        raise EplbError(f"{source}: load must be real token counts, got {load.dtype}; convert it to numbers")
    if load.dim() == 2:
        load = load.unsqueeze(0)
    if load.dim() != 3:
        raise EplbError(
            f"{source}: load must be [layers, experts] or [windows, layers, experts], got shape {tuple(load.shape)}; "
            "reshape it or pick the right tensor"
        )
    if 0 in load.shape:
        raise EplbError(f"{source}: load is empty (shape {tuple(load.shape)}); need at least one window, layer and expert")
    load = load.to(dtype=torch.float64, device="cpu")
    check_values(load, source)
    return load.contiguous()


def load_warnings(load: torch.Tensor, source: str = "") -> list[str]:
    """What a user should know about a load matrix [L, E] before trusting figures from it.

    A matrix with no load at all is an error, named after ``source`` when given.
    """
    out = []
    zero_layers = load.sum(-1) == 0
    n_zero = int(zero_layers.sum())
    if n_zero == load.shape[0]:
        where = f"{source}: " if source else ""
        raise EplbError(f"{where}every layer has zero load; nothing to balance, check the trace")
    if n_zero:
        ids = zero_layers.nonzero().flatten().tolist()
        shown = ",".join(map(str, ids[:8])) + (",..." if len(ids) > 8 else "")
        out.append(f"{n_zero} layer(s) with no load (dense layers?) placed trivially and left out of the figures: {shown}")
    cold = (load[~zero_layers] == 0).sum()
    if int(cold):
        out.append(f"{int(cold)} expert(s) in loaded layers received no tokens; they still get one replica each")
    return out
