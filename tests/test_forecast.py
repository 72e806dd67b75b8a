"""Forecasts of the next window's load, checked on windows small enough to work out by hand."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.errors import EplbError
from eplb_cli.planning.forecast import Forecast, parse_forecast

# Three windows of one layer with two experts.
HISTORY = torch.tensor([[[1.0, 8.0]], [[3.0, 4.0]], [[5.0, 0.0]]], dtype=torch.float64)


def test_last_is_the_latest_window():
    assert parse_forecast("last").predict(HISTORY).tolist() == [[5.0, 0.0]]


def test_mean_averages_the_history():
    assert parse_forecast("mean").predict(HISTORY).tolist() == [[3.0, 4.0]]


def test_ema_by_hand():
    # s0 = x0 = (1, 8); s1 = .5*(3, 4) + .5*s0 = (2, 6); s2 = .5*(5, 0) + .5*s1 = (3.5, 3).
    assert parse_forecast("ema:0.5").predict(HISTORY).tolist() == [[3.5, 3.0]]
    # alpha = 1 forgets everything but the last window.
    assert parse_forecast("ema:1").predict(HISTORY).tolist() == [[5.0, 0.0]]


def test_oracle_reads_the_served_windows():
    future = torch.tensor([[[2.0, 2.0]], [[4.0, 0.0]]], dtype=torch.float64)
    fc = parse_forecast("oracle")
    assert fc.needs_future
    assert fc.predict(HISTORY, future).tolist() == [[3.0, 1.0]]
    with pytest.raises(EplbError, match="forecast=oracle"):
        fc.predict(HISTORY)


def test_one_window_of_history_is_that_window_for_every_forecast():
    one = HISTORY[:1]
    for spec in ("last", "mean", "ema:0.3"):
        assert parse_forecast(spec).predict(one).tolist() == [[1.0, 8.0]]


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["last", "mean", "ema"]), alpha=st.floats(0.01, 1.0), windows=st.integers(1, 30))
def test_weights_sum_to_one_and_are_non_negative(kind, alpha, windows):
    w = Forecast(kind, alpha).weights(windows)
    assert w.shape == (windows,)
    assert bool((w >= 0).all())
    assert abs(float(w.sum()) - 1.0) < 1e-9


@pytest.mark.parametrize("spec, needle", [
    ("median", "forecast=median"), ("ema", "ema:0.3"), ("ema:0", "0 < ALPHA <= 1"), ("ema:1.5", "ALPHA"),
    ("ema:x", "ALPHA"), ("ema:nan", "ALPHA"),
])
def test_bad_specs_name_the_flag(spec, needle):
    with pytest.raises(EplbError, match=needle.replace("(", r"\(")):
        parse_forecast(spec)


def test_names_round_trip():
    for spec in ("last", "mean", "oracle", "ema:0.25"):
        assert parse_forecast(parse_forecast(spec).name) == parse_forecast(spec)
