"""The torch-free query encoder (ONNX Runtime + tokenizers) against the ONNX backend it replays,
and attribute's start-up path that never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from influcoder.encoders.backends import (
    FastEncoder,
    encoder_fingerprint,
    onnx_file,
    query_encoder,
)
from influcoder.encoders.onnx_query import LightEncoder, transformer_dir  # noqa: E402

from ..tiny_encoders import pool_rows

TEXTS = [
    "What is the capital of France?\n\nParis.",
    "boil an egg",
    "Tell me a joke. " * 40,
    "",
    "WHY did the chicken cross the road?",
    "the sea is blue and deep and wide",
]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("backend", ["onnx", "int8"])
@pytest.mark.parametrize("max_seq_length", [8, 64])
def test_light_encoder_equals_the_onnx_backend(tiny_encoder, cache, backend, max_seq_length):
    reference = FastEncoder(
        str(tiny_encoder), backend=backend, max_seq_length=max_seq_length, batch_size=2
    )
    expected = reference.encode(TEXTS)
    light = LightEncoder(
        tiny_encoder,
        onnx_file(encoder_fingerprint(str(tiny_encoder)), backend),
        max_seq_length=max_seq_length,
        batch_size=2,
        backend=backend,
    )
    np.testing.assert_allclose(light.encode(TEXTS), expected, atol=1e-5)
    assert light.dim == reference.dim
    # the same tokens, so the same truncation
    assert [len(x) for x in light._tokens(TEXTS)] == reference.token_lengths(TEXTS)


def test_query_encoder_is_light_only_when_the_export_exists(tiny_encoder, cache):
    name = str(tiny_encoder)
    first = query_encoder(name, backend="onnx", max_seq_length=32)
    assert isinstance(first, FastEncoder)  # exports on the way
    second = query_encoder(name, backend="onnx", max_seq_length=32)
    assert isinstance(second, LightEncoder)
    assert isinstance(query_encoder(name, backend="torch", max_seq_length=32), FastEncoder)
    np.testing.assert_allclose(second.encode(TEXTS), first.encode(TEXTS), atol=1e-5)


def test_a_directory_without_a_transformer_module_is_not_light(tmp_path):
    (tmp_path / "modules.json").write_text('[{"idx": 0, "path": "", "type": "x.Other"}]')
    assert transformer_dir(tmp_path) is None
    assert transformer_dir(tmp_path / "missing") is None


def test_attribute_in_a_fresh_process_never_imports_torch(tiny_encoder, cache, tmp_path):
    from influcoder.attribution.build import build_index

    from ..conftest import write_jsonl

    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(12))
    build_index(pool, tmp_path / "index", str(tiny_encoder), progress=False)  # exports ONNX
    code = (
        "import sys\n"
        "from influcoder.cli import main\n"
        f"try:\n    main(['attribute', {str(tmp_path / 'index')!r}, '--text', "
        "'the capital of france', '-k', '2'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules, "
        "'torch was imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "INFLUCODER_CACHE": str(cache)},
    )
    assert out.returncode == 0, out.stderr
    assert "rank" in out.stdout
