"""CSV: load traces in long and wide form, and placements as one row per slot.

Traces
    ``csv`` (long): columns ``layer,expert,load`` and optionally ``window`` (or
    ``step``). Layer and expert ids are non-negative integers; the shape is the
    largest id + 1 and cells with no row are 0 (dense layers simply have no
    rows). Window ids are renumbered in sorted order, so steps 100..199 become
    windows 0..99. A repeated ``(window, layer, expert)`` is an error.
    ``csv-wide``: one row per layer (or per window and layer): column ``layer``,
    optionally ``window``/``step``, then one column per expert named ``0``,
    ``e0`` or ``expert_0``.
Placements
    ``csv``: ``layer,slot,gpu,node,expert,replica``, one row per slot (empty
    slots of excluded GPUs hold -1); carries GPUs and nodes in its ``gpu`` and
    ``node`` columns. ``layer`` is the model's layer id (DeepSeek-V3: 3..60,
    the dense layers absent); reading keeps the ids, in increasing order.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from typing import TYPE_CHECKING, Any

import torch

from ..errors import EplbError, listing, quote
from ..placement import Placement
from ..topology import MAX_SLOTS
from ..trace import Trace
from .arrays import as_trace
from .base import PlacementFormat, TraceFormat, csv_columns
from .jsonio import EXACT_INT
from .limits import check_cells
from .maps import int_table
from .source import Source, first_line

if TYPE_CHECKING:
    import pandas as pd

PLACEMENT_COLUMNS = ("layer", "slot", "gpu", "node", "expert", "replica")
_EXPERT_COLUMN = re.compile(r"^(?:e|expert[_ ]?)?(\d+)$", re.IGNORECASE)


# ---------------------------------------------------------------- traces


MAX_COLUMNS = MAX_SLOTS + 2
"""Widest CSV eplb parses: one column per expert (no model has more experts than eplb has slots) plus two."""
MAX_ID = 1 << 53
"""Largest layer, expert or window id: ids are read as float64, which holds every integer below this exactly."""


def _header(data: bytes, source: str) -> list[str]:
    """The column names of the first line, lower-cased and trimmed, checked before pandas parses anything.

    A header with 200,000 columns takes pandas minutes to parse; it is refused
    here in microseconds. A name given twice is refused too (pandas would
    rename the second ``load.1`` and the file would be read wrongly).
    """
    line = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    if line.count(b",") >= MAX_COLUMNS:
        raise EplbError(f"{source}: CSV header has {line.count(b',') + 1:,} columns; eplb reads at most "
                        f"{MAX_COLUMNS:,} (one per expert, up to the {MAX_SLOTS:,} slots it plans for, plus layer and "
                        "window); check the file")
    try:
        names = next(csv.reader([line.decode("utf-8-sig").rstrip("\r")]), [])
    except (UnicodeDecodeError, csv.Error):
        return []  # pandas names the problem
    columns = [c.strip().lower() for c in names]
    seen: dict[str, int] = {}
    for k, name in enumerate(columns):
        if name in seen and name:
            raise EplbError(f"{source}: CSV header gives column {quote(name)} twice (columns {seen[name] + 1} and "
                            f"{k + 1}); keep one")
        seen[name] = k
    return columns


def _load_csv_frame(data: bytes, source: str) -> tuple[pd.DataFrame, list[int]]:
    """Parse CSV bytes (numbers natively, text kept for messages); return the frame and row line numbers."""
    _header(data, source)
    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(io.BytesIO(data), skip_blank_lines=False, index_col=False, skipinitialspace=True)
    except UnicodeDecodeError:
        raise EplbError(f"{source}: not UTF-8 text; save the CSV as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, ValueError) as exc:
        raise EplbError(f"{source}: not a readable CSV file ({first_line(exc)}); check the delimiter and quoting") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    keep = ~df.isna().all(axis=1).to_numpy()
    lines = [n + 2 for n in keep.nonzero()[0].tolist()]
    df = df[keep].reset_index(drop=True)
    if len(df) == 0:
        raise EplbError(f"{source}: CSV has a header but no rows; give at least one load row")
    if len(set(df.columns)) != len(df.columns):
        raise EplbError(f"{source}: CSV header repeats a column ({listing(df.columns)}); give each column once")
    return df, lines


def _window_column(df: pd.DataFrame, source: str) -> str | None:
    """The window column's name (``window`` or ``step``), if any."""
    present = [c for c in ("window", "step") if c in df.columns]
    if len(present) > 1:
        raise EplbError(f"{source}: CSV has both 'window' and 'step' columns; keep one")
    return present[0] if present else None


