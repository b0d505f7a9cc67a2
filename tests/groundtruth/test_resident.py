"""The resident collector against its slow reference, ``collect --like`` into a store: the
same bytes (over several shards, call after call, plain and Adam-preconditioned), and the same
refusals."""

from __future__ import annotations

import numpy as np
import pytest

from influcoder import open_store
from influcoder.errors import InflucoderError
from influcoder.groundtruth.resident import ResidentCollector
from influcoder.io.samples import Sample, load_samples

from ..conftest import SMALL_PAIRS, write_jsonl
from .test_collect import FAST, run


@pytest.mark.parametrize("precondition", ["none", "adam"])
def test_resident_vectors_are_what_collect_like_writes(
    tiny_model_dir, small_data, tmp_path, precondition
):
    pool = tmp_path / "pool"
    r = run("collect", small_data, "-o", pool, "--model", tiny_model_dir,
            "--precondition", precondition, *FAST)  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [{"id": f"q{i}", "prompt": p + " Again?", "response": a} for i, (p, a) in
            enumerate(SMALL_PAIRS[:7])]  # fmt: skip
    queries = write_jsonl(tmp_path / "q.jsonl", rows)  # 7 rows: shards of 4 and 3
    r = run("collect", queries, "--like", pool, "-o", tmp_path / "q", "-q")
    assert r.exit_code == 0, r.output
    expected = open_store(tmp_path / "q").vectors()

    collector = ResidentCollector(pool, device="cpu")
    samples = load_samples(queries)
    got = collector.vectors(samples)
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()
    again = collector.vectors(samples[:4])  # the decoder stays loaded; one shard's rows
    assert again.tobytes() == expected[:4].tobytes()
    assert collector.vectors([]).shape == (0, collector.dim)


def test_resident_refuses_what_collect_refuses(tiny_model_dir, small_data, tmp_path):
    pool = tmp_path / "pool"
    r = run("collect", small_data, "-o", pool, "--model", tiny_model_dir, "--truncation",
            "error", *FAST)  # fmt: skip
    assert r.exit_code == 0, r.output
    collector = ResidentCollector(pool, device="cpu")
    too_long = Sample(id="x", prompt="Tell me a joke. " * 20, response="No.")
    with pytest.raises(InflucoderError, match="my-queries.*more than max_length=64"):
        collector.vectors([too_long], source="my-queries")
    other = tmp_path / "other-model"
    other.mkdir()
    for f in tiny_model_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "config.json").write_text(
        (other / "config.json")
        .read_text()
        .replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05')
    )
    with pytest.raises(InflucoderError, match="another model"):
        ResidentCollector(pool, model=str(other), device="cpu").load()


def test_representations_and_repsim_equal_a_sample_at_a_time_reference(
    tiny_model_dir, small_data, tmp_path
):
    """The batched, padded representations against the decoder (the store's warmed-up
    adapter loaded by PEFT itself) run on one sample at a time through the full causal LM;
    and the ``repsim`` baseline of ``score_methods`` is their cosine."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from influcoder.evaluation.evaluate import score_methods
    from influcoder.groundtruth.tokenize import IGNORE_INDEX, tokenize_sample

    pool = tmp_path / "pool"
    fast = [a for a in FAST if a not in ("--adapter-init", "fresh")]  # a warmed-up adapter
    r = run("collect", small_data, "-o", pool, "--model", tiny_model_dir, *fast)
    assert r.exit_code == 0, r.output
    store = open_store(pool)
    collector = ResidentCollector(pool, device="cpu")

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, pool / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    every = collector.representations(store.samples, layers="all")
    for pooling in ("response", "all", "last"):
        got = collector.representations(store.samples, pooling=pooling)
        for row, sample in enumerate(store.samples):
            t = tokenize_sample(tokenizer, sample, max_length=64)
            with torch.no_grad():
                out = model(input_ids=torch.tensor([t.input_ids]), output_hidden_states=True)
            hidden = out.hidden_states[-1][0]
            keep = {
                "response": torch.tensor(t.labels) != IGNORE_INDEX,
                "all": torch.ones(len(t.input_ids), dtype=torch.bool),
                "last": torch.arange(len(t.input_ids)) == len(t.input_ids) - 1,
            }[pooling]
            np.testing.assert_allclose(got[row], hidden[keep].mean(0).numpy(), atol=2e-5)
            if pooling == "response":  # every layer's, each part of unit norm
                parts = [h[0][keep].mean(0) for h in out.hidden_states]
                expected = torch.cat([p / p.norm() for p in parts]).numpy()
                np.testing.assert_allclose(every[row], expected, atol=2e-5)
        if pooling == "response":
            assert every.shape == (len(store.samples), 3 * got.shape[1])  # embeddings + 2 blocks
    with pytest.raises(ValueError, match="pooling"):
        collector.representations(store.samples, pooling="max")
    with pytest.raises(ValueError, match="layers"):
        collector.representations(store.samples, layers="first")

    reps = collector.representations(store.samples)
    unit = reps / np.linalg.norm(reps, axis=1, keepdims=True)
    methods = score_methods(store, store, baselines=["repsim", "repsim-layers"])
    scores, info = methods["repsim"]
    np.testing.assert_allclose(scores, unit @ unit.T, atol=1e-6)
    assert info["bytes_per_sample"] == 4 * reps.shape[1] and info["pooling"] == "response"
    unit = every / np.linalg.norm(every, axis=1, keepdims=True)
    np.testing.assert_allclose(methods["repsim-layers"][0], unit @ unit.T, atol=1e-6)
