"""The closed-form linear head (influcoder.distillation.linear) against the encoders it sits on, on
pool samples AND queries that neither the head nor any fine-tuning saw.

Input: a demo run's gradient stores (``--work runs/demo``: ``grad_pool``,
``grad_train_queries``, ``grad_test_queries``). A seeded third of the pool (stratified by the
samples' ``label`` when they have one) is held out; the rest of the pool and the training
queries are all that the head, its cross-validation and the fine-tuning ever see. Variants:

* ``untrained``: cosine of the bundled MiniLM;
* ``head only``: the untrained MiniLM + the linear head (``distill --epochs 0``);
* ``distilled``: MiniLM fine-tuned (``distill``, ``--epochs``) on training pool x training
  queries only (the demo's own ``encoder/`` saw the whole pool, so it is not used);
* ``distilled + head``: that encoder + a head fitted on its embeddings;
* ``joint w=W + head``: MiniLM fine-tuned jointly (``distill --regression-weight W``: ranking
  terms through a trainable head plus cosine regression onto the gradients' principal
  coordinates, ``--joint-epochs``), then the closed-form head refitted on it;
* ``BM25``, ``TF-IDF``: the text baselines.

Each is scored on three blocks: held-out pool x held-out queries (the honest figure), held-out
pool x training queries and training pool x held-out queries (which side of the split the
gain survives). Figures: per-anchor, pairwise and aggregated Spearman with 95% bootstrap
intervals over pool samples and queries, AUPRC of the planted harmful pool samples (mean and
max over the block's queries) where labels exist, and seconds: ``prepare s`` (fine-tuning,
head fitting; fine-tuning as its card records, validation included) and ``encode s``
(embedding the held-out block, first call included: compare orders of magnitude).

    python benchmarks/distill_head.py --work runs/demo
    python benchmarks/distill_head.py --work runs/demo --seeds 0,1,2 --n-boot 300
    python benchmarks/distill_head.py --work runs/demo --seeds 0,1,2 --head auto \
        --head-similarity auto --query-gradients
    python benchmarks/distill_head.py --work runs/demo --within 0 --seeds 1 \
        --variant "all queries:batch_query=64,epochs=3,lr=1e-4"   # choose settings

``--within SEED`` is the validation mode: it runs the same comparison inside the training side
of split SEED only (a third of its training queries and pool held out), so settings can be
chosen there and then reported on split SEED's held-out block, which chose nothing.

Fine-tuned encoders are cached under ``--cache`` (default ``<work>/head_bench/``), one per
split seed and epochs.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import common
import numpy as np

BLOCKS = {
    "held-out pool x held-out queries": ("test", "test"),
    "held-out pool x training queries": ("test", "train"),
    "training pool x held-out queries": ("train", "test"),
}
FIGURES = ("per-anchor", "pairwise", "aggregated")
TWO_VIEWS = ("text", "response")


def stratified_third(labels: list, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(held_out, training)`` pool indices: a seeded third of each label held out."""
    rng = np.random.default_rng(seed)
    held = []
    for label in sorted(set(labels), key=str):
        idx = rng.permutation(np.flatnonzero(np.asarray(labels, dtype=object) == label))
        held.extend(idx[: round(len(idx) / 3)])
    held = np.sort(np.asarray(held, dtype=np.int64))
    return held, np.setdiff1d(np.arange(len(labels)), held)


