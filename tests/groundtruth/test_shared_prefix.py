"""A prefix every row shares (the chat template's system prompt) run once per batch: the same
losses and the same training steps as the plain pass, and a decoder that cannot do it keeps
the plain pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from influcoder.groundtruth.lora import attach_lora, gradient_modules, warmup
from influcoder.groundtruth.loss import (
    MIN_SHARED_PREFIX,
    pad_batch,
    response_losses,
    shared_prefix_length,
)
from influcoder.groundtruth.tokenize import tokenize_samples
from influcoder.io.samples import Sample

from ..conftest import SMALL_PAIRS

SAMPLES = [Sample(id=f"s{i}", prompt=p, response=r) for i, (p, r) in enumerate(SMALL_PAIRS[:6])]


@pytest.fixture(scope="module")
def tokenized(tiny_tokenizer):
    return tokenize_samples(
        tiny_tokenizer, SAMPLES, max_length=64, truncation="prompt-left", template="chat"
    )


def _fresh(tiny_model_dir, seed=0):
    from transformers import AutoModelForCausalLM

    return attach_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), seed=seed)


def test_the_shared_prefix_stops_where_rows_differ_or_loss_begins():
    ids = torch.tensor([[5] * 12 + [6, 7, 8], [5] * 12 + [9, 9, 9]])
    labels = torch.full_like(ids, -100)
    labels[:, 13:] = ids[:, 13:]
    assert shared_prefix_length(ids, labels) == 12  # the rows differ from position 12
    labels[:, 10:] = ids[:, 10:]  # position 9 predicts a response token: it must be kept
    assert shared_prefix_length(ids, labels) == 9
    short = ids.clone()
    short[1, MIN_SHARED_PREFIX - 1] = 4
    assert shared_prefix_length(short, labels) == 0  # too short to be worth it
    assert shared_prefix_length(ids[:1], labels[:1]) == 0  # one row: nothing to share


def test_losses_and_gradients_equal_the_plain_pass(tiny_model_dir, tokenized):
    model = _fresh(tiny_model_dir)
    warmup(model, [tokenized[:3], tokenized[3:]], steps=3, lr=1e-2, seed=0)
    ids, mask, labels = pad_batch(tokenized, 0, torch.device("cpu"))
    assert shared_prefix_length(ids, labels) >= MIN_SHARED_PREFIX  # the system prompt
    grads = []
    for share in (False, True):
        model.zero_grad()
        model.train()
        losses = response_losses(model, mask, labels, input_ids=ids, share_prefix=share)
        losses.sum().backward()
        grads.append(
            (losses.detach(), [m.weight.grad.clone() for _, m in gradient_modules(model, "lora")])
        )
    (plain, plain_grads), (shared, shared_grads) = grads
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(shared_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_warmup_with_a_shared_prefix_trains_the_same_adapter(tiny_model_dir, tokenized):
    batches = [tokenized[:3], tokenized[3:]]
    runs = []
    for share in (False, True):
        model = _fresh(tiny_model_dir)
        losses = warmup(model, batches, steps=4, lr=1e-2, seed=0, share_prefix=share)
        runs.append(
            (losses, [m.weight.detach().clone() for _, m in gradient_modules(model, "lora")])
        )
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for a, b in zip(runs[1][1], runs[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_retrainer_shares_only_where_its_probe_says_so(
    tiny_model_dir, tmp_path, tiny_tokenizer
):
    """The tiny Llama passes the probe; openai-gpt's forward takes no cache, so it is probed,
    refused quietly and retrained with whole prompts."""
    from transformers import AutoModelForCausalLM, OpenAIGPTConfig

    from influcoder.groundtruth.decoder import resolve_decoder
    from influcoder.io.models import fingerprint
    from influcoder.validation.retrain import Retrainer
    from tests.validation.test_retrain import ARGS, EVAL, POOL, recipe_for

    assert Retrainer(recipe_for(tiny_model_dir), POOL, EVAL, ARGS).share_prefix
    torch.manual_seed(0)
    gpt = AutoModelForCausalLM.from_config(
        OpenAIGPTConfig(
            vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128
        )
    )
    gpt.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    from dataclasses import replace

    recipe = replace(
        recipe_for(tmp_path),
        model_fingerprint=fingerprint(resolve_decoder(str(tmp_path))),
        targets=("c_attn",),
    )
    retrainer = Retrainer(recipe, POOL, EVAL, ARGS)
    assert not retrainer.share_prefix
    losses = retrainer.run([0, 1, 2], 0)["heldout"]
    assert np.isfinite(losses).all() and len(losses) == len(EVAL["heldout"])
