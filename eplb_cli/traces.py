"""Read and write expert-load traces in the formats serving engines and users have.

One small function per format turns a file into a :class:`~eplb_cli.trace.Trace`
(float64 ``[W, L, E]``) or back. Every problem with an input file raises
:class:`~eplb_cli.errors.EplbError` with one line, ``"<path>: <what is wrong>;
<what to do>"``, so the CLI can print it as is.

Formats (names accepted by ``--input-format`` / ``--format``):

``safetensors``
    A tensor ``load`` shaped ``[L, E]`` or ``[W, L, E]``; string metadata may
    hold ``model``, ``groups`` and ``seed``. Read a slice of windows at a
    time (:mod:`eplb_cli.safetensors_format`), keeping only the windows asked
    for, so a file far larger than memory can still be read in part.
``csv``
    Long form, columns ``layer,expert,load`` and optionally ``window`` (or
    ``step``). Layer and expert ids are non-negative integers; the shape is the
    largest id + 1 and cells with no row are 0 (dense layers simply have no
    rows). Window ids are renumbered in sorted order, so steps 100..199 become
    windows 0..99. A repeated ``(window, layer, expert)`` is an error.
``csv-wide``
    One row per layer (or per window and layer): column ``layer``, optionally
    ``window``/``step``, then one column per expert named ``0``, ``e0`` or
    ``expert_0``.
``sglang`` / ``sglang-pt``
    SGLang's expert-distribution dump in ``stat`` mode: ``{"logical_count":
    [L, E] or [steps, L, E]}`` as JSON, or the same dict saved with
    ``torch.save`` (read with ``weights_only=True``).
``vllm``
    vLLM / ADRS ``expert-load.json``: ``{"load_history": [{"logical_expert_load":
    [[...] * E] * L}, ...]}``, one window per entry.
``sglang-per-pass``
    A folder of SGLang ``per_pass`` dumps (or one such ``.pt`` file). Checked
    against sgl-project/sglang ``python/sglang/srt/eplb/expert_distribution.py``
    (``_DetailAccumulator.dump``): each rank saves
    ``expert_distribution_recorder_{time}_{rank}.pt`` holding ``{"records":
    [{"forward_pass_id", "rank", "gatherer_key", "global_physical_count":
    int [L, S], ...}], "last_physical_to_logical_map": int [L, S]}``. Physical
    counts are mapped to logical experts through that map; the records of all
    ranks with the same ``forward_pass_id`` are summed into one window.
``trtllm``
    A TensorRT-LLM expert-statistic folder. Checked against NVIDIA/TensorRT-LLM
    ``tensorrt_llm/_torch/expert_statistic.py`` and
    ``examples/wide_ep/ep_load_balancer/utils.py``: rank 0 writes
    ``meta_info.json`` (``{"num_experts", "num_experts_per_token"}``), every
    rank writes ``rank{r}.safetensors`` whose key ``"{iter}_{layer}"`` is the
    bincount ``[num_experts]`` of that rank's routed tokens. Ranks are summed
    (``rank*_raw.safetensors`` files are skipped, as TensorRT-LLM does); each
    iteration present is one window, in order, and the layers present, in
    sorted order, are the trace's layers (their ids go to ``meta["layer_ids"]``,
    the keys TensorRT-LLM's placement YAML uses).

Readers only for the two engine folder formats; writers for the others except
``sglang-pt``.

Before parsing, each reader weighs the memory the file needs (the declared
tensor size for safetensors, the file size times a measured factor for JSON,
CSV and ``.pt``) against the memory available and fails early with a one-line
error instead of running the machine out of memory.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

import torch

from . import safetensors_format as stf
from .atomic import check_writable, write_bytes_atomic
from .checks import check_memory
from .errors import EplbError
from .trace import Trace, check_values, parse_window_range

if TYPE_CHECKING:
    import pandas as pd

TRACE_FORMATS: tuple[str, ...] = (
    "safetensors",
    "csv",
    "csv-wide",
    "sglang",
    "sglang-pt",
    "vllm",
    "sglang-per-pass",
    "trtllm",
)
"""Format names accepted by :func:`read_trace`."""

WRITE_FORMATS: tuple[str, ...] = ("safetensors", "csv", "csv-wide", "sglang", "vllm")
"""Format names accepted by :func:`write_trace`."""

FOLDER_FORMATS: tuple[str, ...] = ("sglang-per-pass", "trtllm")
"""Formats whose input is a folder of engine dumps (readers only)."""

STDIN = "-"
_STDIN_NAME = "<stdin>"
_MAX_CELLS = 1 << 28
"""Largest W*L*E a reader will allocate: ids beyond this are surely a typo."""
_PARSE_FACTOR = {"json": 16, "sglang": 16, "vllm": 16, "csv": 14, "csv-wide": 14, "sglang-pt": 4}
"""Peak memory over file size when parsing each text or pickle format (measured: JSON 16x, CSV 14x)."""
_HEAD_BYTES = 1 << 16
"""How much of a file format detection looks at."""
_CHUNK_BYTES = 32 << 20
"""Raw bytes of a safetensors trace read per step."""
_EXACT_INT = 1 << 53
_FLOAT32_INT = 1 << 24
_EXPERT_COLUMN = re.compile(r"^(?:e|expert[_ ]?)?(\d+)$", re.IGNORECASE)
_EXTENSIONS = {
    ".safetensors": "safetensors",
    ".csv": "csv",
    ".json": "json",
    ".pt": "sglang-pt",
    ".pth": "sglang-pt",
}


# --------------------------------------------------------------------- entry points


def read_trace(path: str | Path, fmt: str | None = None, *, window: int | None = None,
               windows: str | None = None) -> Trace:
    """Read a trace from ``path`` (``-`` for standard input) in format ``fmt``.

    ``fmt=None`` picks the format from the extension, then the content; standard
    input is recognised by its content (JSON, safetensors, ``torch.save`` zip or
    CSV), folders by the files in them. ``window`` sums every N recorded steps
    into one window, then ``windows`` keeps windows ``A:B``; a safetensors file
    is read a slice at a time and only the windows kept, so those two options
    bound the memory a huge trace needs. Before parsing, the memory a file
    needs is weighed against the memory available (:func:`~eplb_cli.checks.check_memory`).
    """
    fmt = _check_format(fmt, TRACE_FORMATS, "--input-format")
    if window is not None and window < 1:
        raise EplbError(f"--window {window}: must be >= 1")
    if str(path) == STDIN:
        return _read_stdin(fmt).rebin(window).select(windows)
    p = Path(path)
    source = str(path)
    if not p.exists():
        raise EplbError(f"{source}: no such file or folder; check the path")
    if fmt is None:
        fmt = _file_kind(p, _read_head(p, source), source) if p.is_file() else detect_format(source)
    if fmt in FOLDER_FORMATS:
        if fmt == "sglang-per-pass" and p.is_file():
            return _read_per_pass_files([p], source).rebin(window).select(windows)
        if not p.is_dir():
            raise EplbError(f"{source}: format {fmt} reads a dump folder, but this is a file; give the folder")
        return _FOLDER_READERS[fmt](p, source).rebin(window).select(windows)
    if p.is_dir():
        raise EplbError(
            f"{source}: is a folder, not a {fmt} file; give a trace file, "
            "or --input-format sglang-per-pass / trtllm for an engine dump folder"
        )
    if fmt == "safetensors":
        with _open(p, source) as fh:
            return _read_safetensors_stream(fh, p.stat().st_size, source, window, windows)
    check_memory(source, p.stat().st_size * _PARSE_FACTOR[fmt])
    return _read_bytes(_read_file_bytes(p, source), fmt, source).rebin(window).select(windows)


def write_trace(trace: Trace, path: str | Path, fmt: str | None = None, force: bool = False) -> None:
    """Write ``trace`` to ``path`` atomically (``-``: standard output).

    ``fmt=None`` picks the format from the extension (``.json`` means ``sglang``).
    An existing file is only replaced with ``force``.
    """
    fmt = _check_format(fmt, WRITE_FORMATS + FOLDER_FORMATS + ("sglang-pt",), "--format")
    if fmt in FOLDER_FORMATS or fmt == "sglang-pt":
        raise EplbError(f"{path}: format {fmt} can only be read; write safetensors, csv, csv-wide, sglang or vllm")
    if fmt is None:
        fmt = _write_format_from_name(str(path))
    if str(path) == STDIN:
        if fmt == "safetensors" and sys.stdout.isatty():
            raise EplbError("-: safetensors is binary and standard output is a terminal; give a file name or pipe it")
    else:
        check_writable(path, force)
    data = _WRITERS[fmt](trace)
    write_bytes_atomic(path, data, force)


def read_trace_bytes(data: bytes, fmt: str | None = None, source: str = _STDIN_NAME) -> Trace:
    """Parse a trace already read into memory (e.g. standard input that ``eplb convert`` sniffed first)."""
    fmt = _check_format(fmt, TRACE_FORMATS, "--input-format")
    if fmt in FOLDER_FORMATS:
        raise EplbError(f"{source}: format {fmt} reads a dump folder; give the folder, not its bytes")
    return _read_bytes(data, fmt or _sniff(data, source, parse_json=False), source)


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` from its extension, then its content.

    Folders are ``trtllm`` when they hold ``meta_info.json`` and
    ``sglang-per-pass`` when they hold ``.pt`` files. A ``.pt`` file is
    ``sglang-pt`` (its reader also accepts a single ``per_pass`` dump).
    """
    source = str(path)
    if source == STDIN:
        raise EplbError("-: cannot tell the format of standard input from a name; pass --input-format")
    p = Path(path)
    if not p.exists():
        raise EplbError(f"{source}: no such file or folder; check the path")
    if p.is_dir():
        if (p / "meta_info.json").is_file():
            return "trtllm"
        if any(p.glob("*.pt")):
            return "sglang-per-pass"
        raise EplbError(
            f"{source}: folder holds neither meta_info.json (TensorRT-LLM) nor .pt files (SGLang per_pass); "
            "give a trace file or an engine dump folder"
        )
    kind = _file_kind(p, _read_head(p, source), source)
    if kind != "json":
        return kind
    check_memory(source, p.stat().st_size * _PARSE_FACTOR["json"])
    return _json_kind(parse_json(_read_file_bytes(p, source), source), source)


