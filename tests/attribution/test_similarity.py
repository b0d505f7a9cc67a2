"""Encoders that compare by dot product (a linear head whose lengths are kept) against the
definition spelled out in numpy over plain sentence-transformers calls, through every path that
encodes or scores: the backends, the torch-free query encoder, the ``encode`` store, ``index`` +
``attribute``, ``evaluate``'s encoder method, a multi-view directory; and the refusals (int8
storage, unknown similarities)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influcoder.distillation.export import append_head
from influcoder.distillation.linear import LinearHead
from influcoder.encoders.backends import FastEncoder, query_encoder
from influcoder.encoders.directory import (
    ST_CONFIG,
    VIEWS_FILE,
    encoder_similarity,
    save_multi_view,
)
from influcoder.encoders.views import sample_encoder
from influcoder.errors import InflucoderError
from influcoder.io.samples import Sample

from ..tiny_encoders import pool_rows

SAMPLES = [Sample(r["id"], r["prompt"], r["response"]) for r in pool_rows()]
OUT = 6


def _head(dim: int, similarity: str) -> LinearHead:
    rng = np.random.default_rng(1)
    return LinearHead(
        weight=rng.standard_normal((OUT, dim)) / np.sqrt(dim),
        bias=0.1 * rng.standard_normal(OUT),
        alpha=1.0,
        components=OUT,
        similarity=similarity,
    )


@pytest.fixture(scope="module")
def dot_encoder(tiny_encoder, tmp_path_factory):  # noqa: F811
    """The tiny encoder with a random head appended, compared by dot product: (path, head)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_encoder), device="cpu")
    head = _head(model.get_embedding_dimension(), "dot")
    out = tmp_path_factory.mktemp("dot") / "enc"
    append_head(model, head).save(str(out))
    return out, head


def reference(tiny_dir, head: LinearHead, texts) -> np.ndarray:
    """The definition: the tiny encoder's own (unit) output, the head, nothing rescaled."""
    from sentence_transformers import SentenceTransformer

    x = SentenceTransformer(str(tiny_dir), device="cpu").encode(list(texts), convert_to_numpy=True)
    return x.astype(np.float64) @ head.weight.T + head.bias


def texts(samples):
    return [f"{s.prompt}\n\n{s.response}" for s in samples]


def test_the_saved_encoder_declares_dot_and_keeps_lengths(dot_encoder, tiny_encoder):  # noqa: F811
    path, head = dot_encoder
    assert json.loads((path / ST_CONFIG).read_text())["similarity_fn_name"] == "dot"
    assert encoder_similarity(str(path)) == "dot"
    assert encoder_similarity(str(tiny_encoder)) == "cosine"
    assert encoder_similarity("all-minilm-l6-v2") == "cosine"
    enc = FastEncoder(str(path), backend="torch", batch_size=3)
    got = enc.encode(texts(SAMPLES))
    expected = reference(tiny_encoder, head, texts(SAMPLES))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert norms.std() > 0.01 and not np.allclose(norms, 1.0, atol=1e-2)  # really not rescaled


def test_a_cosine_head_still_gives_unit_vectors(tiny_encoder, tmp_path):  # noqa: F811
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_encoder), device="cpu")
    head = _head(model.get_embedding_dimension(), "cosine")
    append_head(model, head).save(str(tmp_path / "enc"))
    assert encoder_similarity(str(tmp_path / "enc")) == "cosine"
    got = FastEncoder(str(tmp_path / "enc"), backend="torch").encode(texts(SAMPLES))
    y = reference(tiny_encoder, head, texts(SAMPLES))
    np.testing.assert_allclose(got, y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-5)


