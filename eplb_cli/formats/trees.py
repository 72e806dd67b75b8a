"""Parsed documents (YAML, pickles, JSON with true/false) checked before any array is built from them.

A YAML alias or a pickle memo entry makes one object appear in many places:
ten levels of ten aliases are a billion list entries in a few hundred bytes,
which ``torch.as_tensor`` would happily try to allocate. :func:`check_tree`
counts what a document expands to, each shared object once per use but
visited only once (so counting a bomb is as cheap as the file), and refuses:

- more values than :func:`~eplb_cli.formats.limits.cells_limit` allows for
  the input's size;
- an object that contains itself (possible in YAML and pickles);
- ``true``/``false`` inside a list, where every format eplb reads has numbers
  (``torch.as_tensor`` would silently read them as 1 and 0);
- tensors eplb cannot read as numbers: sparse, quantized, on the meta device,
  or expanded from a small storage (stride 0) to more values than allowed.
"""

from __future__ import annotations

from typing import Any

from ..errors import EplbError, quote, shorten
from .limits import check_cells


def _check_count(count: int, source: str, given: int, per: str) -> None:
    check_cells(count, source, given, "aliases, shared objects or stride-0 tensors expand to at least", per=per,
                unit="values", fix="write the data out plainly")


_NO_KEY = object()


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    return list(node)


def _path_text(path: tuple[Any, ...]) -> str:
    """``logical_count[0][3]``, ``records[2].rank``: where in a document a value sits."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            name = shorten(part, 30) if isinstance(part, str) else quote(part, 30)
            text += f".{name}" if text else name
    return text or "the top level"


def check_tree(doc: Any, source: str, given: int, per: str = "byte") -> None:
    """Refuse ``doc`` (parsed from ``given`` units of input) when it is a bomb or holds booleans as numbers.

    Iterative, so a document nested 100,000 deep costs no recursion; where a
    value sits is kept as a link to its parent and spelled out only for a message.
    """
    limit_given = max(given, 1)
    if not isinstance(doc, (list, tuple, dict)):
        _check_count(_leaf_size(doc, source), source, limit_given, per)
        return
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    frames: list[tuple[int, Any]] = [(-1, None)]  # (parent frame, key in the parent) of each container met

    def where(frame: int, key: Any = _NO_KEY) -> str:
        path = [] if key is _NO_KEY else [key]
        while frame > 0:
            frame, name = frames[frame]
            path.append(name)
        return _path_text(tuple(reversed(path)))

    stack: list[tuple[Any, int, bool]] = [(doc, 0, False)]
    while stack:
        node, frame, done = stack.pop()
        key = id(node)
        if done:
            total = 1
            for child in _children(node):
                total += sizes[id(child)] if isinstance(child, (list, tuple, dict)) else _leaf_size(child, source)
            sizes[key] = total
            open_nodes.discard(key)
            _check_count(total, source, limit_given, per)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise EplbError(f"{source}: {where(frame)} contains itself (a recursive alias or reference); "
                            "write the data out plainly")
        open_nodes.add(key)
        stack.append((node, frame, True))
        is_list = isinstance(node, (list, tuple))
        items = enumerate(node) if is_list else node.items()
        for name, child in items:
            if is_list and isinstance(child, bool):
                raise EplbError(f"{source}: {where(frame, name)} is {str(child).lower()}, but loads and ids "
                                "are real numbers; write 1 or 0 if that is what it means")
            if isinstance(child, (list, tuple, dict)) and id(child) not in sizes:
                frames.append((frame, name))
                stack.append((child, len(frames) - 1, False))
        if not is_list:
            for name in node:
                if isinstance(name, (list, tuple, dict)):
                    raise EplbError(f"{source}: {where(frame)} has a key that is a list or mapping; "
                                    "keys must be names or numbers")


def _leaf_size(value: Any, source: str) -> int:
    """How many values a leaf stands for: a tensor its element count (after checking it), anything else 1."""
    import torch

    if not isinstance(value, torch.Tensor):
        return 1
    check_tensor(value, source)
    return int(value.numel())


def check_tensor(t: Any, source: str, what: str = "a tensor") -> None:
    """Refuse tensors eplb cannot read as plain numbers (sparse, quantized, meta), naming what they are."""
    import torch

    if t.layout != torch.strided:
        raise EplbError(f"{source}: {what} is stored as {str(t.layout).replace('torch.', '')}; "
                        "eplb reads dense tensors: save it with .to_dense()")
    if t.is_quantized:
        raise EplbError(f"{source}: {what} is quantized ({t.dtype}); save it with .dequantize() or as integers")
    if t.is_meta or t.device.type == "meta":
        raise EplbError(f"{source}: {what} is on the meta device and holds no values; save the real tensor")
