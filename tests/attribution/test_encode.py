"""Encoder backends against the float32 reference, and embedding stores."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder.attribution.encode import encode, quantize_int8
from influcoder.attribution.settings import EncodeArguments
from influcoder.cli import cli
from influcoder.encoders.backends import FastEncoder, encoder_fingerprint
from influcoder.encoders.directory import load_encoder
from influcoder.errors import StoreError
from influcoder.groundtruth.influence import cosine_scores
from influcoder.io.samples import Sample, encoder_text
from influcoder.io.stores import open_store
from influcoder.metrics import spearman

from ..tiny_encoders import POOL, pool_rows

TEXTS = [f"{p}\n\n{r}" for p, r in POOL] + ["hello", "the sea " * 30]


def reference(encoder_dir, texts):
    """Plain sentence-transformers, float32, one call."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(encoder_dir), device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_numpy=True
    )


def pairwise_spearman(a, b):
    iu = np.triu_indices(len(a), 1)
    return spearman((a @ a.T)[iu], (b @ b.T)[iu])


def test_torch_backend_equals_sentence_transformers(tiny_encoder):
    enc = FastEncoder(str(tiny_encoder), backend="torch", batch_size=3)
    got = enc.encode(TEXTS)
    np.testing.assert_allclose(got, reference(tiny_encoder, TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    # Length-bucketed batches put every vector back in input order.
    np.testing.assert_allclose(enc.encode(TEXTS[::-1]), got[::-1], atol=1e-5)


@pytest.mark.parametrize("backend", ["bf16", "onnx", "int8"])
def test_fast_backends_rank_like_float32(tiny_encoder, tmp_path, monkeypatch, backend):
    if backend in ("onnx", "int8"):
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    fast = FastEncoder(str(tiny_encoder), backend=backend, batch_size=4).encode(TEXTS)
    assert pairwise_spearman(reference(tiny_encoder, TEXTS), fast) >= 0.99


def test_fused_bert_float32_equals_sentence_transformers(tiny_encoder):
    """The fused pass (the bf16 backend's fast path) is the same arithmetic as the module tree:
    in float32 it matches sentence-transformers, padded batches and token types included."""
    import torch

    from influcoder.encoders.bert_bf16 import FusedBert, why_not_fusable

    model = load_encoder(str(tiny_encoder)).eval()
    assert why_not_fusable(model) is None
    fused = FusedBert(model, torch.float32)
    for batch in (TEXTS[:1], TEXTS[:3], TEXTS):  # no padding, some, much
        features = model.preprocess(batch)
        got = fused(
            features["input_ids"], features["attention_mask"], features.get("token_type_ids")
        ).numpy()
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        np.testing.assert_allclose(got, reference(tiny_encoder, batch), atol=1e-5)
    # token_type_ids left out means all zeros
    features = model.preprocess(TEXTS)
    np.testing.assert_allclose(
        fused(features["input_ids"], features["attention_mask"]).numpy(),
        fused(
            features["input_ids"],
            features["attention_mask"],
            torch.zeros_like(features["input_ids"]),
        ).numpy(),
    )


def test_bf16_backend_uses_the_fused_pass_only_where_it_is_exact(tiny_encoder, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    from influcoder.encoders.bert_bf16 import why_not_fusable

    assert FastEncoder(str(tiny_encoder), backend="bf16")._fused is not None
    model = load_encoder(str(tiny_encoder))
    cls = SentenceTransformer(
        modules=[model[0], models.Pooling(model.get_embedding_dimension(), pooling_mode="cls")],
        device="cpu",
    )
    assert "pooling is 'cls'" in why_not_fusable(cls)
    cls.save(str(tmp_path / "cls"))
    enc = FastEncoder(str(tmp_path / "cls"), backend="bf16")
    assert enc._fused is None  # the module tree in bf16 instead
    ref = cls.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(enc.encode(TEXTS), ref, atol=0.03)  # bf16 rounding


def test_fingerprint_covers_every_file(tiny_encoder, other_encoder):
    fp = encoder_fingerprint(str(tiny_encoder))
    assert fp.startswith("sha256:") and fp == encoder_fingerprint(str(tiny_encoder))
    assert fp != encoder_fingerprint(str(other_encoder))


def test_int8_quantisation_keeps_cosines():
    x = np.random.default_rng(0).normal(size=(50, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = quantize_int8(x)
    assert q.dtype == np.int8 and np.abs(q).max(axis=1).min() == 127
    qf = q.astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    np.testing.assert_allclose(qf @ x.T, x @ x.T, atol=0.02)


@pytest.mark.parametrize("dtype,atol", [("float16", 2e-3), ("int8", 0.03)])
def test_encode_store(tiny_encoder, tmp_path, dtype, atol):
    samples = [Sample(**{k: r[k] for k in ("id", "prompt", "response")}) for r in pool_rows()]
    args = EncodeArguments(encoder=str(tiny_encoder), backend="torch", dtype=dtype, shard_rows=5)
    store = encode(samples, tmp_path / "emb", args, progress=False)
    again = open_store(tmp_path / "emb")
    assert again.kind == "embeddings" and again.dtype == dtype and again.n == len(samples)
    assert again.setup == {
        "encoder": {"fingerprint": encoder_fingerprint(str(tiny_encoder))},
        "text": "prompt\n\nresponse",
        "max_seq_length": 64,
        "normalized": True,
        "storage": dtype,
    }
    ref = reference(tiny_encoder, [encoder_text(s) for s in samples])
    # Scores from the store (cosine, rows renormalised) match the float32 encoder.
    np.testing.assert_allclose(cosine_scores(store, store), ref @ ref.T, atol=atol)


def test_encode_resumes_after_a_crash(caplog, tiny_encoder, tmp_path, monkeypatch):
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pool_rows()))
    args = EncodeArguments(encoder=str(tiny_encoder), backend="torch", shard_rows=5)
    whole = encode(data, tmp_path / "whole", args, progress=False).vectors()

    calls = {"n": 0}
    real = FastEncoder.encode

    def crash_on_third(self, texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, texts)

    monkeypatch.setattr(FastEncoder, "encode", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        encode(data, tmp_path / "part", args, progress=False)
    with pytest.raises(StoreError, match="incomplete store \\(2 of 5 shards\\)"):
        open_store(tmp_path / "part")
    monkeypatch.setattr(FastEncoder, "encode", real)
    with pytest.raises(StoreError, match="dtype: 'float16' vs 'int8'"):
        encode(
            data,
            tmp_path / "part",
            EncodeArguments(encoder=str(tiny_encoder), backend="torch", shard_rows=5, dtype="int8"),
            progress=False,
        )
    with caplog.at_level(logging.INFO, logger="influcoder"):
        resumed = encode(data, tmp_path / "part", args, progress=False)
    assert caplog.messages == [f"resuming {tmp_path / 'part'}: 10 of 24 samples already done"]
    np.testing.assert_array_equal(resumed.vectors(), whole)


def test_cli_encode_then_score(tiny_encoder, tmp_path):
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pool_rows()))
    runner = CliRunner()
    for name, rows in (("pool", None), ("queries", 3)):
        args = [
            "encode",
            str(data),
            "-e",
            str(tiny_encoder),
            "-o",
            str(tmp_path / name),
            "-q",
            "--backend",
            "torch",
        ] + (["--limit", str(rows)] if rows else [])
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["score", str(tmp_path / "pool"), str(tmp_path / "queries"), "--top-k", "1"]
    )
    assert result.exit_code == 0, result.output
    # Each query's best pool sample is itself.
    for i in range(3):
        assert f"query p{i}:" in result.output
    assert result.output.count("+1.0000  p") == 3


def test_cli_encode_bad_input_exits_2(tiny_encoder, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "encode",
            str(tmp_path / "missing.jsonl"),
            "-e",
            str(tiny_encoder),
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 2 and "no such file" in result.output
    result = CliRunner().invoke(
        cli, ["encode", "x.jsonl", "-e", str(tmp_path / "nope"), "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2


def test_encode_device_is_provenance_and_onnx_stays_on_the_cpu(tiny_encoder, tmp_path, monkeypatch):
    import torch

    from influcoder.encoders.backends import resolve_backend
    from influcoder.io.devices import DeviceError

    samples = [Sample(f"s{i}", p, r) for i, (p, r) in enumerate(POOL[:4])]
    args = EncodeArguments(encoder=str(tiny_encoder), backend="torch")
    store = encode(samples, tmp_path / "e", args, progress=False, device="cpu")
    assert store.manifest["provenance"]["device"] == "cpu"
    assert "device" not in store.manifest["provenance"]["arguments"]
    again = encode(samples, tmp_path / "e", args, progress=False, device="auto")  # resumes as is
    np.testing.assert_array_equal(again.vectors(), store.vectors())
    # auto: bf16 on a GPU whatever the CPU; an ONNX backend ignores the device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device cuda: CUDA is not available"):
        resolve_backend("auto", "cuda")
    assert resolve_backend("onnx", "cuda") == "onnx"


def test_auto_backend_resumes_with_the_stores_own(tiny_encoder, tmp_path, monkeypatch):
    """A store begun where auto meant one backend (bf16 on a GPU) resumes with it on a machine
    where auto means another, instead of being refused."""
    import influcoder.attribution.encode as encode_module

    samples = [Sample(f"s{i}", p, r) for i, (p, r) in enumerate(POOL[:4])]
    first = encode(
        samples,
        tmp_path / "e",
        EncodeArguments(encoder=str(tiny_encoder), backend="torch"),
        progress=False,
    )
    real = encode_module.resolve_backend
    monkeypatch.setattr(
        encode_module, "resolve_backend", lambda b, d="cpu": "bf16" if b == "auto" else real(b, d)
    )
    again = encode(
        samples, tmp_path / "e", EncodeArguments(encoder=str(tiny_encoder)), progress=False
    )
    assert again.manifest["provenance"]["arguments"]["backend"] == "torch"
    np.testing.assert_array_equal(again.vectors(), first.vectors())
    with pytest.raises(StoreError, match="backend"):  # an explicit other backend is refused
        encode(
            samples,
            tmp_path / "e",
            EncodeArguments(encoder=str(tiny_encoder), backend="bf16"),
            progress=False,
        )
