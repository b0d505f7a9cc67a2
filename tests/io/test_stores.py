"""Stores: atomic, resumable, manifest-checked."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from influcoder.errors import StoreError
from influcoder.io.layout import MANIFEST_NAME, SHARDS_DIR
from influcoder.io.samples import Sample
from influcoder.io.stores import Store, StoreWriter, check_same_setup, open_store

SETUP = {"model": {"fingerprint": "sha256:abc"}, "sketch": {"dim": 4, "seed": 0}}


def _samples(n):
    return [Sample(id=f"s{i}", prompt=f"p{i}", response=f"r{i}") for i in range(n)]


def _rows(start, stop, dim=4):
    return np.arange(start * dim, stop * dim, dtype=np.float32).reshape(-1, dim) / 100


def _fill(writer, only=None):
    for k in writer.missing_shards()[:only]:
        a, b = writer.shard_range(k)
        writer.write_shard(k, _rows(a, b))


def test_roundtrip(tmp_path):
    w = StoreWriter(
        tmp_path / "s",
        kind="gradients",
        setup=SETUP,
        samples=_samples(10),
        dim=4,
        dtype="float32",
        shard_rows=3,
    )
    assert w.missing_shards() == [0, 1, 2, 3]
    _fill(w)
    store = w.finish()
    again = open_store(tmp_path / "s")
    assert again.ids == [f"s{i}" for i in range(10)]
    assert again.samples[3].response == "r3"
    np.testing.assert_array_equal(again.vectors(), _rows(0, 10))
    assert again.manifest["complete"] and store.n == 10 and store.dim == 4
    assert [s for s, _ in again.iter_chunks()] == [0, 3, 6, 9]


def test_incomplete_store_is_refused_then_resumed(tmp_path):
    kw = dict(kind="gradients", setup=SETUP, samples=_samples(10), dim=4, shard_rows=3)
    _fill(StoreWriter(tmp_path / "s", **kw), only=2)
    with pytest.raises(StoreError, match="incomplete store \\(2 of 4 shards\\)"):
        open_store(tmp_path / "s")
    w = StoreWriter(tmp_path / "s", **kw)
    assert w.missing_shards() == [2, 3] and w.missing_rows() == 4
    _fill(w)
    np.testing.assert_allclose(w.finish().vectors(), _rows(0, 10), rtol=1e-3)


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"setup": {**SETUP, "sketch": {"dim": 4, "seed": 1}}}, "setup.sketch.seed: 0 vs 1"),
        ({"samples": _samples(11)}, "n: 10 vs 11"),
        ({"dim": 5}, "dim: 4 vs 5"),
        ({"dtype": "float32"}, "dtype: 'float16' vs 'float32'"),
    ],
)
def test_resume_with_other_setup_is_refused(tmp_path, change, expected):
    kw = dict(kind="gradients", setup=SETUP, samples=_samples(10), dim=4, shard_rows=3)
    _fill(StoreWriter(tmp_path / "s", **kw), only=1)
    with pytest.raises(StoreError) as e:
        StoreWriter(tmp_path / "s", **{**kw, **change})
    assert expected in str(e.value)


def test_refuses_to_write_into_a_foreign_directory(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not an influcoder store"):
        StoreWriter(tmp_path / "s", kind="gradients", setup=SETUP, samples=_samples(2), dim=4)
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"


def test_stale_temp_files_are_ignored_and_cleaned(tmp_path):
    kw = dict(kind="gradients", setup=SETUP, samples=_samples(4), dim=4, shard_rows=2)
    w = StoreWriter(tmp_path / "s", **kw)
    stale = tmp_path / "s" / SHARDS_DIR / ".00000.safetensors.123.tmp"
    stale.write_bytes(b"half a shard")
    w = StoreWriter(tmp_path / "s", **kw)
    assert not stale.exists() and w.missing_shards() == [0, 1]


def test_corrupt_shard_is_reported(tmp_path):
    w = StoreWriter(
        tmp_path / "s", kind="gradients", setup=SETUP, samples=_samples(4), dim=4, shard_rows=2
    )
    _fill(w)
    w.finish()
    (tmp_path / "s" / SHARDS_DIR / "00001.safetensors").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="00001.safetensors: corrupt shard"):
        open_store(tmp_path / "s").vectors()


def test_bad_manifest(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(StoreError, match="cannot read"):
        open_store(tmp_path / "s")
    with pytest.raises(StoreError, match="no manifest.json"):
        open_store(tmp_path)


def test_writes_are_atomic_and_rejects_nonfinite(tmp_path):
    w = StoreWriter(
        tmp_path / "s", kind="gradients", setup=SETUP, samples=_samples(2), dim=4, shard_rows=2
    )
    with pytest.raises(ValueError, match="non-finite"):
        w.write_shard(0, np.full((2, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        w.write_shard(0, np.zeros((3, 4), dtype=np.float32))
    assert os.listdir(tmp_path / "s" / SHARDS_DIR) == []


def test_check_same_setup_names_the_difference(tmp_path):
    stores = []
    for name, setup in (("a", SETUP), ("b", {**SETUP, "model": {"fingerprint": "sha256:def"}})):
        w = StoreWriter(tmp_path / name, kind="gradients", setup=setup, samples=_samples(2), dim=4)
        _fill(w)
        stores.append(w.finish())
    check_same_setup(stores[0], stores[0])
    with pytest.raises(StoreError, match="model.fingerprint: 'sha256:abc' vs 'sha256:def'"):
        check_same_setup(*stores)


def test_manifest_is_json_with_provenance(tmp_path):
    w = StoreWriter(
        tmp_path / "s",
        kind="embeddings",
        setup=SETUP,
        samples=_samples(2),
        dim=4,
        provenance={"source": "x.jsonl"},
    )
    _fill(w)
    w.finish(seconds=1.5)
    m = json.loads((tmp_path / "s" / MANIFEST_NAME).read_text())
    assert m["provenance"]["source"] == "x.jsonl" and m["provenance"]["seconds"] == 1.5
    assert Store(tmp_path / "s").kind == "embeddings"


def test_written_files_get_the_usual_mode(tmp_path):
    from influcoder.io.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    # The mode follows the process umask read at import; 0o644 under the usual 022.
    assert (tmp_path / "f").stat().st_mode & 0o777 in (0o644, 0o666 & ~old)