def encoder_rows(
    name,
    model,
    prepare_seconds,
    data,
    held,
    train,
    components,
    seed,
    views=("text",),
    head_choice=("linear", "cosine"),
    query_gradients=False,
):
    """``{variant: (embeddings by store, info)}`` for ``model`` and ``model`` + a head fitted on
    the training side only. Embedding the held-out block (its pool samples and queries) is
    timed, as attribution would pay it. ``views``: what the model reads; two views are each
    scaled to unit length and concatenated (``distill --views text+response``).
    ``head_choice``: ``(distill --head, --head-similarity)``; the head's rows are then compared
    by the similarity it kept. ``query_gradients``: also the head's pool side against each
    query's own (unit) gradient on the head's directions (``attribute --query-gradients``)."""
    from influcoder.distillation.export import append_head, embed
    from influcoder.distillation.head_fit import fit_head
    from influcoder.distillation.linear import LinearHead
    from influcoder.distillation.settings import HEAD_CHOICES
    from influcoder.similarity import normalize_rows

    vectors = data["vectors"]

    def embed_views(store, rows=None):
        parts = []
        for view in views:
            texts = data["texts" if view == "text" else "responses"][store]
            e = embed(model, texts if rows is None else [texts[i] for i in rows])
            parts.append(e if len(views) == 1 else normalize_rows(e))
        return np.hstack(parts)

    t = time.perf_counter()
    held_emb = embed_views("pool", held)
    emb = {"test_queries": embed_views("test_queries")}
    encode = time.perf_counter() - t
    emb["pool"] = np.empty((len(data["texts"]["pool"]), held_emb.shape[1]))
    emb["pool"][held] = held_emb
    emb["pool"][train] = embed_views("pool", train)
    emb["train_queries"] = embed_views("train_queries")
    t = time.perf_counter()
    head = fit_head(
        emb["pool"][train],
        vectors["pool"][train],
        emb["train_queries"],
        vectors["train_queries"],
        components=components,
        seed=seed,
        kinds=HEAD_CHOICES[head_choice[0]],
        similarity=head_choice[1],
    )
    fit = time.perf_counter() - t
    headed = {k: head(e) for k, e in emb.items()}
    if len(views) == 1 and isinstance(head, LinearHead) and head.similarity == "cosine":
        # The saved form (Dense + Normalize appended) gives the same outputs: check a few texts.
        np.testing.assert_allclose(
            embed(append_head(model, head), data["texts"]["test_queries"][:4]),
            normalize_rows(headed["test_queries"][:4]),
            atol=1e-4,
        )
        del model[-2:]
    head_info = {
        "prepare s": prepare_seconds + fit,
        "encode s": encode,
        "alpha": head.alpha,
        "head": head.card()["kind"],
        "similarity": head.similarity,
        "val encoder": head.encoder_validation,
        "val": head.kinds_validation[head.card()["kind"]],
    }
    out = {
        name: (emb, {"prepare s": prepare_seconds, "encode s": encode}),
        name + " + head": (headed, head_info),
    }
    if query_gradients:  # each query its own gradient on the head's directions
        own = {k: vectors[k] @ head.directions.T for k in ("train_queries", "test_queries")}
        out[name + " + head + query gradients"] = ({**headed, **own}, head_info)
    return out


def finetuned(data, train, args, seed, regression_weight=0.0, epochs=None, overrides=None):
    """MiniLM distilled on training pool x training queries only, cached; and its training
    seconds (from its card, so a cached encoder reports what it cost). ``regression_weight`` >
    0: joint training, given the training samples' gradient vectors. ``overrides``: more
    :class:`DistillArguments` fields (``--variant``)."""
    from influcoder.distillation import distill
    from influcoder.distillation.settings import DistillArguments
    from influcoder.encoders.directory import load_encoder

    cache = Path(args.cache) if args.cache else Path(args.work) / "head_bench"
    epochs = args.epochs if epochs is None else epochs
    joint = f"_joint{regression_weight:g}" if regression_weight else ""
    settings = DistillArguments(
        **{
            "epochs": epochs,
            "seed": seed,
            "regression_weight": regression_weight,
            "max_seq_length": args.encoder_max_length,
            **(overrides or {}),
        }
    )
    enc_dir = cache / f"finetuned_seed{seed}_ep{epochs}{joint}_{common.settings_digest(settings)}"
    if not (enc_dir / "influcoder_distill.json").is_file():
        gt = data["vectors"]["pool"][train] @ data["vectors"]["train_queries"].T
        vectors = (
            {
                "pool_vectors": data["vectors"]["pool"][train],
                "query_vectors": data["vectors"]["train_queries"],
            }
            if regression_weight
            else {}
        )

        def items(store, rows):  # trained through two views: (text, response) pairs
            texts = [data["texts"][store][i] for i in rows]
            if settings.views != "text+response":
                return texts
            return list(zip(texts, [data["responses"][store][i] for i in rows]))

        distill(
            load_encoder("all-minilm-l6-v2"),
            items("pool", train),
            items("train_queries", range(len(data["texts"]["train_queries"]))),
            gt,
            settings,
            out_dir=enc_dir,
            progress=False,
            **vectors,
        )
    card = json.loads((enc_dir / "influcoder_distill.json").read_text(encoding="utf-8"))
    return load_encoder(str(enc_dir)), sum(h["seconds"] for h in card["history"])


