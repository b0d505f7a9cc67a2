"""Tiny real models, built once per test session, never downloaded.

``tiny_model_dir``: a 2-layer Llama with a byte-level BPE tokenizer trained here on a few
sentences, and a ChatML chat template like SmolLM2's, saved as an ordinary HF directory.
"""

from __future__ import annotations

import json
import os

import pytest

# The tiny sentence encoders, session fixtures every folder uses.
from .tiny_encoders import other_encoder, tiny_encoder  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "How do I boil an egg? Put the egg in boiling water for nine minutes.",
    "Tell me a joke. Why did the chicken cross the road? To get to the other side.",
    "Explain gravity. Gravity pulls masses toward each other.",
    "Write a poem about the sea. The sea is blue and deep and wide.",
    "system user assistant You are a test model.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"-()[]{}",
]


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of a saved tiny Llama + tokenizer (an ordinary HF model directory)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tiny_tokenizer()
    model = build_tiny_llama(len(tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def tiny_model(tiny_model_dir):
    """A fresh copy of the tiny Llama, float32, eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32").eval()


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


#: Ten short (prompt, response) pairs in the tiny tokenizer's vocabulary.
SMALL_PAIRS = [
    ("What is the capital of France?", "Paris."),
    ("How do I boil an egg?", "Boil it for nine minutes."),
    ("Tell me a joke.", "Why did the chicken cross the road?"),
    ("Explain gravity.", "Gravity pulls masses together."),
    ("Write a poem about the sea.", "The sea is blue and deep."),
    ("What is two plus two?", "Four."),
    ("Name a color.", "Blue."),
    ("What is the capital of Italy?", "Rome."),
    ("How do I fry an egg?", "Heat oil and crack the egg in."),
    ("Tell me about the moon.", "The moon orbits the earth."),
]


@pytest.fixture()
def small_data(tmp_path):
    """A JSONL file of 10 prompt/response samples."""
    rows = [{"id": f"s{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(SMALL_PAIRS)]
    return write_jsonl(tmp_path / "data.jsonl", rows)


def write_store(
    path, vectors, samples=None, *, kind="gradients", setup=None, dtype="float32", shard_rows=16
):
    """A complete store of ``vectors`` (rows) written through ``StoreWriter``, shard by shard;
    samples default to ``{path.name}{i}`` placeholders and the setup to a sketch of the
    vectors' dimension."""
    from pathlib import Path

    from influcoder.io.samples import Sample
    from influcoder.io.stores import StoreWriter

    path = Path(path)
    if samples is None:
        samples = [
            Sample(id=f"{path.name}{i}", prompt="p", response="r") for i in range(len(vectors))
        ]
    writer = StoreWriter(
        path,
        kind=kind,
        samples=samples,
        dim=vectors.shape[1],
        dtype=dtype,
        setup=setup or {"sketch": {"dim": vectors.shape[1], "seed": 0}},
        shard_rows=shard_rows,
    )
    for k in writer.missing_shards():
        a, b = writer.shard_range(k)
        writer.write_shard(k, vectors[a:b])
    return writer.finish()
