"""The dequantised copy of a GGUF decoder, on a real tiny ``.gguf`` file: the copy is the same
model (weights, config, tokenizer, chat template, PEFT's base name), a collect through it writes
the same bytes, and a damaged, unwritable or switched-off cache falls back to the GGUF file."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from influcoder import open_store
from influcoder.cli import cli
from influcoder.groundtruth import decoder_cache
from influcoder.groundtruth.decoder import _load_copy, load_decoder, resolve_decoder

from .test_collect import FAST
from .tiny_gguf import write_tiny_gguf

CHAT = [{"role": "user", "content": "What is gravity?"}, {"role": "assistant", "content": "Pull."}]


@pytest.fixture()
def gguf_file(tmp_path, tiny_tokenizer):
    return write_tiny_gguf(tmp_path / "tiny.gguf", tiny_tokenizer)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(decoder_cache.ENV, raising=False)
    return tmp_path / "cache" / "decoders"


def copy_of(ref):
    """The copy of ``ref`` as ``load_decoder`` reads it, or None."""
    return _load_copy(ref, decoder_cache.cached_folder(ref))


def copies(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def test_the_copy_is_the_gguf_model(gguf_file, cache, monkeypatch, capsys):
    monkeypatch.setenv(decoder_cache.ENV, "0")
    direct, direct_tok, ref = load_decoder(str(gguf_file))
    assert copies(cache) == [] and copy_of(ref) is None
    assert ref.kind == "gguf" and direct.hf_quantizer is None  # unmarked either way

    monkeypatch.delenv(decoder_cache.ENV)
    load_decoder(str(gguf_file))
    assert "kept the dequantised decoder" in capsys.readouterr().err
    assert len(copies(cache)) == 1
    model, tok = copy_of(ref)
    assert model.name_or_path == model.config._name_or_path == direct.name_or_path == ref.path
    a, b = direct.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype == torch.float32 for v in b.values())
    saved = {k: v for k, v in model.config.to_dict().items() if k != "architectures"}
    assert {k: v for k, v in direct.config.to_dict().items() if k != "architectures"} == saved
    assert tok.apply_chat_template(CHAT) == direct_tok.apply_chat_template(CHAT)
    assert tok("ab  cd\tü!").input_ids == direct_tok("ab  cd\tü!").input_ids
    assert tok.pad_token_id == direct_tok.pad_token_id

    again, _, ref_again = load_decoder(str(gguf_file))  # from the copy: nothing written
    assert ref_again == ref and "kept" not in capsys.readouterr().err
    assert torch.equal(again.lm_head.weight, direct.lm_head.weight)


def test_collect_through_the_copy_writes_the_same_store(gguf_file, cache, small_data, tmp_path):
    def collect(out):
        args = ["collect", str(small_data), "-o", str(tmp_path / out), "--model", str(gguf_file)]
        r = CliRunner().invoke(cli, args + FAST, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return open_store(tmp_path / out)

    first = collect("first")  # reads the GGUF file and keeps the copy
    assert len(copies(cache)) == 1
    second = collect("second")  # reads the copy
    assert first.setup == second.setup
    assert first.setup["model"]["fingerprint"] == second.setup["model"]["fingerprint"]
    assert first.vectors().tobytes() == second.vectors().tobytes()


def test_a_damaged_copy_is_replaced(gguf_file, cache, capsys):
    ref = resolve_decoder(str(gguf_file))
    load_decoder(str(gguf_file))
    weights = decoder_cache.cached_folder(ref) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    model, _, _ = load_decoder(str(gguf_file))
    err = capsys.readouterr().err
    assert "did not load" in err and "kept the dequantised decoder" in err
    assert copy_of(ref) is not None and model.config.vocab_size > 0


def test_another_file_gets_another_copy(gguf_file, cache, tmp_path, tiny_tokenizer):
    other = write_tiny_gguf(tmp_path / "other" / "tiny.gguf", tiny_tokenizer, seed=1)
    load_decoder(str(gguf_file))
    load_decoder(str(other))
    assert len(copies(cache)) == 2


def test_an_unwritable_cache_is_not_an_error(gguf_file, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("INFLUCODER_CACHE", str(blocker))
    model, _, _ = load_decoder(str(gguf_file))
    assert "could not keep a copy" in capsys.readouterr().err and model is not None
