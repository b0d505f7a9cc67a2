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
    return [
        m.name
        for m in pkgutil.walk_packages(influcoder.__path__, "influcoder.")
        if ".cli" not in m.name or m.name == "influcoder.cli"
    ]


def test_public_names_are_never_replaced_by_submodules():
    """``import influcoder.x`` binds ``x`` on the package; no public name may be such an ``x``."""
    for name in all_submodules():
        importlib.import_module(name)
    for name in influcoder.__all__:
        assert not isinstance(getattr(influcoder, name), types.ModuleType), name


def test_collect_and_encode_work_twice(tiny_model_dir, tiny_encoder, tmp_path):
    from influcoder import CollectArguments, Sample

    samples = [
        Sample(id=f"s{i}", prompt=f"Tell me a joke {i}.", response="Why did the chicken.")
        for i in range(3)
    ]
    args = CollectArguments(
        model=str(tiny_model_dir), adapter_init="fresh", sketch_dim=32, max_length=32
    )
    for run in ("a", "b"):
        assert callable(influcoder.collect) and callable(influcoder.encode)
        g = influcoder.collect(samples, tmp_path / f"grad_{run}", args, progress=False)
        e = influcoder.encode(
            samples,
            tmp_path / f"emb_{run}",
            influcoder.EncodeArguments(encoder=str(tiny_encoder)),
            progress=False,
        )
        assert g.n == e.n == 3
    np.testing.assert_array_equal(
        influcoder.open_store(tmp_path / "grad_a").vectors(),
        influcoder.open_store(tmp_path / "grad_b").vectors(),
    )


def test_quiet_runs_record_their_time(tiny_model_dir, tmp_path):
    """Without a progress bar the store still says how long its vectors took (the demo's
    speed-up is computed from it)."""
    from influcoder import CollectArguments, Sample

    samples = [
        Sample(
            id=f"s{i}",
            prompt="Explain gravity.",
            response="Gravity pulls masses together." * (i + 1),
        )
        for i in range(4)
    ]
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
    np.testing.assert_allclose(cosine_scores(pool, queries), expected["gradient_scores"], atol=1e-5)
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


# --- one verb per stage: paths and the objects of the stage before are interchangeable ---------

FAST_COLLECT = {
    "adapter_init": "fresh",
    "sketch_dim": 64,
    "max_length": 48,
    "shard_rows": 8,
    "precision": "fp32",
}
#: no training, the closed-form head alone: the quickest distillation that still writes an
#: encoder directory (the trainer's own tests cover the epochs)
HEAD_ONLY = {"epochs": 0, "val_fraction": 0.3}
#: metric columns of an evaluation row (the others time the methods)
FIGURES = ("method", "per_anchor_spearman", "pairwise_spearman", "aggregated_spearman")


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir, tiny_encoder, tmp_path_factory):
    """The pipeline run once through the verbs, each given the object the stage before
    returned; the tests then call each verb again with paths."""
    from .conftest import write_jsonl
    from .tiny_encoders import pool_rows

    tmp = tmp_path_factory.mktemp("api")
    pool_file = write_jsonl(tmp / "pool.jsonl", pool_rows())
    queries_file = write_jsonl(tmp / "queries.jsonl", pool_rows(10, prefix="q"))
    args = influcoder.CollectArguments(model=str(tiny_model_dir), **FAST_COLLECT)
    pool = influcoder.collect(pool_file, tmp / "pool", args, progress=False)
    queries = influcoder.collect(queries_file, tmp / "queries", like=pool, progress=False)
    encoder = influcoder.distill(
        pool,
        queries,
        tmp / "encoder",
        influcoder.DistillArguments(**HEAD_ONLY),
        encoder=tiny_encoder,
        progress=False,
        device="cpu",
    )
    index = influcoder.index(encoder, pool_file, tmp / "index", progress=False, device="cpu")
    return types.SimpleNamespace(
        tmp=tmp,
        pool_file=pool_file,
        queries_file=queries_file,
        pool=pool,
        queries=queries,
        encoder=encoder,
        index=index,
    )


def test_every_stage_has_its_verb():
    for verb in (
        "collect",
        "score",
        "distill",
        "index",
        "attribute",
        "filter",
        "select",
        "evaluate",
        "validate",
    ):
        assert callable(getattr(influcoder, verb)) and verb in influcoder.__all__
    for settings in (
        "CollectArguments",
        "DistillArguments",
        "EncodeArguments",
        "ValidateArguments",
    ):
        assert isinstance(getattr(influcoder, settings), type)
    assert "build_index" not in influcoder.__all__ and callable(influcoder.build_index)


def test_collect_like_takes_a_store_or_its_path(pipeline):
    again = influcoder.collect(
        pipeline.queries_file,
        pipeline.tmp / "queries_by_path",
        like=str(pipeline.pool.path),
        progress=False,
    )
    assert again.setup == pipeline.queries.setup
    np.testing.assert_array_equal(again.vectors(), pipeline.queries.vectors())


