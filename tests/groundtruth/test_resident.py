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
        (other / "config.json").read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05')
    )
    with pytest.raises(InflucoderError, match="another model"):
        ResidentCollector(pool, model=str(other), device="cpu").load()