def within_training_side(data: dict, seed: int) -> dict:
    """``data`` cut to the training side of split ``seed``: its training pool samples, and its
    training queries, a seeded third of which play the held-out queries."""
    _, train = stratified_third(data["labels"], seed)
    n = len(data["texts"]["train_queries"])
    order = np.random.default_rng(seed).permutation(n)
    val, fit = np.sort(order[: round(n / 3)]), np.sort(order[round(n / 3) :])
    rows = {"pool": train, "train_queries": fit, "test_queries": val}
    source = {"pool": "pool", "train_queries": "train_queries", "test_queries": "train_queries"}
    cut = {
        kind: {k: [data[kind][source[k]][i] for i in rows[k]] for k in rows}
        for kind in ("texts", "responses", "samples")
    }
    cut["vectors"] = {k: data["vectors"][source[k]][rows[k]] for k in rows}
    cut["labels"] = [data["labels"][i] for i in train]
    return cut


def parse_variant(text: str) -> tuple[str, dict]:
    """``"NAME:field=value,..."`` -> ``(NAME, {field: value})``, values typed like the
    :class:`DistillArguments` defaults."""
    from dataclasses import fields

    from influcoder.distillation.settings import DistillArguments

    name, _, spec = text.partition(":")
    types = {f.name: type(getattr(DistillArguments(), f.name)) for f in fields(DistillArguments)}
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"--variant {text!r}: {key!r} is not a DistillArguments field")
        kind = types[key]
        if kind is type(None):  # an optional number: an int where it reads as one
            kind = int if value.lstrip("-").isdigit() else float
        overrides[key] = kind(value) if kind is not bool else value.lower() in ("1", "true")
    return name, overrides


def judge(gt, pred, labels, n_boot, seed) -> dict:
    """The figures of one block, with 95% bootstrap intervals; AUPRC where labels are given."""
    from influcoder import metrics

    row = {}
    for label, fn in zip(
        FIGURES,
        (metrics.per_anchor_spearman, metrics.pairwise_spearman, metrics.aggregated_spearman),
    ):
        low, high = metrics.bootstrap_interval(fn, gt, pred, n_resamples=n_boot, seed=seed)
        row[label], row[label + " 95%"] = fn(gt, pred), f"[{low:.2f}, {high:.2f}]"
    if labels is not None:
        for how in metrics.AUPRC_AGGREGATES:
            row[f"AUPRC {how}"] = metrics.auprc(labels, metrics.aggregate_scores(pred, how))
    return row


