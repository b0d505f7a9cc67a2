"""Models as users have them: HF directories of several architectures (LoRA targets found
per family), a PEFT adapter directory (its base from its config), a merged checkpoint."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder import open_store
from influcoder.cli import cli
from influcoder.groundtruth.lora_targets import FAMILIES, find_lora_targets
from influcoder.groundtruth.settings import DEFAULT_LORA_TARGETS, CollectArguments

from ..conftest import build_tiny_tokenizer

FAST = [
    "--sketch-dim",
    "64",
    "--max-length",
    "64",
    "--batch-size",
    "4",
    "--shard-rows",
    "4",
    "--dtype",
    "float32",
    "--precision",
    "fp32",
    "--quiet",
    "--device",
    "cpu",
]
COMMON = {
    "vocab_size": 400,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def _architectures():
    import transformers as t

    gqa = {"num_key_value_heads": 2}
    return {  # name: (config, model class, extra config, expected family)
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, gqa, "llama"),
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM, gqa, "llama"),
        "mistral": (t.MistralConfig, t.MistralForCausalLM, gqa, "llama"),
        "gemma": (t.GemmaConfig, t.GemmaForCausalLM, {**gqa, "head_dim": 8}, "llama"),
        "phi": (t.PhiConfig, t.PhiForCausalLM, {}, "phi"),
        "phi3": (t.Phi3Config, t.Phi3ForCausalLM, gqa, "phi3"),
        "gpt_neox": (t.GPTNeoXConfig, t.GPTNeoXForCausalLM, {}, "gpt_neox"),
        # no SDPA attention (loaded with eager, whatever its error says)
        "gemma2": (t.Gemma2Config, t.Gemma2ForCausalLM, {**gqa, "head_dim": 8}, "llama"),
        # flattens [B, T, d] to [B * T, d] before its MLP
        "opt": (t.OPTConfig, t.OPTForCausalLM, {"ffn_dim": 64, "word_embed_proj_dim": 32}, "opt"),
        # Conv1D layers (weight [in, out])
        "gpt2": (t.GPT2Config, t.GPT2LMHeadModel, {"n_inner": 64}, "gpt2"),
    }


def build(arch: str, seed: int = 0):
    import torch

    config, model_class, extra, _ = _architectures()[arch]
    torch.manual_seed(seed)
    return model_class(config(**COMMON, **extra)).eval()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Saved tiny models (with the test tokenizer) by architecture name, built on demand."""
    made = {}

    def get(arch: str):
        if arch not in made:
            path = tmp_path_factory.mktemp(arch)
            build(arch).save_pretrained(path)
            build_tiny_tokenizer().save_pretrained(path)
            made[arch] = path
        return made[arch]

    return get


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("arch", list(_architectures()))
def test_targets_are_found_per_family(arch):
    from influcoder.groundtruth.lora import attach_lora, gradient_modules

    model = build(arch)
    family, targets = find_lora_targets(model)
    assert family == _architectures()[arch][3]
    assert targets == dict(FAMILIES)[family]
    # GPT-2 names both its attention and its MLP output projections c_proj
    per_layer = len(targets) + (arch == "gpt2")
    peft_model = attach_lora(model, targets=targets)
    # every target is found in every layer, as an A and a B matrix
    assert len(gradient_modules(peft_model, "lora")) == 2 * per_layer * COMMON["num_hidden_layers"]


def test_auto_refuses_an_unknown_architecture():
    from torch import nn

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.c_attn = nn.Embedding(4, 4), nn.Linear(4, 4)

        def get_input_embeddings(self):
            return self.emb

        def get_output_embeddings(self):
            return None

    with pytest.raises(ValueError, match=r"Linear modules \(c_attn\) match none"):
        find_lora_targets(Odd())


def assert_gradients_match_reference(model, target: str = "lora") -> None:
    """Batched hook gradients of ``model`` (LoRA attached by ``auto``, B drawn as if trained)
    equal one-sample autograd (:func:`tests.references.reference_gradients`) on three samples
    of different lengths."""
    import torch

    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import attach_lora
    from influcoder.groundtruth.tokenize import TokenizedSample
    from tests.references import reference_gradients

    model = attach_lora(model, rank=4, targets=find_lora_targets(model)[1])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    batch = [  # different lengths: padding is exercised
        TokenizedSample([5, 17, 33, 9, 40, 41], [-100, -100, -100, 9, 40, 41]),
        TokenizedSample([7, 8, 90, 12], [-100, -100, 90, 12]),
        TokenizedSample([3, 60, 61, 62, 63, 64, 65, 66], [-100, -100, -100, -100, 63, 64, 65, 66]),
    ]
    fast = GradientComputer(model, target=target, sketch_dim=0)(batch)
    reference = reference_gradients(model, batch, target=target, sketch_dim=0)
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["gemma2", "opt", "gpt2"])
@pytest.mark.parametrize("target", ["lora", "full"])
def test_gradients_match_the_reference_per_family(arch, target):
    """Batched hook gradients equal one-sample autograd on the families whose layers differ
    (Conv1D's transposed weight, OPT's flattened MLP activations), with a trained-like B."""
    assert_gradients_match_reference(build(arch), target)


