"""MoE-layer numbering: which rows of a trace are MoE layers, and which trace row each placement row is.

Engine dumps keyed by model layer carry the dense layers as zero rows
(DeepSeek-V3: layers 0-2 of 61): every token passes every MoE layer, so a
MoE layer never has zero load over a whole trace, and a row with none is a
layer without experts. A placement holds the MoE layers only, each with its
model layer id (:attr:`~eplb_cli.placement.Placement.layer_ids`); formats
indexed by MoE layer (vLLM-Ascend, vLLM) write exactly those rows, formats
keyed by model layer (TensorRT-LLM, SGLang, CSV) write them at their ids.
"""

from __future__ import annotations

import torch

from .errors import EplbError
from .placement import Placement
from .trace import Trace


def trace_layer_ids(trace: Trace) -> list[int]:
    """The model's id of each trace row: the ids the file recorded (TensorRT-LLM statistics), else 0..L-1."""
    ids = trace.meta.get("layer_ids")
    if isinstance(ids, (list, tuple)) and len(ids) == trace.layers:
        return [int(i) for i in ids]
    return list(range(trace.layers))


def moe_rows(trace: Trace) -> list[int]:
    """The trace rows that are MoE layers: those with load in some window."""
    return (~trace.zero_layers()).nonzero().flatten().tolist()


def moe_placement(placement: Placement, trace: Trace) -> Placement:
    """The rows of ``placement`` (planned on every row of ``trace``) that are MoE layers, with their model ids."""
    rows, ids = moe_rows(trace), trace_layer_ids(trace)
    return placement.select(rows, [ids[r] for r in rows])


def align(placement: Placement, trace: Trace, *, all_layers: bool = False, source: str = "placement",
          trace_name: str = "the trace", dense_row: torch.Tensor | None = None) -> Placement:
    """``placement`` with one row per trace row, so it can be scored on the trace's load.

    Rows are matched by model layer id when the placement has ids; a
    placement without ids fits either every trace row or, in order, the MoE
    rows (a file indexed by MoE layer); ``all_layers`` (one vLLM map shared by
    every MoE layer) repeats its single row. Trace rows without a placement
    row must be dense (no load): they get ``dense_row`` (what the strategy
    about to plan gives a layer with no load, so that they count no moves),
    else a copy of a planned row; their zero load leaves them out of every figure.
    """
    tids, moe = trace_layer_ids(trace), moe_rows(trace)
    rows: list[int | None]
    if all_layers:
        rows = [0 if r in set(moe) else None for r in range(trace.layers)]
    elif placement.layer_ids is not None:
        where = {layer: k for k, layer in enumerate(placement.layer_ids)}
        rows = [where.get(layer) for layer in tids]
    elif placement.layers == trace.layers:
        rows = list(range(trace.layers))
    elif placement.layers == len(moe):
        order = {r: k for k, r in enumerate(moe)}
        rows = [order.get(r) for r in range(trace.layers)]
    else:
        rows = []
    missing = [tids[r] for r in moe if rows[r] is None] if rows else moe
    extra = sorted(set(placement.ids) - set(tids)) if placement.layer_ids is not None else []
    if missing or extra or not rows:
        held = (f"layers {placement.ids[0]}..{placement.ids[-1]}" if placement.layer_ids is not None
                else f"{placement.layers} layers")
        raise EplbError(
            f"{source} ({held} x {placement.topology.experts} experts) does not match {trace_name} "
            f"({trace.layers} layers x {trace.experts} experts, MoE layers with load: {len(moe)}"
            + (f", first without a placement row: {missing[0]}" if missing and rows else "")
            + (f"; the placement has layer {extra[0]}, which the trace lacks" if extra else "")
            + "); give the placement and trace of one model"
        )
    fill = next((r for r in rows if r is not None), 0)
    index = torch.tensor([r if r is not None else fill for r in rows], dtype=torch.int64)
    phy2log = placement.phy2log[index]
    if dense_row is not None:
        phy2log[torch.tensor([r is None for r in rows])] = dense_row.to(phy2log)
    return Placement(phy2log, placement.topology, tuple(tids))
