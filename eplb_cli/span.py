"""Token span: how many nodes and GPUs a token's routed experts reach under a placement.

This is the traffic side of the policy choice. The hierarchical policy keeps an
expert group on one node, so with group-limited routing (DeepSeek-V3: a token's
8 experts come from at most 4 of 8 groups) a token's dispatch reaches at most 4
nodes; the global policy balances better and spreads a token over more nodes.

The model, exact (no sampling):

* **Routing.** Each token of a layer picks ``k`` distinct experts; with
  group-limited routing the experts form ``groups`` consecutive blocks and the
  ``k`` lie in at most ``topk_groups`` of them (:class:`Routing`).
* **Which sets.** A load trace holds per-expert counts only: expert ``e`` is
  picked by a share ``pi[e] = k * load[e] / sum(load)`` of the tokens. Of all
  distributions over the allowed k-sets that reproduce these shares, the model
  takes the one of maximum entropy, ``P(S) ~ prod_{e in S} r[e]`` (conditional
  Poisson sampling restricted to the allowed sets), with ``r`` fitted to the
  shares (:func:`fit`). It assumes nothing about which experts fire together
  beyond the routing rule. Shares above 1, which no top-k router produces, are
  capped at 1 (the expert is picked by every token) and the rest rescaled.
* **Replicas.** A token's expert with ``c`` replicas is served by one of them,
  uniformly and independently of its other experts: SGLang's ``dynamic``
  dispatch, and the even split that every balance figure of eplb assumes.

Then ``P(no expert of the token is served on node n) = Z(r * a_n) / Z(r)``
where ``a_n[e]`` is the share of ``e``'s replicas off node ``n`` and ``Z`` sums
``prod r`` over the allowed k-sets (a dynamic programme over experts and
groups, batched over layers and targets); the expected span is the sum over
nodes (or GPUs) of one minus that.

Per-token routing recorded by an engine (:mod:`eplb_cli.formats.sglang`,
``per_token`` dumps) needs no model for the sets: :func:`recorded_span` counts
them token by token.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import EplbError, arg
from .placement import Placement
from .threads import one_thread
from .trace import Trace

FIT_TOLERANCE = 1e-9
"""Largest gap allowed between a fitted and a measured share (experts per token)."""
FIT_ITERATIONS = 200
CHUNK = 1 << 22
"""Elements per batched step of the span computation: bounds its memory."""


@dataclass(frozen=True)
class Routing:
    """How a model routes a token: ``topk`` experts from at most ``topk_groups`` of ``groups`` expert groups.

    Groups are consecutive blocks of ``experts // groups`` experts (DeepSeek's
    ``n_group``); ``topk_groups`` None or equal to ``groups`` means no limit.
    ``source`` says where the figures come from, for the reader.
    """

    topk: int
    groups: int = 1
    topk_groups: int | None = None
    source: str = ""

    @property
    def limited(self) -> bool:
        return self.topk_groups is not None and self.topk_groups < self.groups

    def describe(self, experts: int) -> str:
        """``top-8 of 256 experts from at most 4 of 8 groups, DeepSeek-V3's (...)``: the rule and its source."""
        text = f"top-{self.topk} of {experts} experts"
        if self.limited:
            text += f" from at most {self.topk_groups} of {self.groups} groups"
        return text + (f", {self.source}" if self.source else "")

    def as_dict(self) -> dict:
        return {"topk": self.topk, "groups": self.groups, "topk_groups": self.topk_groups if self.limited else None,
                "source": self.source, "replicas": "uniform"}


@dataclass(frozen=True)
class KnownModel:
    """Routing of a published model, from its Hugging Face ``config.json``."""

    name: str
    layers: tuple[int, ...]
    experts: int
    topk: int
    groups: int = 1
    topk_groups: int | None = None


