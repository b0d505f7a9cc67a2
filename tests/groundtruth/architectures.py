"""The architecture matrix: every model type of transformers' ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``
is tested (a tiny random model, its ``--lora-targets auto`` family and its gradients against the
autograd reference), refused (one line, before any weight is loaded or any work done) or skipped
with the reason. ``test_architecture_matrix.py`` fails on a model type in none of the three.

TESTED: model type -> (family ``auto`` must find, config settings on top of ``TINY``; None drops
a setting; a multimodal model's settings, with a ``vision_config``, put ``TINY`` in its
``text_config``). REFUSED: model type -> the refusal's reason (``NO_FAMILY``: ``auto`` finds no family,
the user names the targets; ``REFUSED_TINY`` holds settings for those built to be refused).
SKIPPED: model type -> why it is not built here.
"""

from __future__ import annotations

#: Settings of every tiny config (hidden 32, 2 layers, vocabulary 400).
TINY = {
    "vocab_size": 400,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

NO_FAMILY = "no --lora-targets auto family"

#: Multi-head latent attention (DeepSeek-V2/V3 and their kin): tiny low ranks and head parts,
#: as many key/value heads as query heads, four routed experts in one group.
MLA = {
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 4,
    "qk_nope_head_dim": 4,
    "v_head_dim": 8,
    "head_dim": 4,
    "num_key_value_heads": 4,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 16,
    "n_group": 1,
    "topk_group": 1,
}

#: Mamba-2 mixers of the hybrid models: four heads of 16 (expand 2 x hidden 32), one group.
MAMBA2 = {
    "mamba_n_heads": 4,
    "mamba_d_head": 16,
    "mamba_d_state": 8,
    "mamba_n_groups": 1,
    "mamba_chunk_size": 16,
}

TESTED = {
    "afmoe": ("llama", {}),
    "apertus": ("nemotron", {}),
    "apertus1p5_text": ("nemotron", {}),
    "arcee": ("nemotron", {}),
    "aria_text": ("llama", {}),
    "axk1": ("deepseek", MLA),
    "bailing_hybrid": ("llama", {}),
    "bamba": ("llama", {**MAMBA2, "attn_layer_indices": [1]}),
    "beam": ("llama", {}),
    "biogpt": ("opt", {}),
    "bitnet": ("llama", {}),
    "bloom": ("gpt_neox", {}),
    "codegen": ("codegen", {"rotary_dim": 4}),
    "cohere": ("llama", {}),
    "cohere2": ("llama", {}),
    "cohere2_moe": ("llama", {}),
    "cohere_compass_text": (
        "llama",
        {
            "rope_parameters": {
                t: {"rope_type": "default", "rope_theta": 1e4}
                for t in ("full_attention", "sliding_attention")
            }
        },
    ),
    "cwm": ("llama", {}),
    "dbrx": (
        "mpt",
        {
            "d_model": 32,
            "n_heads": 4,
            "n_layers": 2,
            "attn_config": {"rope_theta": 1e4, "kv_n_heads": 2, "clip_qkv": 8.0},
            "ffn_config": {"moe_num_experts": 4, "moe_top_k": 2, "ffn_hidden_size": 64},
        },
    ),
    "deepseek_v2": ("deepseek", MLA),
    "deepseek_v3": ("deepseek", MLA),
    "deepseek_v32": ("deepseek", MLA),
    "diffllama": ("llama", {}),
    "doge": ("llama", {}),
    "dory": ("llama", {}),
    "dots1": (
        "llama",
        {
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 16,
            "n_shared_experts": 1,
            "n_group": 1,
            "topk_group": 1,
        },
    ),
    "dots3_note_text": ("deepseek", {"num_key_value_heads": 4}),
    "ergo": ("phi3", {}),
    "ernie4_5": ("llama", {}),
    "ernie4_5_moe": ("llama", {}),
    "exaone": ("llama", {}),
    "exaone4": ("llama", {}),
    "exaone_moe": ("llama", {}),
    "falcon": ("gpt_neox", {"head_dim": None}),
    "falcon_h1": (
        "llama",
        {
            "mamba_d_ssm": 64,
            "mamba_n_heads": 4,
            "mamba_d_head": 16,
            "mamba_d_state": 8,
            "mamba_n_groups": 1,
            "mamba_chunk_size": 16,
        },
    ),
    "falcon_mamba": ("mamba", {}),
    "flex_olmo": ("llama", {}),
    "flint": ("llama", {}),
    "fuyu": ("gpt_neox", {}),
    "gemma": ("llama", {}),
    "gemma2": ("llama", {}),
    "gemma3": (
        "llama",
        {
            "text_config": {},
            "vision_config": {
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
            },
            "mm_tokens_per_image": 4,
            "boi_token_index": 397,
            "eoi_token_index": 398,
            "image_token_index": 399,
        },
    ),
    "gemma3_text": ("llama", {}),
    "gemma3n_text": ("llama", {"num_kv_shared_layers": 0}),
    "gemma4_text": (
        "llama",
        {"vocab_size_per_layer_input": 400, "hidden_size_per_layer_input": 8, "global_head_dim": 8},
    ),
    "gemma4_unified_text": ("llama", {}),
    "glm": ("glm", {}),
    "glm4": ("glm", {}),
    "glm4_moe": ("llama", {}),
    "glm4_moe_lite": ("deepseek", MLA),
    "glm_moe_dsa": ("deepseek", MLA),
    "gpt-sw3": ("gpt2", {}),
    "gpt2": ("gpt2", {}),
    "gpt_bigcode": ("gpt2", {}),
    "gpt_neo": ("gpt_neo", {"attention_types": [[["global", "local"], 1]]}),
    "gpt_neox": ("gpt_neox", {}),
    "gpt_neox_japanese": ("gpt_neox", {}),
    "gpt_oss": ("llama", {}),
    "gptj": ("gptj", {"rotary_dim": 4}),
    "granite": ("llama", {}),
    "granite_swa": ("llama", {}),
    "granitemoe": ("llama", {}),
    "granitemoe_swa": ("llama", {}),
    "granitemoehybrid": (
        "llama",
        {
            **MAMBA2,
            "layer_types": ["mamba", "attention"],
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
        },
    ),
    "granitemoeshared": ("llama", {}),
    "helium": ("llama", {}),
    "hrm_text": ("llama", {}),
    "hunyuan_v1_dense": ("llama", {}),
    "hunyuan_v1_moe": ("llama", {}),
    "hy_v3": ("llama", {}),
    "hy_v4": ("deepseek", {}),
    "hyperclovax": ("llama", {}),
    "inkling_text": ("llama", {}),
    "internlm3": ("llama", {}),
    "iquestcoder": ("llama", {}),
    "jais2": ("nemotron", {}),
    "jamba": ("mamba", {}),
    "kimi_linear": (
        "llama",
        {
            **MLA,
            "linear_attn_config": {"head_dim": 8, "num_heads": 4},
            "num_experts": 4,
            "num_experts_per_token": 2,
        },
    ),
    "kolibri1": ("llama", {}),
    "kolibri1_1": ("llama", {"head_dim": 16, "index_num_heads": 1}),
    "laguna": ("llama", {}),
    "lara_mini": ("llama", {}),
    "llama": ("llama", {}),
    "llama4_text": ("llama", {}),
    "longcat_flash": ("deepseek", MLA),
    "mamba": ("mamba", {}),
    "mellum": ("llama", {}),
    "mimo_v2_flash": ("llama", {}),
    "minicpm3": ("deepseek", MLA),
    "minimax": ("llama", {}),
    "minimax_m2": ("llama", {}),
    "minimax_m3_vl_text": ("llama", {}),
    "ministral": ("llama", {}),
    "ministral3": ("llama", {}),
    "mistral": ("llama", {}),
    "mixtral": ("llama", {}),
    "mpt": ("mpt", {}),  # PEFT's wrapper refuses its inputs_embeds: the base model is called
    "nanochat": ("nanochat", {}),
    "nemotron": ("nemotron", {}),
    "nemotron_h": (
        "llama",
        {
            "mamba_num_heads": 4,
            "mamba_head_dim": 16,
            "ssm_state_size": 8,
            "n_groups": 1,
            "chunk_size": 16,
        },
    ),
    "olmo": ("llama", {}),
    "olmo2": ("llama", {}),
    "olmo3": ("llama", {}),
    "olmo_hybrid": ("llama", {}),
    "olmoe": ("llama", {}),
    "openai-gpt": ("gpt2", {}),
    "opt": ("opt", {}),
    "param2moe": ("llama", {}),
    "persimmon": ("gpt_neox", {}),
    "phi": ("phi", {}),
    "phi3": ("phi3", {}),
    "phimoe": ("llama", {}),
    "qwen2": ("llama", {}),
    "qwen2_moe": ("llama", {}),
    "qwen3": ("llama", {}),
    "qwen3_moe": ("llama", {}),
    "sarvam_moe": ("llama", {}),
    "seed_oss": ("llama", {}),
    "smollm3": ("llama", {}),
    "solar_open": ("llama", {}),
    "stablelm": ("llama", {}),
    "starcoder2": ("starcoder2", {}),
    "trocr": ("opt", {}),  # ignores logits_to_keep; its own loss does not shift the labels
    "vaultgemma": ("llama", {}),
    "xglm": ("opt", {}),
    "youtu": ("deepseek", MLA),
    "zamba": (  # two hybrid layers: one shared attention block, called twice
        "llama",
        {
            "num_hidden_layers": 3,
            "layer_types": ["mamba", "hybrid", "hybrid"],
            "mamba_d_state": 8,
            "n_mamba_heads": 2,
            "attention_head_dim": 16,
            "mamba_dt_rank": 4,
        },
    ),
    "zamba2": (
        "glm",
        {
            "layer_types": ["mamba", "hybrid"],
            "hybrid_layer_ids": [1],
            "mamba_d_state": 8,
            "n_mamba_heads": 4,
            "mamba_headdim": 16,
            "mamba_ngroups": 1,
            "chunk_size": 16,
        },
    ),
}

REFUSED = {
    "bart": "an encoder-decoder model",
    "bert": "an encoder-only model",
    "big_bird": "an encoder-only model",
    "bigbird_pegasus": "an encoder-decoder model",
    "blenderbot": "an encoder-decoder model",
    "blenderbot-small": "an encoder-decoder model",
    "camembert": "an encoder-only model",
    "data2vec-text": "an encoder-only model",
    "electra": "an encoder-only model",
    "ernie": "an encoder-only model",
    "marian": "an encoder-decoder model",
    "mbart": "an encoder-decoder model",
    "megatron-bert": "an encoder-only model",
    "musicgen": "an encoder-decoder model",
    "musicgen_melody": "an encoder-decoder model",
    "mvp": "an encoder-decoder model",
    "pegasus": "an encoder-decoder model",
    "plbart": "an encoder-decoder model",
    "prophetnet": "an encoder-decoder model",
    "reformer": "an encoder-only model",
    "rembert": "an encoder-only model",
    "roberta": "an encoder-only model",
    "roberta-prelayernorm": "an encoder-only model",
    "roc_bert": "an encoder-only model",
    "roformer": "an encoder-only model",
    "whisper": "an encoder-decoder model",
    "git": "an image-to-text model",
    "xlnet": "a permutation language model (every token sees the whole text)",
    "gemma4_assistant": "a drafting assistant (it needs another model's key/value states)",
    "gemma4_unified_assistant": "a drafting assistant (it needs another model's key/value states)",
    "xlm": "an encoder-only model",
    "xlm-roberta": "an encoder-only model",
    "xlm-roberta-xl": "an encoder-only model",
    "xmod": "an encoder-only model",
    "axk2": NO_FAMILY,
    "bert-generation": NO_FAMILY,
    "cpmant": NO_FAMILY,
    "ctrl": NO_FAMILY,
    "deepseek_v4": NO_FAMILY,
    "inkling2_loop_text": NO_FAMILY,
    "inkling2_text": NO_FAMILY,
    "jetmoe": NO_FAMILY,
    "mamba2": NO_FAMILY,  # in_proj and out_proj only (PEFT refuses out_proj on Mamba-2)
    "lfm2": NO_FAMILY,
    "lfm2_moe": NO_FAMILY,
    "lfm3": NO_FAMILY,
    "minicpm5_moe": NO_FAMILY,
    "modernbert-decoder": NO_FAMILY,
    "moshi": NO_FAMILY,
    "qwen3_5_moe_text": NO_FAMILY,
    "qwen3_5_text": NO_FAMILY,
    "qwen3_next": NO_FAMILY,
    "qwen4_exp_text": NO_FAMILY,
    "recurrent_gemma": NO_FAMILY,
    "rwkv": NO_FAMILY,
    "sarvam_mla": NO_FAMILY,
    "xlstm": NO_FAMILY,
    "zaya": NO_FAMILY,
}

#: Settings on top of ``TINY`` for the REFUSED model types built to be refused.
REFUSED_TINY = {
    "gemma4_assistant": {  # its default config does not validate
        "text_config": {
            "hidden_size_per_layer_input": 0,
            "vocab_size_per_layer_input": 0,
            "enable_moe_block": False,
            "use_double_wide_mlp": False,
        }
    },
    "lfm2_moe": {
        "layer_types": ["conv", "full_attention"],
        "num_dense_layers": 1,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 16,
    },
    "mamba2": {"num_heads": 4, "head_dim": 16, "state_size": 8, "n_groups": 1, "chunk_size": 16},
}

#: Why most multimodal model types are skipped.
MULTIMODAL = "too heavy to build tiny: multimodal, the generic settings miss its sub-configs (20 s)"

SKIPPED = {
    "blt": MULTIMODAL,
    "dots3_note": "a vision-language model whose vision adapter must match the text width",
    "emu3": MULTIMODAL,
    "gemma3n": "needs an extra package (timm) for its vision tower",
    "gemma4": MULTIMODAL,
    "gemma4_unified": MULTIMODAL,
    "got_ocr2": MULTIMODAL,
    "llama4": MULTIMODAL,
    "mllama": MULTIMODAL,
    "moss_transcribe_diarize": MULTIMODAL,
    "phi4_multimodal": MULTIMODAL,
    "qwen3_5": MULTIMODAL,
    "qwen3_5_moe": MULTIMODAL,
    "qwen4_exp": MULTIMODAL,
}


def tiny_config(model_type: str):
    """The tiny config of a TESTED (or REFUSED) model type, from transformers' own config class."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    overrides = TESTED[model_type][1] if model_type in TESTED else REFUSED_TINY.get(model_type, {})
    if "text_config" in overrides and "vision_config" in overrides:  # multimodal
        settings = {**overrides, "text_config": {**TINY, **overrides["text_config"]}}
    else:
        settings = {**TINY, **overrides}
    return CONFIG_MAPPING[model_type](**{k: v for k, v in settings.items() if v is not None})
