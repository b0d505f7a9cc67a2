"""Token-budget batches, out-of-memory halving and gradient checkpointing, against the
one-sample-at-a-time reference and against uninterrupted runs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from influcoder.errors import InflucoderError
from influcoder.groundtruth.gradients import GradientComputer
from influcoder.groundtruth.lora import attach_lora, gradient_modules, warmup
from influcoder.groundtruth.memory import TokenBudget, is_out_of_memory
from influcoder.groundtruth.tokenize import tokenize_samples
from influcoder.io.samples import Sample
from tests.references import reference_gradients

from ..conftest import write_jsonl

RTOL, ATOL = 1e-4, 1e-5


def _samples(n: int) -> list[Sample]:
    return [
        Sample(id=f"s{i}", prompt="word " * (1 + (7 * i) % 11), response="yes " * (1 + i % 3))
        for i in range(n)
    ]


@pytest.fixture()
def tokenized(tiny_tokenizer):
    return tokenize_samples(tiny_tokenizer, _samples(9), max_length=64)


class InjectedOOM:
    """Makes a real model's first decoder layer raise an out-of-memory error for batches of
    more than ``above`` samples, ``times`` times (then it lets them through)."""

    def __init__(self, model, above: int, times: int, error=torch.cuda.OutOfMemoryError):
        self.above, self.left, self.error, self.raised = above, times, error, []
        layer = next(m for name, m in model.named_modules() if name.endswith("layers.0"))
        self.handle = layer.register_forward_pre_hook(self)

    def __call__(self, module, args):
        batch = args[0].shape[0]
        if batch > self.above and self.left > 0:
            self.left -= 1
            self.raised.append(batch)
            raise self.error(f"CUDA out of memory. Tried to allocate {batch} GiB (injected)")


# --- the budget on its own --------------------------------------------------------------------


def test_budget_covers_every_row_once_and_halves_on_oom(caplog):
    lengths = [30, 10, 20, 40, 10, 30, 20, 10]
    seen = []

    def compute(rows):
        positions = len(rows) * max(lengths[i] for i in rows)
        if positions > 50:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        seen.append(rows)
        return list(rows)

    budget = TokenBudget(max_batch=8, max_tokens=1000)
    with caplog.at_level(logging.WARNING):
        out = list(budget.run(lengths, compute))
    assert sorted(i for rows, _ in out for i in rows) == list(range(len(lengths)))
    assert all(rows == result for rows, result in out) and [r for r, _ in out] == seen
    assert budget.max_tokens <= 50 and "out of memory" in caplog.text
    # the halved budget stays: the next run fails no batch
    list(budget.run(lengths, lambda rows: compute(rows) and None))


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory"),
        RuntimeError("HIP out of memory; tried to allocate 1 GiB"),
    ],
)
def test_one_sample_out_of_memory_is_a_clear_error(error):
    assert is_out_of_memory(error)

    def compute(rows):
        raise error

    with pytest.raises(InflucoderError, match="one sample of 5 tokens alone"):
        list(TokenBudget(4, 100).run([5, 7, 6], compute))


def test_other_errors_pass_through():
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(MemoryError())  # the CPU's: never caught

    def compute(rows):
        raise RuntimeError("shape mismatch")

    budget = TokenBudget(4, 100)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(budget.run([5, 7, 6], compute))
    assert budget.max_tokens == 100


def test_budget_validation():
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBudget(4, 0)


# --- on a real model --------------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 100])
@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_memory_in_a_shard_loses_and_duplicates_nothing(
    tiny_model, tiny_tokenizer, tokenized, times, error
):
    """A model that runs out of memory on batches of more than 2 samples (once, or every time)
    gives the rows of an uninterrupted run and of the one-sample reference, in row order."""
    from influcoder.groundtruth.collect import compute_shard

    model = attach_lora(tiny_model, seed=0)
    computer = GradientComputer(
        model, target="lora-b", sketch_dim=32, pad_token_id=tiny_tokenizer.pad_token_id
    )
    whole = compute_shard(computer, TokenBudget(64, 10_000), tokenized)[0]
    inject = InjectedOOM(model, above=2, times=times, error=error)
    budget = TokenBudget(64, 10_000)
    halved = compute_shard(computer, budget, tokenized)[0]
    inject.handle.remove()
    assert inject.raised and inject.raised[0] == 9 and budget.max_tokens < 10_000
    np.testing.assert_allclose(halved, whole, rtol=RTOL, atol=ATOL)
    ref = reference_gradients(model, tokenized, target="lora-b", sketch_dim=32)
    np.testing.assert_allclose(halved, ref, rtol=RTOL, atol=ATOL)


def test_collect_goes_on_after_out_of_memory(tiny_model_dir, tmp_path, monkeypatch):
    """collect end to end, warm-up included: the store equals an uninterrupted run's."""
    from influcoder import open_store
    from influcoder.groundtruth import decoder
    from influcoder.groundtruth.collect import collect
    from influcoder.groundtruth.settings import CollectArguments

    rows = [{"id": s.id, "prompt": s.prompt, "response": s.response} for s in _samples(12)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    args = CollectArguments(
        model=str(tiny_model_dir),
        warmup_steps=3,
        warmup_batch_size=6,
        sketch_dim=64,
        max_length=64,
        shard_rows=5,
        dtype="float32",
        precision="fp32",
    )  # bf16 rounds differently per batch size
    whole = collect(data, tmp_path / "whole", args, progress=False)

    load, injected = decoder.load_decoder, []

    def load_oom(name):
        model, tok, ref = load(name)
        injected.append(InjectedOOM(model, above=1, times=3))
        return model, tok, ref

    monkeypatch.setattr(decoder, "load_decoder", load_oom)
    halved = collect(data, tmp_path / "halved", args, progress=False)
    assert len(injected[0].raised) == 3
    assert halved.ids == whole.ids and halved.n == 12
    assert halved.setup["adapter"]["origin"] == "warmup"
    np.testing.assert_allclose(halved.vectors(), whole.vectors(), rtol=1e-3, atol=1e-4)
    assert open_store(tmp_path / "halved").manifest["complete"]


def _lora_weights(model):
    return [m.weight.detach().clone() for _, m in gradient_modules(model, "lora")]


def test_warmup_micro_batches_and_oom_give_the_same_adapter(tiny_model_dir, tokenized):
    """A step accumulated over micro-batches of a small token budget, or cut again after an
    out-of-memory error, is the step over the whole batch."""
    from transformers import AutoModelForCausalLM

    def warmed(max_tokens, inject=None):
        model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), seed=0)
        hook = InjectedOOM(model, **inject) if inject else None
        losses = warmup(
            model, [tokenized[:5], tokenized[5:]], steps=3, lr=1e-2, seed=0, max_tokens=max_tokens
        )
        assert hook is None or hook.raised
        return losses, _lora_weights(model)

    losses, weights = warmed(None)
    for max_tokens, inject in [(70, None), (10_000, {"above": 2, "times": 2})]:
        other_losses, other = warmed(max_tokens, inject)
        np.testing.assert_allclose(other_losses, losses, rtol=1e-5)
        for a, b in zip(other, weights):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_decoders_load_with_sdpa_attention(tiny_model_dir):
    from influcoder.groundtruth.decoder import load_decoder

    model, _, _ = load_decoder(str(tiny_model_dir))
    assert model.config._attn_implementation == "sdpa"


