"""Chains of batched stages (replicate, pack, refine) composed into a phy2log for a topology.

A :class:`Chain` names one stage of each kind, e.g. ``dhondt+kk+swap``;
:func:`compose` runs it under the topology's policy:

- global: replicate each layer's experts over all S slots, pack the replicas
  into the G GPUs (S/G each), refine;
- hierarchical: pack the expert groups into the N nodes (K/N groups each) and
  refine that, then, batched over layers x nodes, replicate each node's experts
  over its S/N slots and pack its replicas into its G/N GPUs.

Every row (a layer, or one node of a layer) runs as compiled code on the CPU
(:func:`.kernels.arrange`); this module chooses what to run and stitches the
levels together with a few NumPy ops.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import EplbError
from ..threads import by_rows
from ..topology import Topology
from . import pack as packers
from .arrays import as_floats, kernels, to_tensor
from .base import Strategy
from .pack import PACKERS
from .refine import RESPLIT_CAP, RESPLIT_PARTNERS
from .replicate import handed_over

REPLICATORS = ("dhondt",)
REFINERS = ("swap", "fixup")
DEFAULT_RESTARTS = 64
AUTO = -1
DEFAULT_FIXUP_ROUNDS = 4
COARSE_CAP = 6
RETRY_ABOVE = 1e-3
RETRY_ABOVE_DIVERSE = 1e-2
THINNED = 4
HANDOVERS = (2, 2)
"""Donors and receivers of the retried count vectors (:func:`.replicate.handed_over`); chains with fix-ups
(``thorough``) try :data:`HANDOVERS_FIXUP`."""
HANDOVERS_FIXUP = (3, 3)
HANDOVER_CAP = 3
"""Handed-over count vectors are retried only up to this many slots per GPU (at 4 they bought nothing measurable
on the real DeepSeek-V3 traces and cost half the plan time again)."""
FEW_BINS = 64
SWEEPS = 4
LATE_MOVES = 32

STAGE_HELP = "dhondt, lpt, rounds, snake, kk, restarts[:R], diverse, swap[:N], fixup[:N]"

PRESETS: dict[str, tuple[str, str]] = {
    "fast": ("dhondt+lpt", "DeepSeek's algorithm (D'Hondt replicas, LPT packing), compiled"),
    "balanced": (
        "dhondt+kk+lpt+swap",
        "D'Hondt replicas, the better of balanced Karmarkar-Karp and LPT per layer, best-improving exchanges",
    ),
    "thorough": (
        "dhondt+kk+lpt+swap+fixup",
        "balanced, then replica fix-ups, each followed by more exchanges; never worse than LPT",
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


def _mult(rows: int, m: int, chain: Chain, seed: int) -> np.ndarray:
    """The restarts' weight multipliers [rows, R, m] (R = 0 when the chain has no ``restarts``)."""
    if "restarts" not in chain.pack or chain.restarts <= 1:
        return np.empty((rows, 0, m), np.float64)
    return packers.multipliers(rows, chain.restarts, m, seed)