def test_score_names_samples_by_id(pipeline, tmp_path):
    from influcoder.groundtruth.influence import score_stores

    scores = influcoder.score(pipeline.pool, pipeline.queries)
    assert scores.pool_ids == pipeline.pool.ids and scores.query_ids == [f"q{i}" for i in range(10)]
    assert scores.scores.shape == (24, 10)
    by_path = influcoder.score(str(pipeline.pool.path), pipeline.queries.path, tmp_path / "s")
    np.testing.assert_allclose(by_path.scores, scores.scores, atol=1e-6)
    assert (tmp_path / "s" / "scores.npy").is_file() and by_path.query_ids == scores.query_ids
    rows, values = score_stores(pipeline.pool, pipeline.queries, k=3)
    top = scores.top(3)
    assert list(top) == scores.query_ids
    for j, q in enumerate(scores.query_ids):
        assert [i for i, _ in top[q]] == [pipeline.pool.ids[r] for r in rows[:, j]]
        np.testing.assert_allclose([s for _, s in top[q]], values[:, j], atol=1e-6)
    assert len(scores.top(100)["q0"]) == 24
    with pytest.raises(ValueError, match="k must be"):
        scores.top(0)


def test_distill_takes_stores_or_paths_and_returns_a_path_like(pipeline, tiny_encoder):
    import os

    encoder = pipeline.encoder
    assert os.fspath(encoder) == str(pipeline.tmp / "encoder") and encoder.head is not None
    again = influcoder.distill(
        str(pipeline.pool.path),
        pipeline.queries.path,
        pipeline.tmp / "encoder_by_path",
        influcoder.DistillArguments(**HEAD_ONLY),
        encoder=tiny_encoder,
        progress=False,
        device="cpu",
    )
    assert again.head == encoder.head
    samples = pipeline.queries.samples
    a, b = (
        influcoder.encode(
            samples,
            pipeline.tmp / f"emb_{n}",
            influcoder.EncodeArguments(encoder=os.fspath(e), backend="torch"),
            progress=False,
            device="cpu",
        )
        for n, e in (("object", encoder), ("path", again))
    )
    np.testing.assert_allclose(a.vectors(), b.vectors(), atol=1e-6)


def test_index_takes_the_distilled_encoder_or_its_path(pipeline, tmp_path):
    by_path = influcoder.index(
        str(pipeline.encoder.path), pipeline.pool_file, tmp_path / "i", progress=False, device="cpu"
    )
    from_store = influcoder.index(
        pipeline.encoder, pipeline.pool, tmp_path / "j", progress=False, device="cpu"
    )
    for other in (by_path, from_store):
        assert other.ids == pipeline.index.ids == pipeline.pool.ids
        assert other.encoder_fingerprint == pipeline.index.encoder_fingerprint
        np.testing.assert_array_equal(
            other.segments[0].vectors(), pipeline.index.segments[0].vectors()
        )


def hits(results):
    return [[(h.id, round(h.score, 5)) for h in r.hits] for r in results]


def test_attribute_takes_an_index_its_path_or_an_attributor(pipeline):
    queries = ["The capital of France is Paris.", "Boil the egg."]
    expected = hits(influcoder.attribute(pipeline.index, queries, k=3))
    assert hits(influcoder.attribute(str(pipeline.index.path), queries, k=3)) == expected
    attributor = influcoder.Attributor.load(pipeline.index)
    assert hits(influcoder.attribute(attributor, queries, k=3)) == expected
    assert all(h[0] in pipeline.pool.ids for r in expected for h in r)
    # one text is one query, never its letters
    [one] = influcoder.attribute(attributor, queries[0], k=3)
    assert hits([one]) == expected[:1]
    # a Path is a data file of queries, a store its samples
    from_file = influcoder.attribute(attributor, pipeline.queries_file, k=2)
    from_store = influcoder.attribute(attributor, pipeline.queries, k=2)
    assert [r.query.id for r in from_file] == [f"q{i}" for i in range(10)]
    assert hits(from_file) == hits(from_store)


