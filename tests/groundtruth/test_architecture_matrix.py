"""Every causal-LM model type of the installed transformers is tested on a tiny random model,
refused in one line, or skipped with its reason (the tables in ``architectures.py``); a model
type in none of them (a new transformers release) fails ``test_every_model_type_is_listed``."""

from __future__ import annotations

import pytest

from influcoder.errors import InflucoderError
from influcoder.groundtruth.decoder import check_causal
from influcoder.groundtruth.lora_targets import FAMILIES, MLP_NAMES, find_lora_targets
from influcoder.io.models import ModelRef

from .architectures import NO_FAMILY, REFUSED, REFUSED_TINY, SKIPPED, TESTED, tiny_config
from .test_models import assert_gradients_match_reference


def _causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def test_every_model_type_is_listed():
    unlisted = sorted(set(_causal_lm_types()) - set(TESTED) - set(REFUSED) - set(SKIPPED))
    assert not unlisted, (
        f"causal-LM model types of this transformers in none of TESTED, REFUSED, SKIPPED "
        f"(tests/groundtruth/architectures.py): {', '.join(unlisted)}"
    )
    both = (
        (set(TESTED) & set(REFUSED)) | (set(TESTED) & set(SKIPPED)) | (set(REFUSED) & set(SKIPPED))
    )
    assert not both, f"model types listed twice: {sorted(both)}"
    assert all(why.strip() for why in SKIPPED.values())


@pytest.mark.parametrize("model_type", sorted(TESTED))
def test_a_tiny_model_of_each_family_gives_the_reference_gradients(model_type):
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type)
    check_causal(ModelRef(model_type, "dir", model_type), config)  # not refused
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    family, targets = find_lora_targets(model)
    assert family == TESTED[model_type][0]
    assert set(targets) <= set(dict(FAMILIES)[family])
    assert set(dict(FAMILIES)[family]) - set(targets) <= MLP_NAMES  # only fused experts' MLP
    assert_left_to_right(model)
    assert_gradients_match_reference(model)


def assert_left_to_right(model) -> None:
    """The logits before the last position do not depend on the last token (XLNet's do)."""
    import torch

    ids = torch.tensor([[5, 17, 33, 9, 40, 41]])
    changed = ids.clone()
    changed[0, -1] = 77
    with torch.no_grad():
        before, after = (model(input_ids=x, use_cache=False).logits[0, :-1] for x in (ids, changed))
    torch.testing.assert_close(before, after, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_the_others_are_refused_in_one_line(model_type):
    """Encoder-decoder and encoder-only configs are refused from the config alone (no weights);
    a decoder whose projections match no family is refused by ``auto``, naming them."""
    reason = REFUSED[model_type]
    if reason != NO_FAMILY:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        config = tiny_config(model_type) if model_type in REFUSED_TINY else None
        with pytest.raises(InflucoderError) as e:
            check_causal(
                ModelRef(model_type, "dir", model_type), config or CONFIG_MAPPING[model_type]()
            )
        assert str(e.value) == (
            f"{model_type}: {model_type} is {reason}; "
            "collect needs a causal (decoder-only) language model"
        )
        return
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type))
    with pytest.raises(ValueError, match=r"^--lora-targets auto: the model's Linear modules") as e:
        find_lora_targets(model)
    assert "\n" not in str(e.value) and "--lora-targets NAME,NAME" in str(e.value)


def test_mlp_targets_on_fused_experts_are_refused_before_any_work():
    """PEFT maps ``down_proj`` onto the fused expert parameters of ERNIE-4.5-MoE (beside its
    shared experts' Linear ``down_proj``), which the gradient hooks cannot take: refused when
    the adapter is attached; ``auto`` takes the attention projections only."""
    import torch
    from transformers import AutoModelForCausalLM

    from influcoder.groundtruth.lora import attach_lora

    attention = ("q_proj", "k_proj", "v_proj", "o_proj")
    for model_type in ("ernie4_5_moe", "mixtral"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(model_type))
        assert find_lora_targets(model) == ("llama", attention)
        message = (  # Mixtral has no Linear down_proj at all
            "matches no module"
            if model_type == "mixtral"
            else r"PEFT puts LoRA on 'model\.layers\.\d\.mlp\.experts' \(Ernie4_5_MoeExperts: fused"
        )
        with pytest.raises(ValueError, match=message):
            attach_lora(model, targets=("q_proj", "down_proj"))


