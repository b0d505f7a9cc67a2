"""The embedding index: FAISS search against numpy, appends against rebuilds, bad indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from influcoder.attribution.build import _update_faiss, build_index
from influcoder.attribution.index import (
    FAISS_FILE,
    INDEX_FILE,
    faiss_params,
    import_faiss,
    open_index,
)
from influcoder.attribution.settings import EncodeArguments
from influcoder.encoders.backends import FastEncoder
from influcoder.errors import InputError, StoreError
from influcoder.groundtruth.influence import top_k

from ..tiny_encoders import pool_rows

QUIET = dict(progress=False)
#: hnsw and ivf indexes written by the FAISS classes built by hand, before index_factory.
FAISS_CLASSES = Path(__file__).parents[1] / "data" / "faiss-classes"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def brute_force(index, queries, k):
    """Reference search: the whole cosine matrix, fully sorted."""
    rows, scores = top_k(index.vectors() @ queries.T, k)
    return scores.T, rows.T


def queries(encoder_dir, n=5):
    texts = ["the capital of france", "boil an egg", "a joke", "python code error", "money"]
    return FastEncoder(str(encoder_dir), backend="torch").encode(texts[:n])


def test_flat_search_equals_brute_force(tiny_encoder, tmp_path):
    data = write_jsonl(tmp_path / "pool.jsonl", pool_rows())
    index = build_index(
        data, tmp_path / "idx", str(tiny_encoder), backend="torch", shard_rows=7, **QUIET
    )
    assert (index.n, index.dim, index.kind, len(index.segments)) == (24, 32, "flat", 1)
    assert not (tmp_path / "idx" / FAISS_FILE).exists()
    q = queries(tiny_encoder)
    scores, rows = index.search(q, 6)
    ref_scores, ref_rows = brute_force(index, q, 6)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # Reopening reads the same thing back.
    np.testing.assert_array_equal(open_index(tmp_path / "idx").search(q, 6)[1], rows)


def test_z_scores_equal_the_pool_distribution(tiny_encoder, tmp_path):
    index = build_index(
        write_jsonl(tmp_path / "pool.jsonl", pool_rows()),
        tmp_path / "idx",
        str(tiny_encoder),
        backend="torch",
        **QUIET,
    )
    q = queries(tiny_encoder)
    all_scores = (index.vectors() @ q.T).T.astype(np.float64)
    expected = (all_scores - all_scores.mean(1, keepdims=True)) / all_scores.std(1, keepdims=True)
    np.testing.assert_allclose(index.z_scores(q, all_scores), expected, atol=1e-3)


@pytest.mark.parametrize("approx", ["hnsw", "ivf"])
def test_approximate_kinds_find_the_exact_top_k_on_a_small_pool(tiny_encoder, tmp_path, approx):
    index = build_index(
        write_jsonl(tmp_path / "pool.jsonl", pool_rows()),
        tmp_path / "idx",
        str(tiny_encoder),
        backend="torch",
        approx=approx,
        **QUIET,
    )
    assert index.kind == approx and (tmp_path / "idx" / FAISS_FILE).is_file()
    q = queries(tiny_encoder)
    scores, rows = open_index(tmp_path / "idx").search(q, 5)
    ref_scores, ref_rows = brute_force(index, q, 5)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=2e-3)  # float16 codes


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_files_of_the_hand_built_classes_open_and_rebuild_byte_for_byte(kind, tmp_path):
    """Frozen by tests/data/faiss-classes/make.py with the code that built IndexHNSWSQ and
    IndexIVFScalarQuantizer by hand: the files still search as they did, and building the same
    kind over the same vectors now (faiss.index_factory) writes the same bytes, so the classes,
    efConstruction, the k-means seed and its training rows are all unchanged."""
    expected = json.loads((FAISS_CLASSES / "expected.json").read_text())[kind]
    index = open_index(FAISS_CLASSES / kind)
    scores, rows = index.search(index.vectors()[:4], 5)
    np.testing.assert_array_equal(rows, expected["search_rows"])
    np.testing.assert_allclose(scores, expected["search_scores"], atol=1e-5)
    assert faiss_params(kind, index.n) == expected["params"] == index.meta["faiss"]["params"]

    out = shutil.copytree(FAISS_CLASSES / kind, tmp_path / kind)
    (out / FAISS_FILE).unlink()
    faiss = import_faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # the HNSW graph is reproducible on one thread
    try:
        _update_faiss(out, index.segments, None, kind, 0)
    finally:
        faiss.omp_set_num_threads(threads)
    assert (out / FAISS_FILE).read_bytes() == (FAISS_CLASSES / kind / FAISS_FILE).read_bytes()


@pytest.mark.parametrize("approx", ["flat", "hnsw"])
def test_append_equals_building_from_scratch(tiny_encoder, tmp_path, approx):
    rows = pool_rows()
    a = write_jsonl(tmp_path / "a.jsonl", rows[:15])
    b = write_jsonl(tmp_path / "b.jsonl", rows[15:])
    kw = dict(backend="torch", approx=approx, shard_rows=4, **QUIET)
    build_index(a, tmp_path / "idx", str(tiny_encoder), **kw)
    appended = build_index(b, tmp_path / "idx", append=True, **kw)
    whole = build_index(
        write_jsonl(tmp_path / "ab.jsonl", rows), tmp_path / "whole", str(tiny_encoder), **kw
    )
    assert [s.n for s in appended.segments] == [15, 9] and appended.ids == whole.ids
    np.testing.assert_allclose(appended.vectors(), whole.vectors(), atol=1e-3)
    q = queries(tiny_encoder)
    np.testing.assert_array_equal(appended.search(q, 8)[1], whole.search(q, 8)[1])
    np.testing.assert_allclose(appended.stats()[1], whole.stats()[1], atol=1e-5)
    assert appended.sample(20).id == "p20" and appended.locate(20) == (1, 5)


def test_append_refuses_duplicate_ids_and_other_settings(tiny_encoder, tmp_path):
    rows = pool_rows()
    build_index(
        write_jsonl(tmp_path / "a.jsonl", rows[:10]),
        tmp_path / "idx",
        str(tiny_encoder),
        backend="torch",
        **QUIET,
    )
    dup = write_jsonl(tmp_path / "dup.jsonl", rows[8:12])
    with pytest.raises(InputError, match="2 sample ids are already in the index .*'p8', 'p9'"):
        build_index(dup, tmp_path / "idx", append=True, **QUIET)
    more = write_jsonl(tmp_path / "more.jsonl", rows[10:])
    with pytest.raises(StoreError, match="built with dtype='float16'.*requested dtype='int8'"):
        build_index(more, tmp_path / "idx", append=True, dtype="int8", **QUIET)
    with pytest.raises(StoreError, match="already holds an index of other data.*--append"):
        build_index(more, tmp_path / "idx", **QUIET)
    assert json.loads((tmp_path / "idx" / INDEX_FILE).read_text())["n"] == 10


def test_other_encoder_is_refused_naming_both(tiny_encoder, other_encoder, tmp_path):
    index = build_index(
        write_jsonl(tmp_path / "a.jsonl", pool_rows(10)),
        tmp_path / "idx",
        str(tiny_encoder),
        backend="torch",
        **QUIET,
    )
    more = write_jsonl(tmp_path / "b.jsonl", pool_rows(3, prefix="q"))
    with pytest.raises(StoreError) as e:
        build_index(more, tmp_path / "idx", str(other_encoder), append=True, **QUIET)
    assert index.encoder_fingerprint in str(e.value) and str(other_encoder) in str(e.value)


def test_interrupted_build_resumes(tiny_encoder, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pool.jsonl", pool_rows())
    real = FastEncoder.encode
    calls = {"n": 0}

    def crash_on_second(self, texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, texts)

    monkeypatch.setattr(FastEncoder, "encode", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_index(
            data, tmp_path / "idx", str(tiny_encoder), backend="torch", shard_rows=5, **QUIET
        )
    assert not (tmp_path / "idx" / INDEX_FILE).exists()
    with pytest.raises(StoreError, match="not an influcoder index"):
        open_index(tmp_path / "idx")
    other = write_jsonl(tmp_path / "other.jsonl", pool_rows(5))
    with pytest.raises(StoreError, match="unfinished segment of other data"):
        build_index(
            other, tmp_path / "idx", str(tiny_encoder), backend="torch", shard_rows=5, **QUIET
        )
    monkeypatch.setattr(FastEncoder, "encode", real)
    index = build_index(
        data, tmp_path / "idx", str(tiny_encoder), backend="torch", shard_rows=5, **QUIET
    )
    whole = build_index(
        data, tmp_path / "whole", str(tiny_encoder), backend="torch", shard_rows=5, **QUIET
    )
    np.testing.assert_array_equal(index.vectors(), whole.vectors())


def test_corrupt_faiss_file_is_a_clear_error_and_a_rerun_rebuilds_it(tiny_encoder, tmp_path):
    data = write_jsonl(tmp_path / "pool.jsonl", pool_rows())
    kw = dict(backend="torch", approx="hnsw", **QUIET)
    index = build_index(data, tmp_path / "idx", str(tiny_encoder), **kw)
    q = queries(tiny_encoder)
    expected = index.search(q, 3)[1]
    (tmp_path / "idx" / FAISS_FILE).write_bytes(b"not a faiss index")
    with pytest.raises(StoreError, match="cannot read the FAISS index.*rebuild"):
        open_index(tmp_path / "idx").search(q, 3)
    rebuilt = build_index(data, tmp_path / "idx", str(tiny_encoder), **kw)
    np.testing.assert_array_equal(rebuilt.search(q, 3)[1], expected)


def test_rerun_with_another_kind_rebuilds_faiss_only(tiny_encoder, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pool.jsonl", pool_rows())
    build_index(data, tmp_path / "idx", str(tiny_encoder), backend="torch", **QUIET)
    monkeypatch.setattr(FastEncoder, "encode", lambda self, texts: pytest.fail("re-encoded"))
    index = build_index(data, tmp_path / "idx", approx="ivf", **QUIET)
    assert index.kind == "ivf" and index.meta["faiss"]["params"] == {"nlist": 1, "nprobe": 1}
    assert open_index(tmp_path / "idx", nprobe=3).search_params["nprobe"] == 3


def test_k_outside_the_pool_is_refused(tiny_encoder, tmp_path):
    index = build_index(
        write_jsonl(tmp_path / "pool.jsonl", pool_rows(4)),
        tmp_path / "idx",
        str(tiny_encoder),
        backend="torch",
        **QUIET,
    )
    with pytest.raises(ValueError, match="between 1 and the pool size 4"):
        index.search(queries(tiny_encoder, 1), 5)


def test_encode_arguments_are_validated():
    with pytest.raises(ValueError, match="dtype must be one of"):
        EncodeArguments(dtype="bfloat16")
    with pytest.raises(ValueError, match="backend must be one of"):
        EncodeArguments(backend="tpu")
