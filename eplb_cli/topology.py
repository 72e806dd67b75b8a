"""Topology: how many GPUs, nodes, slots and expert groups, validated up front.

Every impossible combination raises :class:`EplbError` with a message that names
the parameter and a value that would work, so a user never meets a shape error deep
inside a strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import EplbError, arg, count_text, quote

POLICIES = ("auto", "hierarchical", "global")
MAX_GPUS = 1 << 12
"""Most GPUs eplb plans for: larger counts are typos, and would only make a strategy run for hours."""
MAX_SLOTS = 1 << 15
"""Most physical slots in all, for the same reason."""


@dataclass(frozen=True)
class Topology:
    """Cluster shape for one MoE model.

    Slot ``p`` lives on GPU ``p // slots_per_gpu``; GPU ``g`` on node
    ``g // gpus_per_node``. ``excluded_gpus`` are failed or drained GPUs whose
    slots stay empty (-1 in phy2log).
    """

    experts: int
    slots: int
    gpus: int
    nodes: int = 1
    groups: int = 1
    policy: str = "global"
    excluded_gpus: tuple[int, ...] = field(default_factory=tuple)

    @property
    def slots_per_gpu(self) -> int:
        return self.slots // self.gpus

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def redundant(self) -> int:
        return self.slots - self.experts

    @property
    def hierarchical(self) -> bool:
        return self.policy == "hierarchical"

    def as_dict(self) -> dict[str, object]:
        """Plain-data form, as stored in placement file metadata."""
        return {
            "experts": self.experts,
            "slots": self.slots,
            "gpus": self.gpus,
            "nodes": self.nodes,
            "groups": self.groups,
            "policy": self.policy,
            "excluded_gpus": list(self.excluded_gpus),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "placement") -> Topology:
        """Rebuild and re-validate a topology read from a file.

        Strict: every count must be a whole number (not ``true``, ``4.5``,
        ``"4"`` or ``1e400``), so a damaged file is named, never truncated.
        """
        policy = d.get("policy", "global")
        if not isinstance(policy, str):
            raise EplbError(f"{source}: metadata policy is {quote(policy)}; it must be one of {', '.join(POLICIES)}")
        excluded = d.get("excluded_gpus", [])
        if not isinstance(excluded, list):
            raise EplbError(f"{source}: metadata excluded_gpus is {quote(excluded)}; it must be a list of GPU ids")
        counts = {key: meta_count(d, key, source, default) for key, default in
                  (("experts", None), ("gpus", None), ("nodes", 1), ("slots", None), ("groups", 1))}
        failed = [meta_count({"excluded_gpus": g}, "excluded_gpus", source, minimum=0) for g in excluded]
        try:
            return resolve(policy=policy, exclude_gpus=failed, **counts)
        except EplbError as exc:
            raise EplbError(f"{source}: topology metadata is inconsistent: {exc}") from None


def meta_count(d: dict, key: str, source: str, default: int | None = None, minimum: int = 1) -> int:
    """``d[key]`` as a whole number >= ``minimum`` (``default`` when absent), or an error naming the key."""
    if key not in d:
        if default is None:
            raise EplbError(f"{source}: topology metadata is incomplete: it lacks {key}; re-export the placement")
        return default
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise EplbError(f"{source}: metadata {key} is {quote(value)}; it must be a whole number")
    if value < minimum:
        raise EplbError(f"{source}: metadata {key} is {value}; it must be >= {minimum}")
    return value


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def resolve(
    experts: int,
    gpus: int,
    nodes: int = 1,
    slots: int | None = None,
    redundant: int | None = None,
    groups: int | None = None,
    policy: str = "auto",
    exclude_gpus: Sequence[int] = (),
) -> Topology:
    """Validate the user's flags against the model and return a Topology.

    Defaults: one redundant slot per GPU, rounded up so that slots divide over
    GPUs; one group; ``auto`` policy = DeepSeek's rule (hierarchical when there
    are several groups and the groups divide over the nodes), except that one
    node is always global (the two policies coincide there).
    """
    if experts < 1:
        raise EplbError("the trace has no experts; a load trace needs at least one expert per layer")
    if experts > MAX_SLOTS:
        raise EplbError(f"{count_text(experts)} experts: more than the {MAX_SLOTS:,} slots eplb plans for; "
                        "check the expert ids (or the trace's columns)")
    check_cluster(gpus, nodes, slots, redundant, groups, policy, exclude_gpus)
    if redundant is not None:
        slots = experts + redundant
        if slots % gpus:
            raise EplbError(
                f"{arg('redundant', redundant)} gives {slots} slots, which do not divide over {gpus} GPUs: "
                f"use {arg('redundant', _round_up(slots, gpus) - experts)}"
            )
    derived = slots is None
    if slots is None:
        slots = _round_up(experts + gpus, gpus)
    if slots > MAX_SLOTS:
        if derived and redundant is None:
            raise EplbError(f"{experts:,} experts plus one redundant slot per GPU make {slots:,} slots, more than the "
                            f"{MAX_SLOTS:,} eplb plans for; pass {arg('redundant', 0)} or fewer {arg('gpus')}")
        raise EplbError(f"{count_text(slots)} slots: more than the {MAX_SLOTS} eplb plans for; check {arg('slots')} / {arg('redundant')}")
    if slots < experts:
        raise EplbError(
            f"{arg('slots', slots)} is fewer than the {experts} experts: every expert needs a slot; "
            f"use {arg('slots', _round_up(experts, gpus))} or more"
        )
    if slots % gpus:
        up = _round_up(slots, gpus)
        raise EplbError(
            f"{slots} slots do not divide over {gpus} GPUs: use {arg('slots', up)} or {arg('redundant', up - experts)}"
        )
    if groups is None:
        groups = 1
    if groups < 1 or experts % groups:
        choices = ", ".join(str(d) for d in _divisors(experts) if d <= 64)
        raise EplbError(f"{arg('groups', groups)} does not divide {experts} experts: use one of {choices}")
    if policy == "auto":
        policy = "hierarchical" if groups > 1 and nodes > 1 and groups % nodes == 0 else "global"
    elif policy == "hierarchical" and groups % nodes:
        fits = [n for n in _divisors(gpus) if groups % n == 0]
        raise EplbError(
            f"{arg('policy', 'hierarchical')} needs the model's {groups} groups to divide over the {nodes} nodes: "
            f"use {arg('policy', 'global')}, or {_choices('nodes', fits)}"
        )
    excluded = tuple(sorted(set(int(g) for g in exclude_gpus)))
    if excluded:
        live = gpus - len(excluded)
        if live * (slots // gpus) < experts:
            raise EplbError(
                f"{arg('exclude_gpus')} leaves {live} GPUs with {live * (slots // gpus)} slots, "
                f"fewer than the {experts} experts: exclude fewer GPUs or add slots"
            )
        if policy == "hierarchical":
            raise EplbError(f"{arg('exclude_gpus')} needs {arg('policy', 'global')} (a node with a failed GPU cannot hold its groups evenly)")
    return Topology(
        experts=experts, slots=slots, gpus=gpus, nodes=nodes, groups=groups, policy=policy, excluded_gpus=excluded
    )


def check_cluster(gpus: int, nodes: int = 1, slots: int | None = None, redundant: int | None = None,
                  groups: int | None = None, policy: str = "auto", exclude_gpus: Sequence[int] = ()) -> None:
    """The checks of :func:`resolve` that need no model: run before a trace is read (and before torch loads).

    Suggestions name values a user can set: node counts that divide the GPUs,
    never a GPU count made to fit a node count nor another model group count.
    """
    if gpus < 1:
        raise EplbError(f"{arg('gpus', gpus)}: needs at least one GPU")
    if gpus > MAX_GPUS:
        raise EplbError(f"{arg('gpus', gpus)}: more than the {MAX_GPUS} GPUs eplb plans for; check the number")
    if nodes < 1:
        raise EplbError(f"{arg('nodes', nodes)}: needs at least one node")
    if nodes > MAX_GPUS:
        raise EplbError(f"{arg('nodes', nodes)}: more than the {MAX_GPUS} nodes eplb plans for; check the number")
    if gpus % nodes:
        raise EplbError(f"{arg('gpus', gpus)} do not divide over {nodes} nodes: use {_choices('nodes', _divisors(gpus))}")
    if slots is not None and redundant is not None:
        raise EplbError(f"{arg('slots')} and {arg('redundant')} both given: pass only one of them")
    if redundant is not None and redundant < 0:
        raise EplbError(f"{arg('redundant', redundant)}: must be >= 0")
    if redundant is not None and redundant > MAX_SLOTS:
        raise EplbError(f"{arg('redundant', redundant)}: more than the {MAX_SLOTS} slots eplb plans for; "
                        "check the number")
    if groups is not None and groups < 1:
        raise EplbError(f"{arg('groups', groups)}: must be >= 1 (the model's expert groups)")
    if policy not in POLICIES:
        raise EplbError(f"{arg('policy', policy)}: unknown; use one of {', '.join(POLICIES)}")
    bad = [g for g in exclude_gpus if not 0 <= g < gpus]
    if bad:
        raise EplbError(f"{arg('exclude_gpus', bad[0])}: GPU ids run from 0 to {gpus - 1}")
    if exclude_gpus and len(set(exclude_gpus)) >= gpus:
        raise EplbError(f"{arg('exclude_gpus')} removes every GPU: leave at least one")


def _choices(name: str, values: Sequence[int]) -> str:
    """``nodes=1, 2 or 4``: the values of parameter ``name`` that would work."""
    shown = [str(v) for v in values]
    return arg(name, shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}")


def parse_gpu_list(text: str | None) -> list[int]:
    """Parse a GPU list such as ``3,17`` (``exclude_gpus``) into ints, with a clear error."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise EplbError(f"{arg('exclude_gpus', text)}: expected GPU ids separated by commas, e.g. 3,17") from None
    return out