def run_split(seed, data, args, components) -> list[dict]:
    """Every variant on every block of one split; prints the tables, returns the rows."""
    from influcoder.encoders.directory import load_encoder
    from influcoder.evaluation.baselines import bm25_scores, tfidf_scores
    from influcoder.similarity import normalize_rows

    held, train = stratified_third(data["labels"], seed)
    harmful = np.array([label == "harmful" for label in data["labels"]])
    untrained = load_encoder("all-minilm-l6-v2")
    rows_of = functools.partial(
        encoder_rows,
        head_choice=(args.head, args.head_similarity),
        query_gradients=args.query_gradients,
    )
    variants = rows_of("untrained", untrained, 0.0, data, held, train, components, seed)
    if args.two_view_heads:
        variants.update(
            rows_of(
                "untrained, 2 views", untrained, 0.0, data, held, train, components, seed, TWO_VIEWS
            )
        )
    if not args.no_finetune:
        model, seconds = finetuned(data, train, args, seed)
        variants.update(rows_of("distilled", model, seconds, data, held, train, components, seed))
        if args.two_view_heads:
            variants.update(
                rows_of(
                    "distilled, 2 views",
                    model,
                    seconds,
                    data,
                    held,
                    train,
                    components,
                    seed,
                    TWO_VIEWS,
                )
            )
    for weight in args.regression_weights:
        model, seconds = finetuned(data, train, args, seed, weight, args.joint_epochs)
        variants.update(
            rows_of(
                f"joint w={weight:g} ep{args.joint_epochs or args.epochs}",
                model,
                seconds,
                data,
                held,
                train,
                components,
                seed,
            )
        )
    for name, overrides in args.variants:
        model, seconds = finetuned(
            data, train, args, seed, overrides=overrides, epochs=overrides.get("epochs")
        )
        views = TWO_VIEWS if overrides.get("views") == "text+response" else ("text",)
        variants.update(rows_of(name, model, seconds, data, held, train, components, seed, views))
    rows_idx = {"test": held, "train": train}
    stores = {"test": "test_queries", "train": "train_queries"}
    print(
        f"\n##### split seed {seed}: {len(held)} held-out pool samples "
        f"({int(harmful[held].sum())} harmful), {len(train)} training; "
        f"{len(data['texts']['train_queries'])} training queries, "
        f"{len(data['texts']['test_queries'])} held-out queries; head components {components}"
    )
    out = []
    for block, (p, q) in BLOCKS.items():
        gt = data["vectors"]["pool"][rows_idx[p]] @ data["vectors"][stores[q]].T
        labels = harmful[held] if p == "test" and harmful[held].any() else None
        rows = []
        for name, (emb, info) in variants.items():
            t = time.perf_counter()
            pool, queries = emb["pool"][rows_idx[p]], emb[stores[q]]
            pred = (
                pool @ queries.T
                if info.get("similarity") == "dot"
                else normalize_rows(pool) @ normalize_rows(queries).T
            )
            rows.append(
                {
                    "method": name,
                    **info,
                    "score s": time.perf_counter() - t,
                    **judge(gt, pred, labels, args.n_boot, seed),
                }
            )
        for name, fn in (("BM25", bm25_scores), ("TF-IDF", tfidf_scores)):
            pool = [data["samples"]["pool"][i] for i in rows_idx[p]]
            pred, info = fn(pool, data["samples"][stores[q]])
            rows.append(
                {
                    "method": name,
                    "prepare s": info["prepare_seconds"],
                    "encode s": info["seconds"],
                    **judge(gt, pred, labels, args.n_boot, seed),
                }
            )
        if labels is not None:
            rows.append({"method": "(ground truth)", **judge(gt, gt, labels, 1, seed)})
        print(f"\n{block}: {gt.shape[0]} x {gt.shape[1]}")
        print(
            common.table(
                rows,
                [
                    "method",
                    *[c for f in FIGURES for c in (f, f + " 95%")],
                    "AUPRC mean",
                    "AUPRC max",
                    "prepare s",
                    "encode s",
                    "head",
                    "similarity",
                    "alpha",
                    "val encoder",
                    "val",
                ],
            )
        )
        out += [{"seed": seed, "block": block, **r} for r in rows]
    return out


