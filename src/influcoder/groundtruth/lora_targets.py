"""``--lora-targets auto``: which Linear modules of a decoder get LoRA, by architecture.

The families are told apart by the names of the model's own ``nn.Linear`` (and GPT-2's
``Conv1D``) modules, not by its
config's ``model_type`` (a GGUF file, a merged checkpoint or a new model type keeps the
names of the family it derives from). The first family whose every name is found wins:

==========================================  ====================================================
family                                      attention and MLP projections
==========================================  ====================================================
Llama, Qwen2, Mistral, Gemma (and SmolLM2)  q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
Phi-3                                       qkv_proj o_proj gate_up_proj down_proj
Phi-1/2                                     q_proj k_proj v_proj dense fc1 fc2
OPT                                         q_proj k_proj v_proj out_proj fc1 fc2
GPT-NeoX (Pythia)                           query_key_value dense dense_h_to_4h dense_4h_to_h
GPT-2 (``Conv1D`` layers)                   c_attn c_proj c_fc
GLM, GLM-4                                  q_proj k_proj v_proj o_proj gate_up_proj down_proj
Nemotron, Apertus, Arcee (no gate)          q_proj k_proj v_proj o_proj up_proj down_proj
StarCoder2                                  q_proj k_proj v_proj o_proj c_fc c_proj
NanoChat                                    q_proj k_proj v_proj o_proj fc1 fc2
GPT-J                                       q_proj k_proj v_proj out_proj fc_in fc_out
GPT-Neo                                     q_proj k_proj v_proj out_proj c_fc c_proj
CodeGen                                     qkv_proj out_proj fc_in fc_out
MPT                                         Wqkv out_proj up_proj down_proj
DeepSeek-V2/V3 (multi-head latent attn.)    q_a_proj q_b_proj kv_a_proj_with_mqa kv_b_proj o_proj
                                            gate_proj up_proj down_proj
Mamba, Jamba                                in_proj x_proj dt_proj
==========================================  ====================================================

Mixture-of-experts models whose experts are fused into one parameter (Mixtral, OLMoE, ... in
transformers 5; DBRX) are not ``nn.Linear``, and PEFT would turn the MLP names into targets on those
parameters: for them the MLP names are dropped and only the attention projections are targets.

The input embeddings and the LM head are never targets, whatever their names. In a multimodal
model (Gemma-3's vision tower and projector beside its language model) only the text decoder,
transformers' ``get_decoder()``, is looked at and adapted: the towers take no part in a text
loss, so LoRA there would only add zero gradients.
"""

from __future__ import annotations

import re

from torch import nn
from transformers.pytorch_utils import Conv1D

#: (family, module-name suffixes), in the order they are tried.
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("llama", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
    ("phi3", ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")),
    ("phi", ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")),
    ("opt", ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")),
    ("gpt_neox", ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")),
    ("gpt2", ("c_attn", "c_proj", "c_fc")),
    ("glm", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")),
    ("nemotron", ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")),
    ("starcoder2", ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj")),
    ("nanochat", ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")),
    ("gptj", ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out")),
    ("gpt_neo", ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj")),
    ("codegen", ("qkv_proj", "out_proj", "fc_in", "fc_out")),
    ("mpt", ("Wqkv", "out_proj", "up_proj", "down_proj")),
    (
        "deepseek",
        (
            "q_a_proj",
            "q_b_proj",
            "kv_a_proj_with_mqa",
            "kv_b_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ),
    ),
    ("mamba", ("in_proj", "x_proj", "dt_proj")),  # PEFT refuses out_proj on Mamba
)

#: MLP names that PEFT maps onto fused expert parameters of mixture-of-experts models.
MLP_NAMES = frozenset({"gate_proj", "up_proj", "down_proj", "gate_up_proj", "w1", "w2", "w3"})

#: The module types that can carry LoRA: ``nn.Linear`` and GPT-2's ``Conv1D`` (a Linear whose
#: weight is stored transposed, ``[in, out]``).
LINEAR_TYPES: tuple[type, ...] = (nn.Linear, Conv1D)


def text_decoder_name(model: nn.Module) -> str | None:
    """The dotted name of ``model``'s text decoder (transformers' ``get_decoder()``), None when
    the model has no separate one (it is its own decoder) or it is not among its modules."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or decoder is model:
        return None
    prefix = next((name for name, module in model.named_modules() if module is decoder), None)
    if prefix is None:
        return None
    # a plain causal LM: nothing with weights outside its decoder but the LM head, which stays
    # reachable (so that naming it as a target is refused for what it is)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    inside = {id(m) for m in decoder.modules()} | (
        {id(m) for m in head.modules()} if head else set()
    )
    if all(id(m) in inside for m in model.modules() if next(m.parameters(False), None) is not None):
        return None
    return prefix


def text_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model.named_modules()`` within its text decoder (:func:`text_decoder_name`): all of
    them for a plain causal LM, the language model only for a multimodal one."""
    prefix = text_decoder_name(model)
    return [
        (name, module)
        for name, module in model.named_modules()
        if prefix is None or name == prefix or name.startswith(prefix + ".")
    ]


def outside_text_decoder(model: nn.Module) -> str | None:
    """A regular expression (PEFT's ``exclude_modules``, matched in full) for every module
    name outside ``model``'s text decoder; None when the model has no separate decoder."""
    prefix = text_decoder_name(model)
    return None if prefix is None else rf"(?!{re.escape(prefix)}(\.|$)).*"


def linear_names(model: nn.Module) -> set[str]:
    """The last name component of every ``nn.Linear`` or ``Conv1D`` of ``model``'s text
    decoder except the input embeddings and the LM head."""
    skip = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            skip.add(id(module))
    return {
        name.rsplit(".", 1)[-1]
        for name, module in text_modules(model)
        if isinstance(module, LINEAR_TYPES) and id(module) not in skip and name
    }


def has_fused_experts(model: nn.Module) -> bool:
    """Whether ``model`` holds mixture-of-experts weights fused into one parameter named like
    an MLP projection, outside any Linear module (``experts.gate_up_proj`` of shape
    ``[experts, out, in]``; DBRX's ``experts.mlp.w1`` of shape ``[experts * out, in]``)."""
    return any(
        name in MLP_NAMES and param.dim() >= 2
        for _, module in text_modules(model)
        if not isinstance(module, (*LINEAR_TYPES, nn.Conv1d))
        for name, param in module.named_parameters(recurse=False)
    )


def find_lora_targets(model: nn.Module) -> tuple[str, tuple[str, ...]]:
    """``(family, targets)``: the attention and MLP projections of ``model`` (see the module
    docstring; attention only with fused experts); ``ValueError`` naming the Linear modules
    found when no family fits."""
    names = linear_names(model)
    fused = has_fused_experts(model)
    for family, targets in FAMILIES:
        if fused:
            targets = tuple(t for t in targets if t not in MLP_NAMES)
        if all(t in names for t in targets):
            return family, targets
    shown = ", ".join(sorted(names)) or "none"
    raise ValueError(
        f"--lora-targets auto: the model's Linear modules ({shown}) match none of "
        f"the known families ({', '.join(f for f, _ in FAMILIES)}); give the "
        f"module names with --lora-targets NAME,NAME,..."
    )
