"""Token span: the fitted routing model and the expected span, against brute-force enumeration."""

import itertools
import math

import pytest
import torch

from eplb_cli.errors import EplbError
from eplb_cli.placement import Placement
from eplb_cli.span import (
    Routing,
    expected_span,
    fit,
    recorded_span,
    routing_for,
    served_span,
)
from eplb_cli.topology import resolve
from eplb_cli.trace import Trace


def allowed_sets(experts: int, routing: Routing, k: int):
    """Every k-set of experts a token may take: within ``topk_groups`` groups when the routing limits them."""
    size = experts // routing.groups
    for s in itertools.combinations(range(experts), k):
        if not routing.limited or len({e // size for e in s}) <= routing.topk_groups:
            yield s


def set_probabilities(model, layer: int) -> dict:
    """P(S) for every allowed set, from the model's factors: prod beta over S times prod alpha outside S."""
    alpha, beta = model.alpha[layer].tolist(), model.beta[layer].tolist()
    k = int(model.k[layer])
    weights = {}
    for s in allowed_sets(len(beta), model.routing, k):
        w = 1.0
        for e in range(len(beta)):
            w *= beta[e] if e in s else alpha[e]
        weights[s] = w
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items() if w > 0}


def brute_span(placement: Placement, probs: dict, layer: int, level: str) -> float:
    """E[distinct nodes or GPUs]: every allowed set, every choice of one replica per expert (uniformly)."""
    topo = placement.topology
    per = topo.slots_per_gpu * (topo.gpus_per_node if level == "node" else 1)
    row = placement.phy2log[layer].tolist()
    slots_of = {e: [p for p, x in enumerate(row) if x == e] for e in set(row) if e >= 0}
    total = 0.0
    for s, p in probs.items():
        choices = [slots_of[e] for e in s]
        n = math.prod(len(c) for c in choices)
        for pick in itertools.product(*choices):
            total += p / n * len({slot // per for slot in pick})
    return total


def small_placement(rows: list[list[int]], experts: int, gpus: int, nodes: int) -> Placement:
    topo = resolve(experts, gpus, nodes, slots=len(rows[0]))
    return Placement(torch.tensor(rows), topo).validate()


# ------------------------------------------------------------------ the fit reproduces the loads


@pytest.mark.parametrize("routing", [Routing(3), Routing(3, groups=3, topk_groups=2), Routing(2, groups=2, topk_groups=1)])
def test_fitted_model_picks_each_expert_as_often_as_its_load_says(routing):
    gen = torch.Generator().manual_seed(7)
    load = 1 + torch.rand(3, 6, generator=gen, dtype=torch.float64)  # no share above 1 for top-3 of 6
    model = fit(load, routing)
    assert model.residual < 1e-9 and bool(model.valid.all())
    for layer in range(3):
        probs = set_probabilities(model, layer)
        marginal = [sum(p for s, p in probs.items() if e in s) for e in range(6)]
        want = (routing.topk * load[layer] / load[layer].sum()).tolist()
        assert marginal == pytest.approx(want, abs=1e-8)
        assert model.inclusion()[layer].tolist() == pytest.approx(want, abs=1e-8)


def test_an_expert_hotter_than_every_token_can_make_it_is_picked_by_every_token():
    load = torch.tensor([[10.0, 1, 1, 1, 1, 2]])  # share 2 * 10/16 > 1 for top-2
    model = fit(load, Routing(2))
    probs = set_probabilities(model, 0)
    assert all(0 in s for s in probs)
    rest = [sum(p for s, p in probs.items() if e in s) for e in range(1, 6)]
    assert rest == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 6, 2 / 6], abs=1e-9)


def test_experts_without_load_are_never_picked_and_few_loaded_experts_shrink_the_set():
    load = torch.tensor([[5.0, 0, 3, 0], [4.0, 0, 0, 0]])
    model = fit(load, Routing(3))
    assert model.k.tolist() == [2, 1]
    assert model.inclusion().flatten().tolist() == pytest.approx([1, 0, 1, 0, 1, 0, 0, 0])


# ------------------------------------------------------------------ the span, against enumeration

ROWS = [[0, 1, 2, 0, 3, 4, 5, 1], [5, 4, 3, 2, 1, 0, 2, 2]]  # 8 slots, 4 GPUs x 2, 2 nodes; replicas of 0, 1, 2


@pytest.mark.parametrize("routing", [Routing(3), Routing(3, groups=3, topk_groups=2), Routing(2, groups=2, topk_groups=1)])
def test_expected_span_equals_enumeration_over_sets_and_replicas(routing):
    gen = torch.Generator().manual_seed(3)
    load = 1 + torch.rand(2, 6, generator=gen, dtype=torch.float64)  # shares the routing can produce
    placement = small_placement(ROWS, 6, gpus=4, nodes=2)
    model = fit(load, routing)
    span = expected_span(placement, model)
    for layer in range(2):
        probs = set_probabilities(model, layer)
        assert float(span.nodes[layer]) == pytest.approx(brute_span(placement, probs, layer, "node"), abs=1e-10)
        assert float(span.gpus[layer]) == pytest.approx(brute_span(placement, probs, layer, "gpu"), abs=1e-10)


def test_uniform_load_without_groups_gives_the_hypergeometric_span():
    experts, k, nodes = 12, 3, 4
    placement = small_placement([list(range(experts))], experts, gpus=4, nodes=nodes)
    span = expected_span(placement, fit(torch.ones(1, experts), Routing(k)))
    per_node = experts // nodes
    want = nodes * (1 - math.comb(experts - per_node, k) / math.comb(experts, k))
    assert span.node_span == pytest.approx(want, abs=1e-12)
    assert span.gpu_span == pytest.approx(want, abs=1e-12)  # one GPU per node here


def test_group_limit_caps_the_span_when_each_node_holds_whole_groups():
    gen = torch.Generator().manual_seed(5)
    load = torch.rand(4, 16, generator=gen, dtype=torch.float64) + 0.05
    routing = Routing(4, groups=4, topk_groups=2)
    model = fit(load, routing)
    grouped = small_placement([list(range(16))] * 4, 16, gpus=4, nodes=4)  # node n holds group n
    mixed = small_placement([[e % 4 * 4 + e // 4 for e in range(16)]] * 4, 16, gpus=4, nodes=4)  # one of each group
    assert float(expected_span(grouped, model).nodes.max()) <= 2 + 1e-12
    assert expected_span(mixed, model).node_span > 3


def test_shares_the_routing_cannot_produce_are_reported_not_hidden():
    # top-2 from one group of two experts: both experts of a group always fire together, so unequal loads
    # within a group are out of reach; the fit stops and says how far off it is
    load = torch.tensor([[1.0, 3, 1, 1]])
    model = fit(load, Routing(2, groups=2, topk_groups=1))
    assert model.residual > 0.1 and not math.isnan(model.residual)
    probs = set_probabilities(model, 0)
    assert set(probs) <= {(0, 1), (2, 3)}


def test_layers_whose_certain_experts_need_too_many_groups_are_left_out():
    # top-2 from one of two groups, but the only two loaded experts sit in different groups
    load = torch.tensor([[10.0, 0, 0, 10], [1.0, 2, 3, 4]])
    model = fit(load, Routing(2, groups=2, topk_groups=1))
    assert model.valid.tolist() == [False, True] and model.left_out == 1
    span = expected_span(small_placement([[0, 1, 2, 3]] * 2, 4, gpus=2, nodes=2), model)
    assert math.isnan(float(span.nodes[0])) and span.node_span == pytest.approx(1.0)  # layer 1: one group, one node


def test_layers_without_load_have_no_span():
    load = torch.tensor([[1.0, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]])
    placement = small_placement(ROWS, 6, gpus=4, nodes=2)
    span = expected_span(placement, fit(load, Routing(2)))
    assert not math.isnan(float(span.nodes[0])) and math.isnan(float(span.nodes[1]))
    assert span.node_span == pytest.approx(float(span.nodes[0]))


# ------------------------------------------------------------------ recorded tokens


def test_recorded_span_equals_enumeration_over_replicas():
    placement = small_placement(ROWS, 6, gpus=4, nodes=2)
    tokens = torch.tensor([[[0, 1, -1], [2, 3, 5], [1, -1, -1]], [[2, 4, 0], [-1, -1, -1], [1, 5, 3]]])
    span = recorded_span(placement, tokens)
    for layer in range(2):
        for level, got in (("node", span.nodes), ("gpu", span.gpus)):
            sets = [tuple(e for e in t if e >= 0) for t in tokens[layer].tolist()]
            sets = [s for s in sets if s]
            want = sum(brute_span(placement, {s: 1.0}, layer, level) for s in sets) / len(sets)
            assert float(got[layer]) == pytest.approx(want, abs=1e-12)


def test_served_span_counts_the_nodes_and_gpus_each_token_reached():
    slots = torch.tensor([[[0, 3, -1], [0, 1, 7], [-1, -1, -1]]])  # 8 slots on 4 GPUs in 2 nodes
    span = served_span(slots, 8, gpus=4, nodes=2)
    assert span.nodes.tolist() == [1.5]  # token 0: node 0; token 1: nodes 0 and 1
    assert span.gpus.tolist() == [2.0]   # token 0: GPUs 0, 1; token 1: GPUs 0, 3
    assert span.tokens == 2


# ------------------------------------------------------------------ which routing a trace gets


def trace_of(layers: int, experts: int, **meta) -> Trace:
    return Trace(torch.ones(1, layers, experts), "t", meta)


def test_routing_of_known_models_by_shape_and_name():
    v3 = routing_for(trace_of(58, 256))
    assert (v3.topk, v3.groups, v3.topk_groups) == (8, 8, 4) and "DeepSeek-V3" in v3.source
    lite = routing_for(trace_of(26, 64))
    assert (lite.topk, lite.limited) == (6, False)
    named = routing_for(trace_of(3, 64, model="deepseek-ai/DeepSeek-V2-Lite-Chat"))
    assert named.topk == 6 and "name" in named.source
    assert routing_for(trace_of(3, 16)) is None


def test_given_values_win_over_the_known_model():
    r = routing_for(trace_of(58, 256), topk=6, topk_groups=2, groups=8)
    assert (r.topk, r.groups, r.topk_groups, r.source) == (6, 8, 2, "as given")
    assert routing_for(trace_of(58, 256), topk=6).limited is False  # another top-k: DeepSeek's group limit is not assumed


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"topk": 0}, "topk=0"),
    ({"topk": 17}, "topk=17"),
    ({"topk": 2, "topk_groups": 3}, "topk_groups=3"),
    ({"topk": 2, "topk_groups": 5, "groups": 4}, "topk_groups=5"),
    ({"topk": 9, "topk_groups": 2, "groups": 4}, "topk_groups=2"),
    ({"topk_groups": 2, "groups": 4}, "topk"),
])
def test_bad_routing_is_named_by_parameter(kwargs, needle):
    with pytest.raises(EplbError, match=needle):
        routing_for(trace_of(3, 16), **kwargs)
