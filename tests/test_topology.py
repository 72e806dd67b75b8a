import re

import pytest

from eplb_cli.errors import EplbError
from eplb_cli.topology import Topology, parse_gpu_list, resolve


def test_default_slots_one_redundant_per_gpu_rounded():
    assert resolve(256, 32).slots == 288
    assert resolve(256, 64).slots == 320
    assert resolve(8, 3).slots == 12  # 8 + 3 = 11, rounded up to a multiple of 3


def test_auto_policy_follows_deepseek_rule():
    assert resolve(256, 32, 4, groups=8).policy == "hierarchical"
    assert resolve(256, 32, 4, groups=2).policy == "global"  # 2 groups cannot cover 4 nodes
    assert resolve(256, 32, 4).policy == "global"  # one group: nothing to keep together
    assert resolve(256, 32, 1, groups=8).policy == "global"  # one node: the policies coincide


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(experts=256, gpus=64, slots=288), "288 slots do not divide over 64 GPUs: use slots=320 or redundant=64"),
        (dict(experts=256, gpus=30, nodes=4), "gpus=30 do not divide over 4 nodes"),
        (dict(experts=256, gpus=32, slots=200), "fewer than the 256 experts"),
        (dict(experts=256, gpus=32, slots=288, redundant=32), "pass only one"),
        (dict(experts=256, gpus=32, redundant=40), "redundant=64"),
        (dict(experts=256, gpus=32, groups=7), "groups=7 does not divide 256"),
        (dict(experts=256, gpus=32, nodes=4, groups=2, policy="hierarchical"), "policy=global"),
        (dict(experts=256, gpus=32, policy="fancy"), "policy=fancy"),
        (dict(experts=256, gpus=0), "gpus=0"),
        (dict(experts=256, gpus=8, nodes=0), "nodes=0"),
        (dict(experts=16, gpus=4, exclude_gpus=[4]), "GPU ids run from 0 to 3"),
        (dict(experts=16, gpus=4, exclude_gpus=[0, 1, 2, 3]), "removes every GPU"),
        (dict(experts=16, gpus=4, slots=16, exclude_gpus=[0]), "fewer than the 16 experts"),
    ],
)
def test_impossible_topologies_say_what_to_change(kwargs, needle):
    with pytest.raises(EplbError) as err:
        resolve(**kwargs)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_round_trip_through_dict():
    t = resolve(256, 32, 4, groups=8, policy="global", exclude_gpus=[5, 3])
    assert t.excluded_gpus == (3, 5)
    assert Topology.from_dict(t.as_dict()) == t


def test_from_dict_rejects_inconsistent_metadata():
    bad = resolve(256, 32).as_dict() | {"slots": 290}
    with pytest.raises(EplbError, match="inconsistent"):
        Topology.from_dict(bad, source="x.json")
    with pytest.raises(EplbError, match="incomplete"):
        Topology.from_dict({"experts": 4}, source="x.json")


def test_parse_gpu_list():
    assert parse_gpu_list("3, 17,") == [3, 17]
    assert parse_gpu_list(None) == []
    with pytest.raises(EplbError, match="exclude_gpus"):
        parse_gpu_list("3;17")


def test_suggestions_name_values_a_user_can_set():
    """Node counts that divide the GPUs; never a GPU count made to fit, never another model group count."""
    with pytest.raises(EplbError) as err:
        resolve(256, 30, 4)
    assert str(err.value) == "gpus=30 do not divide over 4 nodes: use nodes=1, 2, 3, 5, 6, 10, 15 or 30"
    with pytest.raises(EplbError) as err:
        resolve(256, 32, 4, groups=2, policy="hierarchical")
    assert str(err.value).endswith("use policy=global, or nodes=1 or 2")
    assert "groups=" not in str(err.value)
@pytest.mark.parametrize("key, value, needle", [
    ("gpus", True, "metadata gpus is True; it must be a whole number"),
    ("gpus", 2.5, "metadata gpus is 2.5"),
    ("gpus", float("inf"), "metadata gpus is inf"),
    ("gpus", "32", "metadata gpus is '32'"),
    ("nodes", -1, "metadata nodes is -1; it must be >= 1"),
    ("slots", None, "metadata slots is None"),
    ("policy", 3, "metadata policy is 3"),
    ("excluded_gpus", "3", "metadata excluded_gpus is '3'"),
    ("excluded_gpus", [1.5], "metadata excluded_gpus is 1.5"),
])
def test_from_dict_is_strict_about_numbers(key: str, value: object, needle: str) -> None:
    """A damaged file is named, never truncated or coerced: no int(2.5), int("32"), int(True) or int(inf)."""
    good = resolve(256, 32).as_dict()
    with pytest.raises(EplbError, match=re.escape(f"x.json: {needle}")):
        Topology.from_dict(good | {key: value}, source="x.json")


def test_too_many_experts_is_not_blamed_on_slots() -> None:
    with pytest.raises(EplbError, match=r"^40,000 experts: more than the 32,768 slots eplb plans for"):
        resolve(40_000, 8)
    with pytest.raises(EplbError, match=r"^32,760 experts plus one redundant slot per GPU make 32,784 slots.*"
                                        r"pass redundant=0"):
        resolve(32_760, 16)
    assert resolve(32_760, 8, redundant=0).slots == 32_760
    with pytest.raises(EplbError, match=r"^40,000 slots: more than the 32768 eplb plans for; check slots"):
        resolve(16, 8, slots=40_000)
