"""Retrainer against a plain training loop written out step by step, on the tiny Llama."""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from influcoder.io.samples import Sample
from influcoder.validation.retrain import Recipe, Retrainer
from influcoder.validation.settings import ValidateArguments

from ..conftest import SMALL_PAIRS

POOL = [Sample(id=f"p{i}", prompt=p, response=r) for i, (p, r) in enumerate(SMALL_PAIRS[:7])]
EVAL = {
    "heldout": [
        Sample(id="q0", prompt="What is the capital of Italy?", response="Rome."),
        Sample(id="q1", prompt="Tell me about the sea.", response="It is deep."),
    ]
}
ARGS = ValidateArguments(epochs=2, lr=1e-2, batch_size=3, batch_tokens=40, seeds=(0,))


def recipe_for(model_dir) -> Recipe:
    from influcoder.groundtruth.decoder import resolve_decoder
    from influcoder.io.models import fingerprint

    return Recipe(
        model=str(model_dir),
        model_fingerprint=fingerprint(resolve_decoder(str(model_dir))),
        rank=4,
        alpha=8,
        targets=("q_proj", "v_proj", "down_proj"),
        max_length=64,
        truncation="prompt-left",
        template="chat",
        bf16=False,
    )


def reference_losses(model_dir, recipe, keep, seed, args) -> np.ndarray:
    """A fresh model, a fresh adapter, and the textbook loop: one sample at a time through
    the model's own loss (the mean over its response tokens), averaged over the step's
    samples, AdamW on the LoRA weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from influcoder.groundtruth.lora import attach_lora
    from influcoder.groundtruth.tokenize import tokenize_samples

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = attach_lora(
        model, rank=recipe.rank, alpha=recipe.alpha, targets=recipe.targets, seed=seed
    )

    def tokenized(samples):
        return tokenize_samples(
            tokenizer,
            samples,
            max_length=recipe.max_length,
            truncation=recipe.truncation,
            template=recipe.template,
        )

    def loss(sample):
        ids = torch.tensor([sample.input_ids])
        return model(input_ids=ids, labels=torch.tensor([sample.labels])).loss

    pool = tokenized(POOL)
    order = [i for i in np.random.default_rng(seed).permutation(len(pool)) if i in set(keep)]
    batches = [order[j : j + args.batch_size] for j in range(0, len(order), args.batch_size)]
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    model.train()
    torch.manual_seed(seed)
    for step in range(math.ceil(args.epochs * len(batches))):
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        (sum(loss(pool[i]) for i in batch) / len(batch)).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return np.array([loss(s).item() for s in tokenized(EVAL["heldout"])])


@pytest.fixture(scope="module")
def retrainer(tiny_model_dir):
    return Retrainer(recipe_for(tiny_model_dir), POOL, EVAL, ARGS)


@pytest.mark.parametrize("keep, seed", [(range(7), 0), ([0, 2, 3, 5, 6], 1)])
def test_run_equals_the_plain_loop(retrainer, tiny_model_dir, keep, seed):
    found = retrainer.run(list(keep), seed)["heldout"]
    expected = reference_losses(tiny_model_dir, retrainer.recipe, list(keep), seed, ARGS)
    np.testing.assert_allclose(found, expected, rtol=1e-4)


def test_runs_do_not_leak_into_each_other(retrainer, tiny_model_dir):
    first = retrainer.run([0, 1, 2, 3], 0)["heldout"]
    retrainer.run([4, 5, 6], 2)
    again = retrainer.run([0, 1, 2, 3], 0)["heldout"]
    np.testing.assert_array_equal(first, again)
    other = retrainer.run([0, 1, 2], 0)["heldout"]
    assert not np.allclose(first, other)  # removing samples changes the model


def test_bad_keep_and_wrong_model(retrainer, tiny_model_dir):
    with pytest.raises(ValueError, match="distinct pool indices"):
        retrainer.run([0, 0], 0)
    with pytest.raises(ValueError, match="distinct pool indices"):
        retrainer.run([7], 0)
    from dataclasses import replace

    from influcoder.errors import StoreError

    wrong = replace(recipe_for(tiny_model_dir), model_fingerprint="sha256:other")
    with pytest.raises(StoreError, match="fingerprint differs"):
        Retrainer(wrong, POOL, EVAL, ARGS)


def test_start_losses_and_the_warm_start(retrainer, tiny_model_dir, tmp_path):
    """An empty run measures the starting adapter: the base model for a fresh one (B = 0),
    the saved adapter's model for a warm one."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from influcoder.groundtruth.lora import attach_lora, load_adapter

    base = retrainer.losses(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), retrainer.eval_sets["heldout"]
    )
    np.testing.assert_allclose(retrainer.run([], 0)["heldout"], base, rtol=1e-6)
    model = attach_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        rank=4,
        alpha=8,
        targets=("q_proj", "v_proj", "down_proj"),
        seed=5,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    model.save_pretrained(tmp_path / "adapter")
    warmed = retrainer.losses(
        load_adapter(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter"
        ).eval(),
        retrainer.eval_sets["heldout"],
    )
    assert not np.allclose(warmed, base)
    warm_args = replace(ARGS, start="warm")
    with pytest.raises(ValueError, match="warmed-up adapter"):
        Retrainer(retrainer.recipe, POOL, EVAL, warm_args)
    warm = Retrainer(retrainer.recipe, POOL, EVAL, warm_args, adapter=tmp_path / "adapter")
    np.testing.assert_allclose(warm.run([], 0)["heldout"], warmed, rtol=1e-6)
    trained = warm.run([0, 1, 2], 0)["heldout"]
    np.testing.assert_array_equal(trained, warm.run([0, 1, 2], 0)["heldout"])
    assert not np.allclose(trained, warmed)
    assert not np.allclose(trained, retrainer.run([0, 1, 2], 0)["heldout"])


