"""The policy choice: plan shows the other policy's plan and what the choice trades; compare --policies."""

import itertools
import json
import math

import pytest
import torch
from helpers import SMALL, run

from eplb_cli.api import ClusterOptions, compare_strategies, plan_trace
from eplb_cli.formats import write_trace
from eplb_cli.formats.sglang import read_token_routing
from eplb_cli.span import Span
from eplb_cli.topology import resolve
from eplb_cli.trace import Trace
from eplb_cli.tradeoff import BALANCE_MARGIN, SPAN_MARGIN, PolicyFigures, Tradeoff, other_policy

FIGURES = ("gpu_imbalance", "gpu_imbalance_worst", "node_imbalance", "balancedness", "gap", "lower_bound")
SPANS = ("node_span", "node_span_worst", "gpu_span")


def test_other_policy_only_where_both_apply():
    assert other_policy(resolve(16, 4, 2, groups=4)) == "global"
    assert other_policy(resolve(16, 4, 2, groups=4, policy="global")) == "hierarchical"
    assert other_policy(resolve(16, 4, 1, groups=4)) is None          # one node: the policies coincide
    assert other_policy(resolve(16, 4, 2, groups=1)) is None          # no groups
    assert other_policy(resolve(12, 6, 3, groups=4, slots=18)) is None  # 4 groups do not divide over 3 nodes
    assert other_policy(resolve(16, 4, 2, slots=24, groups=4, policy="global", exclude_gpus=[1])) is None


def figures(policy: str, balancedness: float, nodes: float | None) -> PolicyFigures:
    span = None if nodes is None else Span(torch.tensor([nodes]), torch.tensor([4.0]), 4, 16)
    return PolicyFigures(policy, {"balancedness": balancedness, "gpu_imbalance": 1 / balancedness}, span, 1.0)


@pytest.mark.parametrize(("mine", "theirs", "span_mine", "span_theirs", "differs"), [
    (0.5, 1.0, None, None, True),                                     # balance alone differs
    (0.999, 1.0, None, None, False),                                  # within the balance margin, no span
    (0.999, 1.0, 2.0, 2.0 + SPAN_MARGIN / 2, False),                  # both within their margins
    (0.999, 1.0, 2.0, 2.0 + 2 * SPAN_MARGIN, True),                   # the span alone differs
    (1.0, 1.0 - 2 * BALANCE_MARGIN, 3.0, 3.0, True),                  # the chosen one balances better
])
def test_policies_differ_beyond_either_margin(mine, theirs, span_mine, span_theirs, differs):
    t = Tradeoff(figures("hierarchical", mine, span_mine), figures("global", theirs, span_theirs))
    assert t.differs is differs
    assert t.load_ratio == pytest.approx(theirs / mine)


# ------------------------------------------------------------------ plan


def test_the_alternative_is_what_the_other_policy_gives_on_its_own():
    cluster = dict(gpus=4, nodes=2, groups=4)
    auto = plan_trace(str(SMALL), ClusterOptions(**cluster), topk=2, topk_groups=2)
    alone = plan_trace(str(SMALL), ClusterOptions(**cluster, policy="global"), topk=2, topk_groups=2)
    assert auto.topology.policy == "hierarchical" and auto.tradeoff is not None
    other = auto.tradeoff.other
    assert other.policy == "global"
    summary = alone.result.score.summary()
    for key in FIGURES:
        assert other.summary[key] == summary[key], key
    assert other.span is not None and alone.span is not None
    assert torch.equal(other.span.nodes, alone.span.nodes) and torch.equal(other.span.gpus, alone.span.gpus)
    # and back: global's alternative is the hierarchical plan
    assert alone.tradeoff is not None and alone.tradeoff.other.summary == auto.result.score.summary()


def test_plan_json_alternative_matches_plan_with_that_policy(capsys):
    args = ["plan", SMALL, "--gpus", 4, "--nodes", 2, "--topk", 2, "--topk-groups", 2, "--json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    doc = json.loads(out)
    code, out, err = run(capsys, *args, "--policy", "global")
    assert code == 0, err
    alone = json.loads(out)
    alt = doc["policy_alternative"]
    assert alt["policy"] == "global" and alone["policy"] == "global"
    for key in (*FIGURES, *SPANS):
        assert alt[key] == alone[key], key
    assert alone["policy_alternative"]["policy"] == "hierarchical"
    assert alone["policy_alternative"]["gpu_imbalance"] == doc["gpu_imbalance"]
    assert doc["routing"] == {"topk": 2, "groups": 4, "topk_groups": 2, "source": "as given", "replicas": "uniform"}
    assert alt["differs"] is True and "--policy global" in alt["advice"]


def test_plan_prints_the_choice_line_when_the_policies_differ(capsys):
    code, out, err = run(capsys, "plan", SMALL, "--gpus", 4, "--nodes", 2, "--topk", 2)
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("policy choice")]
    assert len(lines) == 1
    assert "global reaches GPU imbalance" in lines[0] and "nodes" in lines[0] and "--policy global" in lines[0]
    assert any(line.startswith("token span") for line in out.splitlines())