def swap_iters(chain: Chain, bins: int, cap: int) -> tuple[int, int]:
    """(sweeps, iterations) of the chain's swap stage for ``bins`` bins of ``cap`` items ((0, 0): no swaps).

    ``swap:N``: N best moves on the busiest bin, no sweeps. ``AUTO``: each
    move on the busiest bin lightens one bin, and about as many bins as there
    are sit near the maximum after packing, so up to :data:`FEW_BINS` bins
    it makes ``bins`` moves for bins of 3 to 6 items (group exchanges) and
    ``bins / 2`` (16 at least) for 7 or more: on the DeepSeek-V3 traces the
    gap to the bound stops shrinking about there (32 GPUs x 9: 16 moves;
    64 GPUs x 5: 64). Beyond that, a move costs a scan over more bins and
    more moves are needed, so :data:`SWEEPS` sweeps (half the bins paired at
    once, see :func:`.kernels.refine`) do most of the work in time linear in
    the slots, then :data:`LATE_MOVES` moves (128 GPUs x 9: 0.04% above the
    bound; 256 x 9: 0.03%; 4096 x 8: 0.05%, from 0.08% after packing).
    """
    if chain.swap != AUTO:
        return 0, chain.swap
    if bins > FEW_BINS:
        return SWEEPS, LATE_MOVES
    return 0, max(16, bins if 3 <= cap <= RESPLIT_CAP else bins // 2)


def _arrange(
    w: np.ndarray,
    counts: np.ndarray,
    slots: int,
    bins: int,
    chain: Chain,
    seed: int,
    floor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack and refine replicas with the given counts: (expert of each slot [B, slots], busiest bin load [B],
    whether the swaps settled [B]).

    ``w`` [B, n] float64 and ``counts`` [B, n] int64 (NumPy); ``floor`` [B]: a
    load each row need not get below (see :func:`.kernels.refine`). The whole
    row runs compiled, in :func:`.kernels.arrange`.
    """
    rows = w.shape[0]
    cap = slots // bins
    spread = "diverse" in chain.pack
    codes = np.array([PACKERS.index(name) for name in chain.pack], dtype=np.int64)
    low = np.full(rows, -np.inf) if floor is None else floor
    resplit = not spread and 3 <= cap <= RESPLIT_CAP
    mult = _mult(rows, slots, chain, seed)
    sweeps, iters = swap_iters(chain, bins, cap)
    arrange = kernels().arrange

    def block(at: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return arrange(w[at], counts[at], slots, bins, codes, mult[at], iters, chain.fixup, spread, low[at], resplit,
                       RESPLIT_PARTNERS, sweeps)

    return by_rows(rows, block)  # type: ignore[return-value]


def place(
    w: torch.Tensor, slots: int, bins: int, chain: Chain, *, seed: int = 0, rows_per_group: int = 1
) -> torch.Tensor:
    """Expert (column of ``w``) held by each of ``slots`` slots, per row; bin b owns slots b*cap..b*cap+cap-1.

    ``w`` [B, n]: replicate over the slots (D'Hondt), order the replicas by
    weight, pack them into ``bins`` bins, then refine (see :func:`_place`).
    """
    return to_tensor(_place(as_floats(w), slots, bins, chain, seed, rows_per_group), w.device)


def _place(w: np.ndarray, slots: int, bins: int, chain: Chain, seed: int, rows_per_group: int = 1) -> np.ndarray:
    """:func:`place` on a float64 NumPy ``w`` [B, n]; phy [B, slots] int64.

    For chains that refine, when bins hold 3 to :data:`COARSE_CAP` slots, rows
    whose busiest bin is more than :data:`RETRY_ABOVE` above their bound (mean
    bin load, or the largest replica; :data:`RETRY_ABOVE_DIVERSE` for
    ``diverse``, whose duplicate-free swaps rarely get that close) although
    their swaps settled (no move helps: the counts are what hold them up) are
    packed again with the heaviest expert given 1 .. :data:`THINNED` fewer replicas
    (:func:`.replicate.thinned`) and, up to :data:`HANDOVER_CAP` slots per bin, with
    one replica handed from an expert that barely needs it to a cold one
    (:func:`.replicate.handed_over`, :data:`HANDOVERS` pairs), and keep whichever
    count vector packs best, so a row never gets worse. When consecutive runs
    of ``rows_per_group`` rows are the nodes of one layer, only the run's busiest bin matters, so no row is
    refined or retried below the largest bound in its run.
    """
    rows, n = w.shape
    dhondt = kernels().dhondt_rows
    (counts,) = by_rows(rows, lambda at: (dhondt(w[at], slots),))
    if chain.swap and slots == 2 * bins and slots > n and rows and "diverse" not in chain.pack:
        return _paired(w, counts, slots, bins, chain, seed)
    if not chain.swap or not 3 <= slots // bins <= COARSE_CAP or slots == n or rows == 0:
        return _arrange(w, counts, slots, bins, chain, seed)[0]
    bound = np.maximum(w.sum(1) / bins, (w / counts).max(1))
    floor = None
    if rows_per_group > 1:
        floor = np.repeat(bound.reshape(-1, rows_per_group).max(1), rows_per_group)
    phy, busiest, settled = _arrange(w, counts, slots, bins, chain, seed, floor)
    need = bound if floor is None else np.maximum(bound, floor)
    held = np.take_along_axis(counts, w.argmax(1)[:, None], 1)[:, 0]
    above = RETRY_ABOVE_DIVERSE if "diverse" in chain.pack else RETRY_ABOVE
    retry = np.flatnonzero((busiest > need * (1 + above)) & (held > 1) & settled)
    if retry.size == 0:
        return phy
    thin = kernels().thinned_rows(w[retry], counts[retry], THINNED).reshape(retry.size, THINNED, n)
    pairs = (HANDOVERS_FIXUP if chain.fixup else HANDOVERS) if slots // bins <= HANDOVER_CAP else (0, 0)
    moved = handed_over(w[retry], counts[retry], *pairs)
    tries = np.concatenate([thin, moved], 1)
    k = tries.shape[1]
    alt_floor = None if floor is None else np.repeat(floor[retry], k)
    alt, alt_busiest, _ = _arrange(np.repeat(w[retry], k, 0), tries.reshape(-1, n), slots, bins, chain, seed,
                                   alt_floor)
    options = np.concatenate([busiest[retry, None], alt_busiest.reshape(-1, k)], 1)
    best = options.argmin(1)
    chosen = np.concatenate([phy[retry, None], alt.reshape(-1, k, slots)], 1)[np.arange(retry.size), best]
    phy[retry] = chosen
    return phy


def _paired(w: np.ndarray, counts: np.ndarray, slots: int, bins: int, chain: Chain, seed: int) -> np.ndarray:
    """Two slots per bin: the chain's packing, each row replaced by a pairing-aware one where that is lighter.

    The replica counts are searched for the best pairing (:mod:`.pairing`;
    the full search with fix-ups, the quick one without) and paired largest
    with smallest; a row keeps the chain's own placement unless the pairing's
    busiest bin is strictly lighter, so no row gets worse.
    """
    from .pairing import improve

    phy, busiest, _ = _arrange(w, counts, slots, bins, chain, seed)
    quick = not chain.fixup
    (out,) = by_rows(w.shape[0], lambda at: (improve(w[at], counts[at], phy[at], busiest[at], quick),))
    return out


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

    ``chain`` is a :class:`Chain`, chain text or a preset name. The compiled
    kernels run on the CPU: a load on another device is copied over (it is
    small: [L, E]) and the result copied back.
    """
    if isinstance(chain, str):
        chain = parse_chain(chain)
    _check(load, topo)
    phy = _compose(as_floats(load), topo, chain, seed)
    return to_tensor(phy, load.device)


def _compose(load: np.ndarray, topo: Topology, chain: Chain, seed: int) -> np.ndarray:
    """The global or hierarchical composition on a float64 [L, E] NumPy load, already checked."""
    layers, experts = load.shape
    if not topo.hierarchical or topo.nodes == 1:
        return _place(load, topo.slots, topo.gpus, chain, seed)
    nodes, groups = topo.nodes, topo.groups
    size = experts // groups
    group_load = np.ascontiguousarray(load.reshape(layers, groups, size).sum(2))
    ones = np.ones((layers, groups), np.int64)
    # Groups are distinct, so ``diverse`` has nothing to spread there: it packs them as ``kk``.
    whole = replace(chain, fixup=0, pack=tuple("kk" if name == "diverse" else name for name in chain.pack))
    group_at = _arrange(group_load, ones, groups, nodes, whole, seed)[0]
    expert_at = (group_at[:, :, None] * size + np.arange(size)).reshape(layers * nodes, experts // nodes)
    node_load = np.take_along_axis(load, expert_at.reshape(layers, experts), 1).reshape(layers * nodes, -1)
    local = _place(node_load, topo.slots // nodes, topo.gpus // nodes, chain, seed, nodes)
    return np.take_along_axis(expert_at, local, 1).reshape(layers, topo.slots)


class ChainStrategy(Strategy):
    """A :class:`Strategy` that runs a chain; ``name`` is the preset name or the chain text."""

    def __init__(self, chain: Chain | str, name: str | None = None, description: str = "") -> None:
        text = chain if isinstance(chain, str) else chain.text
        self.chain = parse_chain(text) if isinstance(chain, str) else chain
        self.name = name or text
        self.description = description or (PRESETS[text][1] if text in PRESETS else f"chain {self.chain.text}")

    def plan(self, load: torch.Tensor, topo: Topology, *, seed: int = 0) -> torch.Tensor:
        return compose(load, topo, self.chain, seed=seed)
