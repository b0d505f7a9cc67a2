"""The public Python API: names that stay functions however often they are called, stores that
record true timings, and stores written by an earlier release that still open."""

from __future__ import annotations

import importlib
import json
import pkgutil
import types
from pathlib import Path

import numpy as np
import pytest

import influcoder

LEGACY = Path(__file__).parent / "data" / "release-0.1.0"


def all_submodules():
    return [m.name for m in pkgutil.walk_packages(influcoder.__path__, "influcoder.")
            if ".cli" not in m.name or m.name == "influcoder.cli"]


def test_public_names_are_never_replaced_by_submodules():
    """``import influcoder.x`` binds ``x`` on the package; no public name may be such an ``x``."""
    for name in all_submodules():
        importlib.import_module(name)
    for name in influcoder.__all__:
        assert not isinstance(getattr(influcoder, name), types.ModuleType), name


def test_collect_and_encode_work_twice(tiny_model_dir, tiny_encoder, tmp_path):
    from influcoder import CollectArguments, Sample

    samples = [Sample(id=f"s{i}", prompt=f"Tell me a joke {i}.", response="Why did the chicken.")
               for i in range(3)]
    args = CollectArguments(model=str(tiny_model_dir), adapter_init="fresh", sketch_dim=32,
                            max_length=32)
    for run in ("a", "b"):
        assert callable(influcoder.collect) and callable(influcoder.encode)
        g = influcoder.collect(samples, tmp_path / f"grad_{run}", args, progress=False)
        e = influcoder.encode(samples, tmp_path / f"emb_{run}",
                              influcoder.EncodeArguments(encoder=str(tiny_encoder)),
                              progress=False)
        assert g.n == e.n == 3
    np.testing.assert_array_equal(influcoder.open_store(tmp_path / "grad_a").vectors(),
                                  influcoder.open_store(tmp_path / "grad_b").vectors())


def test_quiet_runs_record_their_time(tiny_model_dir, tmp_path):
    """Without a progress bar the store still says how long its vectors took (the demo's
    speed-up is computed from it)."""
    from influcoder import CollectArguments, Sample

    samples = [Sample(id=f"s{i}", prompt="Explain gravity.", response="Gravity pulls masses "
                      "together." * (i + 1)) for i in range(4)]
    args = CollectArguments(model=str(tiny_model_dir), adapter_init="fresh", sketch_dim=32)
    store = influcoder.collect(samples, tmp_path / "g", args, progress=False)
    assert store.manifest["provenance"]["seconds"] > 0


def test_stores_and_index_of_release_0_1_0_still_open():
    """Frozen by tests/data/release-0.1.0/make_legacy.py and legacy_expect.py on release 0.1.0:
    the stores open, score as they did, and the index searches as it did."""
    from influcoder.attribution.index import open_index
    from influcoder.groundtruth.influence import cosine_scores

    expected = json.loads((LEGACY / "expected.json").read_text())
    pool, queries = (influcoder.open_store(LEGACY / n) for n in ("grad_pool", "grad_queries"))
    assert pool.ids == [f"p{i}" for i in range(6)] and queries.ids == ["q0", "q1"]
    np.testing.assert_allclose(cosine_scores(pool, queries), expected["gradient_scores"],
                               atol=1e-5)
    emb = influcoder.open_store(LEGACY / "emb_pool")
    index = open_index(LEGACY / "index")
    assert index.ids == expected["index_ids"]
    scores, rows = index.search(emb.vectors()[:2], 3)
    np.testing.assert_array_equal(rows, expected["index_search_rows"])
    np.testing.assert_allclose(scores, expected["index_search_scores"], atol=1e-5)


@pytest.mark.parametrize("name", ["grad_pool", "emb_pool"])
def test_legacy_store_info(name):
    store = influcoder.open_store(LEGACY / name)
    assert store.manifest["complete"] and store.vectors().shape == (store.n, store.dim)