def _numbers(df: pd.DataFrame, col: str, lines: list[int], source: str, *, ids: bool) -> torch.Tensor:
    """Column ``col`` as float64, rejecting blanks, text, NaN, inf, negatives (and fractions for ids)."""
    return _number_block(df, [col], lines, source, ids=ids)[:, 0]


def _number_block(df: pd.DataFrame, cols: list[str], lines: list[int], source: str, *, ids: bool) -> torch.Tensor:
    """Columns ``cols`` as float64 [rows, len(cols)], checked like :func:`_numbers`, converted in one step.

    Numeric columns (the usual case) are converted together; only columns
    pandas could not read as numbers are coerced one by one.
    """
    import numpy as np
    import pandas as pd

    out = np.empty((len(df), len(cols)), dtype="float64")
    dtypes = df.dtypes[cols].tolist()
    numeric = [k for k, d in enumerate(dtypes) if pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d)]
    if numeric:
        out[:, numeric] = df[[cols[k] for k in numeric]].to_numpy(dtype="float64", na_value=float("nan"))
    for k, dtype in enumerate(dtypes):
        if k in numeric:
            continue
        if pd.api.types.is_bool_dtype(dtype):
            out[:, k] = float("nan")
        else:
            coerced = pd.to_numeric(df[cols[k]], errors="coerce")
            out[:, k] = coerced.to_numpy(dtype="float64", na_value=float("nan"))
    tensor = torch.from_numpy(out)
    bad = ~torch.isfinite(tensor) | (tensor < 0)
    if ids:
        bad |= (tensor != tensor.floor()) | (tensor >= MAX_ID)
    if bool(bad.any()):
        i, k = (int(v) for v in bad.nonzero()[0])
        col, value = cols[k], float(tensor[i, k])
        if ids and value >= MAX_ID and value == value and value != float("inf"):
            need = "an id eplb can hold (ids are below 2**53; one this large is surely a typo)"
        else:
            need = "a non-negative integer id" if ids else "a finite, non-negative number"
        raise EplbError(f"{source}: line {lines[i]}: {col} {_cell_text(df[col].iloc[i])} is not {need}; fix that row")
    return tensor


def _cell_text(value: Any) -> str:
    """A CSV cell as the user typed it, near enough for an error message (cut: a cell may be megabytes)."""
    import pandas as pd

    if isinstance(value, str):
        return quote(value.strip())
    if pd.isna(value):
        return "(empty or NaN)"
    if isinstance(value, float) and value.is_integer():
        return quote(str(int(value)))
    return quote(str(value))


