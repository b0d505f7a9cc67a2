"""The planted-style test's data: seeded, sized, labelled, topic-disjoint; its recall figure."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder.evaluation.baselines import bm25_scores, tokenize
from influcoder.io.samples import Sample, load_samples
from influcoder.workflows.planted import (
    PLAIN,
    PLANTED,
    STYLES,
    StyleTask,
    build_style_data,
    planted_recall,
    shared_topics,
    text_recall,
    write_style_data,
)

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("chatterbot_corpus") is None, reason="chatterbot-corpus not installed"
)

TOPICS = ("a", "b", "c", "d", "e", "f")


def _rows(per_topic: int = 30) -> list[dict]:
    rows = [
        {
            "id": f"t/{t}/{i}",
            "prompt": f"question {i} about {t}{t}",
            "response": f"answer {i} on {t}{t}.",
            "source": "test",
            "category": t,
        }
        for t in TOPICS
        for i in range(per_topic)
    ]
    rows.append({**rows[0], "id": "t/a/dup", "response": "another answer"})  # same prompt
    return rows


def _task(**kw) -> StyleTask:
    base = {
        "n_pool": 60,
        "n_planted": 6,
        "n_targets": 5,
        "n_heldout": 4,
        "n_control": 3,
        "planted_topics": ("a", "b"),
        "query_topics": ("c", "d"),
    }
    return StyleTask(**{**base, **kw})


@pytest.mark.parametrize("style", sorted(STYLES))
def test_sets_are_sized_labelled_and_styled(style):
    task = _task(style=style)
    data = build_style_data(task, _rows())
    assert len(data.pool) == 60 and int(data.labels.sum()) == 6
    assert (len(data.targets), len(data.heldout), len(data.control)) == (5, 4, 3)
    rewrite = STYLES[style][0]
    originals = {r["id"]: r for r in _rows()}
    for s in data.pool + data.targets + data.heldout + data.control:
        planted = s.meta["label"] == PLANTED
        assert s.meta["style"] == (style if planted else "")
        original = originals[s.id.split("/", 1)[1] if planted else s.id]
        assert s.prompt == original["prompt"]
        assert s.response == (rewrite(original["response"]) if planted else original["response"])
    assert {s.meta["label"] for s in data.targets + data.heldout} == {PLANTED}
    assert {s.meta["label"] for s in data.control} == {PLAIN}
    assert {s.meta["category"] for s in data.pool if s.meta["label"] == PLANTED} <= {"a", "b"}
    assert {s.meta["category"] for s in data.targets + data.heldout + data.control} <= {"c", "d"}
    # the pool also holds plain conversations on the query topics: the text-alike distractors
    assert {"c", "d"} & {s.meta["category"] for s in data.pool if s.meta["label"] == PLAIN}
    ids = [s.id for s in data.pool + data.targets + data.heldout + data.control]
    assert len(ids) == len(set(ids))
    prompts = [s.prompt for s in data.pool + data.targets + data.heldout + data.control]
    assert len(prompts) == len(set(prompts))  # each prompt once: "t/a/dup" never appears
    assert "t/a/dup" not in ids


def test_same_seed_same_files_other_seed_other_split(tmp_path):
    task = _task()
    for name in ("one", "two"):
        write_style_data(tmp_path / name, build_style_data(task, _rows()))
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == ["control.jsonl", "heldout.jsonl", "pool.jsonl", "targets.jsonl", "task.json"]
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    other = build_style_data(_task(seed=1), _rows())
    assert [s.id for s in other.pool] != [s.id for s in build_style_data(task, _rows()).pool]
    pool = load_samples(tmp_path / "one" / "pool.jsonl")
    assert sum(s.meta["label"] == PLANTED for s in pool) == 6
    assert json.loads((tmp_path / "one" / "task.json").read_text())["planted_topics"] == ["a", "b"]


def test_shared_topics_finds_topic_and_prompt_overlap():
    data = build_style_data(_task(), _rows())
    planted = [s for s in data.pool if s.meta["label"] == PLANTED]
    queries = data.targets + data.heldout + data.control
    assert shared_topics(planted, queries) == []
    # the check can fail: a query on a planted topic, or a planted prompt asked again
    stray = Sample("q", planted[0].prompt.upper(), "x", meta={"category": "z"})
    assert shared_topics(planted, queries + [stray]) == [f"prompt:{planted[0].prompt}"]
    same_topic = Sample("q2", "new", "x", meta={"category": planted[0].meta["category"]})
    assert shared_topics(planted, [same_topic]) == [planted[0].meta["category"]]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"style": "pirate"}, "style must be one of"),
        ({"n_planted": 60}, "n_planted must be below n_pool"),
        ({"n_targets": 0}, "n_targets must be an integer >= 1"),
        ({"n_control": -1}, "n_control must be an integer >= 0"),
        ({"n_pool": 2.5}, "n_pool must be an integer"),
        ({"query_topics": ("c", "a")}, "must be disjoint; both name ['a']"),
        ({"query_topics": ()}, "query_topics must name at least one topic"),
        ({"planted_topics": ("a", "a")}, "planted_topics must name at least one topic, each once"),
    ],
)
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _task(**kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"query_topics": ("c", "zz")}, "unknown query_topics ['zz']"),
        ({"n_planted": 61, "n_pool": 80}, "planted_topics ['a', 'b'] have 60 distinct prompts"),
        (
            {"n_targets": 50, "n_heldout": 9},
            ("query_topics ['c', 'd'] have 60 distinct prompts, the task needs 62"),
        ),
        ({"n_pool": 200}, "n_pool 200 needs 194 plain samples, the data has 162"),
    ],
)
def test_data_too_small_or_unknown_topic(kw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_style_data(_task(**kw), _rows())


def test_kaomoji_is_invisible_to_bm25_and_words_are_not():
    text = "Do you feel love?"
    assert tokenize(STYLES["kaomoji"][0](text)) == tokenize(text)
    assert tokenize(STYLES["caps"][0](text)) == tokenize(text)
    assert tokenize(STYLES["signoff"][0](text)) != tokenize(text)
    # so BM25 scores of a kaomoji pool against kaomoji queries equal those without the style
    data = build_style_data(_task(), _rows())
    plain = [Sample(s.id, s.prompt, s.response.replace(" ~*~ (^.^) ~*~", "")) for s in data.pool]
    np.testing.assert_allclose(
        bm25_scores(data.pool, data.targets)[0], bm25_scores(plain, data.targets)[0]
    )


def _reference_recall(scores, labels, fraction):
    """Slow and plain: sort by the mean score, count planted among the first ``count``."""
    n = len(labels)
    count = min(n - 1, max(1, round(n * fraction)))
    means = [sum(row) / len(row) for row in scores.tolist()]
    order = sorted(range(n), key=lambda i: (-means[i], i))
    per_query = []
    for j in range(scores.shape[1]):
        col = sorted(range(n), key=lambda i: (-scores[i, j], i))[:count]
        per_query.append(sum(labels[i] for i in col) / sum(labels))
    ranks = {i: r / (n - 1) for r, i in enumerate(order)}
    return {
        "removed": sum(labels[i] for i in order[:count]),
        "of": sum(labels),
        "n_removed": count,
        "per_query": sum(per_query) / len(per_query),
        "mean_rank": sum(ranks[i] for i in range(n) if labels[i]) / sum(labels),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_recall_matches_a_plain_reference(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(50, 7))
    scores[:5] += 1.0  # planted rows score higher on average
    scores[10, :] = scores[11, :]  # a tie, broken by the lower index
    labels = np.zeros(50, dtype=bool)
    labels[[0, 1, 2, 3, 4, 11, 30]] = True
    got = planted_recall(scores, labels, 0.1)
    want = _reference_recall(scores, labels, 0.1)
    assert got["removed"] == want["removed"] and got["n_removed"] == want["n_removed"] == 5
    assert got["per_query"] == pytest.approx(want["per_query"])
    assert got["mean_rank"] == pytest.approx(want["mean_rank"])
    assert got["expected_random"] == pytest.approx(5 * 7 / 50)


def test_planted_recall_rejects_bad_shapes():
    with pytest.raises(ValueError, match="scores must be"):
        planted_recall(np.zeros((4, 2)), np.array([True, False, False]))
    with pytest.raises(ValueError, match="at least one planted"):
        planted_recall(np.zeros((3, 2)), np.zeros(3, dtype=bool))


def test_text_recall_bm25_finds_words_not_punctuation():
    """On the same split, BM25 puts every 'signoff' sample in its top share and no more
    'kaomoji' samples than it would with the style removed from the pool."""
    words = text_recall(build_style_data(_task(style="signoff"), _rows()))
    assert words["BM25"]["removed"] == 6
    assert words["BM25 (prompts only)"]["removed"] <= 1
    dots = text_recall(build_style_data(_task(style="kaomoji"), _rows()))
    assert dots["BM25"]["removed"] <= 1 and dots["random"]["n_removed"] == 6


@needs_data
def test_real_data_default_task_is_disjoint_and_deterministic():
    task = StyleTask()
    data = build_style_data(task)
    again = build_style_data(task)
    assert [s.id for s in data.pool] == [s.id for s in again.pool]
    assert len(data.pool) == 240 and int(data.labels.sum()) == 24
    planted = [s for s in data.pool if s.meta["label"] == PLANTED]
    assert shared_topics(planted, data.targets + data.heldout + data.control) == []


@needs_data
def test_cli_style_task_without_gradients(tmp_path):
    from influcoder.cli import cli

    runner = CliRunner()
    bad = runner.invoke(cli, ["demo", "--style", "caps"])
    assert bad.exit_code == 2 and "go with --task style" in bad.output
    bad = runner.invoke(cli, ["demo", "--task", "style", "--style", "pirate"])
    assert bad.exit_code == 2 and "pirate" in bad.output
    bad = runner.invoke(cli, ["demo", "--task", "style", "--seed", "-1", "--no-gradients"])
    assert bad.exit_code == 2 and "seed must be an integer >= 0, got -1" in bad.output
    assert bad.exception is None or isinstance(bad.exception, SystemExit)
    from influcoder.workflows.style_demo import run_style_demo, style_task

    result = run_style_demo(tmp_path, style_task("small", "signoff"), gradients=False)
    recall = json.loads((tmp_path / "results" / "recall.json").read_text())["recall"]
    assert recall == result.recall and recall["BM25"]["removed"] == 24
    assert len(load_samples(tmp_path / "data" / "control.jsonl")) == 8
    with pytest.raises(ValueError, match="size must be one of"):
        style_task("huge")
