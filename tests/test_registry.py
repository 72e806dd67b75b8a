"""Presets and chains by name, and the promise behind the default: never worse than DeepSeek."""

from pathlib import Path

import pytest
import torch
from helpers import ROOT

from eplb_cli.errors import EplbError
from eplb_cli.formats import read_trace
from eplb_cli.metrics import gpu_loads
from eplb_cli.placement import Placement
from eplb_cli.strategies import describe_strategies, get_strategy
from eplb_cli.topology import resolve

SHAPES = [(32, 4, 288), (64, 8, 320), (144, 18, 288)]


def test_every_listed_preset_resolves():
    names = [n for n, _ in describe_strategies() if "+" not in n]
    assert {"deepseek", "fast", "balanced", "thorough"} <= set(names)
    for n in names:
        assert get_strategy(n).name == n


def test_chains_and_bad_names():
    assert get_strategy("kk+swap").name == "kk+swap"
    assert get_strategy("restarts:8+swap").name == "restarts:8+swap"
    for bad in ("nope", "kk+nope", ""):
        with pytest.raises(EplbError, match="strategy"):
            get_strategy(bad)


def _max_per_layer(load: torch.Tensor, topo, name: str) -> torch.Tensor:
    phy = get_strategy(name).plan(load, topo, seed=0)
    return gpu_loads(Placement(phy, topo).validate(), load).max(-1).values


def _cases(shared: Path | None):
    yield "synthetic", read_trace(ROOT / "traces" / "deepseek-v3-synthetic.safetensors").total()
    if shared is not None:
        for path in sorted((shared / "sglang-deepseek-v3").glob("*.json")):
            yield path.stem, read_trace(path).total()


@pytest.fixture
def shared_or_none():
    p = ROOT.parent / "shared" / "traces"
    return p if p.is_dir() else None


def test_balanced_never_worse_than_deepseek_on_any_layer(shared_or_none):
    """Issue 3's target shapes, both policies, shipped and real DeepSeek-V3 traces."""
    for name, load in _cases(shared_or_none):
        for gpus, nodes, slots in SHAPES:
            for policy in ("hierarchical", "global"):
                if policy == "hierarchical" and 8 % nodes:
                    continue
                topo = resolve(256, gpus, nodes, slots=slots, groups=8, policy=policy)
                ours = _max_per_layer(load, topo, "balanced")
                base = _max_per_layer(load, topo, "deepseek")
                worse = (ours > base * (1 + 1e-9)).nonzero().flatten().tolist()
                assert not worse, f"{name} {gpus} GPUs {policy}: layers {worse}"


def test_catalog_names_agree_with_the_registry() -> None:
    """The torch-free catalog (checked before torch loads) lists exactly the registry's formats."""
    from eplb_cli.formats import catalog, registry

    assert [(e.name, e.extensions, e.writable) for e in catalog.TRACES] == [
        (f.name, f.extensions, f.write is not None) for f in registry.TRACES]
    assert [(e.name, e.extensions, e.aliases) for e in catalog.PLACEMENTS] == [
        (f.name, f.extensions, f.aliases) for f in registry.PLACEMENTS]
