"""A one-view encoder directory with a kernel or linear head loads in plain
sentence-transformers (``trust_remote_code=True``) and gives influcoder's own vectors; several
views are refused there, and every directory has a model card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influcoder.encoders.heads import SavedHead
from influcoder.io.samples import Sample

SAMPLES = [
    Sample("a", "what is the capital of france", "paris"),
    Sample("b", "tell me a joke", "why did the chicken cross the road"),
    Sample("c", "how to boil an egg", "boil water then nine minutes"),
]


@pytest.fixture()
def backbone(tiny_encoder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_encoder), device="cpu")


def _head(kind, in_dim, rng):
    if kind == "linear":
        return SavedHead(
            "linear", {"weight": rng.standard_normal((6, in_dim)), "bias": rng.standard_normal(6)}
        )
    return SavedHead(
        "kernel",
        {
            "anchors": rng.standard_normal((9, in_dim)) * 0.3,
            "coef": rng.standard_normal((9, 6)),
            "bias": rng.standard_normal(6),
        },
        0.8,
    )


@pytest.mark.parametrize("kind", ["kernel", "linear"])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_sentence_transformers_reproduces_the_one_view_encoder(
    backbone, tmp_path, monkeypatch, kind, similarity
):
    from sentence_transformers import SentenceTransformer

    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import encoder_similarity, save_multi_view
    from influcoder.encoders.views import ViewedEncoder, sample_encoder
    from influcoder.io.samples import encoder_text

    head = _head(kind, backbone.get_embedding_dimension(), np.random.default_rng(3))
    out = tmp_path / "enc"
    out.mkdir()
    save_multi_view(out, backbone, ("text",), head, similarity, "tiny-base")

    ours = sample_encoder(str(out), lambda p: FastEncoder(p, backend="torch"))
    assert isinstance(ours, ViewedEncoder) and encoder_similarity(str(out)) == similarity
    expected = ours.encode_samples(SAMPLES)

    model = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    got = model.encode([encoder_text(s) for s in SAMPLES], convert_to_numpy=True)
    assert got.dtype == np.float32 and got.shape == expected.shape == (3, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0) == (similarity == "cosine")
    assert model.similarity_fn_name == similarity
    card = (out / "README.md").read_text()
    assert "trust_remote_code=True" in card and "tiny-base" in card and kind in card
    assert ("dot product" in card) == (similarity == "dot")


def test_without_trust_remote_code_sentence_transformers_refuses(backbone, tmp_path):
    from sentence_transformers import SentenceTransformer

    from influcoder.encoders.directory import save_multi_view

    head = _head("kernel", backbone.get_embedding_dimension(), np.random.default_rng(3))
    out = tmp_path / "enc"
    out.mkdir()
    save_multi_view(out, backbone, ("text",), head, "cosine")
    with pytest.raises(Exception, match="trust_remote_code"):
        SentenceTransformer(str(out), device="cpu")


def test_a_two_view_directory_has_a_card_and_no_modules_json(backbone, tmp_path):
    from influcoder.encoders.directory import VIEWS_FILE, save_multi_view

    head = _head("kernel", 2 * backbone.get_embedding_dimension(), np.random.default_rng(3))
    out = tmp_path / "enc"
    out.mkdir()
    save_multi_view(out, backbone, ("text", "response"), head, "dot")
    assert not (out / "modules.json").exists()
    assert json.loads((out / VIEWS_FILE).read_text())["views"] == ["text", "response"]
    card = (out / "README.md").read_text()
    assert "text+response" in card and "trust_remote_code" not in card


def test_the_copied_module_reads_the_config_file_the_writer_names():
    from influcoder.encoders import influcoder_head, st_layout

    assert st_layout.HEAD_CONFIG == influcoder_head.CONFIG_FILE
    assert st_layout.HEAD_SOURCE.is_file()
    assert st_layout.HEAD_MODULE == f"influcoder_head.{influcoder_head.InflucoderHead.__name__}"