@pytest.mark.parametrize(
    "arch, kind",
    [("t5", "an encoder-decoder model"), ("bert", "an encoder-only model")],
)
def test_a_model_that_is_not_a_causal_lm_is_refused_in_one_line(arch, kind, small_data, tmp_path):
    import transformers as t

    config = {
        "t5": t.T5Config(vocab_size=400, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8),
        "bert": t.BertConfig(**{**COMMON, "num_hidden_layers": 1}),
    }[arch]
    path = tmp_path / arch
    config.save_pretrained(path)  # no weights: refused from its config alone
    build_tiny_tokenizer().save_pretrained(path)
    r = CliRunner().invoke(
        cli, ["collect", str(small_data), "-o", str(tmp_path / "s"), "--model", str(path), *FAST]
    )
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        f"Error: {path}: {arch} is {kind}; collect needs a causal (decoder-only) language model"
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("arch", ["qwen2", "gpt_neox", "phi3", "gemma2", "opt", "gpt2"])
def test_collect_with_auto_targets(arch, model_dirs, small_data, tmp_path):
    r = run(
        "collect",
        small_data,
        "-o",
        tmp_path / "s",
        "--model",
        model_dirs(arch),
        "--lora-targets",
        "auto",
        "--warmup-steps",
        "2",
        *FAST,
    )
    assert r.exit_code == 0, r.output
    store = open_store(tmp_path / "s")
    family = _architectures()[arch][3]
    assert store.setup["adapter"]["targets"] == list(dict(FAMILIES)[family])  # resolved
    assert store.manifest["provenance"]["arguments"]["lora_targets"] == ["auto"]
    assert np.isfinite(store.vectors()).all() and store.n == 10
    # resumed with the same command: the same settings, nothing recomputed
    assert (
        run(
            "collect",
            small_data,
            "-o",
            tmp_path / "s",
            "--model",
            model_dirs(arch),
            "--lora-targets",
            "auto",
            "--warmup-steps",
            "2",
            *FAST,
        ).exit_code
        == 0
    )


def test_default_targets_on_another_family_point_to_auto(model_dirs, small_data, tmp_path):
    r = CliRunner().invoke(
        cli,
        [
            "collect",
            str(small_data),
            "-o",
            str(tmp_path / "s"),
            "--model",
            str(model_dirs("gpt_neox")),
            *FAST,
        ],
    )
    assert r.exit_code == 2
    assert "matches no module" in r.output and "--lora-targets auto" in r.output


def test_auto_on_llama_is_todays_default(tiny_model_dir, small_data, tmp_path):
    """The default targets are unchanged (stores made before stay reproducible) and equal what
    auto finds on a Llama."""
    assert CollectArguments().lora_targets == DEFAULT_LORA_TARGETS
    for name, targets in (("default", []), ("auto", ["--lora-targets", "auto"])):
        assert (
            run(
                "collect",
                small_data,
                "-o",
                tmp_path / name,
                "--model",
                tiny_model_dir,
                "--adapter-init",
                "fresh",
                *targets,
                *FAST,
            ).exit_code
            == 0
        )
    default, auto = open_store(tmp_path / "default"), open_store(tmp_path / "auto")
    assert default.setup == auto.setup
    np.testing.assert_array_equal(default.vectors(), auto.vectors())


# --- PEFT adapter directories and merged checkpoints ----------------------------------------


def _save_adapter(base_dir, path, *, trained: bool, seed: int = 3):
    """A LoRA adapter of the tiny Llama saved by PEFT; ``trained``: B drawn at random (as
    after fine-tuning), else B = 0 (as PEFT initialises it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from influcoder.groundtruth.lora import attach_lora

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = attach_lora(model, rank=4, alpha=8, targets=("q_proj", "v_proj"), seed=seed)
    if trained:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(path)
    return path


def _direct_vectors(base_dir, adapter_dir, data):
    """The reference: the adapter loaded by PEFT onto the base model, gradients taken by
    GradientComputer, rows in the data's order."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from influcoder.groundtruth.collect import compute_shard
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import load_adapter
    from influcoder.groundtruth.memory import TokenBudget
    from influcoder.groundtruth.tokenize import resolve_template, tokenize_samples
    from influcoder.io.samples import load_samples

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = load_adapter(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32"), adapter_dir
    )
    tokenized = tokenize_samples(
        tok,
        load_samples(str(data)),
        max_length=64,
        truncation="prompt-left",
        template=resolve_template(tok, "auto"),
    )
    computer = GradientComputer(
        model, target="lora", sketch_dim=64, sketch_seed=0, pad_token_id=tok.pad_token_id
    )
    return compute_shard(computer, TokenBudget(max_batch=4, max_tokens=100_000), tokenized)[0]