def test_filter_and_select_name_the_samples_they_move(pipeline, tmp_path):
    unwanted = ["I will not help with a weapon.", "To steal is bad."]
    a = influcoder.filter(pipeline.index, unwanted, tmp_path / "a.jsonl", top_k=3)
    b = influcoder.filter(str(pipeline.index.path), unwanted, tmp_path / "b.jsonl", top_k=3)
    assert a.removed_ids == b.removed_ids and len(a.removed_ids) == 3
    kept = [json.loads(line)["id"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert sorted(kept + a.removed_ids) == sorted(pipeline.pool.ids)
    with pytest.raises(influcoder.InputError, match="input"):
        influcoder.filter(pipeline.index, pipeline.queries_file, pipeline.queries_file, top_k=1)
    c = influcoder.select(pipeline.index, ["Paris.", "Rome."], tmp_path / "c.jsonl", count=4)
    d = influcoder.select(
        influcoder.Attributor.load(pipeline.index.path),
        ["Paris.", "Rome."],
        tmp_path / "d.jsonl",
        count=4,
    )
    assert c.selected_ids == d.selected_ids and len(c.selected_ids) == 4
    assert set(c.selected_ids) <= set(pipeline.pool.ids)


def figures(rows):
    return [{k: row[k] for k in FIGURES} for row in rows]


def test_evaluate_takes_stores_or_paths(pipeline, tmp_path):
    a = influcoder.evaluate(
        pipeline.pool,
        pipeline.queries,
        encoders={"distilled": pipeline.encoder},
        k=3,
        out=tmp_path / "e",
    )
    b = influcoder.evaluate(
        str(pipeline.pool.path),
        pipeline.queries.path,
        encoders={"distilled": str(pipeline.encoder.path)},
        k=3,
    )
    assert [r["method"] for r in a.rows] == ["gradient", "random", "tfidf", "bm25", "distilled"]
    assert figures(a.rows) == figures(b.rows)
    assert a.report is not None and a.report.is_file() and b.report is None
    assert (tmp_path / "e" / "results.json").is_file()
    with pytest.raises(ValueError, match="go together"):
        influcoder.evaluate(pipeline.pool, pipeline.queries, label_field="topic")


def test_validate_takes_stores_or_paths(pipeline, tmp_path):
    """Both calls share one run store, so the second trains nothing: it reads the runs."""
    args = influcoder.ValidateArguments(
        seeds=0, fraction=0.25, epochs=1, lr=1e-2, batch_size=4, n_boot=20
    )
    assert args.seeds == (0,)
    runs = tmp_path / "runs"
    a = influcoder.validate(
        pipeline.pool,
        pipeline.queries,
        pipeline.queries,
        tmp_path / "a",
        args,
        encoders={"distilled": pipeline.encoder},
        baselines=["bm25"],
        runs=runs,
        progress=False,
    )
    b = influcoder.validate(
        str(pipeline.pool.path),
        pipeline.queries.path,
        str(pipeline.queries.path),
        tmp_path / "b",
        args,
        encoders={"distilled": str(pipeline.encoder.path)},
        baselines=["bm25"],
        runs=runs,
        progress=False,
    )
    assert list(a.removed_ids) == ["gradient", "bm25", "distilled"]
    assert a.removed_ids == b.removed_ids
    for method, rows in a.removed.items():
        assert a.removed_ids[method] == [pipeline.pool.ids[r] for r in rows]
        assert len(rows) == 6
    assert [r["heldout_delta"] for r in a.rows] == [r["heldout_delta"] for r in b.rows]


# --- one string where a list is taken is one item ----------------------------------------------


def test_a_single_string_is_one_item_of_a_list_setting(tiny_model_dir, tmp_path):
    from influcoder.workflows.planted import StyleTask

    assert influcoder.CollectArguments(lora_targets="q_proj").lora_targets == ("q_proj",)
    assert influcoder.ValidateArguments(seeds=3).seeds == (3,)
    assert StyleTask(planted_topics="trivia").planted_topics == ("trivia",)
    args = influcoder.CollectArguments(
        model=str(tiny_model_dir), lora_targets="auto", **FAST_COLLECT
    )
    assert args.lora_targets == ("auto",)
    samples = [
        influcoder.Sample(id=f"s{i}", prompt="Say hello.", response="Hello " * (i + 1))
        for i in range(2)
    ]
    store = influcoder.collect(samples, tmp_path / "auto", args, progress=False)
    targets = store.setup["adapter"]["targets"]
    assert "q_proj" in targets and all(len(t) > 1 for t in targets)


# --- what an earlier release wrote, through the verbs -------------------------------------------


def test_release_0_1_0_stores_and_index_through_the_verbs(tiny_encoder):
    """The old stores score and evaluate as they did; the old index opens, and refuses an
    encoder other than its own by name (its tiny encoder's files are not reproducible)."""
    expected = json.loads((LEGACY / "expected.json").read_text())
    scores = influcoder.score(LEGACY / "grad_pool", LEGACY / "grad_queries")
    assert scores.pool_ids == [f"p{i}" for i in range(6)] and scores.query_ids == ["q0", "q1"]
    np.testing.assert_allclose(scores.scores, expected["gradient_scores"], atol=1e-5)
    evaluation = influcoder.evaluate(
        LEGACY / "grad_pool", LEGACY / "grad_queries", baselines=["bm25"], k=2
    )
    assert [r["method"] for r in evaluation.rows] == ["gradient", "bm25"]
    assert evaluation.rows[0]["per_anchor_spearman"] == pytest.approx(1.0)
    with pytest.raises(influcoder.StoreError, match="was built with the encoder"):
        influcoder.attribute(LEGACY / "index", "Paris.", encoder=tiny_encoder)
