"""Gradient recipes as collect settings: row norms and inner-product scores, fewer LoRA layers,
Adam preconditioning; each against a one-sample-at-a-time reference, recorded in the manifest,
inherited by ``--like`` and refused when mixed."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder import open_store
from influcoder.cli import cli

from ..conftest import write_jsonl, write_store

FAST = [
    "--sketch-dim",
    "64",
    "--max-length",
    "64",
    "--batch-size",
    "4",
    "--shard-rows",
    "4",
    "--precision",
    "fp32",
    "--quiet",
]
WARM = ["--adapter-init", "warmup", "--warmup-steps", "3", "--warmup-batch-size", "4"]
QUERIES = [
    {"id": "q1", "prompt": "What is the capital of Spain?", "response": "Madrid."},
    {"id": "q2", "prompt": "How do I poach an egg?", "response": "Simmer it gently."},
]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def collect(data, out, *args):
    r = run("collect", data, "-o", out, *args)
    assert r.exit_code == 0, r.output
    return open_store(out)


def store_reference(store, *, second_moments=None, kfac=None):
    """The one-sample-at-a-time reference of a store's rows and norms: its saved adapter on
    the base model, plain autograd per sample, the dense sketch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from influcoder.groundtruth.lora import load_adapter
    from influcoder.groundtruth.tokenize import resolve_template, tokenize_samples
    from tests.references import reference_gradients

    args = store.manifest["provenance"]["arguments"]
    tok = AutoTokenizer.from_pretrained(args["model"])
    model = load_adapter(
        AutoModelForCausalLM.from_pretrained(args["model"], dtype="float32"), store.path / "adapter"
    )
    tokenized = tokenize_samples(
        tok,
        store.samples,
        max_length=args["max_length"],
        template=resolve_template(tok, args["template"]),
    )
    return reference_gradients(
        model,
        tokenized,
        target=store.setup["gradient"]["target"],
        sketch_dim=args["sketch_dim"],
        sketch_seed=args["sketch_seed"],
        second_moments=second_moments,
        kfac=kfac,
        with_norms=True,
    )


