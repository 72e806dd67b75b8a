"""Parsed documents checked before arrays are built: alias and pickle bombs, cycles, booleans, odd tensors."""

from __future__ import annotations

import pytest
import torch

from eplb_cli.errors import EplbError
from eplb_cli.formats.trees import check_tree


def shared(levels: int, width: int = 10) -> list:
    node: list = [0] * width
    for _ in range(levels - 1):
        node = [node] * width
    return node


def brute_count(node: object) -> int:
    """Values the document stands for, counted the slow way (every use of a shared list walked)."""
    if isinstance(node, (list, tuple)):
        return 1 + sum(brute_count(c) for c in node)
    if isinstance(node, dict):
        return 1 + sum(brute_count(k) + brute_count(v) for k, v in node.items())
    return node.numel() if isinstance(node, torch.Tensor) else 1


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_count_equals_walking_every_use(levels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"a": shared(levels), "b": [shared(levels), torch.zeros(3, 2)]}
    count = brute_count(doc)
    monkeypatch.setenv("EPLB_MAX_CELLS", str(count))
    check_tree(doc, "x", 1)
    monkeypatch.setenv("EPLB_MAX_CELLS", str(count - 1))
    with pytest.raises(EplbError, match=f"expand to at least {count:,} values"):
        check_tree(doc, "x", 1)


def test_a_billion_entries_are_counted_without_being_visited() -> None:
    with pytest.raises(EplbError, match=r"x: aliases, shared objects or stride-0 tensors expand to at least 1,111,111 values from 500 bytes"):
        check_tree({"rows": shared(9)}, "x", 500)


def test_default_limit_grows_with_the_input() -> None:
    doc = shared(5)  # 111,111 values
    check_tree(doc, "x", 1)  # under the 2**20 floor
    with pytest.raises(EplbError, match="64 per byte"):
        check_tree(shared(7), "x", 100)
    check_tree(shared(7), "x", 200_000)


def test_cycles_are_refused() -> None:
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(EplbError, match=r"x: rows\[0\]\[1\] contains itself"):
        check_tree({"rows": [loop]}, "x", 10)
    mapping: dict = {}
    mapping["self"] = mapping
    with pytest.raises(EplbError, match="contains itself"):
        check_tree(mapping, "x", 10)


def test_booleans_in_lists_are_named_but_allowed_as_values() -> None:
    check_tree({"flag": True, "rows": [[1, 2]]}, "x", 10)
    with pytest.raises(EplbError, match=r"x: rows\[1\]\[0\] is false, but loads and ids are real numbers"):
        check_tree({"flag": True, "rows": [[1, 2], [False, 3]]}, "x", 10)


def test_tensors_that_are_not_plain_numbers() -> None:
    check_tree({"t": torch.ones(2, 3)}, "x", 10)
    with pytest.raises(EplbError, match="sparse_coo"):
        check_tree({"t": torch.ones(2, 2).to_sparse()}, "x", 10)
    with pytest.raises(EplbError, match="meta device"):
        check_tree([torch.ones(2, device="meta")], "x", 10)
    with pytest.raises(EplbError, match="expand to at least 1,000,000,002"):
        check_tree({"t": torch.zeros(1).expand(10**9)}, "x", 100)


def test_deep_nesting_costs_no_recursion() -> None:
    deep: list = [1]
    for _ in range(100_000):
        deep = [deep]
    check_tree(deep, "x", 10**6)
