"""Per-sample gradient cost and sketch fidelity on the real SmolLM2-135M.

Prints, for real samples (Big-Bench-Hard chain-of-thought exemplars from the deepeval package,
60-512 tokens): seconds per sample (wall, CPU, of which system) of a plain one-sample
``.backward()`` loop and of the fast batched path under several batchings (a fixed 8 samples,
as collect did before token budgets; token budgets), float32 and bf16 autocast, each with its
peak resident memory (every mode runs in a fresh process so the peaks are its own); then the
Spearman correlation of sketched vs unsketched (dense) pairwise cosines at several sketch
dimensions. CPU time is the fairer figure on a shared machine: wall time counts the waits.

    OMP_NUM_THREADS=1 python benchmarks/bench_gradients.py --skip-fidelity
    python benchmarks/bench_gradients.py --n-time 32 --n-fidelity 64
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import common  # sets the offline environment; its helpers are used below


def _setup(n: int, warmup_steps: int, target_tokens: tuple[int, int]):
    import numpy as np
    import torch

    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.lora import attach_lora, warmup
    from influcoder.groundtruth.tokenize import tokenize_samples
    from influcoder.workflows.datasets import load_bbh_cot

    torch.manual_seed(0)
    model, tok, _ = load_decoder("smollm2-135m")
    samples = common.to_samples(load_bbh_cot())
    tokd = tokenize_samples(tok, samples, max_length=512)
    lo, hi = target_tokens
    chosen = [t for t in tokd if lo <= len(t.input_ids) <= hi][:n]
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} samples of {lo}-{hi} tokens")
    peft_model = attach_lora(model, seed=0)
    if warmup_steps:
        batches = [chosen[i:i + 4] for i in range(0, len(chosen), 4)]
        warmup(peft_model, batches, steps=warmup_steps, lr=2e-4, seed=0)
    mean_len = float(np.mean([len(t.input_ids) for t in chosen]))
    return peft_model, tok, chosen, mean_len


def _plain_loop(model, chosen) -> None:
    """One sample at a time, ``.backward()``, the dense LoRA gradient read from ``.grad`` (the
    loop influcoder's fast path replaces; no sketch)."""
    import torch

    from influcoder.groundtruth.lora import gradient_modules

    weights = [m.weight for _, m in gradient_modules(model, "lora")]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    for s in chosen:
        for w in weights:
            w.grad = None
        model(input_ids=torch.tensor([s.input_ids]), labels=torch.tensor([s.labels]),
              use_cache=False).loss.backward()
        torch.cat([w.grad.reshape(-1) for w in weights])
    for p, flag in flags:
        p.requires_grad_(flag)


def _time_mode(mode: str, n: int, queue) -> None:
    """Modes: ``reference`` (tests/references.py, explicit sketch matrix), ``plain`` (see
    :func:`_plain_loop`), ``fast:TOKENS`` (the fast path, batches of at most TOKENS padded
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
        run = lambda: reference_gradients(model, chosen, target="lora", sketch_dim=8192)
        batches = [[i] for i in range(n)]
    elif mode == "plain":
        run = lambda: _plain_loop(model, chosen)
        batches = [[i] for i in range(n)]
    else:
        size = mode.split(":")[1]
        batches = (length_batches(lengths, 8) if size == "cap8"
                   else length_batches(lengths, 256, max_tokens=int(size)))
        comp = GradientComputer(model, target="lora", sketch_dim=8192, sketch_seed=0,
                                bf16=bf16, pad_token_id=tok.pad_token_id,
                                gradient_checkpointing=checkpointing)
        comp(chosen[:1])  # warm the hooks and the sketch tables

        def run():
            for rows in batches:
                comp([chosen[i] for i in rows])
    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    run()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    peak = after.ru_maxrss
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    queue.put({"mode": mode, "batches": len(batches), "padded/real": padded / sum(lengths),
               "tokens/sample": mean_len, "s/sample": wall / n,
               "CPU s/sample": (after.ru_utime - usage.ru_utime) / n,
               "sys s/sample": (after.ru_stime - usage.ru_stime) / n,
               "peak RSS GiB": peak / 2**20, "RSS over model GiB": (peak - base_rss) / 2**20,
               "threads": torch.get_num_threads()})


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


def fidelity(n: int, dims: list[int], warmup_steps: int) -> list[dict]:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import gradient_modules
    from influcoder.groundtruth.sketch import CountSketch

    model, tok, chosen, _ = _setup(n, warmup_steps, (60, 400))
    comp = GradientComputer(model, target="lora", sketch_dim=0, pad_token_id=tok.pad_token_id)
    dense = np.concatenate([comp(chosen[i:i + 4]) for i in range(0, n, 4)])
    iu = np.triu_indices(n, 1)
    exact = (dense @ dense.T)[iu]
    blocks = [(name, m.weight.numel()) for name, m in gradient_modules(model, "lora")]
    rows = []
    x = torch.from_numpy(dense)
    for dim in dims:
        sk = CountSketch(dim, seed=0)
        out = torch.zeros(n, dim)
        off = 0
        for name, size in blocks:
            sk.project_into(out, name, x[:, off:off + size])
            off += size
        s = out.numpy()
        s /= np.linalg.norm(s, axis=1, keepdims=True)
        approx = (s @ s.T)[iu]
        rows.append({"sketch dim": dim, "dense dim": dense.shape[1], "pairs": len(exact),
                     "spearman vs dense": float(spearmanr(exact, approx)[0]),
                     "max |cos error|": float(np.abs(exact - approx).max())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-time", type=int, default=16, help="samples timed per mode")
    ap.add_argument("--modes", default="plain,fast:cap8,fast:1,fast:1024,fast:4096,fast:1024:bf16",
                    help="comma-separated; see _time_mode")
    ap.add_argument("--n-fidelity", type=int, default=32, help="samples for sketch fidelity")
    ap.add_argument("--dims", default="8192,65536")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-fidelity", action="store_true")
    args = ap.parse_args()
    if not args.skip_timing:
        rows = timing(args.n_time, args.modes.split(","))
        print(common.table(rows, ["mode", "batches", "padded/real", "tokens/sample", "s/sample",
                                  "CPU s/sample", "sys s/sample", "peak RSS GiB",
                                  "RSS over model GiB", "threads"]))
        ref = rows[0]["CPU s/sample"]
        for r in rows[1:]:
            print(f"{r['mode']}: {r['CPU s/sample'] / ref:.2f}x the CPU time of {rows[0]['mode']}")
    print(f"\nreproduce: {common.command_line()}")
    if args.skip_fidelity:
        return
    rows = fidelity(args.n_fidelity, [int(d) for d in args.dims.split(",")], warmup_steps=4)
    print(common.table(rows, ["sketch dim", "dense dim", "pairs", "spearman vs dense",
                              "max |cos error|"]))
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
