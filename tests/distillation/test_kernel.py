"""The kernel (RBF) head: exact kernel ridge, its settings chosen like a brute-force validation,
chosen over the linear head where the truth is nonlinear, and saved as a multi-view directory
that every encoder path applies the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influcoder.distillation import kernel
from influcoder.distillation.head_fit import fit_head, validation_folds
from influcoder.distillation.kernel import KernelRidge, median_sq_distance
from influcoder.encoders.heads import SavedHead, rbf_kernel, squared_distances
from influcoder.metrics import per_anchor_spearman

from .test_head import _gradient_store, _scipy_figures, _word_samples


def test_rbf_kernel_and_the_saved_map_equal_their_definition_written_out():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    slow = np.array(
        [
            [np.exp(-0.7 * sum((a[i, t] - b[j, t]) ** 2 for t in range(3))) for j in range(4)]
            for i in range(5)
        ]
    )
    np.testing.assert_allclose(rbf_kernel(a, b, 0.7), slow, rtol=1e-12)
    coef, bias = rng.standard_normal((4, 2)), rng.standard_normal(2)
    head = SavedHead("kernel", {"anchors": b, "coef": coef, "bias": bias}, 0.7)
    assert (head.in_dim, head.out_dim) == (3, 2)
    np.testing.assert_allclose(head(a), slow @ coef + bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1e-3, 0.5, 20.0])
def test_kernel_ridge_equals_the_direct_solve(alpha):
    rng = np.random.default_rng(1)
    x, z = rng.standard_normal((30, 4)), rng.standard_normal((30, 3)) + 2.0
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(x, x), d, rtol=1e-12, atol=1e-12)
    fit = KernelRidge(squared_distances(x, x), z, 0.3)
    k = np.exp(-0.3 * d)
    direct = np.linalg.solve(k + alpha * np.eye(30), z - z.mean(0))
    np.testing.assert_allclose(fit.coef(alpha), direct, rtol=1e-7, atol=1e-9)
    assert median_sq_distance(squared_distances(x, x)) == pytest.approx(
        np.median(d[np.triu_indices(30, 1)])
    )


def _nonlinear_geometry(n_pool, n_query, d=3, dim=16, seed=0):
    """Gradients that are a smooth *nonlinear* function of the embeddings (random Fourier
    features of them, one fixed function): a linear map cannot rank like them, a kernel can.
    ``seed`` draws the samples."""
    geometry = np.random.default_rng(0)
    w, phase = geometry.standard_normal((d, dim)) * 1.5, geometry.uniform(0, 2 * np.pi, dim)
    x = np.random.default_rng(seed + 1).standard_normal((n_pool + n_query, d))
    g = np.cos(x @ w + phase) + 0.3
    return x[:n_pool], g[:n_pool], x[n_pool:], g[n_pool:]


def _brute_force(xp, gp, xq, gq, factor, alpha):
    """(per-anchor, aggregated) of one kernel setting on fit_head's folds, spelled out: targets
    from an independent SVD, sklearn's KernelRidge (with the targets' mean as intercept),
    scipy's Spearman, cosine compared."""
    from sklearn.kernel_ridge import KernelRidge as Reference

    figures = []
    for vp, vq in validation_folds(len(xp), len(xq), 4, seed=3):
        fp, fq = np.setdiff1d(np.arange(len(xp)), vp), np.setdiff1d(np.arange(len(xq)), vq)
        x, g = np.vstack([xp[fp], xq[fq]]), np.vstack([gp[fp], gq[fq]])
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        z = g @ np.linalg.svd(g)[2][:8].T
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        gamma = factor / np.median(d[np.triu_indices(len(x), 1)])
        model = Reference(alpha=alpha, kernel="rbf", gamma=gamma).fit(x, z - z.mean(0))
        hp, hq = model.predict(xp[vp]) + z.mean(0), model.predict(xq[vq]) + z.mean(0)
        hp /= np.linalg.norm(hp, axis=1, keepdims=True)
        hq /= np.linalg.norm(hq, axis=1, keepdims=True)
        figures.append(_scipy_figures(gp[vp], gq[vq], hp @ hq.T))
    return np.mean(figures, axis=0)