def _ids(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Integer ids and the dense size (largest id + 1)."""
    ids = values.to(torch.int64)
    return ids, int(ids.max()) + 1


def _window_ids(df: pd.DataFrame, col: str | None, lines: list[int], source: str) -> tuple[torch.Tensor, int]:
    """Window index of every row: sorted unique window ids renumbered 0..W-1."""
    if col is None:
        return torch.zeros(len(df), dtype=torch.int64), 1
    raw = _numbers(df, col, lines, source, ids=True).to(torch.int64)
    uniq, inverse = torch.unique(raw, sorted=True, return_inverse=True)
    return inverse, int(uniq.numel())


def read_long(src: Source) -> Trace:
    """Long CSV: one ``[window,]layer,expert,load`` row per cell; missing cells are 0."""
    source = src.name
    src.parse_cost("csv")
    df, lines = _load_csv_frame(src.data(), source)
    missing = [c for c in ("layer", "expert", "load") if c not in df.columns]
    if missing:
        raise EplbError(
            f"{source}: CSV lacks column {', '.join(missing)} (found: {listing(df.columns)}); "
            "long CSV needs layer,expert,load and optionally window"
        )
    wcol = _window_column(df, source)
    w_idx, windows = _window_ids(df, wcol, lines, source)
    l_idx, layers = _ids(_numbers(df, "layer", lines, source, ids=True))
    e_idx, experts = _ids(_numbers(df, "expert", lines, source, ids=True))
    load = _numbers(df, "load", lines, source, ids=False)
    check_cells(windows * layers * experts, source, len(df))
    flat = (w_idx * layers + l_idx) * experts + e_idx
    _reject_duplicates(flat, lines, source, "(window, layer, expert)" if wcol else "(layer, expert)")
    out = torch.zeros(windows * layers * experts, dtype=torch.float64)
    out[flat] = load
    return as_trace(out.reshape(windows, layers, experts), source)


def _reject_duplicates(keys: torch.Tensor, lines: list[int], source: str, what: str) -> None:
    """Raise naming the first row whose key repeats an earlier row."""
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    dup = sorted_keys[1:] == sorted_keys[:-1]
    if bool(dup.any()):
        later = order[1:][dup]
        earlier = order[:-1][dup]
        j = int(later.argmin())
        first, second = lines[int(earlier[j])], lines[int(later[j])]
        raise EplbError(f"{source}: line {second} repeats the {what} of line {first}; keep one row per cell")


def read_wide(src: Source) -> Trace:
    """Wide CSV: ``[window,]layer`` then one column per expert (``0``, ``e0`` or ``expert_0``)."""
    source = src.name
    src.parse_cost("csv")
    df, lines = _load_csv_frame(src.data(), source)
    if "layer" not in df.columns:
        raise EplbError(
            f"{source}: CSV lacks column layer (found: {listing(df.columns)}); "
            "wide CSV needs layer then one column per expert (e0,e1,...)"
        )
    wcol = _window_column(df, source)
    expert_cols: dict[int, str] = {}
    for col in df.columns:
        if col in ("layer", wcol):
            continue
        match = _EXPERT_COLUMN.match(col)
        if match is None:
            raise EplbError(
                f"{source}: column {quote(col)} is not an expert column; name expert columns 0,1,... or e0,e1,..."
            )
        eid = int(match.group(1))
        if eid in expert_cols:
            raise EplbError(f"{source}: columns {quote(expert_cols[eid])} and {quote(col)} both name expert {eid}; "
                            "keep one")
        expert_cols[eid] = col
    if not expert_cols:
        raise EplbError(f"{source}: CSV has no expert columns; add columns e0,e1,... with the loads")
    experts = max(expert_cols) + 1
    check_cells(experts, source, len(expert_cols), "expert column names imply", "column")
    w_idx, windows = _window_ids(df, wcol, lines, source)
    l_idx, layers = _ids(_numbers(df, "layer", lines, source, ids=True))
    check_cells(windows * layers * experts, source, len(df) * len(expert_cols))
    _reject_duplicates(w_idx * layers + l_idx, lines, source, "(window, layer)" if wcol else "layer")
    rows = torch.zeros(len(df), experts, dtype=torch.float64)
    ids = list(expert_cols)
    rows[:, ids] = _number_block(df, [expert_cols[e] for e in ids], lines, source, ids=False)
    out = torch.zeros(windows * layers, experts, dtype=torch.float64)
    out[w_idx * layers + l_idx] = rows
    return as_trace(out.reshape(windows, layers, experts), source)


def _format_number_column(values: torch.Tensor) -> list:
    """Values as Python ints when all are exact integers, else floats (round-trip exact)."""
    if bool(((values == values.round()) & (values.abs() < EXACT_INT)).all()):
        return values.to(torch.int64).tolist()
    return values.tolist()


def write_long(trace: Trace) -> bytes:
    """Long CSV; the ``window`` column is written only when there is more than one window."""
    import pandas as pd

    w, l, e = trace.load.shape
    grid = torch.stack(
        torch.meshgrid(torch.arange(w), torch.arange(l), torch.arange(e), indexing="ij"), dim=-1
    ).reshape(-1, 3)
    columns: dict[str, list] = {}
    if w > 1:
        columns["window"] = grid[:, 0].tolist()
    columns["layer"] = grid[:, 1].tolist()
    columns["expert"] = grid[:, 2].tolist()
    columns["load"] = _format_number_column(trace.load.reshape(-1))
    return pd.DataFrame(columns).to_csv(index=False, lineterminator="\n").encode()


def write_wide(trace: Trace) -> bytes:
    """Wide CSV: ``[window,]layer,e0,...``; one row per window and layer."""
    import pandas as pd

    w, l, e = trace.load.shape
    columns: dict[str, list] = {}
    if w > 1:
        columns["window"] = torch.arange(w).repeat_interleave(l).tolist()
    columns["layer"] = torch.arange(l).repeat(w).tolist()
    rows = trace.load.reshape(w * l, e)
    integral = bool(((rows == rows.round()) & (rows.abs() < EXACT_INT)).all())
    for j in range(e):
        col = rows[:, j]
        columns[f"e{j}"] = col.to(torch.int64).tolist() if integral else col.tolist()
    return pd.DataFrame(columns).to_csv(index=False, lineterminator="\n").encode()


# ---------------------------------------------------------------- placements


def write_placement(p: Placement, extra: dict, name: str) -> bytes:
    """One row per (layer, slot) with GPU, node and replica spelled out, for spreadsheets and joins."""
    topo = p.topology
    layers, slots = p.phy2log.shape
    slot = torch.arange(slots).expand(layers, slots)
    gpu = slot // topo.slots_per_gpu
    node = gpu // topo.gpus_per_node
    layer = torch.tensor(p.ids, dtype=torch.int64).unsqueeze(1).expand(layers, slots)
    table = torch.stack([layer, slot, gpu, node, p.phy2log, _replica_index(p.phy2log)], dim=-1).reshape(-1, 6)
    body = "\n".join(",".join(map(str, row)) for row in table.tolist())
    return (",".join(PLACEMENT_COLUMNS) + "\n" + body + "\n").encode()


def _replica_index(phy2log: torch.Tensor) -> torch.Tensor:
    """For each slot, which replica of its expert it is (0, 1, ... in slot order); -1 for empty slots."""
    layers, slots = phy2log.shape
    order = torch.sort(phy2log, dim=1, stable=True)
    values = order.values
    pos = torch.arange(slots).expand(layers, slots)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
    rank = torch.empty_like(phy2log).scatter_(1, order.indices, pos - first)
    return torch.where(phy2log >= 0, rank, torch.full_like(rank, -1))


def read_placement(src: Source) -> tuple[torch.Tensor, dict]:
    """The long CSV: layer, slot and expert required; gpu, node and replica checked when present."""
    source = src.name
    try:
        text = src.data().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EplbError(f"{source}: not UTF-8 text; save the CSV as UTF-8") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise EplbError(f"{source}: CSV is empty; expected columns {','.join(PLACEMENT_COLUMNS)}")
    head = [c.strip().lower() for c in rows[0]]
    missing = [c for c in ("layer", "slot", "expert") if c not in head]
    if missing:
        raise EplbError(f"{source}: CSV header lacks {', '.join(missing)} (found: {listing(head)}); "
                        f"expected {','.join(PLACEMENT_COLUMNS)}")
    twice = [c for c in dict.fromkeys(head) if c and head.count(c) > 1]
    if twice:
        raise EplbError(f"{source}: CSV header gives column {quote(twice[0])} twice; keep one")
    if len(rows) < 2:
        raise EplbError(f"{source}: CSV has a header but no rows")
    cols = [c for c in PLACEMENT_COLUMNS if c in head]
    idx = [head.index(c) for c in cols]
    values = []
    for n, row in enumerate(rows[1:], start=2):
        try:
            values.append([int(row[i].strip()) for i in idx])
        except (ValueError, IndexError):
            raise EplbError(f"{source}: line {n}: {','.join(cols)} must all be integers") from None
        if any(abs(v) >= MAX_ID for v in values[-1]):
            raise EplbError(f"{source}: line {n}: {','.join(cols)} holds a number beyond 2**53; "
                            "ids and slots are far smaller, fix that row")
    table = torch.tensor(values, dtype=torch.int64)
    col = {c: table[:, k] for k, c in enumerate(cols)}
    if bool((col["layer"] < 0).any() | (col["slot"] < 0).any() | (col["expert"] < -1).any()):
        raise EplbError(f"{source}: layer and slot must be >= 0 and expert >= -1 (-1 = empty slot)")
    ids, row_of = torch.unique(col["layer"], return_inverse=True)
    layers, slots = ids.numel(), int(col["slot"].max()) + 1
    if layers * slots != len(values):
        raise EplbError(f"{source}: {len(values)} rows but {layers} layers x {slots} slots need {layers * slots}; "
                        "give every (layer, slot) once")
    cell = row_of * slots + col["slot"]
    if torch.unique(cell).numel() != cell.numel():
        raise EplbError(f"{source}: a (layer, slot) pair appears twice; give every (layer, slot) once")
    phy2log = torch.empty(layers * slots, dtype=torch.int64)
    phy2log[cell] = col["expert"]
    phy2log = int_table(phy2log.view(layers, slots), source, "expert")
    meta: dict = {"layer_ids": ids.tolist()}
    if "gpu" in col:
        meta.update(_csv_topology(col, phy2log, slots, source))
    if "replica" in col:
        want = _replica_index(phy2log).flatten()[cell]
        if not torch.equal(want, col["replica"]):
            raise EplbError(f"{source}: replica column disagrees with the slot order of the experts; the file is corrupt")
    return phy2log, meta


def _csv_topology(col: dict[str, torch.Tensor], phy2log: torch.Tensor, slots: int, source: str) -> dict:
    """GPUs, nodes and excluded GPUs implied by the gpu/node columns, checked against the slot order."""
    gpus = int(col["gpu"].max()) + 1
    if slots % gpus or bool((col["gpu"] != col["slot"] // (slots // gpus)).any()):
        raise EplbError(f"{source}: gpu column must be slot // (slots per GPU) with {slots} slots on {gpus} GPUs")
    meta: dict = {"gpus": gpus}
    if "node" in col:
        nodes = int(col["node"].max()) + 1
        if gpus % nodes or bool((col["node"] != col["gpu"] // (gpus // nodes)).any()):
            raise EplbError(f"{source}: node column must be gpu // (GPUs per node) with {gpus} GPUs on {nodes} nodes")
        meta["nodes"] = nodes
    empty = (phy2log < 0).view(phy2log.shape[0], gpus, slots // gpus).all(-1).all(0)
    if bool(empty.any()):
        meta["excluded_gpus"] = empty.nonzero().flatten().tolist()
    return meta


def _claims_long(src: Source) -> bool:
    return "expert" in csv_columns(src)


def _claims_wide(src: Source) -> bool:
    columns = csv_columns(src)
    return "layer" in columns and "expert" not in columns


def _claims_placement(src: Source) -> bool:
    return "slot" in csv_columns(src)


LONG = TraceFormat("csv", "csv", read_long, write_long, claims=_claims_long, extensions=(".csv",),
                   hint="layer,expert,load (long)")
WIDE = TraceFormat("csv-wide", "csv", read_wide, write_wide, claims=_claims_wide, hint="layer,e0,e1,... (wide)")
PLACEMENT = PlacementFormat("csv", "csv", read_placement, write_placement, claims=_claims_placement,
                            extensions=(".csv",), topology=True)
