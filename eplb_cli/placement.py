"""Placement: which logical expert each physical slot holds, plus its file formats.

phy2log [L, S] is the source of truth; logcnt [L, E] and log2phy [L, E, R] are
derived from it (DeepSeek's names and meaning). Slots of excluded GPUs hold -1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .atomic import write_bytes_atomic, write_with
from .errors import EplbError
from .topology import Topology


@dataclass
class Placement:
    """A validated placement of replicas onto slots for one topology."""

    phy2log: torch.Tensor
    topology: Topology

    def __post_init__(self) -> None:
        self.phy2log = self.phy2log.to("cpu", torch.int64).contiguous()

    @property
    def layers(self) -> int:
        return int(self.phy2log.shape[0])

    @property
    def logcnt(self) -> torch.Tensor:
        """Replicas per expert, int64 [L, E]."""
        return replica_counts(self.phy2log, self.topology.experts)

    @property
    def log2phy(self) -> torch.Tensor:
        """Slots of each expert in increasing order, -1 padded, int64 [L, E, R]."""
        return slots_of_experts(self.phy2log, self.topology.experts)

    def gpu_of_slot(self) -> torch.Tensor:
        """GPU of each slot, int64 [S]."""
        return torch.arange(self.topology.slots) // self.topology.slots_per_gpu

    def validate(self, source: str = "placement") -> "Placement":
        """Check shape, id range and that every expert has a replica on a live GPU."""
        topo = self.topology
        p = self.phy2log
        if p.dim() != 2 or p.shape[1] != topo.slots:
            raise EplbError(f"{source}: phy2log must be [layers, {topo.slots}], got {tuple(p.shape)}")
        if p.shape[0] < 1:
            raise EplbError(f"{source}: placement has no layers")
        dead = torch.zeros(topo.slots, dtype=torch.bool)
        if topo.excluded_gpus:
            dead = torch.isin(self.gpu_of_slot(), torch.tensor(topo.excluded_gpus))
        if ((p < 0) & ~dead).any() or (p[:, dead] != -1).any():
            raise EplbError(f"{source}: -1 (empty slot) is only allowed on excluded GPUs' slots")
        if (p >= topo.experts).any():
            raise EplbError(
                f"{source}: expert id {int(p.max())} out of range for {topo.experts} experts; "
                "was the placement made for another model?"
            )
        cnt = self.logcnt
        if (cnt < 1).any():
            layer, expert = (cnt < 1).nonzero()[0].tolist()
            raise EplbError(f"{source}: expert {expert} of layer {layer} has no replica; every expert needs one")
        return self


def replica_counts(phy2log: torch.Tensor, experts: int) -> torch.Tensor:
    """Count replicas of each expert per layer, ignoring empty (-1) slots."""
    layers = phy2log.shape[0]
    live = phy2log >= 0
    cnt = torch.zeros(layers, experts + 1, dtype=torch.int64, device=phy2log.device)
    idx = torch.where(live, phy2log, torch.full_like(phy2log, experts))
    cnt.scatter_add_(1, idx, torch.ones_like(idx))
    return cnt[:, :experts]


def slots_of_experts(phy2log: torch.Tensor, experts: int) -> torch.Tensor:
    """Invert phy2log into log2phy [L, E, R] (R = most replicas of any expert), -1 padded."""
    layers, slots = phy2log.shape
    key = torch.where(phy2log >= 0, phy2log, torch.full_like(phy2log, experts))
    order = torch.sort(key, dim=1, stable=True)
    cnt = replica_counts(phy2log, experts)
    width = max(int(cnt.max()) if cnt.numel() else 1, 1)
    start = torch.cumsum(torch.cat([torch.zeros_like(cnt[:, :1]), cnt], dim=1), dim=1)
    sorted_expert = order.values
    valid = sorted_expert < experts
    pos = torch.arange(slots, device=phy2log.device).expand(layers, slots)
    rank = pos - start.gather(1, sorted_expert.clamp(max=experts))
    out = torch.full((layers, experts * width + 1), -1, dtype=torch.int64, device=phy2log.device)
    flat = torch.where(valid, sorted_expert * width + rank, torch.full_like(rank, experts * width))
    out.scatter_(1, flat, order.indices)
    return out[:, :-1].view(layers, experts, width)


# ---------------------------------------------------------------- file formats

def _meta(p: Placement, extra: dict | None = None) -> dict:
    meta = {"format": "eplb-placement", "version": 1, **p.topology.as_dict()}
    if extra:
        meta.update(extra)
    return meta


def _write_safetensors(p: Placement, path: str, force: bool, extra: dict | None) -> None:
    from safetensors.torch import save_file

    tensors = {"phy2log": p.phy2log, "log2phy": p.log2phy.contiguous(), "logcnt": p.logcnt.contiguous()}
    meta = {k: json.dumps(v) for k, v in _meta(p, extra).items()}
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), force)


def _write_sglang_json(p: Placement, path: str, force: bool, extra: dict | None) -> None:
    doc = {"physical_to_logical_map": p.phy2log.tolist(), **_meta(p, extra)}
    write_bytes_atomic(path, (json.dumps(doc) + "\n").encode(), force)


def _read_safetensors(path: Path) -> tuple[torch.Tensor, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if "phy2log" not in fh.keys():
                raise EplbError(f"{path}: no 'phy2log' tensor; is this a placement written by eplb?")
            phy2log = fh.get_tensor("phy2log")
            stored_cnt = fh.get_tensor("logcnt") if "logcnt" in fh.keys() else None
    except EplbError:
        raise
    except Exception as exc:  # safetensors raises several private error types
        raise EplbError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    try:
        parsed = {k: json.loads(v) for k, v in meta.items()}
    except json.JSONDecodeError:
        raise EplbError(f"{path}: placement metadata is not valid JSON") from None
    if stored_cnt is not None:
        parsed["_logcnt"] = stored_cnt
    return phy2log, parsed


def _read_json(path: Path) -> tuple[torch.Tensor, dict]:
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EplbError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "physical_to_logical_map" not in doc:
        raise EplbError(f"{path}: no 'physical_to_logical_map' key; expected SGLang's --init-expert-location form")
    try:
        phy2log = torch.tensor(doc.pop("physical_to_logical_map"), dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError):
        raise EplbError(f"{path}: physical_to_logical_map must be a [layers][slots] list of integers") from None
    return phy2log, doc


WRITERS: dict[str, Callable[[Placement, str, bool, dict | None], None]] = {
    "safetensors": _write_safetensors,
    "json": _write_sglang_json,
}
READERS: dict[str, Callable[[Path], tuple[torch.Tensor, dict]]] = {
    "safetensors": _read_safetensors,
    "json": _read_json,
}
EXTENSIONS = {".safetensors": "safetensors", ".json": "json"}


def placement_format(path: str, fmt: str | None = None) -> str:
    """Pick the placement format from ``fmt`` or the file extension."""
    if fmt:
        if fmt not in WRITERS:
            raise EplbError(f"--format {fmt}: unknown placement format; use one of {', '.join(WRITERS)}")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in EXTENSIONS:
        raise EplbError(
            f"{path}: unknown placement extension {ext or '(none)'}; use one of {', '.join(EXTENSIONS)} or --format"
        )
    return EXTENSIONS[ext]


def save_placement(p: Placement, path: str, *, force: bool = False, fmt: str | None = None, extra: dict | None = None) -> None:
    """Write ``p`` atomically; refuse to overwrite an existing file without ``force``."""
    WRITERS[placement_format(path, fmt)](p, path, force, extra)


def load_placement(path: str, *, fmt: str | None = None, defaults: dict | None = None) -> Placement:
    """Read and validate a placement file.

    ``defaults`` fills topology keys a foreign file lacks (e.g. ``gpus`` from
    the command line, ``experts`` from the trace); keys in the file win.
    """
    reader = READERS[placement_format(path, fmt)]
    p = Path(path)
    if not p.exists():
        raise EplbError(f"{path}: no such placement file")
    if p.is_dir():
        raise EplbError(f"{path}: is a folder, not a placement file")
    phy2log, meta = reader(p)
    if phy2log.dim() != 2 or phy2log.numel() == 0:
        raise EplbError(f"{path}: phy2log must be a non-empty [layers, slots] table, got shape {tuple(phy2log.shape)}")
    if phy2log.is_floating_point() or phy2log.dtype == torch.bool:
        raise EplbError(f"{path}: phy2log must hold integer expert ids, got {phy2log.dtype}")
    phy2log = phy2log.to(torch.int64)
    info = dict(defaults or {})
    info.update({k: v for k, v in meta.items() if not k.startswith("_")})
    info.setdefault("slots", int(phy2log.shape[1]))
    info.setdefault("experts", int(phy2log.max()) + 1)
    if "gpus" not in info:
        raise EplbError(f"{path}: the file does not say how many GPUs it was made for; pass --gpus")
    if int(info["slots"]) != phy2log.shape[1]:
        raise EplbError(f"{path}: metadata says {info['slots']} slots but phy2log has {phy2log.shape[1]}")
    topo = Topology.from_dict(info, source=path)
    placement = Placement(phy2log, topo).validate(source=path)
    stored = meta.get("_logcnt")
    if stored is not None and (stored.shape != placement.logcnt.shape or not torch.equal(stored.to(torch.int64), placement.logcnt)):
        raise EplbError(f"{path}: stored logcnt disagrees with phy2log; the file is corrupt")
    return placement
