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
==========================================  ====================================================

The input embeddings and the LM head are never targets, whatever their names.
"""

from __future__ import annotations

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
)

#: The module types that can carry LoRA: ``nn.Linear`` and GPT-2's ``Conv1D`` (a Linear whose
#: weight is stored transposed, ``[in, out]``).
LINEAR_TYPES: tuple[type, ...] = (nn.Linear, Conv1D)


def linear_names(model: nn.Module) -> set[str]:
    """The last name component of every ``nn.Linear`` or ``Conv1D`` of ``model`` except the
    input embeddings and the LM head."""
    skip = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            skip.add(id(module))
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, LINEAR_TYPES) and id(module) not in skip and name
    }


def find_lora_targets(model: nn.Module) -> tuple[str, tuple[str, ...]]:
    """``(family, targets)``: the attention and MLP projections of ``model`` (see the module
    docstring); ``ValueError`` naming the Linear modules found when no family fits."""
    names = linear_names(model)
    for family, targets in FAMILIES:
        if all(t in names for t in targets):
            return family, targets
    shown = ", ".join(sorted(names)) or "none"
    raise ValueError(
        f"--lora-targets auto: the model's Linear modules ({shown}) match none of "
        f"the known families ({', '.join(f for f, _ in FAMILIES)}); give the "
        f"module names with --lora-targets NAME,NAME,..."
    )