def main() -> None:
    import torch

    from influcoder.distillation.settings import HEAD_CHOICES, DistillArguments
    from influcoder.encoders.settings import SIMILARITIES
    from influcoder.io.samples import encoder_text
    from influcoder.io.stores import open_store
    from influcoder.similarity import normalize_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/demo", help="a demo run's directory")
    ap.add_argument("--seeds", default="0", help="split seeds, comma separated")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (the demo's)")
    ap.add_argument(
        "--encoder-max-length",
        type=int,
        default=128,
        help="encoder tokens per text while fine-tuning (the demo's)",
    )
    ap.add_argument(
        "--components",
        type=int,
        default=None,
        help="head components (default: DistillArguments' head_components)",
    )
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument(
        "--head",
        choices=[h for h in HEAD_CHOICES if h != "none"],
        default="linear",
        help="the head's kinds (distill --head)",
    )
    ap.add_argument(
        "--head-similarity",
        choices=["auto", *SIMILARITIES],
        default="cosine",
        help="how the head's outputs are compared (distill --head-similarity)",
    )
    ap.add_argument("--no-finetune", action="store_true", help="skip the distilled variant")
    ap.add_argument(
        "--query-gradients",
        action="store_true",
        help="also each head row with every query's own gradient on the head's directions "
        "(attribute --query-gradients): a row 'NAME + head + query gradients'",
    )
    ap.add_argument(
        "--regression-weights",
        default="",
        help="joint variants to add, comma separated (e.g. 0.5,1)",
    )
    ap.add_argument(
        "--joint-epochs",
        type=int,
        default=None,
        help="epochs of the joint variants (default: --epochs)",
    )
    ap.add_argument(
        "--cache",
        default=None,
        help="where fine-tuned encoders are kept (default: <work>/head_bench)",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:FIELD=V,...",
        help="another fine-tuned variant: DistillArguments fields to override, e.g. "
        "'all queries:batch_query=64,epochs=3,lr=1e-4' (repeatable)",
    )
    ap.add_argument(
        "--two-view-heads",
        action="store_true",
        help="also a head on two views (text + response alone, each unit length) "
        "of the untrained and the distilled encoder",
    )
    ap.add_argument(
        "--within",
        type=int,
        default=None,
        metavar="SEED",
        help="validation mode, for choosing settings: only the training side of split "
        "SEED is used (its training pool, and its training queries split into "
        "a seeded third of validation queries and the rest); the held-out block "
        "of split SEED is never read",
    )
    args = ap.parse_args()
    args.variants = [parse_variant(v) for v in args.variant]
    args.regression_weights = [float(w) for w in args.regression_weights.split(",") if w]
    torch.set_num_threads(1)
    components = args.components or DistillArguments().head_components
    stores = {
        k: open_store(Path(args.work) / f"grad_{k}")
        for k in ("pool", "train_queries", "test_queries")
    }
    data = {
        "vectors": {k: normalize_rows(s.vectors()) for k, s in stores.items()},
        "texts": {k: [encoder_text(x) for x in s.samples] for k, s in stores.items()},
        "responses": {k: [x.response for x in s.samples] for k, s in stores.items()},
        "samples": {k: s.samples for k, s in stores.items()},
        "labels": [x.meta.get("label") for x in stores["pool"].samples],
    }
    if args.within is not None:
        data = within_training_side(data, args.within)
        args.cache = str(
            Path(args.cache or Path(args.work) / "head_bench") / f"within{args.within}"
        )
    summary = []
    for seed in (int(s) for s in args.seeds.split(",")):
        summary += run_split(seed, data, args, components)
    seeds = sorted({r["seed"] for r in summary})
    if len(seeds) > 1:
        print(f"\nmean over split seeds {seeds} (sd across seeds in brackets):")
        for block in BLOCKS:
            rows = []
            for name in dict.fromkeys(r["method"] for r in summary):
                sel = [r for r in summary if r["block"] == block and r["method"] == name]
                cols = [f for f in (*FIGURES, "AUPRC mean", "AUPRC max") if sel and f in sel[0]]
                rows.append(
                    {
                        "method": name,
                        **{
                            f: f"{np.mean([r[f] for r in sel]):.3f} ({np.std([r[f] for r in sel]):.3f})"
                            for f in cols
                        },
                    }
                )
            print(f"\n{block}")
            print(common.table(rows, ["method", *FIGURES, "AUPRC mean", "AUPRC max"]))
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