def test_auto_kind_matches_a_brute_force_validation_and_picks_the_kernel_where_it_is_better():
    xp, gp, xq, gq = _nonlinear_geometry(80, 40)
    alphas, factors = (0.01, 0.3, 10.0), (0.5, 2.0)
    head = fit_head(
        xp,
        gp,
        xq,
        gq,
        components=8,
        alphas=alphas,
        folds=4,
        seed=3,
        kinds=("linear", "kernel"),
        gamma_factors=factors,
        kernel_alphas=alphas,
    )
    expected = {(f, a): _brute_force(xp, gp, xq, gq, f, a) for f in factors for a in alphas}
    assert head.card()["kind"] == "kernel"
    assert set(head.validation) == set(expected)
    np.testing.assert_allclose(
        [head.validation[s] for s in expected], [e[0] for e in expected.values()], atol=1e-5
    )
    best = max(expected, key=lambda s: expected[s][0])
    assert (head.gamma_factor, head.alpha) == best
    ridge_only = fit_head(xp, gp, xq, gq, components=8, alphas=alphas, folds=4, seed=3)
    kinds = head.kinds_validation
    assert kinds["linear"] == pytest.approx(max(ridge_only.validation.values()))
    assert kinds["kernel"] > kinds["linear"] + 0.05
    # and on unseen samples of the same geometry the kernel head ranks better too
    tp, tgp, tq, tgq = _nonlinear_geometry(60, 30, seed=7)
    truth = tgp @ tgq.T / np.outer(np.linalg.norm(tgp, axis=1), np.linalg.norm(tgq, axis=1))

    def cosines(h):
        hp, hq = h(tp), h(tq)
        return hp @ hq.T / np.outer(np.linalg.norm(hp, axis=1), np.linalg.norm(hq, axis=1))

    assert (
        per_anchor_spearman(truth, cosines(head))
        > per_anchor_spearman(truth, cosines(ridge_only)) + 0.1
    )


def test_the_kernel_is_not_formed_over_too_many_samples(monkeypatch):
    """Above the exact size the kernel head runs on landmarks; with none (0) it is dropped
    from a choice and refused alone."""
    xp, gp, xq, gq = _nonlinear_geometry(20, 12)
    monkeypatch.setattr("influcoder.distillation.head_fit.MAX_KERNEL_SAMPLES", 30)
    head = fit_head(xp, gp, xq, gq, components=4, folds=2, kinds=("kernel",), landmarks=9)
    assert head.card()["approximation"] == "nystroem" and head.card()["anchors"] == 9
    head = fit_head(xp, gp, xq, gq, components=4, folds=2, kinds=("linear", "kernel"), landmarks=0)
    assert head.card()["kind"] == "linear" and set(head.kinds_validation) == {"linear"}
    with pytest.raises(ValueError, match="more than 30"):
        fit_head(xp, gp, xq, gq, components=4, folds=2, kinds=("kernel",), landmarks=0)
    with pytest.raises(ValueError, match="kinds"):
        fit_head(xp, gp, xq, gq, components=4, folds=2, kinds=("mlp",))
    assert kernel.MAX_KERNEL_SAMPLES > 1000  # the real limit is untouched