KNOWN_MODELS = (
    # deepseek-ai/DeepSeek-V3 (and R1): n_routed_experts 256, num_experts_per_tok 8, n_group 8, topk_group 4;
    # 61 layers of which the first 3 are dense (first_k_dense_replace 3), so traces hold 58 or 61 rows.
    KnownModel("DeepSeek-V3", (58, 61), 256, 8, 8, 4),
    # deepseek-ai/DeepSeek-V2: n_routed_experts 160, num_experts_per_tok 6, n_group 8, topk_group 3; 60 layers, 1 dense.
    KnownModel("DeepSeek-V2", (59, 60), 160, 6, 8, 3),
    # deepseek-ai/DeepSeek-V2-Lite: n_routed_experts 64, num_experts_per_tok 6, n_group 1 (no group limit); 27 layers, 1 dense.
    KnownModel("DeepSeek-V2-Lite", (26, 27), 64, 6),
    # Qwen/Qwen3-30B-A3B: num_experts 128, num_experts_per_tok 8, 48 layers.
    KnownModel("Qwen3-30B-A3B", (48,), 128, 8),
    # Qwen/Qwen3-235B-A22B: num_experts 128, num_experts_per_tok 8, 94 layers.
    KnownModel("Qwen3-235B-A22B", (94,), 128, 8),
    # mistralai/Mixtral-8x7B-v0.1: num_local_experts 8, num_experts_per_tok 2, 32 layers.
    KnownModel("Mixtral-8x7B", (32,), 8, 2),
    # mistralai/Mixtral-8x22B-v0.1: num_local_experts 8, num_experts_per_tok 2, 56 layers.
    KnownModel("Mixtral-8x22B", (56,), 8, 2),
)
_ALIASES = {"deepseekr1": "DeepSeek-V3"}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def known_model(trace: Trace) -> tuple[KnownModel, str] | None:
    """The published model ``trace`` comes from, and how that was found: its ``model`` metadata, else its shape."""
    name = trace.meta.get("model")
    if isinstance(name, str):
        key = _key(name)
        for alias, target in _ALIASES.items():
            if alias in key:
                key = _key(target)
        # longest name first, so that "deepseekv2lite" is not read as "deepseekv2"
        for m in sorted(KNOWN_MODELS, key=lambda m: -len(m.name)):
            if _key(m.name) in key and m.experts == trace.experts:
                return m, f"{m.name}'s, known from the trace's model name"
    for m in KNOWN_MODELS:
        if trace.layers in m.layers and trace.experts == m.experts:
            return m, f"{m.name}'s, known from the trace's shape {trace.layers} x {trace.experts}"
    return None