# --- norms and inner products ------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(tiny_model_dir, tmp_path_factory):
    from ..conftest import SMALL_PAIRS

    tmp = tmp_path_factory.mktemp("plain")
    data = write_jsonl(
        tmp / "data.jsonl",
        [{"id": f"s{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(SMALL_PAIRS)],
    )
    pool = collect(data, tmp / "pool", "--model", tiny_model_dir, *WARM, *FAST)
    queries = collect(write_jsonl(tmp / "q.jsonl", QUERIES), tmp / "q", "--like", tmp / "pool")
    return pool, queries


def test_stores_keep_each_rows_norm(plain):
    pool, _ = plain
    unit, norms = store_reference(pool)
    np.testing.assert_allclose(pool.vectors(), unit, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(pool.norms(), norms, rtol=1e-4)
    assert "similarity" not in pool.setup and "norms" not in pool.setup


def test_score_inner_is_the_inner_product_before_normalisation(plain, tmp_path):
    from influcoder.evaluation.baselines import store_scores
    from influcoder.groundtruth.influence import cosine_scores

    pool, queries = plain
    from influcoder.similarity import normalize_rows

    # stored rows are float16: renormalised in float32, then scaled back by their norms
    p = normalize_rows(pool.vectors()) * pool.norms()[:, None]
    q = normalize_rows(queries.vectors()) * queries.norms()[:, None]
    r = run("score", pool.path, queries.path, "--similarity", "inner", "-o", tmp_path / "s")
    assert r.exit_code == 0, r.output
    inner = np.load(tmp_path / "s" / "scores.npy")
    np.testing.assert_allclose(inner, p @ q.T, rtol=1e-5)
    np.testing.assert_allclose(cosine_scores(pool, queries, "inner"), inner, rtol=1e-6)
    np.testing.assert_allclose(store_scores(pool, queries, similarity="inner")[0], inner, rtol=1e-5)
    # not merely a rescaled cosine: the ranking of the pool may change
    cosine = cosine_scores(pool, queries)
    assert not np.allclose(inner / np.abs(inner).max(), cosine / np.abs(cosine).max())


def test_a_store_without_norms_scores_cosine_but_refuses_inner(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    write_store(tmp_path / "old", v)
    write_store(tmp_path / "oldq", v[:2])
    assert run("score", tmp_path / "old", tmp_path / "oldq", "-k", "1").exit_code == 0
    r = run("score", tmp_path / "old", tmp_path / "oldq", "-k", "1", "--similarity", "inner")
    assert r.exit_code == 2
    assert "keeps no row norms" in r.output and "old" in r.output


def test_mixed_recipes_are_refused_naming_the_difference(plain, layered):
    pool, _ = plain
    _, layered_queries = layered
    r = run("score", pool.path, layered_queries.path, "-k", "1")
    assert r.exit_code == 2
    assert "adapter.layers" in r.output and "not comparable" in r.output


# --- fewer LoRA layers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, n, expected",
    [
        ("all", 4, None),
        ("last:1", 4, [3]),
        ("last:4", 4, [0, 1, 2, 3]),
        ("0-1,3", 4, [0, 1, 3]),
        (" 2 ", 4, [2]),
        ("1-1", 2, [1]),
        ("last:2", None, None),
    ],
)
def test_lora_layers_specs(spec, n, expected):
    from influcoder.groundtruth.settings import resolve_lora_layers

    assert resolve_lora_layers(spec, n) == expected


@pytest.mark.parametrize(
    "spec, n, message",
    [
        ("last:0", 4, "must be 'all'"),
        ("last:x", 4, "must be 'all'"),
        ("1-", 4, "must be 'all'"),
        ("a", 4, "must be 'all'"),
        ("3-1", 4, "is empty"),
        ("0-4", 4, "has 4 layers"),
        ("last:5", 4, "has 4 layers"),
        ("", 4, "must be 'all'"),
    ],
)
def test_bad_lora_layers_are_refused(spec, n, message):
    from influcoder.groundtruth.settings import CollectArguments, resolve_lora_layers

    with pytest.raises(ValueError, match=message):
        resolve_lora_layers(spec, n)
    if "layers" not in message:
        with pytest.raises(ValueError, match=message):
            CollectArguments(lora_layers=spec)


def test_lora_layers_are_not_for_a_given_adapter(tmp_path):
    from influcoder.groundtruth.settings import CollectArguments

    with pytest.raises(ValueError, match="own config"):
        CollectArguments(model="m", adapter=str(tmp_path), lora_layers="last:1")


def recipe_stores(model_dir, tmp, *recipe):
    """A pool of the small pairs collected with ``recipe``'s options, and queries like it."""
    from ..conftest import SMALL_PAIRS

    data = write_jsonl(
        tmp / "data.jsonl",
        [{"id": f"s{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(SMALL_PAIRS)],
    )
    pool = collect(data, tmp / "pool", "--model", model_dir, *recipe, *WARM, *FAST)
    queries = collect(write_jsonl(tmp / "q.jsonl", QUERIES), tmp / "q", "--like", tmp / "pool")
    return pool, queries


@pytest.fixture(scope="module")
def layered(tiny_model_dir, tmp_path_factory):
    return recipe_stores(
        tiny_model_dir, tmp_path_factory.mktemp("layered"), "--lora-layers", "last:1"
    )


def test_fewer_lora_layers_adapt_only_those_blocks(layered):
    import json

    pool, queries = layered
    assert pool.setup["adapter"]["layers"] == [1] and queries.setup == pool.setup
    config = json.loads((pool.path / "adapter" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1]
    weights = pool.path / "adapter" / "adapter_model.safetensors"
    from safetensors.numpy import load_file

    names = list(load_file(str(weights)))
    assert names and all(".layers.1." in name for name in names)
    unit, norms = store_reference(pool)
    np.testing.assert_allclose(pool.vectors(), unit, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(pool.norms(), norms, rtol=1e-4)


def test_every_layer_named_is_the_default_setup(tiny_model_dir, small_data, tmp_path):
    """``--lora-layers 0-1`` on a 2-layer model is ``all``: the same store, the same setup."""
    a = collect(
        small_data,
        tmp_path / "a",
        "--model",
        tiny_model_dir,
        "--adapter-init",
        "fresh",
        "--lora-layers",
        "0-1",
        *FAST,
    )
    b = collect(
        small_data, tmp_path / "b", "--model", tiny_model_dir, "--adapter-init", "fresh", *FAST
    )
    assert a.setup == b.setup and "layers" not in a.setup["adapter"]
    np.testing.assert_array_equal(a.vectors(), b.vectors())


@pytest.mark.parametrize("spec, message", [("0-5", "has 2 layers"), ("x", "must be 'all'")])
def test_bad_lora_layers_exit_2_and_write_nothing(
    tiny_model_dir, small_data, tmp_path, spec, message
):
    r = run(
        "collect",
        small_data,
        "-o",
        tmp_path / "s",
        "--model",
        tiny_model_dir,
        "--lora-layers",
        spec,
        *FAST,
    )
    assert r.exit_code == 2 and message in r.output
    assert "lora_layers" in r.output.replace("--lora-layers", "lora_layers")
    assert not (tmp_path / "s").exists()


# --- Adam preconditioning ----------------------------------------------------------------------


def _batch_gradients(model, batch):
    """Plain autograd: the gradient of a batch's mean of per-sample HF losses, per LoRA weight,
    one sample at a time."""
    import torch

    from influcoder.groundtruth.lora import gradient_modules

    named = [(f"{name}.weight", m.weight) for name, m in gradient_modules(model, "lora")]
    grads = {name: torch.zeros_like(w) for name, w in named}
    with torch.enable_grad():
        for sample in batch:
            for _, w in named:
                w.requires_grad_(True)
                w.grad = None
            loss = model(
                input_ids=torch.tensor([sample.input_ids]),
                labels=torch.tensor([sample.labels]),
                use_cache=False,
            ).loss
            (loss / len(batch)).backward()
            for name, w in named:
                grads[name] += w.grad
                w.grad = None
    return grads


def test_one_warmup_step_leaves_the_squared_gradient_as_adams_moments(tiny_model, tokenized):
    """After one AdamW step, bias-corrected v is the first batch's squared gradient."""
    import copy

    from influcoder.groundtruth.lora import attach_lora, warmup

    model = attach_lora(tiny_model, seed=0)
    before = copy.deepcopy(model)
    moments = {}
    warmup(model, [tokenized[:4]], steps=1, lr=1e-3, seed=0, moments=moments)
    expected = _batch_gradients(before, tokenized[:4])
    assert sorted(moments) == sorted(expected)
    for name, g in expected.items():
        np.testing.assert_allclose(moments[name].numpy(), (g**2).numpy(), rtol=1e-3, atol=1e-12)


def test_pool_sample_moments_are_mean_squared_batch_gradients(tiny_model, tokenized):
    from influcoder.groundtruth.lora import attach_lora, gradient_modules, warmup
    from influcoder.groundtruth.precondition import moment_batches, squared_gradient_moments

    model = attach_lora(tiny_model, seed=0)
    warmup(model, [tokenized[:4]], steps=2, lr=1e-2, seed=0)  # B != 0: A has gradients too
    batches = moment_batches(tokenized, 4, seed=3)
    assert [len(b) for b in batches] == [4, 4, 2]
    named = [(f"{n}.weight", m.weight) for n, m in gradient_modules(model, "lora")]
    fast = squared_gradient_moments(model, batches, named, max_tokens=20)  # micro-batches
    for name, _ in named:
        expected = sum(_batch_gradients(model, b)[name] ** 2 for b in batches) / len(batches)
        np.testing.assert_allclose(fast[name].numpy(), expected.numpy(), rtol=1e-3, atol=1e-14)
        assert fast[name].abs().max() > 0


@pytest.mark.parametrize("target", ["lora", "lora-b"])
def test_preconditioned_gradients_equal_the_reference(
    tiny_model, tiny_tokenizer, tokenized, target
):
    """The hooks' sketch of g / (sqrt(v) + eps) equals dividing each sample's autograd
    gradient by it explicitly, then the dense sketch."""
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import attach_lora, warmup
    from tests.references import reference_gradients

    model = attach_lora(tiny_model, seed=0)
    moments = {}
    warmup(model, [tokenized[:4], tokenized[4:8]], steps=3, lr=1e-2, seed=0, moments=moments)
    computer = GradientComputer(
        model,
        target=target,
        sketch_dim=48,
        sketch_seed=1,
        pad_token_id=tiny_tokenizer.pad_token_id,
        preconditioner=moments,
    )
    fast, norms = computer.vectors_and_norms(tokenized)
    ref, ref_norms = reference_gradients(
        model,
        tokenized,
        target=target,
        sketch_dim=48,
        sketch_seed=1,
        second_moments=moments,
        with_norms=True,
    )
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-4)
    plain = GradientComputer(
        model, target=target, sketch_dim=48, sketch_seed=1, pad_token_id=tiny_tokenizer.pad_token_id
    )(tokenized)
    assert np.abs(plain - fast).max() > 0.05  # preconditioning changes the direction


def test_preconditioner_refuses_missing_blocks(tiny_model):
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import attach_lora

    model = attach_lora(tiny_model, seed=0)
    with pytest.raises(ValueError, match="no second moments for"):
        GradientComputer(model, target="lora", sketch_dim=8, preconditioner={})


@pytest.fixture(scope="module")
def adam(tiny_model_dir, tmp_path_factory):
    return recipe_stores(tiny_model_dir, tmp_path_factory.mktemp("adam"), "--precondition", "adam")


def test_collect_precondition_adam_records_and_reuses_the_warmups_moments(adam, plain):
    from influcoder.groundtruth.precondition import load_moments, moments_digest

    pool, queries = adam
    saved = pool.path / "adapter" / "preconditioner.safetensors"
    moments = load_moments(saved)
    recipe = pool.setup["gradient"]["precondition"]
    assert recipe == {
        "kind": "adam",
        "source": "warmup",
        "eps": 1e-8,
        "sha256": moments_digest(moments),
    }
    assert queries.setup == pool.setup
    assert (
        queries.path / "adapter" / "preconditioner.safetensors"
    ).read_bytes() == saved.read_bytes()
    # the same warm-up as the plain store's: the same adapter, another recipe
    assert pool.setup["adapter"] == plain[0].setup["adapter"]
    assert "precondition" not in plain[0].setup["gradient"]
    unit, norms = store_reference(pool, second_moments=moments)
    np.testing.assert_allclose(pool.vectors(), unit, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(pool.norms(), norms, rtol=1e-4)
    r = run("score", pool.path, plain[1].path, "-k", "1")
    assert r.exit_code == 2 and "gradient.precondition" in r.output


def test_adam_without_a_warmup_estimates_the_moments_from_the_data(
    tiny_model_dir, small_data, tmp_path
):
    pool = collect(
        small_data,
        tmp_path / "p",
        "--model",
        tiny_model_dir,
        "--adapter-init",
        "fresh",
        "--precondition",
        "adam",
        *FAST,
    )
    recipe = pool.setup["gradient"]["precondition"]
    assert recipe["source"] == "pool-sample" and pool.setup["gradient"]["target"] == "lora-b"
    assert pool.setup["adapter"]["origin"] == "fresh"
    from influcoder.groundtruth.precondition import load_moments

    unit, _ = store_reference(
        pool, second_moments=load_moments(pool.path / "adapter" / "preconditioner.safetensors")
    )
    np.testing.assert_allclose(pool.vectors(), unit, rtol=1e-3, atol=2e-3)
    again = collect(small_data, tmp_path / "again", "--like", pool.path)
    np.testing.assert_array_equal(again.vectors(), pool.vectors())