def test_distill_stores_saves_a_kernel_head_as_a_multi_view_directory(
    tiny_encoder_dir, tiny_encoder, tmp_path
):
    """Gradients a nonlinear function of the tiny encoder's embeddings: ``head="kernel"``
    writes a one-view multi-view directory whose vectors, through the encoder every stage
    uses, are the fitted head applied to the unit embeddings."""
    from influcoder.distillation.export import embed
    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import VIEWS_FILE
    from influcoder.encoders.views import sample_encoder
    from influcoder.io.samples import encoder_text

    pool_s, query_s = _word_samples(40, 0, "p"), _word_samples(24, 1, "q")
    rng = np.random.default_rng(4)
    raw = {
        k: embed(tiny_encoder, [encoder_text(s) for s in v])
        for k, v in (("pool", pool_s), ("query", query_s))
    }
    unit = {k: e / np.linalg.norm(e, axis=1, keepdims=True) for k, e in raw.items()}
    w = rng.standard_normal((unit["pool"].shape[1], 24)) * 4
    grads = {k: np.cos(e @ w) + 0.2 for k, e in unit.items()}
    pool = _gradient_store(tmp_path / "gp", pool_s, grads["pool"])
    queries = _gradient_store(tmp_path / "gq", query_s, grads["query"])
    distill_stores(
        pool,
        queries,
        tmp_path / "enc",
        DistillArguments(epochs=0, views="text", head="kernel", head_similarity="cosine"),
        encoder=tiny_encoder_dir,
        progress=False,
    )
    out = tmp_path / "enc"
    spec = json.loads((out / VIEWS_FILE).read_text())
    card = json.loads((out / "influcoder_distill.json").read_text())
    assert spec["views"] == ["text"] and spec["head_kind"] == "kernel"
    assert card["head"]["kind"] == "kernel" and spec["gamma"] == pytest.approx(
        card["head"]["gamma"]
    )
    enc = sample_encoder(str(out), lambda p: FastEncoder(p, backend="torch"))
    from safetensors.numpy import load_file

    t = load_file(str(out / "head.safetensors"))
    got = enc.encode_samples(pool_s[:7])
    ref = rbf_kernel(unit["pool"][:7], t["anchors"], spec["gamma"]) @ t["coef"] + t["bias"]
    np.testing.assert_allclose(got, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    # plain sentence-transformers loads the directory with its head and agrees
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")  # no custom code to trust
    np.testing.assert_allclose(
        st.encode([encoder_text(s) for s in pool_s[:7]]), got, rtol=1e-5, atol=1e-5
    )
    assert "distilled by influcoder" in (out / "README.md").read_text().lower()
    truth = grads["pool"] @ grads["query"].T
    pred = enc.encode_samples(pool_s) @ enc.encode_samples(query_s).T
    assert per_anchor_spearman(truth, pred) > per_anchor_spearman(
        truth, unit["pool"] @ unit["query"].T
    )


@pytest.fixture()
def kernel_dir(tiny_encoder, tmp_path):
    """A two-view multi-view directory over the tiny encoder with a random kernel head compared
    by dot product: (path, head, backbone)."""
    from influcoder.encoders.directory import save_multi_view

    backbone = tiny_encoder
    rng = np.random.default_rng(2)
    dim = 2 * backbone.get_embedding_dimension()
    head = SavedHead(
        "kernel",
        {
            "anchors": rng.standard_normal((9, dim)) * 0.3,
            "coef": rng.standard_normal((9, 5)),
            "bias": rng.standard_normal(5),
        },
        0.8,
    )
    out = tmp_path / "kernel"
    out.mkdir()
    save_multi_view(out, backbone, ("text", "response"), head, "dot")
    return out, head, backbone


def test_every_encoder_path_applies_the_saved_kernel_head(kernel_dir, tmp_path, monkeypatch):
    """torch and the torch-free ONNX query encoder give the head's definition, written out
    over plain sentence-transformers calls, with lengths kept (dot product)."""
    from influcoder.encoders.backends import (
        FastEncoder,
        export_for_queries,
        query_encoder,
    )
    from influcoder.encoders.views import ViewedEncoder, sample_encoder
    from influcoder.io.samples import Sample

    out, head, backbone = kernel_dir
    samples = [
        Sample(f"s{i}", p, r)
        for i, (p, r) in enumerate(
            [("t0w1 f3", "t1w2"), ("f1 f2 t3w0", "t3w1 f0"), ("t2w5", "f9 f8 t2w1")]
        )
    ]

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x = np.hstack(
        [
            unit(backbone.encode([f"{s.prompt}\n\n{s.response}" for s in samples])),
            unit(backbone.encode([s.response for s in samples])),
        ]
    ).astype(np.float64)
    t = head.tensors
    slow = np.array(
        [
            [
                sum(
                    np.exp(-0.8 * np.sum((xi - a) ** 2)) * t["coef"][n, o]
                    for n, a in enumerate(t["anchors"].astype(np.float64))
                )
                + t["bias"][o]
                for o in range(5)
            ]
            for xi in x
        ]
    )
    enc = sample_encoder(str(out), lambda p: FastEncoder(p, backend="torch"))
    assert isinstance(enc, ViewedEncoder) and enc.similarity == "dot"
    np.testing.assert_allclose(enc.encode_samples(samples), slow, rtol=1e-4, atol=1e-5)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    assert export_for_queries(str(out), "sha256:unused")
    light = query_encoder(str(out), backend="onnx", max_seq_length=64)
    np.testing.assert_allclose(light.encode_samples(samples), slow, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda out, s: s.update(head_kind="mlp"), "field 'head_kind'"),
        (lambda out, s: s.pop("gamma"), "field 'gamma'"),
        (lambda out, s: s.update(gamma=-1.0), "field 'gamma'"),
        (lambda out, s: s.update(gamma=True), "field 'gamma'"),
        (lambda out, s: s.pop("head_kind"), "'weight'"),  # read as linear: no weight
        (lambda out, s: _save_tensors(out, coef=np.ones((4, 5))), "do not fit together"),
        (lambda out, s: _save_tensors(out, anchors=np.ones((9, 7))), "takes|does not fit"),
    ],
)
def test_bad_kernel_heads_are_refused_naming_file_and_field(kernel_dir, edit, match):
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import VIEWS_FILE
    from influcoder.encoders.views import ViewedEncoder
    from influcoder.errors import InflucoderError

    out = kernel_dir[0]
    spec = json.loads((out / VIEWS_FILE).read_text())
    edit(out, spec)
    (out / VIEWS_FILE).write_text(json.dumps(spec))
    with pytest.raises(InflucoderError, match=match):
        ViewedEncoder(out, lambda p: FastEncoder(p, backend="torch"))


