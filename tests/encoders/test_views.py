"""Multi-view encoders against a reference written out in numpy over plain sentence-transformers
calls, through every path that encodes: the backends, the torch-free query encoder, the
``encode`` store (local and Ray-style payloads), ``index`` + ``attribute``, ``evaluate``'s
encoder method; and the format's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influcoder.encoders.backends import FastEncoder, query_encoder
from influcoder.encoders.directory import (
    HEAD_FILE,
    VIEWS_FILE,
    is_multi_view,
    read_views,
    save_multi_view,
)
from influcoder.encoders.heads import SavedHead
from influcoder.encoders.views import ViewedEncoder, sample_encoder
from influcoder.errors import InflucoderError
from influcoder.io.samples import Sample

from ..tiny_encoders import pool_rows

SAMPLES = [Sample(r["id"], r["prompt"], r["response"]) for r in pool_rows()]


@pytest.fixture(scope="module")
def viewed(tiny_encoder, tmp_path_factory):  # noqa: F811
    """A multi-view directory over the tiny encoder with a random head: (path, weight, bias)."""
    from sentence_transformers import SentenceTransformer

    backbone = SentenceTransformer(str(tiny_encoder), device="cpu")
    dim = backbone.get_embedding_dimension()
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((12, 2 * dim)), rng.standard_normal(12)
    out = tmp_path_factory.mktemp("viewed") / "enc"
    out.mkdir()
    save_multi_view(
        out, backbone, ("text", "response"), SavedHead("linear", {"weight": weight, "bias": bias})
    )
    return out, weight, bias


def reference(encoder_dir, weight, bias, samples):
    """The definition, spelled out: each view's unit vector by plain sentence-transformers,
    concatenated (text, then response), the head, unit length."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(encoder_dir), device="cpu")

    def unit(texts):
        x = model.encode(texts, convert_to_numpy=True).astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x = np.hstack(
        [
            unit([f"{s.prompt}\n\n{s.response}" for s in samples]),
            unit([s.response for s in samples]),
        ]
    )
    y = x @ weight.T + bias
    return y / np.linalg.norm(y, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_viewed_encoder_equals_the_reference(
    viewed,
    tiny_encoder,
    backend,
    tmp_path,  # noqa: F811
    monkeypatch,
):
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
        monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    path, weight, bias = viewed
    enc = sample_encoder(str(path), lambda p: FastEncoder(p, backend=backend, batch_size=3))
    assert isinstance(enc, ViewedEncoder) and enc.dim == 12 and enc.views == ("text", "response")
    got = enc.encode_samples(SAMPLES)
    np.testing.assert_allclose(got, reference(tiny_encoder, weight, bias, SAMPLES), atol=1e-5)
    # the order of the samples changes nothing but the order of the rows
    np.testing.assert_allclose(enc.encode_samples(SAMPLES[::-1]), got[::-1], atol=1e-6)
    with pytest.raises(InflucoderError, match="encodes samples"):
        enc.encode(["a text"])


def test_the_torch_free_query_encoder_serves_a_multi_view_encoder(
    viewed,
    tiny_encoder,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from influcoder.encoders.backends import export_for_queries
    from influcoder.encoders.onnx_query import LightEncoder

    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    path, weight, bias = viewed
    assert export_for_queries(str(path), "sha256:unused")  # exports the backbone
    enc = query_encoder(str(path), backend="onnx", max_seq_length=64)
    assert isinstance(enc, ViewedEncoder) and isinstance(enc.base, LightEncoder)
    np.testing.assert_allclose(
        enc.encode_samples(SAMPLES), reference(tiny_encoder, weight, bias, SAMPLES), atol=1e-5
    )


def test_encode_index_attribute_and_evaluate_use_every_view(
    viewed,
    tiny_encoder,  # noqa: F811
    tmp_path,
):
    from influcoder.attribution.attributor import Attributor
    from influcoder.attribution.build import build_index
    from influcoder.attribution.encode import encode
    from influcoder.attribution.settings import EncodeArguments
    from influcoder.evaluation.baselines import encoder_scores

    path, weight, bias = viewed
    expected = reference(tiny_encoder, weight, bias, SAMPLES)
    store = encode(
        SAMPLES,
        tmp_path / "emb",
        EncodeArguments(encoder=str(path), backend="torch", dtype="float32", shard_rows=7),
        progress=False,
    )
    np.testing.assert_allclose(store.vectors(), expected, atol=1e-5)
    assert store.setup["text"] == "prompt\n\nresponse | response"

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in pool_rows()))
    build_index(pool, tmp_path / "index", str(path), backend="torch", progress=False)
    attributor = Attributor.load(tmp_path / "index", backend="torch")
    queries = [SAMPLES[3], Sample("q", "How do I boil water?", "In a pot.")]
    _, q = attributor.encode(queries)
    np.testing.assert_allclose(q, reference(tiny_encoder, weight, bias, queries), atol=1e-5)
    top = attributor.attribute(queries[:1], k=3)[0].hits[0]  # a pool sample finds itself
    assert top.sample.id == SAMPLES[3].id and top.score == pytest.approx(1.0, abs=1e-4)

    scores, _ = encoder_scores(str(path), SAMPLES[:10], queries)
    np.testing.assert_allclose(
        scores, expected[:10] @ reference(tiny_encoder, weight, bias, queries).T, atol=1e-5
    )


def test_a_multi_view_directory_is_not_loaded_as_one_model(viewed):
    from influcoder.encoders.directory import load_encoder, resolve_encoder

    path = viewed[0]
    assert is_multi_view(path) and resolve_encoder(str(path)) == str(path)
    with pytest.raises(InflucoderError, match="multi-view encoder"):
        load_encoder(str(path))


def _broken(viewed, tmp_path, edit):
    import shutil

    out = tmp_path / "broken"
    shutil.copytree(viewed[0], out)
    spec = json.loads((out / VIEWS_FILE).read_text())
    edit(out, spec)
    (out / VIEWS_FILE).write_text(json.dumps(spec))
    return out


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda out, s: s.update(format="other"), "field 'format'"),
        (lambda out, s: s.update(version=9), "field 'version'"),
        (lambda out, s: s.update(views=["text", "title"]), "field 'views'"),
        (lambda out, s: s.update(views=[]), "field 'views'"),
        (lambda out, s: s.update(views=["text", "text"]), "field 'views'"),
        (lambda out, s: s.update(views=["text", "response", "response"]), "field 'views'"),
        (lambda out, s: (out / HEAD_FILE).write_bytes(b"not safetensors"), HEAD_FILE),
        (lambda out, s: s.update(views=["text"]) or None, "do not fit|takes"),
    ],
)
def test_bad_multi_view_directories_are_refused_naming_file_and_field(
    viewed, tmp_path, edit, match
):
    out = _broken(viewed, tmp_path, edit)
    with pytest.raises(InflucoderError, match=match):
        read_views(out)
        ViewedEncoder(out, lambda p: FastEncoder(p, backend="torch"))