# --- gradient checkpointing -------------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir, tokenized, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), seed=0)
    warmup(model, [tokenized[:4]], steps=2, lr=1e-2, seed=0)
    plain = GradientComputer(
        model, target="lora", sketch_dim=0, pad_token_id=tiny_tokenizer.pad_token_id
    )(tokenized)
    computer = GradientComputer(
        model,
        target="lora",
        sketch_dim=0,
        pad_token_id=tiny_tokenizer.pad_token_id,
        gradient_checkpointing=True,
    )
    calls = []
    layer = model.get_base_model().model.layers[1]
    handle = layer.mlp.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    checkpointed = computer(tokenized)
    handle.remove()
    assert calls == [False, True], "each layer runs without grad, then again in backward"
    np.testing.assert_allclose(checkpointed, plain, rtol=RTOL, atol=ATOL)
    ref = reference_gradients(model, tokenized, target="lora", sketch_dim=0)
    np.testing.assert_allclose(checkpointed, ref, rtol=RTOL, atol=ATOL)
    # the model is left as it was: no checkpointing, eval mode
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert not any(m.training for m in model.modules())


def test_warmup_with_gradient_checkpointing_gives_the_same_adapter(tiny_model_dir, tokenized):
    from transformers import AutoModelForCausalLM

    adapters = []
    for flag in (False, True):
        model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), seed=0)
        calls = []
        model.get_base_model().model.layers[0].mlp.register_forward_hook(
            lambda *a, calls=calls: calls.append(torch.is_grad_enabled())
        )
        warmup(
            model,
            [tokenized[:5], tokenized[5:]],
            steps=2,
            lr=1e-2,
            seed=0,
            gradient_checkpointing=flag,
        )
        assert calls == ([False, True] * 2 if flag else [True] * 2)
        adapters.append(_lora_weights(model))
    for a, b in zip(*adapters):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