def test_onnx_and_the_torch_free_query_encoder_keep_lengths(
    dot_encoder,
    tiny_encoder,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from influcoder.encoders.backends import encoder_fingerprint, export_for_queries
    from influcoder.encoders.onnx_query import LightEncoder

    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    path, head = dot_encoder
    expected = reference(tiny_encoder, head, texts(SAMPLES))
    onnx = FastEncoder(str(path), backend="onnx", batch_size=4)
    np.testing.assert_allclose(onnx.encode(texts(SAMPLES)), expected, atol=1e-4)
    assert export_for_queries(str(path), encoder_fingerprint(str(path)))
    light = query_encoder(str(path), backend="onnx", max_seq_length=onnx.max_seq_length)
    assert isinstance(light, LightEncoder) and light.similarity == "dot"
    np.testing.assert_allclose(light.encode(texts(SAMPLES)), expected, atol=1e-4)


def test_encode_index_attribute_and_evaluate_score_by_dot_product(
    dot_encoder, tiny_encoder, tmp_path
):  # noqa: F811
    from influcoder.attribution.attributor import Attributor
    from influcoder.attribution.build import build_index
    from influcoder.attribution.encode import encode
    from influcoder.attribution.settings import EncodeArguments
    from influcoder.evaluation.baselines import encoder_scores
    from influcoder.groundtruth.influence import cosine_scores

    path, head = dot_encoder
    pool = reference(tiny_encoder, head, texts(SAMPLES))
    store = encode(
        SAMPLES,
        tmp_path / "emb",
        EncodeArguments(encoder=str(path), backend="torch", dtype="float32", shard_rows=7),
        progress=False,
    )
    assert store.setup["normalized"] is False
    np.testing.assert_allclose(store.vectors(), pool, atol=1e-5)
    np.testing.assert_allclose(cosine_scores(store, store), pool @ pool.T, atol=1e-4)  # `score`

    rows = tmp_path / "pool.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in pool_rows()))
    build_index(rows, tmp_path / "index", str(path), backend="torch", progress=False)
    attributor = Attributor.load(tmp_path / "index", backend="torch")
    queries = [SAMPLES[3], Sample("q", "How do I boil water?", "In a pot.")]
    expected = pool @ reference(tiny_encoder, head, texts(queries)).T
    for j, result in enumerate(attributor.attribute(queries, k=5)):
        want = np.argsort(-expected[:, j], kind="stable")[:5]
        assert [h.sample.id for h in result.hits] == [SAMPLES[i].id for i in want]
        np.testing.assert_allclose([h.score for h in result.hits], expected[want, j], atol=1e-4)

    scores, _ = encoder_scores(str(path), SAMPLES[:10], queries)
    np.testing.assert_allclose(scores, expected[:10], atol=1e-4)


@pytest.mark.parametrize("approx", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_exact_dot_product_top_k(
    dot_encoder,
    tiny_encoder,  # noqa: F811
    tmp_path,
    approx,
):
    """HNSW and IVF over vectors whose lengths differ (a dot encoder's) return the same top-k
    as the exact dot products of the definition, with scores within their float16 codes."""
    from influcoder.attribution.build import build_index
    from influcoder.attribution.index import open_index

    path, head = dot_encoder
    rows = tmp_path / "pool.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in pool_rows()))
    index = build_index(
        rows, tmp_path / "index", str(path), backend="torch", approx=approx, progress=False
    )
    assert index.kind == approx
    pool = reference(tiny_encoder, head, texts(SAMPLES))
    lengths = np.linalg.norm(pool, axis=1)
    assert lengths.max() > 1.2 * lengths.min()  # the lengths are part of the ranking here
    queries = reference(
        tiny_encoder,
        head,
        [f"{p}\n\n{r}" for p, r in [("How do I boil water?", "In a pot."), ("t0w1 f3", "t1w2")]],
    ).astype(np.float32)
    scores, found = open_index(tmp_path / "index").search(queries, 5)
    exact = pool @ queries.T
    for j in range(len(queries)):
        want = np.argsort(-exact[:, j], kind="stable")[:5]
        np.testing.assert_array_equal(found[j], want)
        np.testing.assert_allclose(scores[j], exact[want, j], rtol=2e-3, atol=2e-3)


def test_int8_storage_is_refused_for_a_dot_product_encoder(dot_encoder, tmp_path):
    from influcoder.attribution.encode import encode
    from influcoder.attribution.settings import EncodeArguments

    with pytest.raises(InflucoderError, match="int8.*float16"):
        encode(
            SAMPLES,
            tmp_path / "emb",
            EncodeArguments(encoder=str(dot_encoder[0]), backend="torch", dtype="int8"),
            progress=False,
        )
    assert not (tmp_path / "emb").exists()


def test_a_multi_view_encoder_compares_by_its_declared_similarity(
    tiny_encoder,  # noqa: F811
    tmp_path,
):
    from sentence_transformers import SentenceTransformer

    backbone = SentenceTransformer(str(tiny_encoder), device="cpu")
    head = _head(2 * backbone.get_embedding_dimension(), "dot")
    out = tmp_path / "mv"
    out.mkdir()
    save_multi_view(out, backbone, ("text", "response"), head.saved(), "dot")
    assert encoder_similarity(str(out)) == "dot"

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x = np.hstack(
        [
            unit(backbone.encode(texts(SAMPLES))),
            unit(backbone.encode([s.response for s in SAMPLES])),
        ]
    )
    enc = sample_encoder(str(out), lambda p: FastEncoder(p, backend="torch"))
    np.testing.assert_allclose(
        enc.encode_samples(SAMPLES), x @ head.weight.T + head.bias, atol=1e-5
    )


@pytest.mark.parametrize("where", ["st", "views"])
def test_an_unknown_similarity_is_refused_naming_file_and_field(
    dot_encoder,
    tiny_encoder,  # noqa: F811
    tmp_path,
    where,
):
    import shutil

    from sentence_transformers import SentenceTransformer

    if where == "st":
        out = tmp_path / "enc"
        shutil.copytree(dot_encoder[0], out)
        config, field = out / ST_CONFIG, "similarity_fn_name"
    else:
        out = tmp_path / "mv"
        out.mkdir()
        backbone = SentenceTransformer(str(tiny_encoder), device="cpu")
        head = _head(backbone.get_embedding_dimension(), "dot")
        save_multi_view(out, backbone, ("text",), head.saved())
        config, field = out / VIEWS_FILE, "similarity"
    spec = json.loads(config.read_text())
    spec[field] = "euclidean"
    config.write_text(json.dumps(spec))
    with pytest.raises(InflucoderError, match=f"{config.name}.*{field}"):
        encoder_similarity(str(out))
