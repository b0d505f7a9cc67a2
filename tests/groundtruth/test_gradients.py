"""Per-sample response-only gradients: the batched hook path against the one-at-a-time reference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from influcoder.groundtruth.gradients import GradientComputer, TokenizedSample
from influcoder.groundtruth.lora import (
    attach_lora,
    gradient_modules,
    load_adapter,
    warmup,
)
from tests.references import reference_gradients

CONVERSATIONS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Explain gravity.", "Gravity pulls masses toward each other, like the moon and the sea."),
    ("Tell me a joke.", "Why?"),
    ("How do I boil an egg?", "Put the egg in boiling water for nine minutes."),
]
RTOL, ATOL = 1e-4, 1e-5


def _tokenize(tokenizer, prompt: str, response: str) -> TokenizedSample:
    user = [{"role": "user", "content": prompt}]
    prefix = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        user + [{"role": "assistant", "content": response}], tokenize=False
    )
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(prefix_ids)] == prefix_ids
    return TokenizedSample(ids, [-100] * len(prefix_ids) + ids[len(prefix_ids) :])


def _load(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


def _block_slices(model, target):
    """Column slice of each weight in an unprojected gradient, by module name."""
    slices, start = {}, 0
    for name, module in gradient_modules(model, target):
        slices[name] = slice(start, start + module.weight.numel())
        start += module.weight.numel()
    return slices


@pytest.fixture(scope="module")
def samples(tiny_tokenizer):
    batch = [_tokenize(tiny_tokenizer, p, r) for p, r in CONVERSATIONS]
    assert len({len(s.input_ids) for s in batch}) == len(batch), "lengths must differ (padding)"
    return batch


@pytest.fixture(scope="module")
def warm_lora(tiny_model_dir, samples):
    """A LoRA adapter warmed up a few steps, so its A gradients are non-zero."""
    model = attach_lora(_load(tiny_model_dir), seed=0)
    warmup(model, [samples[:2], samples[2:]], steps=4, lr=1e-2, seed=0)
    return model


@pytest.fixture(scope="module")
def plain_model(tiny_model_dir):
    return _load(tiny_model_dir)


# --- the interchange type ----------------------------------------------------------------------


def test_tokenized_sample():
    sample = TokenizedSample([5, 6, 7, 8], [-100, -100, 7, 8])
    assert sample.input_ids == (5, 6, 7, 8) and sample.n_response == 2
    # labels[0] never counts: nothing predicts the first token.
    assert TokenizedSample([5, 6], [5, -100]).n_response == 0
    with pytest.raises(ValueError, match="same length"):
        TokenizedSample([1, 2, 3], [-100, 2])
    with pytest.raises(ValueError, match="at least one token"):
        TokenizedSample([], [])


# --- which weights -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "count", "kinds"),
    [("lora", 28, {"lora_A", "lora_B"}), ("lora-b", 14, {"lora_B"}), ("full", 14, {"base_layer"})],
)
def test_gradient_modules_on_adapter(warm_lora, target, count, kinds):
    modules = gradient_modules(warm_lora, target)
    names = [name for name, _ in modules]
    assert len(modules) == count and names == sorted(names)
    assert all(isinstance(module, torch.nn.Linear) for _, module in modules)
    present = {kind for kind in ("lora_A", "lora_B", "base_layer") if any(kind in n for n in names)}
    assert present == kinds
    assert not any("embed" in n or "lm_head" in n for n in names)


def test_gradient_modules_on_plain_model(plain_model):
    modules = gradient_modules(plain_model, "full")
    names = [name for name, _ in modules]
    assert len(names) == 14 and names == sorted(names)
    assert not any("embed" in n or "lm_head" in n for n in names)
    with pytest.raises(ValueError, match="LoRA adapter"):
        gradient_modules(plain_model, "lora")
    with pytest.raises(ValueError, match="unknown gradient target"):
        gradient_modules(plain_model, "embeddings")


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (("lm_head",), "LM head"),
        (("embed_tokens",), "embedding"),
        (("q_proj", "nope"), "matches no module"),
        (("mlp",), "only nn.Linear"),
    ],
)
def test_attach_lora_refuses(tiny_model, targets, message):
    with pytest.raises(ValueError, match=message):
        attach_lora(tiny_model, targets=targets)


def test_attach_lora_is_seeded(tiny_model_dir):
    def lora_weights(seed):
        model = attach_lora(_load(tiny_model_dir), seed=seed)
        return {
            name: module.weight.detach().clone() for name, module in gradient_modules(model, "lora")
        }

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = lora_weights(0)
    assert torch.equal(torch.rand(1), expected_next), "attach_lora must not consume the global RNG"
    again, other = lora_weights(0), lora_weights(1)
    for name, weight in first.items():
        assert torch.equal(weight, again[name])
        if "lora_B" in name:
            assert not weight.any()
        else:
            assert weight.any() and not torch.equal(weight, other[name])


# --- fast path == reference --------------------------------------------------------------------


@pytest.mark.parametrize("sketch_dim", [0, 256])
@pytest.mark.parametrize(
    ("model_name", "target"),
    [
        ("warm_lora", "lora"),
        ("warm_lora", "lora-b"),
        ("warm_lora", "full"),
        ("plain_model", "full"),
    ],
)
def test_fast_path_matches_reference(request, samples, model_name, target, sketch_dim):
    model = request.getfixturevalue(model_name)
    computer = GradientComputer(model, target=target, sketch_dim=sketch_dim, sketch_seed=5)
    fast = computer(samples)
    reference = reference_gradients(
        model, samples, target=target, sketch_dim=sketch_dim, sketch_seed=5
    )
    assert fast.shape == (len(samples), computer.output_dim) and fast.dtype == np.float32
    if sketch_dim == 0:
        modules = gradient_modules(model, target)
        assert computer.output_dim == sum(m.weight.numel() for _, m in modules)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(fast, reference, rtol=RTOL, atol=ATOL)
    if model_name == "warm_lora" and target == "lora" and sketch_dim == 0:
        slices = _block_slices(model, target)
        a_columns = np.concatenate(
            [fast[:, cols] for name, cols in slices.items() if "lora_A" in name], axis=1
        )
        assert np.abs(a_columns).max() > 1e-3, "a warmed-up adapter must have non-zero A gradients"


def test_bf16_close_to_float32_reference(warm_lora, samples):
    fast = GradientComputer(warm_lora, target="lora", sketch_dim=0, bf16=True)(samples)
    reference = reference_gradients(warm_lora, samples, target="lora", sketch_dim=0)
    cosines = (fast * reference).sum(axis=1)
    # Measured on this tiny model: about 0.99998 per row.
    assert cosines.min() >= 0.999
    assert not np.allclose(fast, reference, rtol=RTOL, atol=ATOL), "bf16 autocast had no effect"


def test_fresh_adapter_has_exactly_zero_a_gradients(tiny_model, samples):
    model = attach_lora(tiny_model, seed=0)
    full = GradientComputer(model, target="lora", sketch_dim=0)(samples)
    slices = _block_slices(model, "lora")
    a_part = np.concatenate([full[:, c] for name, c in slices.items() if "lora_A" in name], axis=1)
    b_part = np.concatenate([full[:, c] for name, c in slices.items() if "lora_B" in name], axis=1)
    assert (a_part == 0).all()
    assert (np.abs(b_part).max(axis=1) > 0).all()
    # So keeping only B drops nothing: "lora-b" is the "lora" vector without its zeros.
    only_b = GradientComputer(model, target="lora-b", sketch_dim=0)(samples)
    np.testing.assert_allclose(only_b, b_part, rtol=RTOL, atol=ATOL)


# --- the loss: response tokens only, per sample ------------------------------------------------


def test_padded_positions_carry_zero_output_gradient(warm_lora, samples):
    from influcoder.groundtruth.loss import _response_losses, pad_batch

    input_ids, attention_mask, labels = pad_batch(samples, 0, torch.device("cpu"))
    grads = {}

    def keep_output_grad(name):
        def forward_hook(module, args, output):
            output.register_hook(lambda grad: grads.__setitem__(name, grad))

        return forward_hook

    handles = [
        module.register_forward_hook(keep_output_grad(name))
        for name, module in gradient_modules(warm_lora, "full")
    ]
    try:
        # Base weights are frozen: make the embeddings require grad so every output does.
        embeds = warm_lora.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        logits = warm_lora(
            inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False
        ).logits
        _response_losses(logits, labels).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        warm_lora.zero_grad(set_to_none=True)
    assert len(grads) == 14
    for grad in grads.values():
        for row, sample in enumerate(samples):
            n = len(sample.input_ids)
            assert (grad[row, n:] == 0).all()
            assert grad[row, :n].abs().max() > 0


def test_gradient_is_that_of_the_mean_response_loss(warm_lora, samples):
    """A hand-written loss over the response positions only, one sample, plain autograd."""
    sample = samples[1]
    modules = gradient_modules(warm_lora, "lora")
    weights = [module.weight for _, module in modules]
    ids = torch.tensor([sample.input_ids])
    logits = warm_lora(input_ids=ids, use_cache=False).logits[0]
    terms = [
        -torch.log_softmax(logits[t - 1], dim=-1)[sample.input_ids[t]]
        for t in range(1, len(sample.labels))
        if sample.labels[t] != -100
    ]
    assert len(terms) == sample.n_response
    grads = torch.autograd.grad(torch.stack(terms).mean(), weights)
    manual = torch.cat([g.reshape(-1) for g in grads])
    manual = (manual / manual.norm()).numpy()
    fast = GradientComputer(warm_lora, target="lora", sketch_dim=0)([sample])[0]
    np.testing.assert_allclose(fast, manual, rtol=RTOL, atol=ATOL)


def test_masks_and_response_matter(warm_lora, samples, tiny_tokenizer):
    computer = GradientComputer(warm_lora, target="lora", sketch_dim=256)
    sample = samples[0]
    with_prompt_loss = TokenizedSample(sample.input_ids, sample.input_ids)
    other_response = _tokenize(tiny_tokenizer, CONVERSATIONS[0][0], "Paris is the capital.")
    base, prompt_labelled, changed = computer([sample, with_prompt_loss, other_response])
    assert float(base @ prompt_labelled) < 0.99
    assert float(base @ changed) < 0.99


def test_row_does_not_depend_on_the_rest_of_the_batch(warm_lora, samples):
    computer = GradientComputer(warm_lora, target="lora", sketch_dim=256)
    together = computer(samples[:3])
    for row in range(3):
        alone = computer([samples[row]])
        np.testing.assert_allclose(together[row], alone[0], rtol=RTOL, atol=ATOL)
    other_pad = GradientComputer(warm_lora, target="lora", sketch_dim=256, pad_token_id=7)(
        samples[:3]
    )
    np.testing.assert_allclose(together, other_pad, rtol=RTOL, atol=ATOL)


# --- errors and state --------------------------------------------------------------------------


def test_any_object_with_ids_and_labels_is_a_sample(warm_lora, samples):
    computer = GradientComputer(warm_lora, target="lora", sketch_dim=64)
    plain = [SimpleNamespace(input_ids=list(s.input_ids), labels=list(s.labels)) for s in samples]
    np.testing.assert_allclose(computer(plain), computer(samples), rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="row 0: labels"):
        computer([SimpleNamespace(input_ids=[1, 2, 3], labels=[-100, 2])])


def test_sample_without_response_is_refused(warm_lora, samples):
    prompt_only = TokenizedSample(samples[0].input_ids, [-100] * len(samples[0].input_ids))
    computer = GradientComputer(warm_lora, target="lora", sketch_dim=64)
    with pytest.raises(ValueError, match="row 1: .*no response tokens"):
        computer([samples[0], prompt_only])
    with pytest.raises(ValueError, match="row 0: .*no response tokens"):
        reference_gradients(warm_lora, [prompt_only], target="lora", sketch_dim=64)
    with pytest.raises(ValueError, match="empty batch"):
        computer([])


def test_zero_gradient_is_an_error_not_nan(tiny_model, samples):
    with torch.no_grad():
        tiny_model.get_output_embeddings().weight.zero_()
    with pytest.raises(ValueError, match=r"row\(s\) \[0, 1\]"):
        GradientComputer(tiny_model, target="full", sketch_dim=64)(samples[:2])
    with pytest.raises(ValueError, match=r"row\(s\) \[0\]"):
        reference_gradients(tiny_model, samples[:1], target="full", sketch_dim=64)


def test_model_state_is_left_as_it_was(warm_lora, samples):
    flags = {name: p.requires_grad for name, p in warm_lora.named_parameters()}
    assert any(flags.values()) and not all(flags.values())
    warm_lora.train()
    try:
        with torch.no_grad():  # a caller's no_grad must not break the backward pass
            GradientComputer(warm_lora, target="full", sketch_dim=64)(samples)
        reference_gradients(warm_lora, samples[:1], target="full", sketch_dim=64)
        assert warm_lora.training
    finally:
        warm_lora.eval()
    assert {name: p.requires_grad for name, p in warm_lora.named_parameters()} == flags
    assert all(p.grad is None for p in warm_lora.parameters())
    assert not any(module._forward_hooks for module in warm_lora.modules())


def test_computer_validation(warm_lora):
    with pytest.raises(ValueError, match="sketch_dim"):
        GradientComputer(warm_lora, sketch_dim=-1)
    with pytest.raises(ValueError, match="unknown gradient target"):
        GradientComputer(warm_lora, target="head")
    assert GradientComputer(warm_lora, target="lora", sketch_dim=0).output_dim == 8192
    assert GradientComputer(warm_lora, target="lora-b", sketch_dim=0).output_dim == 4096
    assert GradientComputer(warm_lora, target="lora").output_dim == 8192


# --- warm-up and adapters on disk --------------------------------------------------------------


def test_warmup_is_deterministic_and_reduces_the_loss(tiny_model_dir, samples):
    def run(seed):
        model = attach_lora(_load(tiny_model_dir), seed=0)
        losses = warmup(model, [samples[:2], samples[2:]], steps=6, lr=1e-2, seed=seed)
        assert not model.training
        assert all(p.grad is None for p in model.parameters())
        weights = [m.weight.detach().clone() for _, m in gradient_modules(model, "lora")]
        return losses, weights

    losses, weights = run(0)
    again, weights_again = run(0)
    assert len(losses) == 6 and losses == again
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_again))
    # Each batch is visited three times; its loss must go down every time.
    assert losses[0] > losses[2] > losses[4] and losses[1] > losses[3] > losses[5]
    with pytest.raises(ValueError, match="no response tokens"):
        warmup(
            attach_lora(_load(tiny_model_dir)),
            [[TokenizedSample([1, 2], [-100, -100])]],
            steps=1,
            lr=1e-3,
            seed=0,
        )


def test_saved_adapter_gives_the_same_gradients(warm_lora, samples, tiny_model_dir, tmp_path):
    warm_lora.save_pretrained(tmp_path / "adapter")
    loaded = load_adapter(_load(tiny_model_dir), tmp_path / "adapter")
    expected = GradientComputer(warm_lora, target="lora", sketch_dim=128)(samples)
    np.testing.assert_allclose(
        GradientComputer(loaded, target="lora", sketch_dim=128)(samples),
        expected,
        rtol=RTOL,
        atol=ATOL,
    )