def _file_kind(p: Path, data: bytes, source: str) -> str:
    """Format of file ``p`` whose content starts with ``data``; ``json`` means "dispatch on the parsed keys"."""
    kind = _EXTENSIONS.get(p.suffix.lower())
    if kind == "csv":
        return _csv_kind(data, source)
    if kind is not None:
        return kind
    return _sniff(data, source, parse_json=False)


# --------------------------------------------------------------------- dispatch helpers


def _check_format(fmt: str | None, allowed: tuple[str, ...], flag: str) -> str | None:
    """Normalise ``fmt`` and reject names no reader or writer knows."""
    if fmt is None:
        return None
    name = fmt.strip().lower()
    if name not in allowed:
        raise EplbError(f"{flag} {fmt}: unknown format; use one of {', '.join(allowed)}")
    return name


def _write_format_from_name(path: str) -> str:
    """The writer implied by a file name's extension."""
    if path == STDIN:
        raise EplbError("-: cannot tell the output format of standard output; pass --format")
    suffix = Path(path).suffix.lower()
    fmt = {".safetensors": "safetensors", ".csv": "csv", ".json": "sglang"}.get(suffix)
    if fmt is None:
        raise EplbError(
            f"{path}: cannot tell the format from the extension {suffix or '(none)'}; "
            "use .safetensors, .csv or .json, or pass --format"
        )
    return fmt


