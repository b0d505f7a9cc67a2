"""Evaluation rows against direct metric calls; results files; labels, alignment, targets; the
``influcoder evaluate`` command on small stores."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder import metrics
from influcoder.cli import cli
from influcoder.errors import InputError, StoreError
from influcoder.evaluation.evaluate import (
    check_aligned,
    check_target,
    expected_random_auprc,
    labels_from_samples,
    metric_rows,
    placeholder_rows,
    score_methods,
    write_results,
)
from influcoder.io.samples import Sample
from influcoder.io.tables import format_bytes, format_seconds, format_table

from ..conftest import write_store
from ..references import reference_group_fidelity

TOPICS = ["pasta boil sauce", "python loop crash", "paris louvre seine", "guitar tune chord"]


@pytest.fixture()
def matrices():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(30, 5))
    good = gt + 0.3 * rng.normal(size=gt.shape)
    labels = np.zeros(30, dtype=bool)
    labels[[2, 11, 17]] = True
    methods = {
        "good": (good, {"seconds": 0.5, "prepare_seconds": 2.0, "bytes_per_sample": 64}),
        "noise": (rng.normal(size=gt.shape), {"seconds": 0.1}),
    }
    return gt, methods, labels


def test_rows_equal_direct_metric_calls(matrices):
    gt, methods, labels = matrices
    rows = metric_rows(gt, methods, labels=labels, k=4)
    assert [r["method"] for r in rows] == ["good", "noise"]
    assert list(rows[0]) == [
        "method",
        "per_anchor_spearman",
        "pairwise_spearman",
        "aggregated_spearman",
        "ndcg@4",
        "recall@4",
        "auprc_mean",
        "auprc_max",
        "seconds",
        "prepare_seconds",
        "bytes_per_sample",
    ]
    for row, (scores, _) in zip(rows, methods.values()):
        assert row["per_anchor_spearman"] == metrics.per_anchor_spearman(gt, scores)
        assert row["pairwise_spearman"] == metrics.pairwise_spearman(gt, scores)
        assert row["aggregated_spearman"] == metrics.aggregated_spearman(gt, scores)
        assert row["ndcg@4"] == metrics.ndcg_at_k(gt, scores, 4)
        assert row["recall@4"] == metrics.recall_at_k(gt, scores, 4)
        assert row["auprc_mean"] == metrics.auprc(labels, scores.mean(axis=1))
        assert row["auprc_max"] == metrics.auprc(labels, scores.max(axis=1))
    assert (rows[0]["seconds"], rows[0]["prepare_seconds"], rows[0]["bytes_per_sample"]) == (
        0.5,
        2.0,
        64.0,
    )
    assert rows[0]["per_anchor_spearman"] > 0.8 > rows[1]["per_anchor_spearman"]
    assert math.isnan(rows[1]["bytes_per_sample"])


def test_rows_without_labels_have_no_auprc(matrices):
    gt, methods, _ = matrices
    assert "auprc_mean" not in metric_rows(gt, methods)[0]


@pytest.mark.parametrize("with_labels", [False, True])
def test_placeholder_rows_have_the_columns_of_real_rows(matrices, with_labels):
    gt, methods, labels = matrices
    rows = metric_rows(gt, methods, labels=labels if with_labels else None, k=3)
    expected = placeholder_rows(list(methods), 3, with_labels)
    assert [list(r) for r in expected] == [list(r) for r in rows]


def test_evaluate_refuses_bad_input(matrices):
    gt, methods, labels = matrices
    with pytest.raises(ValueError, match="method 'bad': scores have shape"):
        metric_rows(gt, {"bad": (gt[:, :2], {})})
    with pytest.raises(ValueError, match="one entry per pool sample"):
        metric_rows(gt, methods, labels=labels[:5])
    with pytest.raises(ValueError, match="no positive"):
        metric_rows(gt, methods, labels=np.zeros(30, dtype=bool))
    with pytest.raises(ValueError, match="k must be between"):
        metric_rows(gt, methods, k=31)


def test_table_and_formats(matrices):
    gt, methods, labels = matrices
    table = format_table(metric_rows(gt, methods, labels=labels, k=4))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["method", "per_anchor_spearman", "pairwise_spearman"]
    assert lines[2].startswith("good ") and "500 ms" in lines[2] and "64 B" in lines[2]
    assert lines[3].rstrip().endswith("n/a")
    assert [format_seconds(x) for x in (0.00042, 0.9996, 1.25, 600)] == [
        "0.42 ms",
        "1000 ms",
        "1.25 s",
        "10 min",
    ]
    assert [format_bytes(x) for x in (0, 384, 16384, 1.5 * 2**20)] == [
        "0 B",
        "384 B",
        "16 KiB",
        "1.5 MiB",
    ]


def test_results_files(matrices, tmp_path):
    gt, methods, labels = matrices
    rows = metric_rows(gt, methods, labels=labels, k=4)
    json_path, csv_path = write_results(tmp_path / "out", rows, k=4, note=float("nan"))
    doc = json.loads(json_path.read_text())
    assert doc["k"] == 4 and doc["note"] is None and doc["rows"][1]["bytes_per_sample"] is None
    assert doc["rows"][0]["auprc_max"] == rows[0]["auprc_max"]
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["good", "noise"]
    assert float(table[0]["recall@4"]) == rows[0]["recall@4"]
    assert table[1]["bytes_per_sample"] == ""


def test_expected_random_auprc_is_exact():
    # One positive among 3: at rank 1, 2 or 3 its AP is 1, 1/2 or 1/3.
    assert expected_random_auprc(3, 1) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # Every placement of 2 positives among 6, equally likely.
    aps = []
    for positions in itertools.combinations(range(6), 2):
        labels = np.zeros(6, dtype=bool)
        labels[list(positions)] = True
        aps.append(metrics.auprc(labels, -np.arange(6.0)))
    assert expected_random_auprc(6, 2) == pytest.approx(np.mean(aps))
    assert expected_random_auprc(5, 5) == 1.0 and expected_random_auprc(1, 1) == 1.0
    with pytest.raises(ValueError):
        expected_random_auprc(5, 0)


def _samples(labels):
    return [
        Sample(id=str(i), prompt="p", response="r", meta={} if value is None else {"label": value})
        for i, value in enumerate(labels)
    ]


def test_labels_from_samples():
    samples = _samples(["harmful", "ok", None, "Harmful", True])
    assert labels_from_samples(samples, "label", "harmful").tolist() == [
        True,
        False,
        False,
        True,
        False,
    ]
    assert labels_from_samples(samples, "label", "true").tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]
    with pytest.raises(InputError, match="no sample has the label field 'kind'"):
        labels_from_samples(samples, "kind", "harmful")
    with pytest.raises(InputError, match=r"no sample has label = 'toxic'.*values seen"):
        labels_from_samples(samples, "label", "toxic")


def test_check_aligned():
    check_aligned(["a", "b"], ["a", "b"], "x")
    with pytest.raises(StoreError, match="x: the same samples in another order.*row 0"):
        check_aligned(["a", "b"], ["b", "a"], "x")
    with pytest.raises(StoreError, match="x: different samples.*row 1: id 'c'"):
        check_aligned(["a", "b"], ["a", "c"], "x")
    with pytest.raises(StoreError, match="x: 1 samples, the ground truth has 2"):
        check_aligned(["a", "b"], ["a"], "x")


def test_check_target(matrices):
    gt, methods, labels = matrices
    rows = metric_rows(gt, methods, labels=labels, k=4)
    name, achieved, text = check_target(rows, "good:per_anchor_spearman >= 0.8")
    assert (name, achieved) == ("good:per_anchor_spearman>=0.8", True)
    assert text.startswith("good per_anchor_spearman = 0.9") and "target >= 0.8" in text
    assert check_target(rows, "noise:per_anchor_spearman>=0.8")[1] is False
    assert check_target(rows, "good:seconds<=0.1")[1] is False
    assert check_target(rows, "noise:bytes_per_sample<=1e9")[1] is False  # NaN never meets
    for spec, match in [
        ("good per_anchor_spearman>0.8", "is not METHOD:METRIC"),
        ("good:per_anchor_spearman>=high", "is not a number"),
        ("other:recall@4>=0.1", "no method 'other'"),
        ("good:recall@10>=0.1", "no metric 'recall@10'"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_target(rows, spec)


# ---------------------------------------------------------------------------------------------
# Stores and the command line


def _store(path, x, samples, *, kind="gradients", setup=None):
    return write_store(path, x, samples, kind=kind, setup=setup, dtype="float16")


@pytest.fixture()
def stores(tmp_path):
    """Gradient stores of 24 pool samples and 6 queries over 4 topics (pool samples 0 and 5
    planted as 'harmful'; meta 'topic' names the topic, 'part' is missing on every third
    sample), and embedding stores of the same samples."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(len(TOPICS), 64))

    def make(n, prefix):
        topic = np.arange(n) % len(TOPICS)
        samples = [
            Sample(
                id=f"{prefix}{i}",
                prompt=f"<b>{TOPICS[t]}</b> & more",
                response=f"answer {i}",
                meta={
                    "label": "harmful" if prefix == "p" and i in (0, 5) else "ok",
                    "topic": TOPICS[t].split()[0],
                    **({"part": "a" if i % 2 else "b"} if i % 3 else {}),
                },
            )
            for i, t in enumerate(topic)
        ]
        return (centers[topic] + 0.8 * rng.normal(size=(n, 64))).astype(np.float32), samples

    (px, ps), (qx, qs) = make(24, "p"), make(6, "q")
    project = rng.normal(size=(64, 16))
    emb = {"encoder": "test"}
    return {
        "pool": _store(tmp_path / "pool", px, ps),
        "queries": _store(tmp_path / "queries", qx, qs),
        "pool_emb": _store(tmp_path / "pool_emb", px @ project, ps, kind="embeddings", setup=emb),
        "query_emb": _store(tmp_path / "query_emb", qx @ project, qs, kind="embeddings", setup=emb),
        "shuffled": _store(
            tmp_path / "shuffled", (px @ project)[::-1], ps[::-1], kind="embeddings", setup=emb
        ),
    }


