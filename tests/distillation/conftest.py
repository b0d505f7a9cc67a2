"""A tiny sentence encoder and a ground truth with a planted structure, built here, no download.

``tiny_encoder_dir``: a sentence-transformers directory holding a 2-layer BERT (hidden 32) with a
word-level tokenizer over :data:`VOCAB`, and mean pooling.

``planted``: texts in :data:`TOPICS` topics, each text two words of its topic among four filler
words, and a ground truth ``gt[i, j]`` high where pool text *i* and query *j* share a topic, low
elsewhere, plus noise. A random encoder sees mostly the shared filler words; distillation has to
learn that the topic words are what counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

TOPICS = 4
TOPIC_WORDS = [[f"t{t}w{k}" for k in range(6)] for t in range(TOPICS)]
FILLER = [f"f{k}" for k in range(24)]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
VOCAB = SPECIAL + [w for words in TOPIC_WORDS for w in words] + FILLER


def build_tiny_encoder_dir(path) -> str:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    hf_dir = path / "hf"
    BertModel(config).save_pretrained(hf_dir)
    fast.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=32)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    st_dir = path / "st"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(st_dir))
    return str(st_dir)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test: tiny models gain nothing from more, and on a shared machine
    extra threads only wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> str:
    """Path of a saved tiny sentence-transformers encoder (BERT + mean pooling)."""
    return build_tiny_encoder_dir(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture()
def tiny_encoder(tiny_encoder_dir):
    """A fresh copy of the tiny encoder, on CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_encoder_dir, device="cpu")


@dataclass
class Planted:
    pool_texts: list[str]
    query_texts: list[str]
    gt: np.ndarray  # [n_pool, n_query]


@pytest.fixture(scope="session")
def planted() -> Planted:
    """80 pool texts, 24 queries, 4 topics; ground truth 0.6 within a topic, 0.1 across, plus
    noise of standard deviation 0.05."""
    rng = np.random.default_rng(0)

    def texts(n):
        topic = np.arange(n) % TOPICS
        rng.shuffle(topic)
        out = []
        for t in topic:
            words = list(rng.choice(TOPIC_WORDS[t], 2, replace=False))
            words += list(rng.choice(FILLER, 4, replace=False))
            rng.shuffle(words)
            out.append(" ".join(words))
        return out, topic

    pool_texts, pool_topic = texts(80)
    query_texts, query_topic = texts(24)
    gt = np.where(pool_topic[:, None] == query_topic[None, :], 0.6, 0.1)
    gt = (gt + 0.05 * rng.standard_normal(gt.shape)).astype(np.float32)
    return Planted(pool_texts, query_texts, gt)
