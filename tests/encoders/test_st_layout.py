"""A one-view encoder directory with a kernel or linear head loads in plain
sentence-transformers, with no custom code and no ``trust_remote_code``, in a process where
influcoder cannot even be imported, and gives influcoder's own vectors; several views are
refused there in one line naming influcoder; every directory has a model card."""

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


#: Run in a fresh interpreter where ``import influcoder`` fails: plain sentence-transformers.
ST_ALONE = """
import json, sys
sys.modules["influcoder"] = None
import numpy as np
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.loads(sys.argv[2])
np.save(sys.argv[3], model.encode(texts, convert_to_numpy=True))
print(model.similarity_fn_name)
"""


def _encode_without_influcoder(path, texts, out):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ST_ALONE, str(path), json.dumps(texts), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out), done.stdout.split()[-1]


@pytest.mark.parametrize("kind", ["kernel", "linear"])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_sentence_transformers_reproduces_the_one_view_encoder(
    backbone, tmp_path, kind, similarity
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

    model = SentenceTransformer(str(out), device="cpu")  # no trust_remote_code
    got = model.encode([encoder_text(s) for s in SAMPLES], convert_to_numpy=True)
    assert got.dtype == np.float32 and got.shape == expected.shape == (3, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0) == (similarity == "cosine")
    assert model.similarity_fn_name == similarity
    modules = json.loads((out / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)
    card = (out / "README.md").read_text()
    assert "trust_remote_code" not in card and "tiny-base" in card and kind in card
    assert ("dot product" in card) == (similarity == "dot")


def test_the_kernel_head_keeps_its_precision_far_from_its_anchors(backbone, tmp_path):
    """The sigmoid stands for the exponential over the whole range of a kernel's values:
    a large gamma puts most of them near zero, where ``exp(t) - 1`` (ELU) lost them."""
    from sentence_transformers import SentenceTransformer

    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import save_multi_view
    from influcoder.encoders.heads import rbf_kernel
    from influcoder.encoders.views import sample_encoder
    from influcoder.io.samples import encoder_text

    rng = np.random.default_rng(5)
    dim = backbone.get_embedding_dimension()
    anchors = rng.standard_normal((400, dim))
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    head = SavedHead(
        "kernel",
        {"anchors": anchors, "coef": rng.standard_normal((400, 6)) * 50, "bias": np.zeros(6)},
        8.0,
    )
    out = tmp_path / "enc"
    out.mkdir()
    save_multi_view(out, backbone, ("text",), head, "dot")
    expected = sample_encoder(str(out), lambda p: FastEncoder(p, backend="torch")).encode_samples(
        SAMPLES
    )
    got = SentenceTransformer(str(out), device="cpu").encode(
        [encoder_text(s) for s in SAMPLES], convert_to_numpy=True
    )
    x = backbone.encode([encoder_text(s) for s in SAMPLES], convert_to_numpy=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.median(rbf_kernel(x, anchors, 8.0)) < 1e-4  # most kernel values are tiny here
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_it_loads_where_influcoder_cannot_be_imported(backbone, tmp_path):
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import save_multi_view
    from influcoder.encoders.views import sample_encoder
    from influcoder.io.samples import encoder_text

    head = _head("kernel", backbone.get_embedding_dimension(), np.random.default_rng(3))
    out = tmp_path / "enc"
    out.mkdir()
    save_multi_view(out, backbone, ("text",), head, "dot")
    expected = sample_encoder(str(out), lambda p: FastEncoder(p, backend="torch")).encode_samples(
        SAMPLES
    )
    got, similarity = _encode_without_influcoder(
        out, [encoder_text(s) for s in SAMPLES], tmp_path / "v.npy"
    )
    assert similarity == "dot"
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_two_view_directory_is_refused_naming_influcoder(backbone, tmp_path):
    from sentence_transformers import SentenceTransformer

    from influcoder.encoders.directory import VIEWS_FILE, save_multi_view
    from influcoder.errors import InflucoderError

    head = _head("kernel", 2 * backbone.get_embedding_dimension(), np.random.default_rng(3))
    out = tmp_path / "enc"
    out.mkdir()
    save_multi_view(out, backbone, ("text", "response"), head, "dot")
    assert json.loads((out / VIEWS_FILE).read_text())["views"] == ["text", "response"]
    with pytest.raises(ValueError, match="influcoder"):  # not "Unrecognized model"
        SentenceTransformer(str(out), device="cpu")
    with pytest.raises(InflucoderError, match="multi-view encoder.*load it with influcoder"):
        SentenceTransformer(str(out), device="cpu", trust_remote_code=True)
    card = (out / "README.md").read_text()
    assert "text+response" in card and "influcoder encode" in card
