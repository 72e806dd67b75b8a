"""The EPLB algorithms that serving engines ship, loaded from an installed engine.

Used only by benchmarks and cross-check tests to time and score the engines'
own code next to eplb's; nothing here is copied from them. The engines'
algorithm modules import only torch and NumPy, so they are loaded by file path
without importing the engine itself: `pip install --no-deps sglang` and
`pip install --no-deps vllm` are enough.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

Planner = Callable[[torch.Tensor, int, int, int, int, bool], torch.Tensor]


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _load(package: str, relative: str, name: str) -> ModuleType | None:
    root = _package_dir(package)
    if root is None or not (root / relative).exists():
        return None
    path = root / relative
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
    vllm = _vllm_default_policy()
    if vllm is not None:
        def vllm_default(w, slots, groups, nodes, gpus, hier):
            # vLLM picks the policy itself: hierarchical exactly when groups % nodes == 0.
            return vllm.rebalance_experts(w, slots, groups if hier else 1, nodes if hier else 1, gpus)
        out["vllm:default"] = vllm_default
    return out


def _vllm_default_policy() -> type | None:
    """vLLM's DefaultEplbPolicy class, loaded from its policy folder under a private package name.

    The folder's __init__ imports vLLM's config, so only abstract.py and
    default.py are loaded, as submodules of a stand-in package (default.py
    imports abstract.py relatively).
    """
    root = _package_dir("vllm")
    folder = None if root is None else root / "distributed" / "eplb" / "policy"
    if folder is None or not (folder / "default.py").exists():
        return None
    name = "_vllm_eplb_policy"
    package = ModuleType(name)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
    for sub in ("abstract", "default"):
        spec = importlib.util.spec_from_file_location(f"{name}.{sub}", folder / f"{sub}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[f"{name}.default"].DefaultEplbPolicy
