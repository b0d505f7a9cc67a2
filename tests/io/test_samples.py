"""Reading samples and tokenizing them with a response-only loss mask."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from influcoder.errors import InputError
from influcoder.groundtruth.tokenize import tokenize_sample, tokenize_samples
from influcoder.io.samples import Fields, Sample, content_id, encoder_text, load_samples

from ..conftest import write_jsonl

ROWS = [
    {"id": "a", "prompt": "What is the capital of France?", "response": "Paris."},
    {"id": "b", "prompt": "Tell me a joke.", "response": "Why did the chicken cross?"},
]


def _write(tmp_path, fmt, rows):
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=2))
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_formats_read_the_same(tmp_path, fmt):
    samples = load_samples(_write(tmp_path, fmt, ROWS))
    assert [(s.id, s.prompt, s.response) for s in samples] == [
        (r["id"], r["prompt"], r["response"]) for r in ROWS
    ]


def test_json_object_with_data_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ROWS}))
    assert [s.id for s in load_samples(path)] == ["a", "b"]


def test_renamed_fields_and_meta_kept(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"key": 7, "q": "Hi?", "a": "Hello.", "label": 1}])
    (s,) = load_samples(path, fields=Fields(prompt="q", response="a", id="key"))
    assert (s.id, s.prompt, s.response, s.meta) == ("7", "Hi?", "Hello.", {"label": 1})


def test_missing_ids_are_derived_from_content_and_stable(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p2", "response": "r"}]
    )
    a = load_samples(path)
    assert a[0].id == content_id("p", "r") and a[0].id != a[1].id
    assert [s.id for s in load_samples(path)] == [s.id for s in a]


def test_messages(tmp_path):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    (s,) = load_samples(write_jsonl(tmp_path / "d.jsonl", [{"messages": msgs}]))
    assert s.response == "Hello."
    assert s.messages == tuple(msgs[:2])
    assert s.prompt == "system: Be brief.\nuser: Hi?"
    assert encoder_text(s) == "system: Be brief.\nuser: Hi?\n\nHello."


def test_stdin(monkeypatch):
    import io
    import sys

    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert [s.id for s in load_samples("-")] == ["a", "b"]


BAD_JSONL = [
    (b'{"prompt": "p", "response": "r"}\n{"prompt": "p"\n', 2, None, "invalid JSON"),
    (b'{"prompt": "p", "response": "r"}\n{"prompt": "p"}\n', 2, "response", "missing"),
    (b'{"prompt": "p", "response": "  "}\n', 1, "response", "empty"),
    (b'{"prompt": 3, "response": "r"}\n', 1, "prompt", "expected a string, got int"),
    (b'{"id": [1], "prompt": "p", "response": "r"}\n', 1, "id", "expected a string or integer"),
    (b'\n\n{"prompt": "p", "response": "r\xff"}\n', 3, None, "not valid UTF-8"),
    (b"[1, 2]\n", 1, None, "expected an object"),
    (
        b'{"id": "x", "prompt": "p", "response": "r"}\n{"id": "x", "prompt": "q", "response": "s"}\n',
        2,
        "id",
        "duplicate id 'x' (first seen on line 1)",
    ),
    (b'{"messages": [{"role": "user", "content": "hi"}]}\n', 1, "messages", "assistant"),
    (
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}\n',
        1,
        "messages[1].content",
        "expected a string",
    ),
    (b'{"messages": "hi"}\n', 1, "messages", "non-empty list"),
]


@pytest.mark.parametrize("content,line,field,message", BAD_JSONL)
def test_bad_jsonl_is_located(tmp_path, content, line, field, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as e:
        load_samples(path)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), line, field)
    assert message in str(e.value)
    assert str(e.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize(
    "name, content",
    [
        # a JSON array element is located at the line it starts on
        (
            "bad.json",
            '[\n  {"prompt": "p", "response": "r"},\n  {"prompt": "p",\n   "response": 1}\n]',
        ),
        # a CSV record at the line it starts on, even when a quoted field spans lines
        ("bad.csv", 'prompt,response\n"a","b"\n"multi\nline",""\n'),
    ],
)
def test_bad_element_is_located_at_its_first_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as e:
        load_samples(path)
    assert (e.value.line, e.value.field) == (3, "response")


def test_bad_parquet_row_and_type(tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"prompt": ["p", "q"], "response": [1, 2]}).to_parquet(path)
    with pytest.raises(InputError) as e:
        load_samples(path)
    assert (e.value.line, e.value.field) == (1, "response")


@pytest.mark.parametrize(
    "name,message", [("nope.jsonl", "no such file"), ("data.txt", "unknown file type")]
)
def test_bad_paths(tmp_path, name, message):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(InputError, match=message):
        load_samples(tmp_path / name)


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no samples"):
        load_samples(tmp_path / "e.jsonl")


# ---------------------------------------------------------------------------------------------
# Tokenization


def _sample(prompt="What is the capital of France?", response="The capital of France is Paris."):
    return Sample(id="x", prompt=prompt, response=response)


def test_mask_covers_exactly_the_response(tiny_tokenizer):
    s = _sample()
    t = tokenize_sample(tiny_tokenizer, s, max_length=512)
    prefix = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": s.prompt}], tokenize=False, add_generation_prompt=True
    )
    n_prompt = len(tiny_tokenizer(prefix, add_special_tokens=False)["input_ids"])
    assert all(label == -100 for label in t.labels[:n_prompt])
    assert list(t.labels[n_prompt:]) == list(t.input_ids[n_prompt:])
    decoded = tiny_tokenizer.decode(t.input_ids[n_prompt:])
    assert decoded == s.response + "<|im_end|>\n"
    assert t.n_response == len(t.input_ids) - n_prompt


def test_plain_template(tiny_tokenizer):
    t = tokenize_sample(tiny_tokenizer, _sample("Hi", "Yo"), max_length=64, template="plain")
    assert tiny_tokenizer.decode(t.input_ids) == "Hi\nYo<|im_end|>"
    assert t.labels[0] == -100 and t.labels[-1] == t.input_ids[-1]


def test_truncation_policies(tiny_tokenizer):
    s = _sample(prompt="What is the capital of France? " * 20)
    full = tokenize_sample(tiny_tokenizer, s, max_length=10_000)
    n_resp = sum(1 for label in full.labels if label != -100)
    max_length = n_resp + 5
    left = tokenize_sample(tiny_tokenizer, s, max_length=max_length, truncation="prompt-left")
    assert len(left.input_ids) == max_length
    assert left.input_ids[-n_resp:] == full.input_ids[-n_resp:]  # response kept whole
    assert left.input_ids[:5] == full.input_ids[-n_resp - 5 : -n_resp]  # latest prompt kept
    with pytest.raises(InputError, match="no response tokens"):
        tokenize_sample(tiny_tokenizer, s, max_length=max_length, truncation="right")
    with pytest.raises(InputError, match="policy 'error'"):
        tokenize_sample(tiny_tokenizer, s, max_length=max_length, truncation="error")
    # A response longer than the window keeps its beginning and one prompt token.
    tiny = tokenize_sample(tiny_tokenizer, s, max_length=4, truncation="prompt-left")
    assert tiny.labels[0] == -100 and tiny.n_response == 3


def test_tokenize_samples_names_the_file(tiny_tokenizer):
    with pytest.raises(InputError) as e:
        tokenize_samples(
            tiny_tokenizer, [_sample()], max_length=4, truncation="right", path="data.jsonl"
        )
    assert str(e.value).startswith("data.jsonl: field 'sample 'x''")


@pytest.mark.parametrize("ext", ["jsonl", "json"])
def test_files_windows_tools_write_are_read_in_full(tmp_path, ext):
    """A UTF-8 byte-order mark, CRLF line ends and blank lines carry no data."""
    rows = [
        {"id": "a", "prompt": "Hi", "response": "Hello."},
        {"id": "b", "prompt": "Bye", "response": "Goodbye."},
    ]
    clean = tmp_path / f"clean.{ext}"
    windows = tmp_path / f"windows.{ext}"
    if ext == "jsonl":
        clean.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        body = "\r\n".join(["", json.dumps(rows[0]), "", "", json.dumps(rows[1]), "", ""])
    else:
        clean.write_text(json.dumps(rows), encoding="utf-8")
        body = json.dumps(rows, indent=1).replace("\n", "\r\n") + "\r\n\r\n"
    windows.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert load_samples(windows) == load_samples(clean)


def test_bom_file_errors_keep_their_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + b'{"prompt": "a", "response": "b"}\r\n\r\n{"prompt": "a"}\r\n'
    )
    with pytest.raises(InputError, match=r"bad.jsonl:3: field 'response'"):
        load_samples(path)
