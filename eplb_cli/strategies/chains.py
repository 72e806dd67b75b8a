"""Chains of batched stages (replicate, pack, refine) composed into a phy2log for a topology.

A :class:`Chain` names one stage of each kind, e.g. ``dhondt+kk+swap``;
:func:`compose` runs it under the topology's policy:

- global: replicate each layer's experts over all S slots, pack the replicas
  into the G GPUs (S/G each), refine;
- hierarchical: pack the expert groups into the N nodes (K/N groups each) and
  refine that, then, batched over layers x nodes, replicate each node's experts
  over its S/N slots and pack its replicas into its G/N GPUs.

Everything is batched over a leading dimension (layers, or layers x nodes) and
runs on the device of the load tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import EplbError
from ..threads import one_thread
from ..topology import Topology
from . import pack as packers
from .base import Strategy
from .refine import RESPLIT_CAP, invert, swap
from .replicate import dhondt, expand, fixup, thinned
from .sorting import argsort_rows

REPLICATORS = ("dhondt",)
PACKERS = packers.PACKERS
REFINERS = ("swap", "fixup")
DEFAULT_RESTARTS = 64
AUTO = -1
DEFAULT_FIXUP_ROUNDS = 4
COARSE_CAP = 6
RETRY_ABOVE = 1e-3
RETRY_ABOVE_DIVERSE = 1e-2
THINNED = 4

STAGE_HELP = "dhondt, lpt, rounds, snake, kk, restarts[:R], diverse, swap[:N], fixup[:N]"

PRESETS: dict[str, tuple[str, str]] = {
    "fast": ("dhondt+rounds", "D'Hondt replicas, LPT by rounds (one replica per GPU per round): ~LPT quality, ~2 ms"),
    "balanced": (
        "dhondt+kk+lpt+swap",
        "D'Hondt replicas, the better of balanced Karmarkar-Karp and LPT per layer, best-improving swaps",
    ),
    "thorough": (
        "dhondt+kk+lpt+swap:64+fixup",
        "the better of KK and LPT per layer, swaps to convergence, replica fix-ups; never worse than LPT",
    ),
    "diverse": (
        "dhondt+diverse+swap",
        "like balanced, but never two replicas of one expert on one GPU when a swap can avoid it",
    ),
}


@dataclass(frozen=True)
class Chain:
    """One replicator, one or more packers and optional refiners.

    With several packers every layer keeps the packing whose busiest bin is
    lightest (the first listed on ties), so the chain is never worse than any
    of them on any layer. ``restarts`` is the run count of the ``restarts`` packer, ``swap`` the
    iteration bound of the swap refiner (0: no swaps; ``AUTO``: scaled to the
    shape, see :func:`swap_iters`), ``fixup``
    the number of replica fix-up rounds (0: none; each round is followed by
    swaps when ``swap`` is set).
    """

    pack: tuple[str, ...] = ("kk",)
    restarts: int = 0
    swap: int = 0
    fixup: int = 0
    replicate: str = "dhondt"

    @property
    def text(self) -> str:
        """Canonical chain text, which :func:`parse_chain` reads back to an equal Chain."""
        parts = [self.replicate]
        parts += [f"restarts:{self.restarts}" if name == "restarts" else name for name in self.pack]
        if self.swap:
            parts.append("swap" if self.swap == AUTO else f"swap:{self.swap}")
        if self.fixup:
            parts.append("fixup" if self.fixup == DEFAULT_FIXUP_ROUNDS else f"fixup:{self.fixup}")
        return "+".join(parts)

    def __str__(self) -> str:
        return self.text


def _bad(text: str, why: str) -> EplbError:
    presets = ", ".join(PRESETS)
    return EplbError(f"chain '{text}': {why}; stages are {STAGE_HELP} (e.g. dhondt+kk+swap), presets {presets}")


def parse_chain(text: str) -> Chain:
    """Read ``dhondt+kk+swap``, ``restarts:64+swap``, ``lpt`` or a preset name into a Chain.

    The replicator defaults to ``dhondt``; at least one packer is required
    (several: the best per layer; ``diverse`` stands alone); ``restarts``,
    ``swap`` and ``fixup`` take an optional positive count.
    Raises :class:`EplbError` with one line naming the valid stages.
    """
    key = text.strip().lower()
    if key in PRESETS:
        key = PRESETS[key][0]
    if not key:
        raise _bad(text, "empty")
    fields: dict[str, object] = {}
    packs: list[str] = []
    for token in key.split("+"):
        name, _, arg = token.strip().partition(":")
        name = name.strip()
        if name not in REPLICATORS + PACKERS + REFINERS:
            raise _bad(text, f"unknown stage '{name or token}'")
        if arg and name not in ("restarts", "swap", "fixup"):
            raise _bad(text, f"stage '{name}' takes no ':{arg}'")
        count = None
        if arg:
            try:
                count = int(arg)
            except ValueError:
                raise _bad(text, f"'{token.strip()}' needs a whole number after ':'") from None
            if count < 1:
                raise _bad(text, f"'{token.strip()}' needs a count of at least 1")
        if name in PACKERS:
            if name in packs:
                raise _bad(text, f"packer '{name}' given twice")
            packs.append(name)
            if name == "restarts":
                fields["restarts"] = count or DEFAULT_RESTARTS
            continue
        kind = "replicate" if name in REPLICATORS else name
        if kind in fields:
            raise _bad(text, f"more than one {kind} stage")
        fields[kind] = name if kind == "replicate" else count or (AUTO if name == "swap" else DEFAULT_FIXUP_ROUNDS)
    if not packs:
        raise _bad(text, "no packer stage (lpt, rounds, snake, kk, restarts or diverse)")
    if "diverse" in packs and len(packs) > 1:
        raise _bad(text, "'diverse' cannot be combined with other packers")
    return Chain(pack=tuple(packs), **fields)  # type: ignore[arg-type]


def _pack_one(
    name: str, w: torch.Tensor, bins: int, chain: Chain, seed: int, experts: torch.Tensor | None, presorted: bool
) -> torch.Tensor:
    """Slot of each item under one packer (``diverse`` needs ``experts``, else it is ``kk``)."""
    if name == "restarts":
        return packers.restarts(w, bins, chain.restarts, seed=seed, slots=True, presorted=presorted)
    if name == "diverse" and experts is not None:
        return packers.diverse(w, bins, experts, slots=True, presorted=presorted)
    return getattr(packers, "kk" if name == "diverse" else name)(w, bins, slots=True, presorted=presorted)


def _pack(
    w: torch.Tensor, bins: int, chain: Chain, seed: int, *, experts: torch.Tensor | None = None, presorted: bool = False
) -> torch.Tensor:
    """Slot of each item under the chain's packers: per row, the one with the lightest busiest bin."""
    tries = [_pack_one(name, w, bins, chain, seed, experts, presorted) for name in chain.pack]
    if len(tries) == 1:
        return tries[0]
    rows, m = w.shape
    stacked = torch.stack(tries, 1)
    # Each try's weights in slot order; bin b's items are slots b*cap .. b*cap+cap-1.
    in_slots = torch.empty(rows, len(tries), m, dtype=w.dtype, device=w.device)
    in_slots.scatter_(2, stacked, w.unsqueeze(1).expand(rows, len(tries), m))
    best = in_slots.view(rows, len(tries), bins, m // bins).sum(3).amax(2).argmin(1)
    return stacked.gather(1, best.view(rows, 1, 1).expand(rows, 1, m)).squeeze(1)


def swap_iters(chain: Chain, bins: int, cap: int) -> int:
    """Iteration bound of the chain's swap stage for ``bins`` bins of ``cap`` items (0: no swaps).

    ``AUTO``: each iteration lightens one or a few bins, and how many bins sit
    near the maximum after KK grows with bins / cap (fewer, coarser items per
    bin), so ``max(6, 2.5 * bins / cap)``: 6 for 32 GPUs x 9 slots and for one
    node's 8 GPUs x 9 (which converge there on the DeepSeek-V3 traces), 32 for
    64 x 5. Re-split iterations (3 to 6 items per bin) get at least 12: on one
    node's 8 GPUs x 5 the gap to the bound keeps shrinking up to about 12 and
    stays put after 16 (DeepSeek-V3 traces, 64 GPUs in 8 nodes).
    """
    if chain.swap != AUTO:
        return chain.swap
    return max(12 if 3 <= cap <= RESPLIT_CAP else 6, 5 * bins // max(2 * cap, 1))


def _arrange(
    w: torch.Tensor,
    counts: torch.Tensor,
    slots: int,
    bins: int,
    chain: Chain,
    seed: int,
    floor: torch.Tensor | None = None,
    scored: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pack and refine replicas with the given counts: (expert of each slot [B, slots], busiest bin load [B]).

    ``floor`` [B]: a load each row need not get below (see :func:`~.refine.swap`);
    the busiest loads are computed only when ``scored``.
    """
    cap = slots // bins
    per = w / counts
    order = argsort_rows(per, descending=True)
    expert = order.gather(1, expand(counts.gather(1, order), slots))
    weight = per.gather(1, expert)
    spread = expert if "diverse" in chain.pack else None
    at = _pack(weight, bins, chain, seed, experts=spread, presorted=True)
    iters = swap_iters(chain, bins, cap)
    if iters:
        at = swap(weight, at, bins, iters, experts=spread, slots=True, floor=floor)
    for _ in range(chain.fixup):
        bin_of = torch.div(at, cap, rounding_mode="floor")
        counts, expert, _moved = fixup(w, counts, expert, bin_of, bins, spread=spread is not None)
        weight = (w / counts).gather(1, expert)
        if iters:
            at = swap(weight, at, bins, iters, experts=expert if spread is not None else None, slots=True, floor=floor)
    busiest = torch.empty_like(weight).scatter_(1, at, weight).view(-1, bins, cap).sum(2).amax(1) if scored else None
    return torch.empty_like(expert).scatter_(1, at, expert), busiest


def place(
    w: torch.Tensor, slots: int, bins: int, chain: Chain, *, seed: int = 0, rows_per_group: int = 1
) -> torch.Tensor:
    """Expert (column of ``w``) held by each of ``slots`` slots, per row; bin b owns slots b*cap..b*cap+cap-1.

    ``w`` [B, n]: replicate over the slots (D'Hondt), order the replicas by
    weight (one sort of the experts), pack them into ``bins`` bins, then refine.

    For chains that refine, when bins hold 3 to :data:`COARSE_CAP` slots, rows
    whose busiest bin is more than :data:`RETRY_ABOVE` above their bound (mean
    bin load, or the largest replica; :data:`RETRY_ABOVE_DIVERSE` for
    ``diverse``, whose duplicate-free swaps rarely get that close: at 0.1%
    nearly every layer was retried, which made it 4x slower at 64 GPUs) are
    packed again with the heaviest
    expert given 1 .. :data:`THINNED` fewer replicas (:func:`thinned`), and
    keep whichever count vector packs best, so a row never gets worse. When
    consecutive runs of ``rows_per_group`` rows are the nodes of one layer,
    only the run's busiest bin matters, so no row is refined or retried below
    the largest bound in its run.
    """
    rows, n = w.shape
    counts = dhondt(w, slots)
    if not chain.swap or not 3 <= slots // bins <= COARSE_CAP or slots == n or rows == 0:
        return _arrange(w, counts, slots, bins, chain, seed, scored=False)[0]
    bound = torch.maximum(w.sum(1) / bins, (w / counts).amax(1))
    floor = bound.view(-1, rows_per_group).amax(1).repeat_interleave(rows_per_group) if rows_per_group > 1 else None
    phy, busiest = _arrange(w, counts, slots, bins, chain, seed, floor)
    assert busiest is not None  # scored=True
    need = bound if floor is None else torch.maximum(bound, floor)
    held = counts.gather(1, w.argmax(1, keepdim=True)).squeeze(1)
    above = RETRY_ABOVE_DIVERSE if "diverse" in chain.pack else RETRY_ABOVE
    retry = ((busiest > need * (1 + above)) & (held > 1)).nonzero().squeeze(1)
    if retry.numel() == 0:
        return phy
    tries = thinned(w[retry], counts[retry], THINNED).view(-1, n)
    alt_floor = None if floor is None else floor[retry].repeat_interleave(THINNED)
    alt, alt_busiest = _arrange(
        w[retry].repeat_interleave(THINNED, 0), tries, slots, bins, chain, seed, alt_floor
    )
    assert alt_busiest is not None
    options = torch.cat([busiest[retry].unsqueeze(1), alt_busiest.view(-1, THINNED)], 1)
    best = options.argmin(1)
    chosen = torch.cat([phy[retry].unsqueeze(1), alt.view(-1, THINNED, slots)], 1)[torch.arange(retry.numel()), best]
    return phy.index_copy(0, retry, chosen)


def _check(load: torch.Tensor, topo: Topology) -> None:
    if load.dim() != 2 or load.shape[1] != topo.experts:
        raise EplbError(f"load has shape {tuple(load.shape)}; the topology expects [layers, {topo.experts}]")
    if topo.slots % topo.gpus or topo.slots < topo.experts:
        raise EplbError(f"{topo.slots} slots cannot be spread evenly over {topo.gpus} GPUs with every expert placed")
    if topo.hierarchical and (topo.groups % topo.nodes or topo.experts % topo.groups or topo.gpus % topo.nodes):
        raise EplbError(
            f"hierarchical policy needs groups ({topo.groups}) divisible by nodes ({topo.nodes}) and experts by groups"
        )


def compose(load: torch.Tensor, topo: Topology, chain: Chain | str = "balanced", *, seed: int = 0) -> torch.Tensor:
    """phy2log [L, S] int64 for loads [L, E] under ``topo``'s policy, built by ``chain``.

    ``chain`` is a :class:`Chain`, chain text or a preset name. On CPU it runs
    single-threaded (see :func:`~eplb_cli.threads.one_thread`).
    """
    if isinstance(chain, str):
        chain = parse_chain(chain)
    _check(load, topo)
    with one_thread(load.device):
        return _compose(load.to(torch.float64), topo, chain, seed)


def _compose(load: torch.Tensor, topo: Topology, chain: Chain, seed: int) -> torch.Tensor:
    """The global or hierarchical composition; ``load`` is float64 and already checked."""
    layers, experts = load.shape
    if not topo.hierarchical or topo.nodes == 1:
        return place(load, topo.slots, topo.gpus, chain, seed=seed)
    nodes, groups = topo.nodes, topo.groups
    size = experts // groups
    group_load = load.view(layers, groups, size).sum(2)
    at = _pack(group_load, nodes, chain, seed)
    if chain.swap:
        at = swap(group_load, at, nodes, swap_iters(chain, nodes, groups // nodes), slots=True)
    group_at = invert(at)
    member = torch.arange(size, device=load.device)
    expert_at = (group_at.unsqueeze(2) * size + member).view(layers * nodes, experts // nodes)
    node_load = load.gather(1, expert_at.view(layers, experts)).view(layers * nodes, experts // nodes)
    local = place(node_load, topo.slots // nodes, topo.gpus // nodes, chain, seed=seed, rows_per_group=nodes)
    return expert_at.gather(1, local).view(layers, topo.slots)


class ChainStrategy(Strategy):
    """A :class:`Strategy` that runs a chain; ``name`` is the preset name or the chain text."""

    def __init__(self, chain: Chain | str, name: str | None = None, description: str = "") -> None:
        text = chain if isinstance(chain, str) else chain.text
        self.chain = parse_chain(text) if isinstance(chain, str) else chain
        self.name = name or text
        self.description = description or (PRESETS[text][1] if text in PRESETS else f"chain {self.chain.text}")

    def plan(self, load: torch.Tensor, topo: Topology, *, seed: int = 0) -> torch.Tensor:
        return compose(load, topo, self.chain, seed=seed)