def test_a_recipe_without_layers_records_as_before(tiny_model_dir):
    recipe = recipe_for(tiny_model_dir)
    assert "layers" not in recipe.record()  # run keys of older stores stay the same
    assert recipe.record() == {k: v for k, v in asdict(recipe).items() if k != "layers"}
    layered = replace(recipe, layers=(1,))
    assert layered.record()["layers"] == [1]


def test_a_layered_recipe_retrains_only_those_blocks(tiny_model_dir):
    recipe = replace(recipe_for(tiny_model_dir), layers=(1,))
    retrainer = Retrainer(recipe, POOL, EVAL, ARGS)
    adapter = retrainer._fresh_adapter(0)
    adapted = {
        n.split(".layers.")[1].split(".")[0] for n, _ in adapter.named_parameters() if "lora_" in n
    }
    assert adapted == {"1"}
    found = retrainer.run([0, 1, 2, 3], 0)["heldout"]
    everywhere = Retrainer(recipe_for(tiny_model_dir), POOL, EVAL, ARGS).run([0, 1, 2, 3], 0)
    assert not np.allclose(found, everywhere["heldout"])


def test_a_sample_in_several_sets_is_measured_once_with_the_same_losses(tiny_model_dir):
    """The control drawn from the held-out file: every set gets its own losses, in its own
    order, as if measured alone, and the shared samples are evaluated once."""
    heldout = EVAL["heldout"] + [Sample(id="q2", prompt="Name a colour.", response="Blue.")]
    sets = {"heldout": heldout, "control": [heldout[2], heldout[0]]}
    both = Retrainer(recipe_for(tiny_model_dir), POOL, sets, ARGS)
    assert len(both._unique) == 3
    found = both.run([0, 1, 2, 3], 0)
    alone = Retrainer(recipe_for(tiny_model_dir), POOL, {"control": sets["control"]}, ARGS)
    np.testing.assert_allclose(found["control"], alone.run([0, 1, 2, 3], 0)["control"], rtol=1e-5)
    np.testing.assert_array_equal(found["control"], found["heldout"][[2, 0]])
    assert found["heldout"].shape == (3,)
