"""What a multi-view encoder's wrapper (views, head) adds to encoding, against its backbone
alone, in one process: the same samples, the same backbone instance, best of N calls each,
alternating. A ratio near 1 means the head and the wrapper cost nothing next to the forward
pass.

    python benchmarks/view_overhead.py runs/demo/encoder runs/demo/data/test_queries.jsonl
"""

from __future__ import annotations

import argparse

import common


def main() -> None:
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.views import ViewedEncoder
    from influcoder.io.samples import load_samples

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoder", help="a multi-view encoder directory")
    ap.add_argument("samples", help="a file of samples (JSONL, JSON, CSV, Parquet)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    samples = load_samples(args.samples)
    viewed = ViewedEncoder(args.encoder, lambda p: FastEncoder(p, backend="torch"))
    base = viewed.base
    print(f"{len(samples)} samples, views {'+'.join(viewed.views)}, {viewed.head.kind} head")
    for r in range(args.rounds):
        b = common.best_of(
            lambda: [base.encode_samples(samples) for _ in viewed.views], args.repeats
        )
        v = common.best_of(lambda: viewed.encode_samples(samples), args.repeats)
        print(
            f"round {r}: backbone alone {1000 * b:.0f} ms, multi-view encoder {1000 * v:.0f} ms,"
            f" ratio {v / b:.3f}"
        )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
