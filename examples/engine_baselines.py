"""The EPLB algorithms that serving engines ship, loaded from an installed engine.

Used only by benchmarks and cross-check tests to time and score the engines'
own code next to eplb's; nothing here is copied from them. SGLang's algorithm
modules import only torch, so they are loaded by file path without importing
SGLang itself (`pip install --no-deps sglang` is enough).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

Planner = Callable[[torch.Tensor, int, int, int, int, bool], torch.Tensor]


def _load(package: str, relative: str, name: str) -> ModuleType | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        return None
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def engine_planners() -> dict[str, Planner]:
    """name -> f(weight [L, E], slots, groups, nodes, gpus, hierarchical) -> phy2log [L, S]."""
    out: dict[str, Planner] = {}
    ds = _load("sglang", "srt/eplb/eplb_algorithms/deepseek.py", "_sglang_eplb_deepseek")
    if ds is not None:
        def sglang_deepseek(w, slots, groups, nodes, gpus, hier):
            return ds.rebalance_experts(w, slots, groups, nodes, gpus, hier)[0]
        out["sglang:deepseek"] = sglang_deepseek
    vec = _load("sglang", "srt/eplb/eplb_algorithms/deepseek_vec.py", "_sglang_eplb_deepseek_vec")
    if vec is not None:
        def sglang_vec(w, slots, groups, nodes, gpus, hier):
            return vec.rebalance_experts(w.unsqueeze(0), slots, slots // gpus, groups, nodes, hier)[0]
        out["sglang:deepseek_vec"] = sglang_vec
    return out
