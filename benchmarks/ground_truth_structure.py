"""How much of the ground truth is pool-wide, and how stable is it? (the learning curve's stores)

Aggregated Spearman ranks each pool sample by its score averaged over the queries. This
script measures, on the stores a learning-curve run collected (``--work``):
- the share of the training ground truth's variance that the pool samples' row means carry
  (what the whole-block Pearson term sees of them);
- whether the pool-wide ranking is a property of the pool samples or of the query set: the
  test pool's row means over the test queries against those over the training queries;
- how well a training block's row means (its queries only) estimate the pool-wide ranking:
  what the aggregated loss term (``--aggregate-weight``) trains on;
- how much of one query's ranking the pool-wide ranking already is.

    python benchmarks/ground_truth_structure.py --work runs/lc4 --batch 32x32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common


def main() -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from influcoder import open_store
    from influcoder.groundtruth.influence import cosine_scores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--work",
        default="runs/learning_curve",
        help="a learning_curve.py --work folder (run with --extra-test or not)",
    )
    ap.add_argument("--batch", default="32x32", help="training block QUERIESxPOOL")
    ap.add_argument("--draws", type=int, default=200, help="random training blocks drawn")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    bq, bp = common.block_size(args.batch)

    def stores(*names):
        """The stores of ``names`` that the run collected (the extra test block is optional)."""
        work = Path(args.work)
        return [open_store(work / name) for name in names if (work / name).is_dir()]

    train_pool = open_store(Path(args.work) / "grad_train_pool")
    train_q = open_store(Path(args.work) / "grad_train_queries")
    test_pool = stores("grad_test_pool", "grad_extra_pool")
    test_q = stores("grad_test_queries", "grad_extra_queries")
    gt = cosine_scores(train_pool, train_q)
    row, col = gt.mean(axis=1), gt.mean(axis=0)
    test_vs_test = np.vstack([np.hstack([cosine_scores(p, q) for q in test_q]) for p in test_pool])
    test_vs_train = np.vstack([cosine_scores(p, train_q) for p in test_pool])
    rng = np.random.default_rng(args.seed)
    block = []
    for _ in range(args.draws):
        p = rng.choice(gt.shape[0], bp, replace=False)
        q = rng.choice(gt.shape[1], bq, replace=False)
        block.append(spearmanr(gt[np.ix_(p, q)].mean(axis=1), row[p]).statistic)
    per_query = [spearmanr(gt[:, j], row).statistic for j in range(gt.shape[1])]

    print(
        f"training ground truth: {gt.shape[0]} pool x {gt.shape[1]} queries, "
        f"mean {gt.mean():.4f}, sd {gt.std():.4f}"
    )
    print(
        f"variance share of the pool samples' row means: {row.var() / gt.var():.3f} "
        f"(of the queries' column means: {col.var() / gt.var():.3f})"
    )
    print(
        f"test pool ({test_vs_test.shape[0]}) row means over the {test_vs_test.shape[1]} test "
        f"queries vs over the {gt.shape[1]} training queries: Spearman "
        f"{spearmanr(test_vs_test.mean(axis=1), test_vs_train.mean(axis=1)).statistic:.3f}"
    )
    print(
        f"a {bq}x{bp} training block's row means vs the pool samples' row means over all "
        f"training queries: Spearman {np.mean(block):.3f} (sd {np.std(block):.3f}, "
        f"{args.draws} blocks)"
    )
    print(f"one query's ranking vs the pool-wide ranking: mean Spearman {np.mean(per_query):.3f}")


if __name__ == "__main__":
    main()