def test_no_choice_line_when_the_policies_reach_the_same(tmp_path, capsys):
    # equal loads: both policies balance perfectly; no routing is known for this shape, so only balance counts
    path = tmp_path / "even.safetensors"
    write_trace(Trace(torch.full((1, 4, 16), 100.0), "even", {"groups": 4}), str(path))
    code, out, err = run(capsys, "plan", path, "--gpus", 4, "--nodes", 2)
    assert code == 0, err
    assert "policy choice" not in out and "token span" not in out
    code, out, _ = run(capsys, "plan", path, "--gpus", 4, "--nodes", 2, "--json")
    alt = json.loads(out)["policy_alternative"]
    assert alt["policy"] == "global" and alt["differs"] is False and alt["advice"] is None
    assert alt["busiest_gpu_load_ratio"] == pytest.approx(1.0)


def test_no_alternative_where_one_policy_applies(capsys):
    code, out, err = run(capsys, "plan", SMALL, "--gpus", 4, "--json")  # one node
    assert code == 0, err
    assert json.loads(out)["policy_alternative"] is None
    code, out, _ = run(capsys, "plan", SMALL, "--gpus", 4)
    assert "policy choice" not in out


@pytest.mark.parametrize(("args", "needle"), [
    (["--topk", 0], "--topk 0"),
    (["--topk", 17], "--topk 17"),
    (["--topk", 2, "--topk-groups", 9], "--topk-groups 9"),
])
def test_bad_routing_flags_are_one_line_errors(capsys, args, needle):
    code, out, err = run(capsys, "plan", SMALL, "--gpus", 4, "--nodes", 2, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("eplb: error: ") and needle in err


# ------------------------------------------------------------------ compare --policies


def test_compare_policies_side_by_side_match_each_policy_alone():
    cluster = ClusterOptions(gpus=4, nodes=2, groups=4)
    both = compare_strategies(str(SMALL), cluster, "deepseek,balanced", repeat=1, oos_pairs=0,
                              policies="hierarchical,global", topk=2, topk_groups=1)
    assert [(r.policy, r.strategy) for r in both.rows] == [
        ("hierarchical", "deepseek"), ("hierarchical", "balanced"), ("global", "deepseek"), ("global", "balanced")]
    for policy in ("hierarchical", "global"):
        alone = compare_strategies(str(SMALL), ClusterOptions(gpus=4, nodes=2, groups=4, policy=policy),
                                   "deepseek,balanced", repeat=1, oos_pairs=0, topk=2, topk_groups=1)
        mine = [r.as_dict() for r in both.rows if r.policy == policy]
        for a, b in zip(mine, [r.as_dict() for r in alone.rows]):
            for key in (*FIGURES, *SPANS, "moves"):
                assert a[key] == b[key], (policy, key)
    hier = [r.as_dict()["node_span"] for r in both.rows if r.policy == "hierarchical"]
    flat = [r.as_dict()["node_span"] for r in both.rows if r.policy == "global"]
    # a token's two experts come from one group, and the hierarchical policy keeps each group on one node
    assert hier == pytest.approx([1.0, 1.0]) and min(flat) > 1.2


def test_compare_table_has_policy_and_span_columns(capsys):
    code, out, err = run(capsys, "compare", SMALL, "--gpus", 4, "--nodes", 2, "--strategies", "deepseek",
                         "--repeat", 1, "--oos-pairs", 0, "--policies", "hierarchical,global", "--topk", 2)
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("policy "))
    assert "nodes/token" in header and "GPUs/token" in header
    assert sum(line.startswith(("hierarchical ", "global ")) for line in out.splitlines()) == 2
    code, out, err = run(capsys, "compare", SMALL, "--gpus", 4, "--nodes", 2, "--strategies", "deepseek",
                         "--repeat", 1, "--oos-pairs", 0, "--policies", "hierarchical,global", "--csv")
    assert code == 0, err
    assert out.splitlines()[0].startswith("policy,strategy,") and "node_span" not in out.splitlines()[0]


@pytest.mark.parametrize(("policies", "needle"), [("hierarchical,flat", "--policies flat"),
                                                  ("global,global", "--policies global,global"),
                                                  (",", "--policies")])
