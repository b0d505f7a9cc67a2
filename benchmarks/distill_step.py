"""A distillation step's forward + backward: length-sorted micro-batches against one padded
batch (the reference), on a demo run's texts and the bundled MiniLM, in one process.

Steps are sampled like ``distill``'s blocks (``--batch-pool`` pool samples + the training
queries, capped at ``--batch-query``), each timed with both forwards, alternating which goes
first. Printed: seconds per step of each, their ratio, and, in evaluation mode (no dropout), the
largest difference between the two forwards' embeddings and gradients.

    python benchmarks/distill_step.py --work runs/demo
    python benchmarks/distill_step.py --work runs/demo --micro-batch 16 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import numpy as np


def main() -> None:
    import torch

    from influcoder.distillation.forward import block_embeddings, padded_embeddings
    from influcoder.distillation.settings import DistillArguments
    from influcoder.encoders.directory import load_encoder
    from influcoder.engines.batching import token_lengths
    from influcoder.io.samples import encoder_text
    from influcoder.io.stores import open_store

    defaults = DistillArguments()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/demo", help="a demo run's directory")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-pool", type=int, default=defaults.batch_pool)
    ap.add_argument("--batch-query", type=int, default=defaults.batch_query)
    ap.add_argument("--micro-batch", type=int, default=defaults.micro_batch)
    ap.add_argument("--max-seq-length", type=int, default=128, help="the demo's")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pool = [encoder_text(s) for s in open_store(Path(args.work) / "grad_pool").samples]
    queries = [encoder_text(s) for s in open_store(Path(args.work) / "grad_train_queries").samples]
    rng = np.random.default_rng(args.seed)
    blocks = [
        [pool[i] for i in rng.choice(len(pool), args.batch_pool, replace=False)]
        + [
            queries[j]
            for j in rng.choice(len(queries), min(args.batch_query, len(queries)), replace=False)
        ]
        for _ in range(args.steps)
    ]
    encoder = load_encoder("all-minilm-l6-v2")
    encoder.max_seq_length = args.max_seq_length
    forwards = {
        "one padded batch": padded_embeddings,
        f"micro-batches of <= {args.micro_batch}": lambda m, t: block_embeddings(
            m, t, micro_batch=args.micro_batch
        ),
    }

    def step(fn, texts) -> float:
        start = time.perf_counter()
        encoder.zero_grad()
        (fn(encoder, texts).sum(dim=0) ** 2).sum().backward()
        return time.perf_counter() - start

    encoder.train()
    step(padded_embeddings, blocks[0])  # warm-up, untimed
    seconds = {name: [] for name in forwards}
    for k, texts in enumerate(blocks):
        for name in list(forwards) if k % 2 == 0 else list(forwards)[::-1]:
            seconds[name].append(step(forwards[name], texts))

    encoder.eval()  # same function on both paths: compare outputs and gradients
    outs, grads = {}, {}
    for name, fn in forwards.items():
        encoder.zero_grad()
        outs[name] = fn(encoder, blocks[0])
        (outs[name].sum(dim=0) ** 2).sum().backward()
        grads[name] = torch.cat(
            [p.grad.flatten() for p in encoder.parameters() if p.grad is not None]
        )
    ref, fast = forwards
    lengths = [token_lengths(encoder.tokenizer, b, encoder.max_seq_length) for b in blocks]
    rows = [
        {"forward": name, "s/step": float(np.mean(s)), "min s": float(np.min(s))}
        for name, s in seconds.items()
    ]
    print(
        f"{args.steps} steps of {len(blocks[0])} texts (tokens: median "
        f"{np.median(np.concatenate(lengths)):.0f}, longest {max(map(max, lengths))}), "
        f"{torch.get_num_threads()} torch threads"
    )
    print(common.table(rows, ["forward", "s/step", "min s"]))
    print(f"\nspeed-up: {rows[0]['s/step'] / rows[1]['s/step']:.2f}x (reference / micro-batched)")
    print(
        f"eval mode, largest difference: embeddings "
        f"{(outs[ref] - outs[fast]).abs().max().item():.2e}, gradients "
        f"{(grads[ref] - grads[fast]).abs().max().item():.2e} (largest gradient "
        f"{grads[ref].abs().max().item():.2e})"
    )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
