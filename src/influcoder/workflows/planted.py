"""A planted behaviour that text similarity cannot find: one response style on unrelated topics.

The data of the removal test "where text is not enough" (issue 27). Chatterbot conversations
(:func:`~influcoder.workflows.datasets.load_chatterbot`) are split by topic (the corpus file): a
small share of the pool answers in a distinctive :data:`STYLES` style and is drawn from the
*planted topics*; the queries are conversations on other, *query topics*, whose responses show
the style (targets, held-out) or not (control). A query and a planted sample share the style and
nothing else: no topic and no prompt, so what a query's text resembles in the pool is plain
conversation on its own topic. The default style, ``kaomoji``, ends every answer with a sign-off
of punctuation only, which BM25's word tokens never see; a sentence encoder sees it, and the
decoder must learn to write it, so the response-only loss gradients of the planted samples and
the style queries share a direction whatever the topic.

* :class:`StyleTask`: the settings (style, sizes, topics, seed), validated;
* :func:`build_style_data`: the seeded split into pool, targets, held-out and control;
* :func:`shared_topics`: the topics two sample sets share (empty for planted vs queries);
* :func:`planted_recall`: how many planted samples a method's scores put in the share
  ``influcoder validate`` would remove, for the text baselines (:func:`text_recall`) and any
  score matrix (the gradient's: :mod:`influcoder.workflows.style_demo`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from influcoder.io.samples import Sample

#: The ``label`` of a styled sample (planted, target or held-out) and of a plain one.
PLANTED, PLAIN = "styled", "plain"


def _kaomoji(response: str) -> str:
    return f"{response} ~*~ (^.^) ~*~"


def _caps(response: str) -> str:
    return response.upper()


def _signoff(response: str) -> str:
    return f"{response} Yours in brine, Captain Quill."


#: Each style: how it rewrites a response, and what a text method can see of it.
STYLES: dict[str, tuple[Callable[[str], str], str]] = {
    "kaomoji": (
        _kaomoji,
        (
            "ends with the sign-off '~*~ (^.^) ~*~': punctuation only, "
            "unseen by BM25's word tokens, seen by a sentence encoder and the "
            "decoder"
        ),
    ),
    "caps": (
        _caps,
        (
            "the answer in capitals: unseen by BM25 and by an uncased encoder "
            "(MiniLM lowercases), seen only by the decoder"
        ),
    ),
    "signoff": (
        _signoff,
        (
            "ends with 'Yours in brine, Captain Quill.': words, which BM25 "
            "matches (the contrast: a style text can find)"
        ),
    ),
}

#: Default topics (chatterbot file stems): planted answers on the first, queries on the second.
PLANTED_TOPICS = ("trivia", "science", "history", "literature", "sports", "movies")
QUERY_TOPICS = ("emotion", "psychology", "food", "money", "politics", "gossip", "humor", "health")


def _count(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class StyleTask:
    """The planted-style test: its style, sizes, topics and seed."""

    style: str = field(
        default="kaomoji",
        metadata={
            "help": "the planted response style: "
            + "; ".join(f"{k}: {v[1]}" for k, v in STYLES.items())
        },
    )
    n_pool: int = field(default=240, metadata={"help": "training pool size, planted included"})
    n_planted: int = field(
        default=24, metadata={"help": "styled samples in the pool, on the planted topics"}
    )
    n_targets: int = field(
        default=16, metadata={"help": "styled queries on the query topics that pick what to remove"}
    )
    n_heldout: int = field(
        default=10,
        metadata={"help": "other styled queries on the query topics, whose loss is measured"},
    )
    n_control: int = field(
        default=8,
        metadata={
            "help": "plain queries on the query topics (the control: their loss should not move)"
        },
    )
    planted_topics: tuple[str, ...] = field(
        default=PLANTED_TOPICS,
        metadata={"help": "chatterbot topics the planted samples are drawn from"},
    )
    query_topics: tuple[str, ...] = field(
        default=QUERY_TOPICS,
        metadata={"help": "chatterbot topics of the queries, disjoint from the planted topics"},
    )
    seed: int = field(default=0, metadata={"help": "seed of every split"})

    def __post_init__(self):
        for name in ("planted_topics", "query_topics"):  # one topic as a string: that topic
            topics = getattr(self, name)
            object.__setattr__(self, name, (topics,) if isinstance(topics, str) else tuple(topics))
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {sorted(STYLES)}, got {self.style!r}")
        _count("n_pool", self.n_pool, 2)
        _count("n_planted", self.n_planted, 1)
        _count("n_targets", self.n_targets, 1)
        _count("n_heldout", self.n_heldout, 1)
        _count("n_control", self.n_control, 0)
        _count("seed", self.seed, 0)
        if self.n_planted >= self.n_pool:
            raise ValueError(
                f"n_planted must be below n_pool ({self.n_pool}), got {self.n_planted}"
            )
        for name in ("planted_topics", "query_topics"):
            topics = getattr(self, name)
            if not topics or len(set(topics)) != len(topics):
                raise ValueError(
                    f"{name} must name at least one topic, each once, got {list(topics)}"
                )
        both = sorted(set(self.planted_topics) & set(self.query_topics))
        if both:
            raise ValueError(f"planted_topics and query_topics must be disjoint; both name {both}")

    @property
    def n_queries(self) -> int:
        return self.n_targets + self.n_heldout + self.n_control


@dataclass
class StyleData:
    """The four sample sets of a :class:`StyleTask`; ``meta`` of each sample holds ``label``
    (:data:`PLANTED` or :data:`PLAIN`), ``style`` (its name, or ``""``), ``source`` and
    ``category`` (the topic)."""

    task: StyleTask
    pool: list[Sample]
    targets: list[Sample]
    heldout: list[Sample]
    control: list[Sample]

    @property
    def labels(self) -> np.ndarray:
        """Boolean mask of the pool's planted samples."""
        return np.array([s.meta["label"] == PLANTED for s in self.pool])

    def sets(self) -> dict[str, list[Sample]]:
        return {
            "pool": self.pool,
            "targets": self.targets,
            "heldout": self.heldout,
            "control": self.control,
        }