def test_a_peft_adapter_directory_is_the_model(tiny_model_dir, small_data, tmp_path):
    """--model ADAPTER_DIR: its base from adapter_config.json, its own LoRA weights' gradients."""
    trained = _save_adapter(tiny_model_dir, tmp_path / "trained", trained=True)
    untrained = _save_adapter(tiny_model_dir, tmp_path / "untrained", trained=False)
    config = json.loads((trained / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)

    assert (
        run("collect", small_data, "-o", tmp_path / "a", "--model", trained, *FAST).exit_code == 0
    )
    assert (
        run("collect", small_data, "-o", tmp_path / "b", "--adapter", untrained, *FAST).exit_code
        == 0
    )
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    args = a.manifest["provenance"]["arguments"]
    assert args["model"] == str(tiny_model_dir) and args["adapter"] == str(trained)
    assert a.setup["adapter"]["origin"] == "user" and a.setup["gradient"]["target"] == "lora"
    assert a.setup["model"] == b.setup["model"]
    assert a.setup["adapter"]["sha256"] != b.setup["adapter"]["sha256"]
    # the setup describes the adapter as it is, not the (unused) LoRA options
    assert {k: a.setup["adapter"][k] for k in ("rank", "alpha", "targets")} == {
        "rank": 4,
        "alpha": 8,
        "targets": ["q_proj", "v_proj"],
    }
    assert (
        run("collect", small_data, "--like", tmp_path / "a", "-o", tmp_path / "q", "-q").exit_code
        == 0
    )
    assert open_store(tmp_path / "q").setup == a.setup
    # the trained adapter's weights are the ones differentiated
    np.testing.assert_allclose(
        a.vectors(), _direct_vectors(tiny_model_dir, trained, small_data), atol=1e-5
    )
    np.testing.assert_allclose(
        b.vectors(), _direct_vectors(tiny_model_dir, untrained, small_data), atol=1e-5
    )
    cos = np.sum(a.vectors() * b.vectors(), axis=1)
    assert cos.max() < 0.99, "the trained adapter's gradients equal the untrained one's"


def test_model_wins_over_the_adapters_base_with_a_warning(
    tiny_model_dir, small_data, tmp_path, caplog
):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "adapter", trained=True)
    copy = shutil.copytree(tiny_model_dir, tmp_path / "moved-base")
    with caplog.at_level(logging.WARNING, logger="influcoder.groundtruth.settings"):
        args = CollectArguments(model=str(copy), adapter=str(adapter))
    assert args.model == str(copy)
    assert f"was trained on '{tiny_model_dir}'" in caplog.text
    r = run(
        "collect", small_data, "-o", tmp_path / "s", "--model", copy, "--adapter", adapter, *FAST
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(
        open_store(tmp_path / "s").vectors(),
        _direct_vectors(tiny_model_dir, adapter, small_data),
        atol=1e-5,
    )


def test_an_adapter_without_a_base_needs_model(tiny_model_dir, small_data, tmp_path):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "adapter", trained=True)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    r = CliRunner().invoke(
        cli,
        ["collect", str(small_data), "-o", str(tmp_path / "s"), "--adapter", str(adapter), *FAST],
    )
    assert r.exit_code == 2 and "names no base_model_name_or_path" in r.output
    r = run(
        "collect",
        small_data,
        "-o",
        tmp_path / "s",
        "--adapter",
        adapter,
        "--model",
        tiny_model_dir,
        *FAST,
    )
    assert r.exit_code == 0, r.output
    with pytest.raises(ValueError, match="is a PEFT adapter directory and an adapter"):
        CollectArguments(model=str(adapter), adapter=str(adapter))


def test_a_merged_checkpoint_is_a_plain_model_directory(tiny_model_dir, small_data, tmp_path):
    """An adapter merged into its base (PEFT's merge_and_unload) and saved: a Hugging Face
    directory like any other, collected with a fresh seeded adapter on top."""
    from transformers import AutoModelForCausalLM

    from influcoder.groundtruth.lora import load_adapter

    adapter = _save_adapter(tiny_model_dir, tmp_path / "adapter", trained=True)
    merged = load_adapter(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32"), adapter
    ).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    build_tiny_tokenizer().save_pretrained(tmp_path / "merged")
    for name, model in (("merged", tmp_path / "merged"), ("base", tiny_model_dir)):
        r = run(
            "collect",
            small_data,
            "-o",
            tmp_path / f"{name}-store",
            "--model",
            model,
            "--adapter-init",
            "fresh",
            *FAST,
        )
        assert r.exit_code == 0, r.output
    merged_store = open_store(tmp_path / "merged-store")
    base_store = open_store(tmp_path / "base-store")
    assert merged_store.setup["model"] != base_store.setup["model"]  # its own fingerprint
    assert not np.allclose(merged_store.vectors(), base_store.vectors(), atol=1e-3)


def test_targets_mixing_linear_and_conv1d_are_refused():
    """PEFT's fan_in_fan_out is one setting for the whole adapter: one kind at a time."""
    from torch import nn

    from influcoder.groundtruth.lora import attach_lora

    model = build("gpt2")
    model.transformer.h[0].mlp.c_fc = nn.Linear(32, 64)  # the same map, as a Linear
    with pytest.raises(ValueError, match="mix nn.Linear and Conv1D modules"):
        attach_lora(model, targets=("c_attn", "c_fc"))
    attach_lora(build("gpt2"), targets=("c_attn", "c_fc"))  # Conv1D alone is fine