def _read_stdin(fmt: str | None) -> Trace:
    """Read standard input as bytes and parse it as ``fmt`` (or what it looks like)."""
    if fmt in FOLDER_FORMATS:
        raise EplbError(
            f"{_STDIN_NAME}: format {fmt} reads a dump folder, which cannot come from standard input; give the folder"
        )
    if sys.stdin is None:
        raise EplbError(f"{_STDIN_NAME}: there is no standard input; give a file instead")
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    try:
        data = stream.read()
    except (OSError, ValueError) as exc:
        raise EplbError(f"{_STDIN_NAME}: cannot read standard input ({exc}); give a file instead") from None
    if isinstance(data, str):
        data = data.encode()
    if not data:
        raise EplbError(f"{_STDIN_NAME}: standard input is empty; pipe a trace into it or give a file")
    if fmt is None:
        fmt = _sniff(data, _STDIN_NAME, parse_json=False)
    if fmt != "safetensors":
        check_memory(_STDIN_NAME, len(data) * _PARSE_FACTOR[fmt])
    return _read_bytes(data, fmt, _STDIN_NAME)


def _sniff(data: bytes, source: str, parse_json: bool = True) -> str:
    """Guess the format of ``data`` from its first bytes (``json`` unparsed unless ``parse_json``)."""
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return _json_kind(parse_json(data, source), source) if parse_json else "json"
    if data[:4] == b"PK\x03\x04":
        return "sglang-pt"
    if len(data) > 10 and data[8:10] == b'{"':
        return "safetensors"
    try:
        first = data[:4096].decode("utf-8").splitlines()[0] if data.strip() else ""
    except UnicodeDecodeError:
        first = ""
    if "layer" in first.lower() and "," in first:
        return _csv_kind(data, source)
    raise EplbError(
        f"{source}: cannot tell the trace format from the content; pass --input-format ({', '.join(TRACE_FORMATS)})"
    )


def _read_bytes(data: bytes, fmt: str, source: str) -> Trace:
    """Parse ``data`` with the reader for ``fmt``; JSON is dispatched by its keys."""
    if fmt == "json":
        obj = parse_json(data, source)
        return _JSON_READERS[_json_kind(obj, source)](obj, source)
    if fmt in _JSON_READERS:
        return _JSON_READERS[fmt](parse_json(data, source), source)
    return _BYTE_READERS[fmt](data, source)