def test_compare_rejects_bad_policy_lists(capsys, policies, needle):
    code, _, err = run(capsys, "compare", SMALL, "--gpus", 4, "--nodes", 2, "--policies", policies)
    assert code == 2 and err.count("\n") == 1 and needle in err


def test_compare_policies_that_cannot_apply_say_so(capsys):
    code, _, err = run(capsys, "compare", SMALL, "--gpus", 6, "--nodes", 3, "--slots", 18, "--groups", 4,
                       "--policies", "hierarchical,global")
    assert code == 2 and "--policy hierarchical" in err and err.count("\n") == 1


# ------------------------------------------------------------------ recorded tokens (SGLang per_token dumps)


def recorded_folder(tmp_path, phy2log: torch.Tensor, ranks: int = 2, tokens: int = 12, seed: int = 0):
    """SGLang per_token dumps of random top-2 tokens served by ``phy2log`` (replicas picked at random)."""
    gen = torch.Generator().manual_seed(seed)
    layers, slots = phy2log.shape
    experts = int(phy2log.max()) + 1
    folder = tmp_path / "per_token"
    folder.mkdir()
    for rank in range(ranks):
        ids = torch.full((layers, tokens, 8), -1, dtype=torch.int32)
        for layer, n in itertools.product(range(layers), range(tokens)):
            for j, e in enumerate(torch.randperm(experts, generator=gen)[:2].tolist()):
                where = (phy2log[layer] == e).nonzero().flatten()
                ids[layer, n, j] = int(where[torch.randint(len(where), (1,), generator=gen)])
        count = torch.zeros(layers, slots, dtype=torch.int32)
        for layer in range(layers):
            valid = ids[layer][ids[layer] >= 0].long()
            count[layer].scatter_add_(0, valid, torch.ones_like(valid, dtype=torch.int32))
        record = {"forward_pass_id": 0, "rank": rank, "gatherer_key": "primary", "input_ids": list(range(tokens)),
                  "topk_ids_of_layer": ids, "misc_objects": [], "global_physical_count": count}
        torch.save({"records": [record], "last_physical_to_logical_map": phy2log},
                   folder / f"expert_distribution_recorder_1.0_{rank}.pt")
    return folder


def exact_span(phy2log: list[int], tokens: list[list[int]], per: int) -> float:
    """Mean over tokens of E[distinct targets] over every uniform choice of one replica per expert."""
    slots_of = {e: [p for p, x in enumerate(phy2log) if x == e] for e in set(phy2log)}
    total = 0.0
    for token in tokens:
        choices = [slots_of[e] for e in token]
        picks = list(itertools.product(*choices))
        total += sum(len({p // per for p in pick}) for pick in picks) / len(picks)
    return total / len(tokens)


def test_plan_on_recorded_tokens_reports_served_and_planned_spans(tmp_path):
    served = torch.tensor([[*range(16), 0, 1, 2, 3]] * 2)  # 20 slots, 4 GPUs x 5, 2 nodes
    folder = recorded_folder(tmp_path, served)
    cluster = ClusterOptions(gpus=4, nodes=2, groups=4)
    rep = plan_trace(str(folder), cluster, topk=2, warn=print)
    rec = rep.recorded
    assert rec is not None and rec.tokens == 24 and rec.served is not None
    routing = read_token_routing(str(folder))
    slots = routing.slots
    for layer in range(2):
        rows = [[s for s in row if s >= 0] for row in slots[layer].tolist()]
        assert float(rec.served.nodes[layer]) == pytest.approx(sum(len({s // 10 for s in r}) for r in rows) / 24)
        assert float(rec.served.gpus[layer]) == pytest.approx(sum(len({s // 5 for s in r}) for r in rows) / 24)
        tokens = [[e for e in row if e >= 0] for row in routing.experts()[layer].tolist()]
        mine = rep.result.placement.phy2log[layer].tolist()
        assert float(rec.planned.nodes[layer]) == pytest.approx(exact_span(mine, tokens, 10), abs=1e-12)
        assert float(rec.planned.gpus[layer]) == pytest.approx(exact_span(mine, tokens, 5), abs=1e-12)
    alone = plan_trace(str(folder), ClusterOptions(gpus=4, nodes=2, groups=4, policy="global"), topk=2, warn=print)
    assert rep.tradeoff is not None and rec.other is not None
    assert torch.equal(rec.other.nodes, alone.recorded.planned.nodes)
    assert rep.tradeoff.other.node_span == pytest.approx(alone.recorded.planned.node_span)
    assert not math.isnan(rep.tradeoff.span_delta)
