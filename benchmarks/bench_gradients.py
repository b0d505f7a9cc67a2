"""Per-sample gradient cost and sketch fidelity on the real SmolLM2-135M.

Prints, for ~200-token samples (Big-Bench-Hard chain-of-thought exemplars from the deepeval
package): seconds per sample of the reference loop (one sample at a time, autograd .grad) and
of the fast batched path, in float32 and bf16 autocast, each with its peak resident memory
(every mode runs in a fresh process so the peaks are its own); then the Spearman correlation
of sketched vs unsketched (dense) pairwise cosines at several sketch dimensions.

    python benchmarks/bench_gradients.py            # 16 timed samples, 32 for fidelity
    python benchmarks/bench_gradients.py --n-time 32 --n-fidelity 64
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import common  # noqa: F401  (sets offline env)


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


def _time_mode(mode: str, n: int, batch_size: int, queue) -> None:
    import torch

    from influcoder.groundtruth.gradients import GradientComputer
    from tests.references import reference_gradients

    torch.set_num_threads(torch.get_num_threads())
    model, tok, chosen, mean_len = _setup(n, 0, (150, 260))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if mode == "reference fp32":
        reference_gradients(model, chosen, target="lora-b", sketch_dim=8192, sketch_seed=0)
    else:
        comp = GradientComputer(model, target="lora-b", sketch_dim=8192, sketch_seed=0,
                                bf16=mode.endswith("bf16"), pad_token_id=tok.pad_token_id)
        comp(chosen[:batch_size])  # warm the hooks and the sketch tables
        t = time.perf_counter()
        for i in range(0, n, batch_size):
            comp(chosen[i:i + batch_size])
    secs = (time.perf_counter() - t) / n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"mode": mode, "batch": 1 if mode.startswith("reference") else batch_size,
               "tokens/sample": mean_len, "s/sample": secs, "peak RSS GiB": peak / 2**20,
               "RSS over model GiB": (peak - base_rss) / 2**20})


def timing(n: int, batch_size: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for mode in ("reference fp32", "fast fp32", "fast bf16"):
        q = ctx.Queue()
        p = ctx.Process(target=_time_mode, args=(mode, n, batch_size, q))
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
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-fidelity", type=int, default=32, help="samples for sketch fidelity")
    ap.add_argument("--dims", default="8192,65536")
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args()
    if not args.skip_timing:
        rows = timing(args.n_time, args.batch_size)
        print(common.table(rows, ["mode", "batch", "tokens/sample", "s/sample", "peak RSS GiB",
                                  "RSS over model GiB"]))
        ref = rows[0]["s/sample"]
        for r in rows[1:]:
            print(f"{r['mode']}: {ref / r['s/sample']:.2f}x the reference loop")
    print()
    rows = fidelity(args.n_fidelity, [int(d) for d in args.dims.split(",")], warmup_steps=4)
    print(common.table(rows, ["sketch dim", "dense dim", "pairs", "spearman vs dense",
                              "max |cos error|"]))
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