def _meta_int(trace: Trace, key: str) -> int | None:
    value = trace.meta.get(key)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def routing_for(trace: Trace, *, topk: int | None = None, topk_groups: int | None = None,
                groups: int | None = None) -> Routing | None:
    """The routing rule for ``trace``'s model, or None when nothing says how many experts a token takes.

    Given values win, then the trace's metadata (``topk``, ``topk_groups``),
    then a published model recognised by name or shape (:data:`KNOWN_MODELS`).
    ``groups`` is the placement's expert groups: it is the routing's too when
    ``topk_groups`` is given, or when no known model says otherwise.
    """
    experts = trace.experts
    model = known_model(trace)
    source = "as given" if topk is not None else None
    if topk is None:
        topk = _meta_int(trace, "topk")
        source = "from the trace's metadata" if topk is not None else None
    if topk is None and model is not None:
        topk, source = model[0].topk, model[1]
    if topk is None:
        if topk_groups is not None:
            raise EplbError(f"{arg('topk_groups', topk_groups)} needs {arg('topk')}: how many experts a token takes")
        return None
    if not 1 <= topk <= experts:
        raise EplbError(f"{arg('topk', topk)}: a token takes between 1 and the {experts} experts")
    if topk_groups is None:
        topk_groups = _meta_int(trace, "topk_groups")
    groups = groups if groups is not None else trace.groups
    if topk_groups is None and model is not None and model[0].topk_groups is not None and topk == model[0].topk \
            and groups in (None, model[0].groups):
        groups, topk_groups = model[0].groups, model[0].topk_groups
    groups = groups or 1
    if experts % groups:
        raise EplbError(f"{arg('groups', groups)} does not divide the {experts} experts")
    if topk_groups is not None:
        if groups == 1 and topk_groups != 1:
            raise EplbError(f"{arg('topk_groups', topk_groups)} needs expert groups: give {arg('groups')}")
        if not 1 <= topk_groups <= groups:
            raise EplbError(f"{arg('topk_groups', topk_groups)}: must be between 1 and the {groups} groups")
        if topk_groups * (experts // groups) < topk:
            raise EplbError(
                f"{arg('topk_groups', topk_groups)} groups of {experts // groups} experts cannot hold "
                f"{arg('topk', topk)} experts; raise {arg('topk_groups')}"
            )
    return Routing(topk, groups, topk_groups, source or "")


# ---------------------------------------------------------------- sums over allowed expert sets


def _set_sums(alpha: torch.Tensor, beta: torch.Tensor, routing: Routing) -> torch.Tensor:
    """``out[..., j]``: sum over allowed j-sets S of prod_{e in S} beta[e] * prod_{e not in S} alpha[e].

    ``alpha`` and ``beta`` are [..., E] (broadcastable); allowed means within
    ``routing.topk_groups`` groups. Coefficients up to ``routing.topk``.
    """
    k = routing.topk
    alpha, beta = torch.broadcast_tensors(alpha, beta)
    *lead, experts = beta.shape
    parts = routing.groups if routing.limited else 1
    a = alpha.reshape(*lead, parts, experts // parts)
    b = beta.reshape(*lead, parts, experts // parts)
    poly = torch.zeros(*lead, parts, k + 1, dtype=beta.dtype, device=beta.device)
    poly[..., 0] = 1.0
    for i in range(a.shape[-1]):  # one expert of every group at a time, batched over all the rest
        poly = a[..., i, None] * poly + b[..., i, None] * F.pad(poly[..., :-1], (1, 0))
    if not routing.limited:
        return poly[..., 0, :]
    used = routing.topk_groups or parts
    j = torch.arange(k + 1, device=beta.device)
    diff = j[:, None] - j[None, :]
    later = diff >= 1
    table = torch.zeros(*lead, k + 1, used + 1, dtype=beta.dtype, device=beta.device)
    table[..., 0, 0] = 1.0  # table[j, u]: j experts taken from u groups so far
    for g in range(parts):
        p = poly[..., g, :]
        take = p[..., diff.clamp(min=0)] * later  # take[j, j'] = p[j - j'], at least one expert of group g
        table = table * p[..., :1, None] + F.pad((take @ table)[..., :-1], (1, 0))
    return table.sum(-1)


def _at(sums: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``sums[l, ..., k[l]]`` for sums [L, ..., K+1]."""
    index = k.view(-1, *([1] * (sums.dim() - 1))).expand(*sums.shape[:-1], 1)
    return sums.gather(-1, index).squeeze(-1)


# ---------------------------------------------------------------- the fitted token model


@dataclass
class TokenModel:
    """The maximum-entropy choice of expert sets that reproduces a load matrix [L, E] under ``routing``.

    ``alpha``/``beta`` [L, E] are each expert's factor ``alpha + beta z``:
    (1, r) for an expert some tokens pick, (0, 1) for one every token picks,
    (1, 0) for one no token picks. ``k`` [L] is the set size per layer (fewer
    than ``topk`` when fewer experts carry load); ``valid`` [L] marks loaded
    layers whose shares the routing can produce. ``residual`` is the largest
    gap left between fitted and measured shares.
    """

    routing: Routing
    alpha: torch.Tensor
    beta: torch.Tensor
    k: torch.Tensor
    valid: torch.Tensor
    share: torch.Tensor
    residual: float
    iterations: int

    @property
    def layers(self) -> int:
        return int(self.beta.shape[0])

    @property
    def left_out(self) -> int:
        """Loaded layers the routing cannot serve at all (experts every token picks lie in too many groups)."""
        return int(((self.k > 0) & ~self.valid).sum())

    def normaliser(self) -> torch.Tensor:
        """Z [L]: the sum over allowed k-sets of prod r."""
        return _at(_set_sums(self.alpha, self.beta, self.routing), self.k)

    def inclusion(self) -> torch.Tensor:
        """P(expert e is among a token's experts) [L, E] under the fitted model."""
        return _inclusion(self.alpha, self.beta, self.k, self.valid, self.routing)

    def miss(self, served: torch.Tensor) -> torch.Tensor:
        """P(no expert of a token is served on target t) [L, T], for ``served`` [L, T, E]:
        the probability that a token's copy of expert e is served on t."""
        z = self.normaliser()
        out = torch.empty(served.shape[:2], dtype=torch.float64)
        step = max(1, CHUNK // max(1, served.shape[0] * served.shape[2] * (self.routing.topk + 1)))
        for lo in range(0, served.shape[1], step):
            beta = self.beta[:, None, :] * (1.0 - served[:, lo:lo + step])
            out[:, lo:lo + step] = _at(_set_sums(self.alpha[:, None, :], beta, self.routing), self.k) / z[:, None]
        return torch.where(self.valid[:, None], out, torch.full_like(out, math.nan))


def _inclusion(alpha: torch.Tensor, beta: torch.Tensor, k: torch.Tensor, valid: torch.Tensor,
               routing: Routing) -> torch.Tensor:
    """pi[e] = r[e] d log Z / d r[e] (1 for experts every token picks)."""
    with torch.enable_grad():
        b = beta.detach().clone().requires_grad_(True)
        z = _at(_set_sums(alpha, b, routing), k)
        logz = torch.where(valid, z, torch.ones_like(z)).log()
        (grad,) = torch.autograd.grad(logz.sum(), b)
    return torch.where(alpha > 0, grad * beta, (beta > 0).to(beta.dtype))


def expert_shares(load: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of tokens that pick each expert, [L, E], and which experts every token picks.

    ``share = k * load / sum(load)``, except that no share exceeds 1: an expert
    that would reach 1 is picked by every token and the others share the
    remaining picks in proportion to their load (repeated until none does).
    """
    load = load.to(torch.float64)
    certain = torch.zeros_like(load, dtype=torch.bool)
    kk = k.to(torch.float64)[:, None]
    share = torch.zeros_like(load)
    for _ in range(int(k.max()) + 1 if k.numel() else 1):
        free = torch.where(certain, torch.zeros_like(load), load)
        total = free.sum(-1, keepdim=True)
        rest = kk - certain.sum(-1, keepdim=True)
        share = torch.where(certain, torch.ones_like(load), rest * free / torch.where(total > 0, total, 1.0))
        over = (share >= 1.0 - 1e-12) & ~certain
        if not bool(over.any()):
            break
        certain |= over
    return share, certain


def fit(load: torch.Tensor, routing: Routing, *, tol: float = FIT_TOLERANCE,
        iterations: int = FIT_ITERATIONS) -> TokenModel:
    """Fit the token model to ``load`` [L, E]: each expert picked by the share of tokens its load says.

    Solves ``logit(model share) = logit(measured share)`` for ``log r`` by
    fixed-point iteration ``log r += logit(pi) - logit(m)`` sped up with
    Anderson acceleration (the last :data:`ANDERSON` steps), batched over
    layers: 5-15 steps to 1e-9 on DeepSeek-V3 and Qwen3 traces.
    """
    with one_thread():  # hundreds of small ops: one thread is fastest
        return _fit(load.to(torch.float64).cpu(), routing, tol, iterations)


def _fit(load: torch.Tensor, routing: Routing, tol: float, iterations: int) -> TokenModel:
    layers, experts = load.shape
    if experts % routing.groups:
        raise EplbError(f"{arg('groups', routing.groups)} does not divide the {experts} experts")
    loaded = load > 0
    k = loaded.sum(-1).clamp(max=routing.topk)
    share, certain = expert_shares(load, k)
    alpha = (~certain).to(torch.float64)
    free = loaded & ~certain
    odds = share / (1.0 - share).clamp(min=1e-300)
    fixed = torch.where(certain, torch.ones_like(share), torch.zeros_like(share))
    valid = (k > 0) & (_at(_set_sums(alpha, torch.where(free, odds, fixed), routing), k) > 0)
    goal = _log(odds, free)
    theta = goal.clone()
    steps: list[torch.Tensor] = []
    moved: list[torch.Tensor] = []
    best = torch.full((layers,), math.inf, dtype=torch.float64)
    kept = theta.clone()
    since = torch.zeros(layers, dtype=torch.int64)
    done = 0
    for done in range(iterations + 1):
        model = _inclusion(alpha, torch.where(free, theta.exp(), fixed), k, valid, routing)
        gap = torch.where(free & valid[:, None], (model - share).abs(), torch.zeros_like(share)).amax(-1)
        gap = torch.where(torch.isnan(gap), torch.full_like(gap, math.inf), gap)
        since = torch.where(gap < 0.99 * best, torch.zeros_like(since), since + 1)
        kept = torch.where((gap < best)[:, None], theta, kept)  # each layer keeps its best point
        best = torch.minimum(best, gap)
        if done == iterations or not bool(((gap > tol) & (since < STALL)).any()):
            break  # converged, or no longer improving: those shares are out of the routing's reach
        step = goal - _log(model / (1.0 - model).clamp(min=1e-300), free)
        steps.append(step)
        moved.append(theta + step)
        del steps[:-ANDERSON - 1], moved[:-ANDERSON - 1]
        theta = _anderson(steps, moved)
        top = torch.where(free, theta, torch.full_like(theta, -math.inf)).amax(-1, keepdim=True)
        theta = torch.where(free, (theta - top).clamp(min=-LOG_RANGE), theta)
    beta = torch.where(free, kept.exp(), fixed)
    residual = float(best[valid].max()) if bool(valid.any()) else 0.0
    return TokenModel(routing, alpha, beta, k, valid, share, residual, done + 1)


ANDERSON = 5
"""Past steps the fit's Anderson acceleration mixes."""
STALL = 25
"""Steps without a 1% smaller gap after which a layer's shares count as out of the routing's reach."""
LOG_RANGE = 80.0
"""Widest spread of log r kept in a layer: products of k factors stay far from float64's range."""


def _log(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, x.clamp(min=1e-300).log(), torch.zeros_like(x))


def _anderson(steps: list[torch.Tensor], moved: list[torch.Tensor]) -> torch.Tensor:
    """Next iterate from the last fixed-point steps f_i and images g_i = x_i + f_i, per layer:
    g - dG @ c with c the least-squares fit of the step differences dF to f (plain g on the first step)."""
    g = moved[-1]
    if len(steps) < 2:
        return g
    d_step = torch.stack([b - a for a, b in itertools.pairwise(steps)], -1)  # [L, E, m]
    d_moved = torch.stack([b - a for a, b in itertools.pairwise(moved)], -1)
    gram = d_step.transpose(1, 2) @ d_step
    scale = gram.diagonal(dim1=1, dim2=2).sum(-1).clamp(min=1e-300)[:, None, None]
    gram = gram + 1e-10 * scale * torch.eye(gram.shape[-1], dtype=gram.dtype)
    coef = torch.linalg.solve(gram, d_step.transpose(1, 2) @ steps[-1][..., None])
    out = g - (d_moved @ coef).squeeze(-1)
    return torch.where(torch.isfinite(out), out, g)


# ---------------------------------------------------------------- spans of a placement


def served_share(placement: Placement, level: str) -> torch.Tensor:
    """[L, T, E]: the share of expert e's replicas on target t (a node or a GPU), i.e. the
    probability that a token's copy of e is served there when replicas are picked uniformly."""
    topo = placement.topology
    per = topo.slots_per_gpu * (topo.gpus_per_node if level == "node" else 1)
    targets = topo.nodes if level == "node" else topo.gpus
    layers, experts = placement.layers, topo.experts
    phy2log = placement.phy2log
    where = (torch.arange(topo.slots) // per).expand(layers, -1)
    live = phy2log >= 0
    flat = torch.where(live, where * experts + phy2log, torch.zeros_like(phy2log))
    hist = torch.zeros(layers, targets * experts, dtype=torch.float64)
    hist.scatter_add_(1, flat, live.to(torch.float64))
    hist = hist.view(layers, targets, experts)
    count = hist.sum(1, keepdim=True)
    return hist / torch.where(count > 0, count, 1.0)


@dataclass
class Span:
    """Expected distinct nodes and GPUs per token, per layer ([L], NaN where not defined) and their means."""

    nodes: torch.Tensor
    gpus: torch.Tensor
    of_nodes: int
    of_gpus: int
    tokens: int | None = None

    @property
    def node_span(self) -> float:
        return _mean(self.nodes)

    @property
    def gpu_span(self) -> float:
        return _mean(self.gpus)

    def summary(self) -> dict:
        return {"node_span": self.node_span, "node_span_worst": _max(self.nodes), "gpu_span": self.gpu_span}


def _mean(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if bool(ok.any()) else math.nan


def _max(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return float(x[ok].max()) if bool(ok.any()) else math.nan


def expected_span(placement: Placement, model: TokenModel) -> Span:
    """Expected distinct nodes and GPUs holding a token's routed experts under ``placement`` (module docstring)."""
    if model.layers != placement.layers:
        raise EplbError(f"the token model has {model.layers} layers but the placement {placement.layers}")
    out = {}
    with one_thread():
        for level in ("node", "gpu"):
            out[level] = (1.0 - model.miss(served_share(placement, level))).sum(-1)
    topo = placement.topology
    return Span(out["node"], out["gpu"], topo.nodes, topo.gpus - len(topo.excluded_gpus))


def recorded_span(placement: Placement, experts: torch.Tensor) -> Span:
    """Expected distinct nodes and GPUs per recorded token if ``placement`` had served it.

    ``experts`` [L, N, K] holds each token's logical experts per layer (-1:
    none). Exact per token under uniform replica choice:
    ``P(target t hit) = 1 - prod_{e in token} (1 - share of e's replicas on t)``.
    Layers where no token has an expert are NaN.
    """
    layers, tokens, width = experts.shape
    if layers != placement.layers:
        raise EplbError(f"the recorded routing has {layers} layers but the placement {placement.layers}")
    routed = (experts >= 0).any(-1)
    count = routed.sum(-1)
    out = {}
    with one_thread():
        for level in ("node", "gpu"):
            share = served_share(placement, level)  # [L, T, E]
            targets = share.shape[1]
            miss_of = torch.cat([1.0 - share, torch.ones(layers, targets, 1, dtype=torch.float64)], -1)
            total = torch.zeros(layers, dtype=torch.float64)
            step = max(1, CHUNK // max(1, layers * targets * width))
            for lo in range(0, tokens, step):
                chunk = experts[:, lo:lo + step].to(torch.int64)
                chunk = torch.where(chunk >= 0, chunk, torch.full_like(chunk, share.shape[2]))
                n = chunk.shape[1]
                picked = miss_of.gather(2, chunk.reshape(layers, 1, -1).expand(-1, targets, -1))
                miss = picked.view(layers, targets, n, width).prod(-1)  # [L, T, n]
                total += ((1.0 - miss).sum(1) * routed[:, lo:lo + step]).sum(-1)
            out[level] = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
    topo = placement.topology
    return Span(out["node"], out["gpu"], topo.nodes, topo.gpus - len(topo.excluded_gpus), int(routed.any(0).sum()))


def served_span(slots: torch.Tensor, slots_total: int, gpus: int, nodes: int) -> Span:
    """Distinct nodes and GPUs each recorded token reached: ``slots`` [L, N, K] are the physical slots the
    engine sent it to (-1: none), on ``gpus`` GPUs in ``nodes`` nodes holding ``slots_total`` slots."""
    layers, tokens, _ = slots.shape
    per_gpu = slots_total // gpus
    routed = (slots >= 0).any(-1)
    count = routed.sum(-1)
    out = {}
    for level, per, targets in (("node", per_gpu * (gpus // nodes), nodes), ("gpu", per_gpu, gpus)):
        total = torch.zeros(layers, dtype=torch.float64)
        step = max(1, CHUNK // max(1, layers * (targets + 1)))
        for lo in range(0, tokens, step):
            chunk = slots[:, lo:lo + step].to(torch.int64)
            where = torch.where(chunk >= 0, chunk // per, torch.full_like(chunk, targets))
            hit = torch.zeros(layers, chunk.shape[1], targets + 1, dtype=torch.bool)
            hit.scatter_(2, where, True)
            total += hit[..., :targets].sum(-1).sum(-1).to(torch.float64)
        out[level] = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
    return Span(out["node"], out["gpu"], nodes, gpus, int(routed.any(0).sum()))


@dataclass
class RecordedSpans:
    """Token spans over the tokens an engine recorded: as served (measured) and under new plans."""

    tokens: int
    served: Span | None
    planned: Span
    other: Span | None = None

    def summary(self) -> dict:
        served = self.served
        return {"tokens": self.tokens,
                "served_node_span": served.node_span if served else None,
                "served_gpu_span": served.gpu_span if served else None,
                "node_span": self.planned.node_span, "gpu_span": self.planned.gpu_span}
