"""Reading samples, and turning them into tokens with a response-only loss mask.

A *sample* is one prompt/response pair. Files may hold either

* ``prompt`` and ``response`` fields (renameable), or
* chat ``messages`` (a list of ``{"role", "content"}``): the last message must be the
  assistant's and is the response; everything before it is the prompt.

Formats: JSONL (``-`` reads JSONL from stdin), JSON (a list of objects, or an object with a
``data`` list), CSV and Parquet, chosen by the file's extension; anything that is not a path
is taken as a Hugging Face dataset name (read through ``datasets`` where the hub is reachable).

Every sample gets a stable id: its own ``id`` field when present, otherwise one derived from
its content (``sha1-`` + 16 hex digits), so the same text always gets the same id. Duplicate
ids are an error. All validation happens before anything is written: bad input raises
:class:`~influcoder.errors.InputError` naming the file, line and field.

Tokenization renders the prompt with the model's chat template (``add_generation_prompt``),
appends the response as the assistant turn, and masks every prompt token out of the loss
(label -100). The response's tokens include the template's end-of-turn marker, since the
model learns to emit it. Over-long samples are cut by a :data:`TRUNCATION_POLICIES` policy
that gives up prompt tokens before response tokens.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from influcoder.errors import InputError, MissingPackageError

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True)
class Sample:
    """One prompt/response pair.

    ``prompt`` is always plain text (for chat data: the earlier turns, see
    :func:`messages_to_text`); ``messages`` keeps the chat turns before the response, so the
    chat template can render them faithfully. ``meta`` keeps the row's other fields.
    """

    id: str
    prompt: str
    response: str
    messages: tuple[dict, ...] | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        row = {"id": self.id, "prompt": self.prompt, "response": self.response}
        if self.messages is not None:
            row["messages"] = [dict(m) for m in self.messages]
        if self.meta:
            row["meta"] = self.meta
        return row

    @classmethod
    def from_json(cls, row: dict) -> Sample:
        messages = row.get("messages")
        return cls(
            id=row["id"],
            prompt=row["prompt"],
            response=row["response"],
            messages=tuple(messages) if messages is not None else None,
            meta=row.get("meta") or {},
        )


def encoder_text(sample: Sample) -> str:
    """The one text an encoder sees for a sample, in training, encoding and indexing alike:
    the prompt, a blank line, the response."""
    return f"{sample.prompt}\n\n{sample.response}"


def parse_where(where: str | None) -> tuple[str, str] | None:
    """``FIELD=VALUE`` (a condition on a sample's ``meta``) -> ``(field, value)``, both
    stripped; None for None. No ``=`` or no field: ``ValueError``."""
    if where is None:
        return None
    name, sep, value = where.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected FIELD=VALUE, got {where!r}")
    return name.strip(), value.strip()


def messages_to_text(messages: Sequence[dict]) -> str:
    """Plain text of chat turns: a lone user turn is its content; several turns are written
    ``role: content``, one per line."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def content_id(prompt: str, response: str) -> str:
    digest = hashlib.sha1(json.dumps([prompt, response]).encode("utf-8")).hexdigest()
    return f"sha1-{digest[:16]}"


@dataclass(frozen=True)
class Fields:
    """Which fields of a row hold what."""

    prompt: str = "prompt"
    response: str = "response"
    id: str = "id"
    messages: str = "messages"


def _jsonl_rows(stream: io.BufferedIOBase, path: str) -> Iterator[tuple[int, Any]]:
    """Rows of a JSONL file with their line numbers. What Windows tools write is read in full:
    a UTF-8 byte-order mark before the first line, CRLF line ends and blank lines carry no
    data (line numbers still count every line)."""
    for lineno, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"not valid UTF-8 (byte {e.start})", path=path, line=lineno) from None
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(
                f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=lineno
            ) from None


