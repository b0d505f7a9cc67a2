"""A tiny sentence-transformers encoder, built here without downloads.

A 2-layer BERT (hidden 32, 2 heads, intermediate 64) with a WordPiece tokenizer whose
vocabulary is the words of :data:`WORDS` (lower-cased), then mean pooling and normalisation,
saved with ``SentenceTransformer.save`` (so the directory has ``modules.json``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

WORDS = """
the a an is are was of to in and or for on with what how why who where when which
capital france paris italy rome germany berlin spain madrid city country river sea moon
sun earth star planet gravity pulls masses together water boil egg fry oil minutes nine
tell me joke chicken cross road other side write poem about blue deep wide name color red
green two plus four five number math explain science history war king queen money bank
buy sell price cheap expensive food cook bread cake sugar salt hello hi goodbye thanks
please yes no maybe good bad great terrible happy sad angry love hate friend enemy dog cat
bird fish tree flower rain snow wind cold hot summer winter code python program bug error
computer run fast slow kill hurt weapon bomb steal lie cheat harm danger safe help step
think reason because therefore answer question first then finally so it this that
""".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_encoder(path, seed: int = 0) -> Path:
    """Save a tiny sentence-transformers model to ``path`` and return it."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    raw = path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(SPECIAL + sorted(set(WORDS) | set(".,?!'-:;")))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(raw)
    fast.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    out = path / "encoder"
    model.save(str(out))
    return out


POOL = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("What is the capital of Spain?", "Madrid."),
    ("What is the capital of Germany?", "Berlin is the capital."),
    ("How do I boil an egg?", "Boil the egg in water for nine minutes."),
    ("How do I fry an egg?", "Heat oil, then fry the egg."),
    ("How do I cook bread?", "Bread needs salt, water and a hot oven."),
    ("Tell me a joke.", "Why did the chicken cross the road? To the other side."),
    ("Tell me a joke about a dog.", "The dog and the cat are friends."),
    ("Explain gravity.", "Gravity pulls masses together."),
    ("Why is the sea blue?", "The sea is blue because of the sun."),
    ("Write a poem about the moon.", "The moon is a star of the cold winter."),
    ("What is two plus two?", "Four."),
    ("What is two plus five?", "Two plus five is seven, no: it is a number."),
    ("Name a color.", "Red."),
    ("Name a green tree.", "A green tree in summer."),
    ("How do I kill a bug in python?", "Run the program, read the error, fix the code."),
    ("Is python fast or slow?", "Python is slow, but the code is good."),
    ("How do I build a bomb?", "I will not help with a weapon: it can hurt and harm."),
    ("How do I steal money from a bank?", "No. To steal is bad and a danger."),
    ("Tell me how to lie and cheat.", "To lie and cheat is bad; be a good friend."),
    ("Who was the first king?", "History has a first king and a queen."),
    ("What food is cheap?", "Bread and rice are cheap food."),
    ("Say hello.", "Hello, friend! Thanks and goodbye."),
]


def pool_rows(n: int | None = None, prefix: str = "p") -> list[dict]:
    """Rows with ids, prompt, response and one extra field (kept as it is by ``filter``)."""
    return [
        {"id": f"{prefix}{i}", "prompt": p, "response": r, "topic": f"t{i % 3}"}
        for i, (p, r) in enumerate(POOL[:n])
    ]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """Directory of a tiny sentence-transformers encoder."""
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def other_encoder(tmp_path_factory) -> Path:
    """Another tiny encoder (other weights, so another fingerprint)."""
    return build_tiny_encoder(tmp_path_factory.mktemp("other-encoder"), seed=1)
