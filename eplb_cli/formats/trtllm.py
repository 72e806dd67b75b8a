"""TensorRT-LLM wide-EP: expert-statistic folders (traces) and the load balancer YAML (placements).

Statistics (``trtllm``, a folder): checked against NVIDIA/TensorRT-LLM
``tensorrt_llm/_torch/expert_statistic.py`` and
``examples/wide_ep/ep_load_balancer/utils.py``: rank 0 writes
``meta_info.json`` (``{"num_experts", "num_experts_per_token"}``), every rank
writes ``rank{r}.safetensors`` whose key ``"{iter}_{layer}"`` is the bincount
``[num_experts]`` of that rank's routed tokens. Ranks are summed
(``rank*_raw.safetensors`` files are skipped, as TensorRT-LLM does); each
iteration present is one window, in order, and the layers present, in sorted
order, are the trace's layers (their ids go to ``meta["layer_ids"]``, the keys
TensorRT-LLM's placement YAML uses).

Placement YAML (``trtllm``, ``.yaml``/``.yml``): the ``moe_load_balancer``
config (NVIDIA/TensorRT-LLM ``examples/wide_ep/ep_load_balancer/README.md`` and
``generate_eplb_config.py``): ``num_slots``, ``initial_global_assignments``
``{layer id: [expert per slot]}``, ``layer_updates_per_iter`` (0 = static);
every ``num_slots / ep_size`` successive slots are one rank. Keys are the
model's layer ids of the MoE layers (e.g. 3..60 for DeepSeek-V3, dense layers
absent): ``MoeLoadBalancerConfig.get_layer_initial_global_assignments`` in
``tensorrt_llm/llmapi/llm_args.py`` looks each MoE layer up by its model
layer index and raises KeyError for a missing one, and its ``setup`` requires
``num_slots % ep_size == 0``. The ids are kept in ``meta["layer_ids"]``.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import torch

from ..errors import EplbError, quote
from ..placement import Placement
from ..trace import Trace
from .arrays import as_trace
from .base import PlacementFormat, TraceFormat
from .launch import settings
from .limits import check_cells
from .maps import int_table, require_full
from .safetensors_file import check_extent, read_header, read_rows
from .source import Source
from .trees import check_tree

# ---------------------------------------------------------------- expert statistics (traces)


def read_statistics(src: Source) -> Trace:
    """TensorRT-LLM ``meta_info.json`` + ``rank{r}.safetensors`` (keys ``{iter}_{layer}``), ranks summed."""
    folder, source = Path(src.path), src.name
    meta_path = folder / "meta_info.json"
    if not meta_path.is_file():
        raise EplbError(f"{source}: no meta_info.json; give the EXPERT_STATISTIC_PATH folder TensorRT-LLM wrote")
    info = Source(str(meta_path), "meta_info.json").json()
    experts = info.get("num_experts") if isinstance(info, dict) else None
    if not isinstance(experts, int) or isinstance(experts, bool) or experts < 1:
        raise EplbError(f"{meta_path}: needs a positive integer 'num_experts'; re-run the statistic dump")
    files = sorted(p for p in folder.glob("rank*.safetensors") if not p.name.endswith("_raw.safetensors"))
    if not files:
        raise EplbError(f"{source}: no rank*.safetensors files; copy every rank's statistic file into the folder")
    cells: dict[tuple[int, int], torch.Tensor] = {}
    for path in files:
        name = str(path)
        with Source(name, "statistics file").open() as fh:
            infos, _ = read_header(fh, name)
            check_extent(infos, path.stat().st_size, name)
            for key, info in infos.items():
                match = re.fullmatch(r"(\d+)_(\d+)", key)
                if match is None:
                    raise EplbError(
                        f"{name}: key {quote(key)} is not '<iteration>_<layer>'; give TensorRT-LLM statistic files"
                    )
                if info.shape != (experts,):
                    raise EplbError(
                        f"{name}: {key} has shape {info.shape}, expected [{experts}] (num_experts); "
                        "check meta_info.json belongs to these files"
                    )
                cell = (int(match.group(1)), int(match.group(2)))
                value = read_rows(fh, info, 0, experts, name).to(torch.float64)
                cells[cell] = cells[cell] + value if cell in cells else value
    if not cells:
        raise EplbError(
            f"{source}: rank files hold no statistics; check EXPERT_STATISTIC_ITER_RANGE covered some iterations"
        )
    iters = sorted({i for i, _ in cells})
    layer_ids = sorted({l for _, l in cells})
    check_cells(len(iters) * len(layer_ids) * experts, source, len(cells) * experts)
    w_of = {it: k for k, it in enumerate(iters)}
    l_of = {ly: k for k, ly in enumerate(layer_ids)}
    load = torch.zeros(len(iters), len(layer_ids), experts, dtype=torch.float64)
    for (it, ly), value in cells.items():
        load[w_of[it], l_of[ly]] = value
    return as_trace(load, source, {"layer_ids": layer_ids})


# ---------------------------------------------------------------- load balancer YAML (placements)


def write_yaml(p: Placement, extra: dict, name: str) -> bytes:
    """TensorRT-LLM's static load balancer YAML, one flow-style list per layer as its generator writes."""
    require_full(p, name, "TensorRT-LLM")
    topo = p.topology
    lines = [
        f"# eplb placement: {topo.slots} slots on {topo.gpus} ranks; every {topo.slots_per_gpu} successive slots are one rank",
        f"num_slots: {topo.slots}",
        "initial_global_assignments:",
    ]
    for layer, row in zip(p.ids, p.phy2log.tolist()):
        lines.append(f"  {layer}: [{', '.join(map(str, row))}]")
    lines.append("layer_updates_per_iter: 0")
    return ("\n".join(lines) + "\n").encode()