#: The multimodal model types of TESTED: LoRA on their language model only.
MULTIMODAL_TESTED = sorted(t for t, (_, settings) in TESTED.items() if "vision_config" in settings)


@pytest.mark.parametrize("model_type", MULTIMODAL_TESTED)
def test_lora_stays_in_the_text_decoder_of_a_multimodal_model(model_type, tmp_path):
    """``auto`` targets (and the same names given explicitly) put LoRA on the language model
    only, never on the vision tower or projector whose modules share the names; a store's saved
    adapter (``collect --like``) and a re-attached one (validate's retrainer: the recorded
    names) sit on exactly the same modules."""
    import torch
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from influcoder.groundtruth.lora import attach_lora, load_adapter
    from influcoder.groundtruth.lora_targets import text_decoder_name

    def build():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(tiny_config(model_type))

    def adapted(peft_model) -> list[str]:
        return sorted(n for n, m in peft_model.named_modules() if isinstance(m, LoraLayer))

    model = build()
    text = text_decoder_name(model)
    targets = find_lora_targets(model)[1]
    outside = [  # the towers do hold modules of these names: the test can fail
        n
        for n, _ in model.named_modules()
        if not n.startswith(f"{text}.") and n.rsplit(".", 1)[-1] in targets
    ]
    inside = sum(
        n.startswith(f"{text}.") and n.rsplit(".", 1)[-1] in targets
        for n, _ in model.named_modules()
    )
    assert text and outside
    lora = attach_lora(model, rank=4, targets=targets)
    names = adapted(lora)
    assert len(names) == inside and all(f".{text}." in n for n in names), names
    lora.save_pretrained(tmp_path / "adapter")
    assert adapted(load_adapter(build(), tmp_path / "adapter")) == names
    assert adapted(attach_lora(build(), rank=4, targets=targets)) == names


#: One family per code path: plain Linear, GPT-2's Conv1D, OPT's flattened activations, fused
#: experts (attention only), Gemma2 (eager attention), MPT (PEFT's wrapper bypassed), latent
#: attention, a state-space model.
END_TO_END = ["llama", "gpt2", "opt", "mixtral", "gemma2", "mpt", "deepseek_v3", "mamba"]


@pytest.mark.parametrize("model_type", END_TO_END)
def test_collect_like_and_score_per_family(model_type, small_data, tmp_path):
    """The real ``collect`` (auto targets, a two-step warm-up) on a saved tiny model of each
    family; ``collect --like`` on two of its samples and two new ones gives the pool's vectors
    for the shared two; ``score`` gives the cosines of the stored vectors."""
    import numpy as np
    import torch
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM

    from influcoder import open_store
    from influcoder.cli import cli

    from ..conftest import SMALL_PAIRS, build_tiny_tokenizer, write_jsonl

    def run(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r

    model_dir = tmp_path / model_type
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type))
    model.save_pretrained(model_dir)
    build_tiny_tokenizer().save_pretrained(model_dir)
    fast = ["--sketch-dim", "64", "--max-length", "64", "--batch-size", "4", "-q"]
    run(
        "collect",
        small_data,
        "-o",
        tmp_path / "pool",
        "--model",
        model_dir,
        "--lora-targets",
        "auto",
        "--adapter-init",
        "warmup",
        "--warmup-steps",
        "2",
        "--shard-rows",
        "4",
        *fast,
    )
    rows = [{"id": f"s{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(SMALL_PAIRS)]
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            rows[1],
            rows[6],
            {"id": "n1", "prompt": "Name a colour.", "response": "Green."},
            {"id": "n2", "prompt": "Count to three.", "response": "One, two, three."},
        ],
    )
    run("collect", queries, "--like", tmp_path / "pool", "-o", tmp_path / "q")
    pool, q = open_store(tmp_path / "pool"), open_store(tmp_path / "q")
    assert pool.setup["adapter"]["targets"] == list(find_lora_targets(model)[1])
    v, w = pool.vectors(), q.vectors()
    np.testing.assert_allclose(w[:2], v[[pool.ids.index("s1"), pool.ids.index("s6")]], atol=1e-4)

    run("score", tmp_path / "pool", tmp_path / "q", "--top-k", "3", "--out", tmp_path / "scores")
    scores = np.load(tmp_path / "scores" / "scores.npy")
    cosines = v @ w.T / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(w, axis=1))
    np.testing.assert_allclose(scores, cosines, atol=1e-5)