def test_score_methods_orders_and_checks(stores):
    s = stores
    methods = score_methods(
        s["pool"],
        s["queries"],
        stores={"distilled": (s["pool_emb"], s["query_emb"])},
        baselines=["random", "bm25"],
        gradient_dims=[8],
        seed=1,
    )
    assert list(methods) == ["gradient", "gradient@8", "random", "bm25", "distilled"]
    assert all(scores.shape == (24, 6) for scores, _ in methods.values())
    assert methods["random"][1]["seed"] == 1
    with pytest.raises(ValueError, match=r"used more than once: \['bm25'\]"):
        score_methods(
            s["pool"],
            s["queries"],
            baselines=["bm25"],
            stores={"bm25": (s["pool_emb"], s["query_emb"])},
        )
    with pytest.raises(ValueError, match="unknown baselines"):
        score_methods(s["pool"], s["queries"], baselines=["bm26"])
    with pytest.raises(ValueError, match=r"gradient dims \[65\] out of range"):
        score_methods(s["pool"], s["queries"], gradient_dims=[65])
    with pytest.raises(StoreError, match="another order"):
        score_methods(s["pool"], s["queries"], stores={"x": (s["shuffled"], s["query_emb"])})


def _run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def test_cli_evaluate_writes_results_and_report(stores, tmp_path):
    s, out = stores, tmp_path / "eval"
    result = _run(
        s["pool"].path,
        s["queries"].path,
        "-m",
        f"distilled={s['pool_emb'].path},{s['query_emb'].path}",
        "--baselines",
        "random,tfidf",
        "--gradient-dims",
        "16",
        "--label-field",
        "label",
        "--positive",
        "harmful",
        "-k",
        "3",
        "--target",
        "distilled:per_anchor_spearman>=0.2",
        "--target",
        "random:recall@3>=0.99",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "method" and "auprc_mean" in lines[0]
    assert [line.split()[0] for line in lines[2:7]] == [
        "gradient",
        "gradient@16",
        "random",
        "tfidf",
        "distilled",
    ]
    assert lines[7].startswith("planted: 2 of 24 pool samples (8.3%)")
    assert lines[8].startswith("MET ") and lines[9].startswith("MISSED")
    doc = json.loads((out / "results.json").read_text())
    assert doc["positives"] == 2 and doc["n_pool"] == 24 and len(doc["rows"]) == 5
    assert doc["random_expected_auprc"] == expected_random_auprc(24, 2)
    assert doc["methods"]["gradient@16"]["dim"] == 16
    assert [t["achieved"] for t in doc["targets"]] == [True, False]
    assert (out / "results.csv").is_file()
    page = (out / "report.html").read_text()
    assert "MISSED" in page and "&lt;b&gt;pasta boil sauce&lt;/b&gt; &amp; more" in page
    assert "<b>pasta" not in page
    # Without --group-by: no group columns, no group section.
    assert "group_spearman" not in lines[0] and "groups" not in doc
    assert "group_top1" not in (out / "results.csv").read_text()
    assert "Which data source taught it" not in page and not (out / "groups.png").exists()


@pytest.mark.parametrize("aggregate", ["softmax", "sum"])
def test_cli_evaluate_group_by(stores, tiny_encoder, tmp_path, aggregate):  # noqa: F811
    """--group-by adds group_spearman and group_top1, equal to the row-by-row reference on
    the scores of each method, to the table, both results files and the report."""
    s, out = stores, tmp_path / "eval"
    args = [
        s["pool"].path,
        s["queries"].path,
        "-m",
        f"distilled={s['pool_emb'].path},{s['query_emb'].path}",
        "-e",
        f"tiny={tiny_encoder}",
        "--device",
        "cpu",
        "--baselines",
        "random,bm25",
        "--group-by",
        "topic",
        "--target",
        "distilled:group_top1>=0.5",
        "--out",
        out,
    ]
    if aggregate != "softmax":  # softmax is the default
        args += ["--group-aggregate", aggregate]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header.index("group_top1") == header.index("group_spearman") + 1
    assert header.index("group_top1") + 1 == header.index("seconds")
    how = "softmax (T = 0.1)" if aggregate == "softmax" else "sum"
    assert (
        f"groups of 'topic': 4 (pasta 6, python 6, paris 6, guitar 6); a group's score: "
        f"the {how} of its samples' scores"
    ) in result.stdout
    doc = json.loads((out / "results.json").read_text())
    assert doc["groups"]["field"] == "topic" and doc["groups"]["aggregate"] == aggregate
    assert doc["targets"][0]["target"] == "distilled:group_top1>=0.5"
    methods = score_methods(
        s["pool"],
        s["queries"],
        stores={"distilled": (s["pool_emb"], s["query_emb"])},
        encoders={"tiny": str(tiny_encoder)},
        baselines=["random", "bm25"],
    )
    gt = methods["gradient"][0]
    topics = [sample.meta["topic"] for sample in s["pool"].samples]
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == set(methods)
    for name, (scores, _) in methods.items():
        expected = reference_group_fidelity(
            gt, scores, topics, aggregate=aggregate, temperature=0.1
        )
        assert rows[name]["group_spearman"] == pytest.approx(
            expected["group_spearman"], abs=1e-6
        ), name
        assert rows[name]["group_top1"] == pytest.approx(expected["group_top1"]), name
        assert doc["groups"]["undefined_queries"][name] == expected["undefined"]
    assert rows["gradient"]["group_spearman"] == 1.0 and rows["gradient"]["group_top1"] == 1.0
    with open(out / "results.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert float(csv_rows[0]["group_top1"]) == 1.0
    page = (out / "report.html").read_text()
    assert "<h2>Which data source taught it</h2>" in page and "<b>topic</b>" in page
    assert (out / "groups.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-m", "x={shuffled},{query_emb}"], "the same samples in another order"),
        (["--label-field", "label", "--positive", "toxic"], "no sample has label = 'toxic'"),
        (["--label-field", "label"], "--label-field and --positive go together"),
        (["-m", "x={pool_emb}"], "expected NAME=POOL_STORE,QUERY_STORE"),
        (["-e", "noname"], "expected NAME=VALUE"),
        (["--gradient-dims", "1000"], "out of range"),
        (["-k", "25"], "between 1 and the pool size 24"),
        (["--target", "gradient:speed>=1"], "no metric 'speed'"),
        (["--target", "gradient:group_top1>=1"], "no metric 'group_top1'"),
        (["--group-by", "part"], "--group-by 'part': pool sample 'p0' (row 0) has no 'part'"),
        (["--group-by", "nothere"], "no pool sample has the metadata field 'nothere'"),
        (["--group-by", "topic", "--group-aggregate", "median"], "'median' is not one of"),
        (["--group-by", "topic", "--group-temperature", "0"], "temperature must be > 0"),
    ],
)
def test_cli_evaluate_errors_exit_2(stores, extra, message):
    paths = {name: store.path for name, store in stores.items()}
    result = _run(
        paths["pool"],
        paths["queries"],
        "--baselines",
        "none",
        *(arg.format(**paths) for arg in extra),
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