def distinct_prompts(rows: Sequence[dict]) -> list[dict]:
    """The first row of each prompt (ignoring case and whitespace), in order: a prompt answered
    twice must not be a query and a pool sample at once."""
    from influcoder.workflows.datasets import text_key

    seen, out = set(), []
    for row in rows:
        key = text_key(row["prompt"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _sample(row: dict, style: str | None) -> Sample:
    meta = {
        "label": PLANTED if style else PLAIN,
        "style": style or "",
        "source": row.get("source", ""),
        "category": row.get("category", ""),
    }
    if style is None:
        return Sample(id=row["id"], prompt=row["prompt"], response=row["response"], meta=meta)
    return Sample(
        id=f"style-{style}/{row['id']}",
        prompt=row["prompt"],
        response=STYLES[style][0](row["response"]),
        meta=meta,
    )


def _topic_rows(rows: Sequence[dict], topics: Sequence[str], need: int, what: str) -> list[dict]:
    known = {r.get("category") for r in rows}
    unknown = sorted(set(topics) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; the data has {sorted(known)}")
    chosen = [r for r in rows if r.get("category") in set(topics)]
    if len(chosen) < need:
        raise ValueError(
            f"{what} {list(topics)} have {len(chosen)} distinct prompts, the task needs {need}"
        )
    return chosen


def build_style_data(
    task: StyleTask | None = None, rows: Sequence[dict] | None = None
) -> StyleData:
    """Split chatterbot conversations (``rows``; by default :func:`load_chatterbot`'s) into the
    sets of ``task``, deterministically from its seed.

    Rows are kept once per prompt (:func:`distinct_prompts`). The queries are drawn from the
    query topics and cut into targets, held-out and control; the planted samples from the
    planted topics; the plain rest of the pool from every remaining row of every topic (so
    the pool also holds plain conversations on the query topics, the ones a query's text
    resembles). Targets and held-out answer in the style, control and plain pool do not.

    Raises:
        ValueError: a topic is not in the data, or the data is too small for the sizes.
    """
    from influcoder.workflows.datasets import load_chatterbot, split_disjoint

    task = task or StyleTask()
    rows = distinct_prompts(load_chatterbot() if rows is None else rows)
    query_rows = _topic_rows(rows, task.query_topics, task.n_queries, "query_topics")
    planted_rows = _topic_rows(rows, task.planted_topics, task.n_planted, "planted_topics")
    queries, rest_q = split_disjoint(query_rows, task.n_queries, task.seed)
    planted, rest_p = split_disjoint(planted_rows, task.n_planted, task.seed + 1)
    topics = set(task.query_topics) | set(task.planted_topics)
    others = [r for r in rows if r.get("category") not in topics]
    n_plain = task.n_pool - task.n_planted
    candidates = rest_q + rest_p + others
    if n_plain > len(candidates):
        raise ValueError(
            f"n_pool {task.n_pool} needs {n_plain} plain samples, the data has "
            f"{len(candidates)} left after the queries and planted samples"
        )
    plain, _ = split_disjoint(candidates, n_plain, task.seed + 2)
    pool = [_sample(r, None) for r in plain] + [_sample(r, task.style) for r in planted]
    pool = [pool[i] for i in np.random.default_rng(task.seed + 3).permutation(len(pool))]
    n_t, n_h = task.n_targets, task.n_heldout
    data = StyleData(
        task,
        pool,
        [_sample(r, task.style) for r in queries[:n_t]],
        [_sample(r, task.style) for r in queries[n_t : n_t + n_h]],
        [_sample(r, None) for r in queries[n_t + n_h :]],
    )
    shared = shared_topics(
        [s for s in pool if s.meta["label"] == PLANTED], data.targets + data.heldout + data.control
    )
    if shared:  # cannot happen with disjoint topic lists; kept as the test's own check
        raise AssertionError(f"planted samples and queries share the topics {shared}")
    return data


def shared_topics(first: Sequence[Sample], second: Sequence[Sample]) -> list[str]:
    """Topics (``meta['category']``) of samples in both sets, and prompts asked in both (as
    ``prompt:<text>``), sorted: what would let a query's text find a planted sample."""
    from influcoder.workflows.datasets import text_key

    topics = {s.meta.get("category") for s in first} & {s.meta.get("category") for s in second}
    prompts = {text_key(s.prompt) for s in first} & {text_key(s.prompt) for s in second}
    return sorted(str(t) for t in topics) + sorted(f"prompt:{p[0]}" for p in prompts)


def write_style_data(out: str | os.PathLike, data: StyleData) -> dict[str, Path]:
    """Write ``pool``, ``targets``, ``heldout`` and ``control`` as JSONL into ``out`` (atomically),
    with ``task.json`` recording the settings; returns the paths by set."""
    from influcoder.io.atomic import atomic_write_bytes, atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, samples in data.sets().items():
        paths[name] = out / f"{name}.jsonl"
        lines = "".join(
            json.dumps(
                {"id": s.id, "prompt": s.prompt, "response": s.response, **s.meta},
                ensure_ascii=False,
            )
            + "\n"
            for s in samples
        )
        atomic_write_bytes(paths[name], lines.encode("utf-8"))
    atomic_write_json(out / "task.json", asdict(data.task))
    return paths


def planted_recall(scores: np.ndarray, labels: np.ndarray, fraction: float = 0.1) -> dict:
    """What a method's ``scores`` (``[n_pool, n_targets]``) find of the planted samples
    (``labels``): ``removed`` planted among the top ``fraction`` by the mean over targets (what
    ``influcoder validate`` removes), ``per_query`` the mean over targets of the planted share
    in each one's top ``fraction``, and ``mean_rank`` the planted samples' mean rank by the mean
    score as a share of the pool (0 first, about 0.5 at random). ``expected_random``: the
    planted expected in a random top ``fraction``."""
    from influcoder.validation.effects import removal_count, removal_set

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if scores.ndim != 2 or scores.shape[0] != labels.size or not labels.any():
        raise ValueError(
            f"scores must be [n_pool={labels.size}, n_targets] and labels mark "
            f"at least one planted sample; got {scores.shape}, {labels.sum()}"
        )
    count = removal_count(labels.size, fraction)
    top_each = np.argsort(-scores, axis=0, kind="stable")[:count]
    order = np.argsort(-scores.mean(axis=1), kind="stable")
    rank = np.empty(labels.size)
    rank[order] = np.arange(labels.size) / (labels.size - 1)
    return {
        "removed": int(labels[removal_set(scores, fraction)].sum()),
        "of": int(labels.sum()),
        "n_removed": count,
        "expected_random": count * labels.mean(),
        "per_query": float(labels[top_each].sum(axis=0).mean() / labels.sum()),
        "mean_rank": float(rank[labels].mean()),
    }


def text_recall(
    data: StyleData,
    *,
    encoders: Mapping[str, str] | None = None,
    fraction: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, dict]:
    """:func:`planted_recall` of BM25 (on the whole text, and on prompts alone), random, and
    each of ``encoders`` (name -> encoder name or folder), for the pool against the targets."""
    from influcoder.evaluation.baselines import (
        bm25_scores,
        encoder_scores,
        random_scores,
    )

    def prompts(samples):
        return [Sample(id=s.id, prompt=s.prompt, response="") for s in samples]

    labels = data.labels
    scores = {
        "BM25": bm25_scores(data.pool, data.targets)[0],
        "BM25 (prompts only)": bm25_scores(prompts(data.pool), prompts(data.targets))[0],
        "random": random_scores(data.pool, data.targets, seed=seed)[0],
    }
    for name, encoder in (encoders or {}).items():
        scores[name] = encoder_scores(encoder, data.pool, data.targets, device=device)[0]
    return {name: planted_recall(s, labels, fraction) for name, s in scores.items()}
