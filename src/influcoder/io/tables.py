"""Tables: result rows written to files (JSONL, JSON, CSV, Parquet) and formatted for people
(seconds, bytes, aligned text tables, clipped text).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from influcoder.errors import InputError
from influcoder.io.atomic import atomic_write_bytes
from influcoder.io.samples import FORMATS

OUTPUT_FORMATS = ("jsonl", "json", "csv", "parquet")


def output_format(path: str | os.PathLike) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt not in OUTPUT_FORMATS:
        raise InputError(
            f"unknown output type '{Path(path).suffix}': use .jsonl, .json, .csv or .parquet",
            path=str(path),
        )
    return fmt


def _cell(value):
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False)


def table_bytes(rows: list[dict], fmt: str, *, schema=None) -> bytes:
    """``rows`` encoded as a ``fmt`` file (one of :data:`OUTPUT_FORMATS`), in memory: what
    :func:`write_table` writes, and what the server sends as a download. CSV cells that are
    lists or objects are written as JSON."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if fmt == "json":
        return (json.dumps(rows, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    if fmt == "csv":
        columns = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
        return buf.getvalue().encode("utf-8")
    if fmt != "parquet":
        raise ValueError(f"fmt must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def write_table(path: str | os.PathLike, rows: list[dict], *, schema=None) -> None:
    """Write ``rows`` atomically as JSONL, JSON, CSV or Parquet (by the extension), see
    :func:`table_bytes`."""
    data = table_bytes(rows, output_format(path), schema=schema)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _number(x: float) -> str:
    """Three significant digits, never in scientific notation (999.5 and above would become
    ``1e+03`` with ``.3g``: those are printed as whole numbers)."""
    return f"{x:.3g}" if abs(x) < 999.5 else f"{x:.0f}"


def format_seconds(seconds: float) -> str:
    """``0.42 ms``, ``12.3 ms``, ``1.25 s``, ``3.1 min``: a duration at a readable scale."""
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 1:
        return f"{_number(seconds * 1e3)} ms"
    if seconds < 120:
        return f"{_number(seconds)} s"
    return f"{_number(seconds / 60)} min"


def format_bytes(n: float) -> str:
    """``0 B``, ``384 B``, ``16 KiB``, ``1.5 MiB``: a size at a readable scale."""
    if not math.isfinite(n):
        return "n/a"
    if n < 1024:
        return f"{n:.0f} B"
    if n < 1024**2:
        return f"{_number(n / 1024)} KiB"
    return f"{_number(n / 1024**2)} MiB"


def format_value(column: str, value: Any) -> str:
    """One cell of the results table, as text."""
    if column == "method" or isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if column in ("seconds", "prepare_seconds"):
        return format_seconds(value)
    if column == "bytes_per_sample":
        return format_bytes(value)
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def column_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of the rows, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a plain-text table with aligned columns, for the terminal."""
    columns = column_names(rows)
    cells = [[format_value(c, row.get(c, math.nan)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    align = [str.ljust if c == "method" else str.rjust for c in columns]

    def line(values):
        return "  ".join(a(v, w) for a, v, w in zip(align, values, widths)).rstrip()

    return "\n".join([line(columns), line("-" * w for w in widths)] + [line(r) for r in cells])


def clip_text(text: str, width: int) -> str:
    """``text`` on one line (whitespace runs made single spaces), cut to ``width`` characters
    with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