def _read_file_bytes(p: Path, source: str) -> bytes:
    """The content of ``p``, with OS errors turned into one-line messages."""
    if p.is_dir():
        raise EplbError(f"{source}: is a folder; give a trace file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise EplbError(f"{source}: cannot read the file ({exc.strerror or exc}); check its permissions") from None
    if not data or data.isspace():
        raise EplbError(f"{source}: file is empty; give a trace with at least one window, layer and expert")
    return data


def _open(p: Path, source: str) -> BinaryIO:
    """Open ``p`` for reading, with OS errors turned into one-line messages."""
    if p.is_dir():
        raise EplbError(f"{source}: is a folder; give a trace file")
    try:
        return open(p, "rb")
    except OSError as exc:
        raise EplbError(f"{source}: cannot read the file ({exc.strerror or exc}); check its permissions") from None


def _read_head(p: Path, source: str) -> bytes:
    """The first bytes of ``p``, enough to tell its format; an empty file is an error."""
    with _open(p, source) as fh:
        try:
            head = fh.read(_HEAD_BYTES)
            rest = fh.read(1)
        except OSError as exc:
            raise EplbError(f"{source}: cannot read the file ({exc.strerror or exc}); check it") from None
    if not rest and (not head or head.isspace()):
        raise EplbError(f"{source}: file is empty; give a trace with at least one window, layer and expert")
    return head


def _trace(load: Any, source: str, meta: dict | None = None, what: str = "load") -> Trace:
    """Build a Trace, naming the offending key when the array itself is malformed."""
    if not isinstance(load, torch.Tensor):
        try:
            load = _list_tensor(load)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise EplbError(
                f"{source}: {what} is not a rectangular array of numbers; every row must have the same length"
            ) from None
    if load.dim() not in (2, 3):
        raise EplbError(
            f"{source}: {what} has shape {tuple(load.shape)}; "
            "it must be [layers, experts] or [windows, layers, experts]"
        )
    if load.dtype == torch.bool or load.is_complex():
        raise EplbError(f"{source}: {what} holds {load.dtype} values; loads must be real numbers (token counts)")
    return Trace(load, source, meta or {})


def _list_tensor(values: Any) -> torch.Tensor:
    """Nested lists as a tensor; floats become float64 (torch's default float32 would round them)."""
    tensor = torch.as_tensor(values)
    if tensor.is_floating_point():
        tensor = torch.as_tensor(values, dtype=torch.float64)
    return tensor


# --------------------------------------------------------------------- safetensors


def _read_safetensors(data: bytes, source: str) -> Trace:
    """Read tensor ``load`` plus string metadata from safetensors bytes (standard input)."""
    return _read_safetensors_stream(io.BytesIO(data), len(data), source, None, None)


def _read_safetensors_stream(fh: BinaryIO, size: int, source: str, window: int | None,
                             windows: str | None) -> Trace:
    """Read tensor ``load`` from a safetensors stream of ``size`` bytes, a slice at a time.

    Only the raw steps that windows ``windows`` (after summing every ``window``
    steps) cover are read. Each slice is checked for NaN, inf and negatives in
    its stored dtype and summed straight into the float64 result, so the peak
    is the result plus one slice, and the memory check before the first read
    uses the header's declared shape.
    """
    tensors, strings = stf.read_header(fh, source)
    if "load" not in tensors:
        names = ", ".join(sorted(tensors)) or "none"
        raise EplbError(f"{source}: no tensor named 'load' (found: {names}); save the trace under the name 'load'")
    info = tensors["load"]
    meta = _meta_from_strings(strings, source)
    if len(info.shape) not in (2, 3):
        raise EplbError(
            f"{source}: load has shape {info.shape}; it must be [layers, experts] or [windows, layers, experts]"
        )
    if info.dtype == "BOOL":
        raise EplbError(f"{source}: load holds bool values; loads must be real numbers (token counts)")
    if 0 in info.shape:
        raise EplbError(
            f"{source}: load is empty (shape {info.shape}); need at least one window, layer and expert"
        )
    if len(info.shape) == 2:
        info = dataclasses.replace(info, shape=(1, *info.shape))
    steps, layers, experts = info.shape
    if experts % meta.get("groups", 1):
        raise EplbError(
            f"{source}: metadata groups={meta['groups']} does not divide the {experts} experts; fix or remove it"
        )
    every = min(window or 1, steps)
    lo, hi = parse_window_range(windows, -(-steps // every), source) if windows else (0, -(-steps // every))
    first, last = lo * every, min(hi * every, steps)
    cells = layers * experts
    chunk = min(max(1, _CHUNK_BYTES // (cells * info.itemsize)), last - first)
    check_memory(source, (hi - lo) * cells * 8 + chunk * cells * (info.itemsize + 8))
    stf.check_extent(tensors, size, source)
    out = torch.zeros(hi - lo, layers, experts, dtype=torch.float64)
    for start in range(first, last, chunk):
        stop = min(start + chunk, last)
        rows = stf.read_rows(fh, info, start, stop, source)
        check_values(rows, source)
        if every == 1:
            out[start - first : stop - first] = rows
        else:
            out.index_add_(0, (torch.arange(start, stop) - first) // every, rows.to(torch.float64))
    return Trace(out, source, meta)


def _meta_from_strings(meta: dict[str, str], source: str) -> dict:
    """Turn safetensors string metadata into Trace.meta (``groups``/``seed`` as int)."""
    out: dict[str, Any] = dict(meta)
    for key in ("groups", "seed"):
        if key in out:
            try:
                out[key] = int(out[key])
            except (TypeError, ValueError):
                raise EplbError(f"{source}: metadata {key}={out[key]!r} is not an integer; fix or remove it") from None
    if "groups" in out and out["groups"] < 1:
        raise EplbError(f"{source}: metadata groups={out['groups']} must be >= 1; fix or remove it")
    return out


def _write_safetensors(trace: Trace) -> bytes:
    """Serialise as safetensors: float32 when exact (integers < 2**24), else float64.

    :func:`~eplb_cli.safetensors_format.encode` sorts the header, so equal
    traces give byte-identical files (``safetensors.torch.save`` does not).
    """
    load = trace.load
    exact = all(bool(((part == part.round()) & (part < _FLOAT32_INT)).all()) for part in load.split(16))
    meta = {k: str(v) for k, v in trace.meta.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    return stf.encode({"load": load.to(torch.float32 if exact else torch.float64)}, meta)


# --------------------------------------------------------------------- CSV


def _load_csv_frame(data: bytes, source: str) -> tuple[pd.DataFrame, list[int]]:
    """Parse CSV bytes (numbers natively, text kept for messages); return the frame and row line numbers."""
    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(io.BytesIO(data), skip_blank_lines=False, index_col=False, skipinitialspace=True)
    except UnicodeDecodeError:
        raise EplbError(f"{source}: not UTF-8 text; save the CSV as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, ValueError) as exc:
        raise EplbError(f"{source}: not a readable CSV file ({_short(exc)}); check the delimiter and quoting") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    keep = ~df.isna().all(axis=1).to_numpy()
    lines = [n + 2 for n in keep.nonzero()[0].tolist()]
    df = df[keep].reset_index(drop=True)
    if len(df) == 0:
        raise EplbError(f"{source}: CSV has a header but no rows; give at least one load row")
    if len(set(df.columns)) != len(df.columns):
        raise EplbError(f"{source}: CSV header repeats a column ({', '.join(df.columns)}); give each column once")
    return df, lines


def _csv_kind(data: bytes, source: str) -> str:
    """``csv`` when the header has an ``expert`` column, ``csv-wide`` when it has ``layer`` only."""
    try:
        first = data.decode("utf-8-sig").splitlines()[0]
    except (UnicodeDecodeError, IndexError):
        raise EplbError(f"{source}: not a UTF-8 CSV file; save it as UTF-8 text") from None
    columns = [c.strip().strip('"').lower() for c in first.split(",")]
    if "expert" in columns:
        return "csv"
    if "layer" in columns:
        return "csv-wide"
    raise EplbError(
        f"{source}: CSV header has no 'layer' column (found: {', '.join(columns)}); "
        "use layer,expert,load (long) or layer,e0,e1,... (wide)"
    )


def _window_column(df: pd.DataFrame, source: str) -> str | None:
    """The window column's name (``window`` or ``step``), if any."""
    present = [c for c in ("window", "step") if c in df.columns]
    if len(present) > 1:
        raise EplbError(f"{source}: CSV has both 'window' and 'step' columns; keep one")
    return present[0] if present else None


def _numbers(df: pd.DataFrame, col: str, lines: list[int], source: str, *, ids: bool) -> torch.Tensor:
    """Column ``col`` as float64, rejecting blanks, text, NaN, inf, negatives (and fractions for ids)."""
    import pandas as pd

    column = df[col]
    if pd.api.types.is_bool_dtype(column):
        values = pd.Series(float("nan"), index=column.index)
    elif pd.api.types.is_numeric_dtype(column):
        values = column
    else:
        values = pd.to_numeric(column, errors="coerce")
    tensor = torch.from_numpy(values.to_numpy(dtype="float64", na_value=float("nan")).copy())
    bad = ~torch.isfinite(tensor) | (tensor < 0)
    if ids:
        bad |= tensor != tensor.floor()
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        need = "a non-negative integer id" if ids else "a finite, non-negative number"
        raise EplbError(f"{source}: line {lines[i]}: {col} {_cell_text(column.iloc[i])} is not {need}; fix that row")
    return tensor


def _cell_text(value: Any) -> str:
    """A CSV cell as the user typed it, near enough for an error message."""
    import pandas as pd

    if isinstance(value, str):
        return repr(value.strip())
    if pd.isna(value):
        return "(empty or NaN)"
    if isinstance(value, float) and value.is_integer():
        return repr(str(int(value)))
    return repr(str(value))


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


def _check_cells(cells: int, source: str) -> None:
    """Refuse absurd dense shapes caused by a stray huge id."""
    if cells > _MAX_CELLS:
        raise EplbError(f"{source}: ids imply {cells} load cells (too many); check the layer and expert ids")


def _read_csv_long(data: bytes, source: str) -> Trace:
    """Long CSV: one ``[window,]layer,expert,load`` row per cell; missing cells are 0."""
    df, lines = _load_csv_frame(data, source)
    missing = [c for c in ("layer", "expert", "load") if c not in df.columns]
    if missing:
        raise EplbError(
            f"{source}: CSV lacks column {', '.join(missing)} (found: {', '.join(df.columns)}); "
            "long CSV needs layer,expert,load and optionally window"
        )
    wcol = _window_column(df, source)
    w_idx, windows = _window_ids(df, wcol, lines, source)
    l_idx, layers = _ids(_numbers(df, "layer", lines, source, ids=True))
    e_idx, experts = _ids(_numbers(df, "expert", lines, source, ids=True))
    load = _numbers(df, "load", lines, source, ids=False)
    _check_cells(windows * layers * experts, source)
    flat = (w_idx * layers + l_idx) * experts + e_idx
    _reject_duplicates(flat, lines, source, "(window, layer, expert)" if wcol else "(layer, expert)")
    out = torch.zeros(windows * layers * experts, dtype=torch.float64)
    out[flat] = load
    return _trace(out.reshape(windows, layers, experts), source)


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


def _read_csv_wide(data: bytes, source: str) -> Trace:
    """Wide CSV: ``[window,]layer`` then one column per expert (``0``, ``e0`` or ``expert_0``)."""
    df, lines = _load_csv_frame(data, source)
    if "layer" not in df.columns:
        raise EplbError(
            f"{source}: CSV lacks column layer (found: {', '.join(df.columns)}); "
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
                f"{source}: column {col!r} is not an expert column; name expert columns 0,1,... or e0,e1,..."
            )
        eid = int(match.group(1))
        if eid in expert_cols:
            raise EplbError(f"{source}: columns {expert_cols[eid]!r} and {col!r} both name expert {eid}; keep one")
        expert_cols[eid] = col
    if not expert_cols:
        raise EplbError(f"{source}: CSV has no expert columns; add columns e0,e1,... with the loads")
    experts = max(expert_cols) + 1
    w_idx, windows = _window_ids(df, wcol, lines, source)
    l_idx, layers = _ids(_numbers(df, "layer", lines, source, ids=True))
    _check_cells(windows * layers * experts, source)
    _reject_duplicates(w_idx * layers + l_idx, lines, source, "(window, layer)" if wcol else "layer")
    rows = torch.zeros(len(df), experts, dtype=torch.float64)
    for eid, col in expert_cols.items():
        rows[:, eid] = _numbers(df, col, lines, source, ids=False)
    out = torch.zeros(windows * layers, experts, dtype=torch.float64)
    out[w_idx * layers + l_idx] = rows
    return _trace(out.reshape(windows, layers, experts), source)


def _format_number_column(values: torch.Tensor) -> list:
    """Values as Python ints when all are exact integers, else floats (round-trip exact)."""
    if bool(((values == values.round()) & (values.abs() < _EXACT_INT)).all()):
        return values.to(torch.int64).tolist()
    return values.tolist()


def _write_csv_long(trace: Trace) -> bytes:
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


def _write_csv_wide(trace: Trace) -> bytes:
    """Wide CSV: ``[window,]layer,e0,...``; one row per window and layer."""
    import pandas as pd

    w, l, e = trace.load.shape
    columns: dict[str, list] = {}
    if w > 1:
        columns["window"] = torch.arange(w).repeat_interleave(l).tolist()
    columns["layer"] = torch.arange(l).repeat(w).tolist()
    rows = trace.load.reshape(w * l, e)
    integral = bool(((rows == rows.round()) & (rows.abs() < _EXACT_INT)).all())
    for j in range(e):
        col = rows[:, j]
        columns[f"e{j}"] = col.to(torch.int64).tolist() if integral else col.tolist()
    return pd.DataFrame(columns).to_csv(index=False, lineterminator="\n").encode()


# --------------------------------------------------------------------- JSON (SGLang, vLLM)


def parse_json(data: bytes, source: str, nesting: str = "a trace is at most 3 levels of lists") -> Any:
    """Parse JSON bytes (a trace or a placement file) with one-line errors naming the file.

    ``nesting`` says what the file should look like when it is nested too deeply.
    """
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise EplbError(f"{source}: not UTF-8 text; save the JSON as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise EplbError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); fix or re-export the file"
        ) from None
    except RecursionError:
        raise EplbError(f"{source}: JSON nested too deeply; {nesting}") from None


def _json_kind(obj: Any, source: str) -> str:
    """``sglang`` or ``vllm`` from the top-level keys of a parsed JSON document."""
    if isinstance(obj, dict):
        if "logical_count" in obj:
            return "sglang"
        if "load_history" in obj:
            return "vllm"
        if "physical_to_logical_map" in obj:
            raise EplbError(f"{source}: holds a placement (physical_to_logical_map), not loads; give a load trace")
        keys = ", ".join(map(str, list(obj)[:8])) or "none"
    else:
        keys = f"a JSON {type(obj).__name__}, not an object"
    raise EplbError(
        f"{source}: JSON has neither 'logical_count' (SGLang) nor 'load_history' (vLLM) (found: {keys}); "
        "give an expert-load JSON"
    )


def _read_sglang_obj(obj: Any, source: str) -> Trace:
    """SGLang ``{"logical_count": [L, E] or [steps, L, E]}`` (parsed JSON or .pt dict)."""
    if not isinstance(obj, dict) or "logical_count" not in obj:
        found = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
        raise EplbError(f"{source}: no 'logical_count' key (found: {found}); give an SGLang expert-distribution dump")
    meta = {}
    if isinstance(obj.get("model"), str):
        meta["model"] = obj["model"]
    return _trace(obj["logical_count"], source, meta, what="logical_count")


def _read_vllm_obj(obj: Any, source: str) -> Trace:
    """vLLM/ADRS ``{"load_history": [{"logical_expert_load": [L][E]}, ...]}``."""
    history = obj.get("load_history") if isinstance(obj, dict) else None
    if not isinstance(history, list):
        raise EplbError(f"{source}: 'load_history' must be a list of entries; give a vLLM expert-load JSON")
    if not history:
        raise EplbError(f"{source}: 'load_history' is empty; record at least one step")
    windows = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "logical_expert_load" not in entry:
            raise EplbError(f"{source}: load_history[{i}] has no 'logical_expert_load'; fix that entry")
        load = _trace(entry["logical_expert_load"], source, what=f"load_history[{i}].logical_expert_load").load
        if load.shape[0] != 1:
            raise EplbError(
                f"{source}: load_history[{i}].logical_expert_load must be [layers, experts], "
                f"got shape {tuple(load.shape)}; fix that entry"
            )
        if windows and load.shape != windows[0].shape:
            raise EplbError(
                f"{source}: load_history[{i}] has shape {tuple(load.shape[1:])} but entry 0 has "
                f"{tuple(windows[0].shape[1:])}; every entry must have the same layers and experts"
            )
        windows.append(load)
    return _trace(torch.cat(windows), source)


def _json_bytes(obj: Any) -> bytes:
    """Compact JSON with a trailing newline."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def _nested(values: torch.Tensor) -> list:
    """Nested lists of ints when exact, else floats."""
    if bool(((values == values.round()) & (values.abs() < _EXACT_INT)).all()):
        return values.to(torch.int64).tolist()
    return values.tolist()


def _write_sglang(trace: Trace) -> bytes:
    """SGLang JSON: ``logical_count`` as [L, E] for one window, else [W, L, E]."""
    load = trace.load[0] if trace.windows == 1 else trace.load
    return _json_bytes({"logical_count": _nested(load)})


def _write_vllm(trace: Trace) -> bytes:
    """vLLM/ADRS JSON: one ``load_history`` entry per window."""
    return _json_bytes({"load_history": [{"logical_expert_load": _nested(w)} for w in trace.load]})


# --------------------------------------------------------------------- torch.save files (SGLang)


def _torch_load(data: bytes | Path, source: str) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; any failure is one line.

    A pickle that asks for anything but tensors and plain containers is refused
    by torch before any of it runs; the message says why, in one line.
    """
    handle = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(handle, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle, zip and torch raise many unrelated types for bad files
        text = str(exc)
        if "Weights only load failed" in text:
            skip = ("Please file an issue", "Check the documentation")
            detail = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith(skip)]
            reason = detail[0][:120] if detail else "unsupported content"
            raise EplbError(
                f"{source}: refused to load this torch.save file ({reason}); eplb loads .pt files with "
                "weights_only=True, which allows plain tensors, lists and dicts and never runs code from them; "
                "re-dump it with torch.save"
            ) from None
        raise EplbError(
            f"{source}: not a readable torch.save file ({_short(exc)}); "
            "re-dump it (only plain tensors, lists and dicts load)"
        ) from None


def _read_sglang_pt(data: bytes, source: str) -> Trace:
    """SGLang ``.pt`` dump: ``stat`` mode (``logical_count``) or one ``per_pass`` file (``records``)."""
    obj = _torch_load(data, source)
    if isinstance(obj, dict) and "records" in obj and "logical_count" not in obj:
        return _per_pass_trace([(source, obj)], source)
    return _read_sglang_obj(obj, source)


def _read_per_pass_folder(folder: Path, source: str) -> Trace:
    """All ``.pt`` files of an SGLang ``per_pass`` dump folder, ranks summed."""
    files = sorted(p for p in folder.glob("*.pt") if p.is_file())
    if not files:
        raise EplbError(f"{source}: folder holds no .pt files; give the SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR folder")
    return _read_per_pass_files(files, source)


def _read_per_pass_files(files: list[Path], source: str) -> Trace:
    """Load each per_pass dump and merge them."""
    check_memory(source, sum(p.stat().st_size for p in files) * _PARSE_FACTOR["sglang-pt"])
    dumps = [(str(p), _torch_load(_read_file_bytes(p, str(p)), str(p))) for p in files]
    return _per_pass_trace(dumps, source)


def _per_pass_logical(dump: Any, name: str) -> list[tuple[int | None, torch.Tensor]]:
    """``(forward_pass_id, logical count [L, E])`` for every record of one dump."""
    if not isinstance(dump, dict) or "records" not in dump or "last_physical_to_logical_map" not in dump:
        found = ", ".join(map(str, list(dump)[:8])) if isinstance(dump, dict) else type(dump).__name__
        raise EplbError(
            f"{name}: not an SGLang per_pass dump "
            f"(needs 'records' and 'last_physical_to_logical_map', found: {found}); "
            "record with --expert-distribution-recorder-mode per_pass"
        )
    try:
        phy2log = torch.as_tensor(dump["last_physical_to_logical_map"]).to(torch.int64)
    except (TypeError, ValueError, RuntimeError):
        raise EplbError(f"{name}: last_physical_to_logical_map is not an integer array; re-dump it") from None
    if phy2log.dim() != 2 or 0 in phy2log.shape or bool((phy2log < 0).any()):
        raise EplbError(
            f"{name}: last_physical_to_logical_map must be non-negative ints [layers, slots], "
            f"got shape {tuple(phy2log.shape)}; re-dump it"
        )
    records = dump["records"]
    if not isinstance(records, list):
        raise EplbError(f"{name}: 'records' must be a list; re-dump it")
    experts = int(phy2log.max()) + 1
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "global_physical_count" not in rec:
            raise EplbError(f"{name}: records[{i}] has no 'global_physical_count'; re-dump it")
        try:
            count = _list_tensor(rec["global_physical_count"]).to(torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise EplbError(f"{name}: records[{i}].global_physical_count is not a numeric array; re-dump it") from None
        if count.shape != phy2log.shape:
            raise EplbError(
                f"{name}: records[{i}].global_physical_count has shape {tuple(count.shape)} but the map has "
                f"{tuple(phy2log.shape)}; both must be [layers, physical slots]"
            )
        logical = torch.zeros(phy2log.shape[0], experts, dtype=torch.float64).scatter_add_(1, phy2log, count)
        fid = rec.get("forward_pass_id")
        out.append((int(fid) if isinstance(fid, int) else None, logical))
    return out


def _per_pass_trace(dumps: list[tuple[str, Any]], source: str) -> Trace:
    """Merge per_pass dumps: sum records of equal ``forward_pass_id`` (one per rank) into one window."""
    by_pass: dict[int, torch.Tensor] = {}
    shape = None
    for name, dump in dumps:
        for k, (fid, logical) in enumerate(_per_pass_logical(dump, name)):
            key = fid if fid is not None else k
            if shape is not None and logical.shape != shape:
                raise EplbError(
                    f"{name}: counts have shape {tuple(logical.shape)} but earlier dumps have {tuple(shape)}; "
                    "give dumps of one model run"
                )
            shape = logical.shape
            by_pass[key] = by_pass[key] + logical if key in by_pass else logical
    if not by_pass:
        raise EplbError(f"{source}: per_pass dump holds no records; record some forward passes before dumping")
    load = torch.stack([by_pass[k] for k in sorted(by_pass)])
    return _trace(load, source)


# --------------------------------------------------------------------- TensorRT-LLM statistics folder


def _read_trtllm(folder: Path, source: str) -> Trace:
    """TensorRT-LLM ``meta_info.json`` + ``rank{r}.safetensors`` (keys ``{iter}_{layer}``), ranks summed."""
    meta_path = folder / "meta_info.json"
    if not meta_path.is_file():
        raise EplbError(f"{source}: no meta_info.json; give the EXPERT_STATISTIC_PATH folder TensorRT-LLM wrote")
    info = parse_json(_read_file_bytes(meta_path, str(meta_path)), str(meta_path))
    experts = info.get("num_experts") if isinstance(info, dict) else None
    if not isinstance(experts, int) or isinstance(experts, bool) or experts < 1:
        raise EplbError(f"{meta_path}: needs a positive integer 'num_experts'; re-run the statistic dump")
    files = sorted(p for p in folder.glob("rank*.safetensors") if not p.name.endswith("_raw.safetensors"))
    if not files:
        raise EplbError(f"{source}: no rank*.safetensors files; copy every rank's statistic file into the folder")
    cells: dict[tuple[int, int], torch.Tensor] = {}
    for path in files:
        name = str(path)
        with _open(path, name) as fh:
            infos, _ = stf.read_header(fh, name)
            stf.check_extent(infos, path.stat().st_size, name)
            for key, info in infos.items():
                match = re.fullmatch(r"(\d+)_(\d+)", key)
                if match is None:
                    raise EplbError(
                        f"{name}: key {key!r} is not '<iteration>_<layer>'; give TensorRT-LLM statistic files"
                    )
                if info.shape != (experts,):
                    raise EplbError(
                        f"{name}: {key} has shape {info.shape}, expected [{experts}] (num_experts); "
                        "check meta_info.json belongs to these files"
                    )
                cell = (int(match.group(1)), int(match.group(2)))
                value = stf.read_rows(fh, info, 0, experts, name).to(torch.float64)
                cells[cell] = cells[cell] + value if cell in cells else value
    if not cells:
        raise EplbError(
            f"{source}: rank files hold no statistics; check EXPERT_STATISTIC_ITER_RANGE covered some iterations"
        )
    iters = sorted({i for i, _ in cells})
    layer_ids = sorted({l for _, l in cells})
    _check_cells(len(iters) * len(layer_ids) * experts, source)
    w_of = {it: k for k, it in enumerate(iters)}
    l_of = {ly: k for k, ly in enumerate(layer_ids)}
    load = torch.zeros(len(iters), len(layer_ids), experts, dtype=torch.float64)
    for (it, ly), value in cells.items():
        load[w_of[it], l_of[ly]] = value
    return _trace(load, source, {"layer_ids": layer_ids})


# --------------------------------------------------------------------- tables and small helpers


def _short(exc: BaseException) -> str:
    """First line of an exception's text, trimmed, for one-line messages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


_BYTE_READERS: dict[str, Callable[[bytes, str], Trace]] = {
    "safetensors": _read_safetensors,
    "csv": _read_csv_long,
    "csv-wide": _read_csv_wide,
    "sglang-pt": _read_sglang_pt,
}
_JSON_READERS: dict[str, Callable[[Any, str], Trace]] = {
    "sglang": _read_sglang_obj,
    "vllm": _read_vllm_obj,
}
_FOLDER_READERS: dict[str, Callable[[Path, str], Trace]] = {
    "sglang-per-pass": _read_per_pass_folder,
    "trtllm": _read_trtllm,
}
_WRITERS: dict[str, Callable[[Trace], bytes]] = {
    "safetensors": _write_safetensors,
    "csv": _write_csv_long,
    "csv-wide": _write_csv_wide,
    "sglang": _write_sglang,
    "vllm": _write_vllm,
}

