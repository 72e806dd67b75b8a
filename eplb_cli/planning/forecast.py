"""Forecasts of the next window's expert load from the windows recorded so far.

A placement is planned from a forecast and served on load that has not happened
yet. These forecasts are what ``eplb replay --forecast`` compares:

``last``
    the most recent window alone (what a server that plans from its latest
    statistics does);
``mean``
    the plain average of the history windows;
``ema:ALPHA``
    exponential moving average, ``s = ALPHA * x_t + (1 - ALPHA) * s``, started
    at the oldest history window; ALPHA near 1 is close to ``last``;
``oracle``
    the load of the windows about to be served: not a forecast a server can
    make, but the upper bound every real forecast is measured against.

Every forecast is a weighted average of windows with weights summing to 1, so
it has the scale of one window; the plan only depends on relative loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import EplbError, arg

FORECASTS = ("last", "mean", "ema:ALPHA", "oracle")
"""Forecast names as the CLI spells them."""


@dataclass(frozen=True)
class Forecast:
    """A parsed ``--forecast`` value: ``kind`` is last, mean, ema or oracle."""

    kind: str
    alpha: float = 1.0

    @property
    def name(self) -> str:
        return f"ema:{self.alpha:g}" if self.kind == "ema" else self.kind

    @property
    def needs_future(self) -> bool:
        """True for the oracle, which reads the windows being served."""
        return self.kind == "oracle"

    def weights(self, windows: int) -> torch.Tensor:
        """Weight of each of ``windows`` history windows, oldest first, float64 [H], summing to 1."""
        if self.kind == "last":
            w = torch.zeros(windows, dtype=torch.float64)
            w[-1] = 1.0
            return w
        if self.kind == "mean":
            return torch.full((windows,), 1.0 / windows, dtype=torch.float64)
        if self.kind == "ema":
            age = torch.arange(windows - 1, -1, -1, dtype=torch.float64)
            w = self.alpha * (1.0 - self.alpha) ** age
            w[0] = (1.0 - self.alpha) ** (windows - 1)
            return w
        raise EplbError(f"{arg('forecast', 'oracle')}: has no history weights; it reads the served windows")

    def predict(self, history: torch.Tensor, future: torch.Tensor | None = None) -> torch.Tensor:
        """Forecast load [L, E] from ``history`` [H, L, E] (oldest first).

        The oracle ignores the history and returns the mean of ``future``
        [F, L, E], the windows the plan will serve.
        """
        if self.needs_future:
            if future is None or future.shape[0] == 0:
                raise EplbError(f"{arg('forecast', 'oracle')}: needs the windows being served")
            return future.to(torch.float64).mean(dim=0)
        if history.shape[0] == 0:
            raise EplbError(f"{arg('forecast', self.name)}: needs at least one history window")
        w = self.weights(history.shape[0])
        return torch.tensordot(w, history.to(torch.float64), dims=1)


def parse_forecast(spec: str) -> Forecast:
    """Parse ``last``, ``mean``, ``ema:ALPHA`` (0 < ALPHA <= 1) or ``oracle``."""
    text = spec.strip().lower()
    if text in ("last", "mean", "oracle"):
        return Forecast(text)
    if text.startswith("ema"):
        _, sep, value = text.partition(":")
        try:
            alpha = float(value) if sep else float("nan")
        except ValueError:
            alpha = float("nan")
        if not 0.0 < alpha <= 1.0:
            raise EplbError(f"{arg('forecast', spec)}: ema needs a weight 0 < ALPHA <= 1, e.g. ema:0.3")
        return Forecast("ema", alpha)
    raise EplbError(f"{arg('forecast', spec)}: unknown; use one of {', '.join(FORECASTS)}")