def _yaml_key(key: object, source: str) -> int:
    """A layer id key of initial_global_assignments (an int, or digits as text)."""
    if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit())):
        raise EplbError(f"{source}: initial_global_assignments key {quote(key)} is not a layer id "
                        "(a non-negative integer)")
    value = int(key)
    if value < 0:
        raise EplbError(f"{source}: initial_global_assignments key {value} is not a layer id (a non-negative integer)")
    return value


class _DuplicateYamlKey(Exception):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


_LOADER: type | None = None


def _strict_loader() -> type:
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML was built with it

        class StrictLoader(base):  # type: ignore[valid-type,misc]  # chosen at run time
            def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
                seen: set = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        if key in seen:
                            raise _DuplicateYamlKey(key, key_node.start_mark.line + 1)
                        seen.add(key)
                    except TypeError:  # an unhashable key: the base class names it
                        break
                return super().construct_mapping(node, deep)

        _LOADER = StrictLoader
    return _LOADER


def read_yaml(src: Source) -> tuple[torch.Tensor, dict]:
    """TensorRT-LLM's YAML; layers in increasing id order, the ids kept in meta.

    Strict: a key given twice, an alias that expands far beyond the file
    (billion laughs), nesting deeper than Python's stack, and ``true``/``false``
    among the expert ids are errors that name the place.
    """
    source = src.name
    try:
        import yaml
    except ImportError:
        raise EplbError(f"{source}: reading TensorRT-LLM YAML needs PyYAML: pip install pyyaml") from None
    src.parse_cost("yaml")
    data = src.data()
    try:
        doc = yaml.load(data, Loader=_strict_loader())  # a SafeLoader subclass: no tags run code
    except _DuplicateYamlKey as exc:
        raise EplbError(f"{source}: line {exc.line}: key {quote(exc.key)} appears twice in one mapping; "
                        "keep one") from None
    except RecursionError:
        raise EplbError(f"{source}: YAML nested too deeply; a placement is a mapping of layer ids to lists") from None
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own limit, reached before Python's
            raise EplbError(f"{source}: YAML nested too deeply; a placement is a mapping of layer ids to lists") from None
        raise EplbError(f"{source}: not valid YAML ({' '.join(str(exc).split())[:120]})") from None
    check_tree(doc, source, len(data))
    if not isinstance(doc, dict):
        raise EplbError(f"{source}: expected a YAML mapping with num_slots and initial_global_assignments")
    assign = doc.get("initial_global_assignments")
    if assign is None:
        raise EplbError(
            f"{source}: no 'initial_global_assignments' (an online-only load balancer config has none); "
            "give a YAML with a static assignment"
        )
    if not isinstance(assign, dict) or not assign:
        raise EplbError(f"{source}: initial_global_assignments must map layer ids to lists of expert ids")
    keyed = sorted(((_yaml_key(k, source), v) for k, v in assign.items()), key=lambda kv: kv[0])
    ids = [k for k, _ in keyed]
    if len(set(ids)) != len(ids):
        twice = next(k for k, n in pairwise(ids) if k == n)
        raise EplbError(f"{source}: initial_global_assignments gives layer {twice} twice (as a number and as text?); "
                        "keep one")
    width = None
    for layer, row in keyed:
        if not isinstance(row, list):
            raise EplbError(f"{source}: layer {layer}: expected a list of expert ids, got {type(row).__name__}")
        width = len(row) if width is None else width
        if len(row) != width:
            raise EplbError(f"{source}: layer {layer} lists {len(row)} slots but layer {ids[0]} lists {width}")
    phy2log = int_table([row for _, row in keyed], source, "initial_global_assignments")
    slots = doc.get("num_slots", phy2log.shape[1])
    if isinstance(slots, bool) or not isinstance(slots, int) or slots != phy2log.shape[1]:
        raise EplbError(f"{source}: num_slots is {quote(slots)} but each layer lists {phy2log.shape[1]} experts")
    return phy2log, {"slots": slots, "layer_ids": ids}


def launch(p: Placement, path: str, gpus: int | None) -> dict:
    """TensorRT-LLM's settings for this YAML (``MoeLoadBalancerConfig`` and ``MoeConfig.load_balancer`` in
    ``tensorrt_llm/llmapi/llm_args.py``)."""
    flags = ("--ep_size {ep} --extra_llm_api_options OPTIONS.yaml, where OPTIONS.yaml sets moe_config: "
             "{{load_balancer: {file}}} (with a MoE backend that supports it, e.g. WIDEEP)")
    notes = [
        f"num_slots {p.topology.slots} must be divisible by the EP size (MoeLoadBalancerConfig.setup); "
        "every num_slots / EP size successive slots are one rank",
        f"keys are the MoE layers' model ids ({len(p.ids)} layers); a MoE layer without a key is a KeyError "
        "at start-up",
        "layer_updates_per_iter: 0 keeps this layout (static); more moves experts online",
    ]
    return settings("TensorRT-LLM", p, path, gpus, flags, notes)


def _is_statistics_folder(src: Source) -> bool:
    return src.is_folder and (Path(src.path) / "meta_info.json").is_file()


STATISTICS = TraceFormat("trtllm", "folder", read_statistics, claims=_is_statistics_folder,
                         hint="meta_info.json (TensorRT-LLM)")
YAML = PlacementFormat("trtllm", "yaml", read_yaml, write_yaml, extensions=(".yaml", ".yml"), aliases=("yaml", "yml"),
                      launch=launch)