def _decode(data: bytes, path: str) -> str:
    """A whole file's UTF-8 text (a leading byte-order mark dropped); a bad byte is located."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte {e.start})", path=path, line=line) from None


def _json_rows(data: bytes, path: str) -> Iterator[tuple[int, Any]]:
    """Rows of a JSON array (or ``{"data": [...]}``) with the line each element starts on."""
    text = _decode(data, path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=e.lineno
        ) from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc, start = doc["data"], text.index("[", text.index('"data"'))
    elif isinstance(doc, list):
        start = text.index("[")
    else:
        raise InputError(
            "expected a JSON list of objects, or an object with a 'data' list", path=path, line=1
        )
    # Walk the array again with raw_decode to learn where each element starts.
    decoder, pos = json.JSONDecoder(), start + 1
    for item in doc:
        while text[pos] in " \t\r\n,":
            pos += 1
        _, end = decoder.raw_decode(text, pos)
        yield text.count("\n", 0, pos) + 1, item
        pos = end


def _csv_rows(data: bytes, path: str) -> Iterator[tuple[int, Any]]:
    text = _decode(data, path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    line = 1
    try:
        for row in reader:
            yield line + 1, row
            line = reader.line_num
    except csv.Error as e:
        raise InputError(f"invalid CSV: {e}", path=path, line=reader.line_num) from None


def _parquet_rows(path: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"not a readable Parquet file: {e}", path=path) from None
    # Parquet has no lines: we report the row number (1-based) as the line.
    yield from enumerate(table.to_pylist(), start=1)


def _hf_rows(name: str, split: str) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError:
        raise MissingPackageError(
            "datasets",
            f"Reading the Hugging Face dataset '{name}'",
            install="pip install 'influcoder[hf]'",
        ) from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown name, ...: the message is the useful part
        raise InputError(
            f"not a file here, and could not be loaded as a Hugging Face dataset "
            f"(split '{split}'): {type(e).__name__}: {e}",
            path=name,
        ) from None
    yield from enumerate(ds, start=1)


def read_rows(source: str | os.PathLike, *, split: str = "train") -> Iterator[tuple[int, Any]]:
    """Yield ``(line, row)`` for every record of ``source`` (see module docstring)."""
    source = str(source)
    if source == "-":
        yield from _jsonl_rows(sys.stdin.buffer, "<stdin>")
        return
    path = Path(source)
    fmt = FORMATS.get(path.suffix.lower())
    if not path.exists():
        if fmt is not None or os.sep in source or source.startswith("."):
            raise InputError("no such file", path=source)
        yield from _hf_rows(source, split)
        return
    if path.is_dir():
        raise InputError(
            "is a directory, expected a data file (.jsonl, .json, .csv, .parquet)", path=source
        )
    if fmt is None:
        raise InputError(
            f"unknown file type '{path.suffix}': use one of {', '.join(sorted(FORMATS))}",
            path=source,
        )
    if fmt == "jsonl":
        with open(path, "rb") as f:
            yield from _jsonl_rows(f, source)
    elif fmt == "parquet":
        yield from _parquet_rows(source)
    else:
        data = path.read_bytes()
        yield from (_json_rows if fmt == "json" else _csv_rows)(data, source)


def _text_field(row: dict, name: str, path: str, line: int) -> str:
    if name not in row or row[name] is None:
        raise InputError("missing", path=path, line=line, field=name)
    value = row[name]
    if not isinstance(value, str):
        raise InputError(
            f"expected a string, got {type(value).__name__}", path=path, line=line, field=name
        )
    if not value.strip():
        raise InputError("empty", path=path, line=line, field=name)
    return value


def _messages(row: dict, name: str, path: str, line: int) -> tuple[dict, ...]:
    messages = row[name]
    if not isinstance(messages, list) or not messages:
        raise InputError(
            "expected a non-empty list of {role, content} objects", path=path, line=line, field=name
        )
    out = []
    for i, m in enumerate(messages):
        where = f"{name}[{i}]"
        if not isinstance(m, dict):
            raise InputError(
                f"expected an object, got {type(m).__name__}", path=path, line=line, field=where
            )
        role = _text_field(m, "role", path, line) if "role" in m else None
        if role is None:
            raise InputError("missing", path=path, line=line, field=f"{where}.role")
        content = m.get("content")
        if not isinstance(content, str):
            raise InputError(
                f"expected a string, got {type(content).__name__}",
                path=path,
                line=line,
                field=f"{where}.content",
            )
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant":
        raise InputError(
            f"the last message must be the assistant's (the response), "
            f"got role '{out[-1]['role']}'",
            path=path,
            line=line,
            field=name,
        )
    if not out[-1]["content"].strip():
        raise InputError("empty", path=path, line=line, field=f"{name}[{len(out) - 1}].content")
    if len(out) < 2:
        raise InputError(
            "needs at least one turn before the assistant's response",
            path=path,
            line=line,
            field=name,
        )
    return tuple(out)


def row_to_sample(row: Any, fields: Fields, path: str, line: int) -> Sample:
    if not isinstance(row, dict):
        raise InputError(f"expected an object, got {type(row).__name__}", path=path, line=line)
    used = {fields.id}
    if fields.messages in row and fields.prompt not in row:
        turns = _messages(row, fields.messages, path, line)
        messages, response = turns[:-1], turns[-1]["content"]
        prompt = messages_to_text(messages)
        used.add(fields.messages)
    else:
        prompt = _text_field(row, fields.prompt, path, line)
        response = _text_field(row, fields.response, path, line)
        messages = None
        used |= {fields.prompt, fields.response}
    raw_id = row.get(fields.id)
    if raw_id is None or raw_id == "":
        sample_id = content_id(prompt, response)
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        sample_id = str(raw_id)
    else:
        raise InputError(
            f"expected a string or integer, got {type(raw_id).__name__}",
            path=path,
            line=line,
            field=fields.id,
        )
    meta = {k: v for k, v in row.items() if k not in used}
    try:
        json.dumps(meta)
    except (TypeError, ValueError):
        meta = {k: str(v) for k, v in meta.items()}
    return Sample(id=sample_id, prompt=prompt, response=response, messages=messages, meta=meta)


def load_samples(
    source: str | os.PathLike,
    *,
    fields: Fields | None = None,
    split: str = "train",
    limit: int | None = None,
) -> list[Sample]:
    """Read and validate every sample of ``source``; raise :class:`InputError` on the first
    problem. ``limit`` keeps the first N samples."""
    fields = fields or Fields()
    path = "<stdin>" if str(source) == "-" else str(source)
    samples: list[Sample] = []
    first_line: dict[str, int] = {}
    for line, row in read_rows(source, split=split):
        sample = row_to_sample(row, fields, path, line)
        if sample.id in first_line:
            raise InputError(
                f"duplicate id '{sample.id}' (first seen on line {first_line[sample.id]})",
                path=path,
                line=line,
                field=fields.id,
            )
        first_line[sample.id] = line
        samples.append(sample)
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise InputError("no samples", path=path)
    return samples