def test_a_directory_written_before_the_rename_loads(kernel_dir):
    """Views files written before the kinds were named ``linear|kernel`` say
    ``"head_kind": "rbf"``: such a directory (the views file exactly as that release wrote it)
    loads as a kernel head and gives the same vectors."""
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import VIEWS_FILE
    from influcoder.encoders.views import ViewedEncoder
    from influcoder.io.samples import Sample

    out, head, _ = kernel_dir
    samples = [Sample("s0", "t0w1 f3", "t1w2"), Sample("s1", "f1 f2 t3w0", "t3w1 f0")]
    now = ViewedEncoder(out, lambda p: FastEncoder(p, backend="torch")).encode_samples(samples)
    assert json.loads((out / VIEWS_FILE).read_text())["head_kind"] == "kernel"
    (out / VIEWS_FILE).write_text(
        json.dumps(
            {
                "format": "influcoder-views",
                "version": 1,
                "views": ["text", "response"],
                "backbone": "backbone",
                "head": "head.safetensors",
                "head_kind": "rbf",
                "gamma": head.gamma,
                "similarity": "dot",
            },
            indent=2,
        )
        + "\n"
    )
    old = ViewedEncoder(out, lambda p: FastEncoder(p, backend="torch"))
    assert old.head.kind == "kernel" and old.head.gamma == head.gamma
    np.testing.assert_array_equal(old.encode_samples(samples), now)


def _save_tensors(out, **replace):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(out / "head.safetensors"))
    save_file(
        {**tensors, **{k: v.astype(np.float32) for k, v in replace.items()}},
        str(out / "head.safetensors"),
    )


def test_the_head_runs_blas_on_one_thread_and_restores_it(monkeypatch):
    """OpenBLAS threads woken by the head's small products keep spinning and slow the
    encoder's next forward pass (benchmarks/view_overhead.py): the head limits BLAS to one
    thread while it runs, and leaves the setting as it found it."""
    from threadpoolctl import threadpool_info

    from influcoder.encoders import heads

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before, seen = blas_threads(), []
    real = heads.rbf_kernel
    monkeypatch.setattr(heads, "rbf_kernel", lambda *a: seen.append(blas_threads()) or real(*a))
    rng = np.random.default_rng(0)
    head = SavedHead(
        "kernel",
        {
            "anchors": rng.standard_normal((6, 3)),
            "coef": rng.standard_normal((6, 2)),
            "bias": np.zeros(2),
        },
        0.5,
    )
    head(rng.standard_normal((4, 3)))
    assert seen and all(n == 1 for n in seen[0]) and seen[0]
    assert blas_threads() == before


def test_a_linear_head_fitted_on_unit_vectors_reads_them_through_a_normalize(
    tiny_encoder_dir, tiny_encoder, tmp_path, monkeypatch
):
    """With ``--head auto`` on an encoder whose outputs are not unit vectors (the tiny one),
    the one-view heads are fitted on unit vectors (as a kernel head reads them); when the
    linear head is kept (here: the kernel is ruled out by the sample limit, no landmarks) it is still one
    plain sentence-transformers directory, with a Normalize before its Dense, and gives the
    fitted head of the unit embeddings."""
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    from influcoder.distillation.export import embed
    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores
    from influcoder.io.samples import encoder_text

    monkeypatch.setattr("influcoder.distillation.head_fit.MAX_KERNEL_SAMPLES", 10)
    pool_s, query_s = _word_samples(40, 0, "p"), _word_samples(24, 1, "q")
    raw = embed(tiny_encoder, [encoder_text(s) for s in pool_s + query_s])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-4)
    grads = raw @ np.random.default_rng(4).standard_normal((raw.shape[1], 24))
    pool = _gradient_store(tmp_path / "gp", pool_s, grads[:40])
    queries = _gradient_store(tmp_path / "gq", query_s, grads[40:])
    distill_stores(
        pool,
        queries,
        tmp_path / "enc",
        DistillArguments(
            epochs=0, views="text", head="auto", head_similarity="cosine", head_landmarks=0
        ),
        encoder=tiny_encoder_dir,
        progress=False,
    )
    card = json.loads((tmp_path / "enc" / "influcoder_distill.json").read_text())
    assert card["head"]["kind"] == "linear"
    loaded = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    assert [type(m).__name__ for m in loaded][-3:] == ["Normalize", "Dense", "Normalize"]
    dense = load_file(str(next((tmp_path / "enc").glob("*Dense/model.safetensors"))))
    unit = raw[:7] / np.linalg.norm(raw[:7], axis=1, keepdims=True)
    expected = unit @ dense["linear.weight"].T.astype(np.float64) + dense["linear.bias"]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(
        embed(loaded, [encoder_text(s) for s in pool_s[:7]]), expected, atol=1e-5
    )
