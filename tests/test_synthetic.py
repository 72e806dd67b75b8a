"""The synthetic trace generator: determinism, shapes, realistic traits, shipped traces."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb_cli.errors import EplbError
from eplb_cli.formats import read_trace
from eplb_cli.synthetic import generate


@settings(max_examples=25, deadline=None)
@given(
    layers=st.integers(1, 6),
    experts=st.integers(1, 40),
    windows=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_shape_integers_and_determinism(layers: int, experts: int, windows: int, seed: int) -> None:
    t = generate(layers, experts, windows, seed, tokens=1000)
    assert t.load.shape == (windows, layers, experts)
    assert t.load.dtype == torch.float64
    assert bool((t.load >= 0).all()) and torch.equal(t.load, t.load.round())
    assert torch.equal(generate(layers, experts, windows, seed, tokens=1000).load, t.load)
    assert t.meta == {"model": "synthetic", "seed": seed}


def test_seeds_differ_and_global_rng_is_untouched() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate(4, 16, 3, seed=0)
    assert torch.equal(torch.rand(1), before)
    assert not torch.equal(a.load, generate(4, 16, 3, seed=1).load)


def test_groups_in_meta_and_validated() -> None:
    t = generate(2, 16, 1, seed=0, groups=4)
    assert t.groups == 4
    with pytest.raises(EplbError, match="groups="):
        generate(2, 16, 1, seed=0, groups=5)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(layers=0), "layers="),
        (dict(experts=0), "experts="),
        (dict(windows=0), "windows="),
        (dict(skew=-1.0), "skew="),
        (dict(skew=float("nan")), "skew="),
        (dict(drift=-0.1), "drift="),
        (dict(tokens=-1), "tokens="),
    ],
)
def test_bad_arguments(kwargs: dict, flag: str) -> None:
    args = dict(layers=2, experts=8, windows=2, seed=0) | kwargs
    with pytest.raises(EplbError, match=flag):
        generate(**args)


def test_token_volume_and_skew() -> None:
    t = generate(8, 64, 4, seed=3, tokens=100_000)
    per_layer = t.load.sum(-1)
    assert bool(((per_layer > 70_000) & (per_layer < 130_000)).all())
    hot = t.load.max(-1).values / t.load.mean(-1)
    assert float(hot.mean()) > 3
    assert float(hot.min()) < float(hot.max()) * 0.8
    flat = generate(8, 64, 4, seed=3, tokens=100_000, skew=0.0, drift=0.0)
    assert float((flat.load.max(-1).values / flat.load.mean(-1)).max()) < 1.2


def test_drift_moves_popularity_between_windows() -> None:
    def change(drift: float) -> float:
        share = generate(4, 64, 10, seed=5, drift=drift, tokens=10**7).load
        share = share / share.sum(-1, keepdim=True)
        return float((share[-1] - share[0]).abs().sum(-1).mean())

    assert change(0.0) < 0.01
    assert change(0.3) > 5 * change(0.0)


@pytest.mark.parametrize(
    "name, spec",
    [
        ("deepseek-v3-synthetic.safetensors", dict(layers=58, experts=256, windows=24, groups=8, seed=0)),
        ("small.safetensors", dict(layers=4, experts=16, windows=6, groups=4, seed=1)),
    ],
)
def test_shipped_traces_match_the_generator(name: str, spec: dict) -> None:
    t = read_trace(str(ROOT / "traces" / name))
    assert torch.equal(t.load, generate(**spec).load)
    assert t.meta == {"model": "synthetic", "seed": spec["seed"], "groups": spec["groups"]}


@pytest.mark.parametrize("seed", [-1, -(2**63), 2**64 - 1, 2**64, 10**30, -(10**30)])
def test_any_integer_is_a_seed(seed: int) -> None:
    """Seeds torch cannot take are reduced modulo 2**64 (deterministically), never an overflow error."""
    t = generate(2, 4, 2, seed, tokens=100)
    assert torch.equal(generate(2, 4, 2, seed, tokens=100).load, t.load)
    if seed >= 2**64:
        assert torch.equal(generate(2, 4, 2, seed % 2**64, tokens=100).load, t.load)
