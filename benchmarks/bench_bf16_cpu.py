"""bf16 autocast against float32 for collect on a CPU: is bf16 safe as the CPU default?

Issue 14: on CPUs with native bf16 (AVX512-BF16, AMX), make bf16 ``collect``'s default where
the ground truth it gives ranks like float32's at cosine Spearman >= 0.99. This script takes
real samples (Big-Bench-Hard chain-of-thought exemplars, cut to ``--tokens`` by the
package's truncation, as ``collect`` would), the bundled SmolLM2-135M loaded as ``collect``
loads it, a seeded LoRA adapter warmed up briefly on those samples (as ``collect``'s default
warm-up does, shorter), then the sketched, normalised gradient vectors of every sample in
float32 and under bf16 autocast, and prints:

* whether this CPU has native bf16 (torch's oneDNN check, and the ``avx512_bf16`` /
  ``amx_bf16`` flags of ``/proc/cpuinfo``);
* the Spearman correlation of the two precisions' pairwise cosines (the ground truth's
  ranking), and each sample's cosine between its two vectors;
* seconds per sample of each.

    OMP_NUM_THREADS=2 python benchmarks/bench_bf16_cpu.py               # 16 samples
    OMP_NUM_THREADS=2 python benchmarks/bench_bf16_cpu.py --n 32 --out bf16.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common

SPEARMAN_BAR = 0.99


def cpu_bf16() -> dict:
    import torch

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "onednn_bf16": bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="samples")
    ap.add_argument("--tokens", type=int, default=224, help="tokens per sample (truncated)")
    ap.add_argument("--warmup-steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--sketch-dim", type=int, default=8192)
    ap.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from influcoder.groundtruth.collect import compute_shard
    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import attach_lora, warmup
    from influcoder.groundtruth.memory import TokenBudget
    from influcoder.groundtruth.tokenize import tokenize_samples
    from influcoder.workflows.datasets import load_bbh_cot

    t0 = time.perf_counter()

    def step(what: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f} s] {what}", flush=True)

    hw = cpu_bf16()
    model, tok, _ = load_decoder("smollm2-135m")
    step("decoder loaded")
    tokenized = tokenize_samples(tok, common.to_samples(load_bbh_cot()), max_length=args.tokens)
    chosen = [t for t in tokenized if len(t.input_ids) >= 0.9 * args.tokens][: args.n]
    if len(chosen) < args.n:
        raise SystemExit(f"only {len(chosen)} samples of >= {0.9 * args.tokens:.0f} tokens")
    peft_model = attach_lora(model, seed=0)
    bs = args.batch_size
    warmup(
        peft_model,
        [chosen[i : i + bs] for i in range(0, len(chosen), bs)],
        steps=args.warmup_steps,
        lr=2e-4,
        seed=0,
    )
    step(f"adapter warmed up ({args.warmup_steps} steps)")

    vectors, seconds = {}, {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        computer = GradientComputer(
            peft_model,
            target="lora",
            sketch_dim=args.sketch_dim,
            sketch_seed=0,
            bf16=bf16,
            pad_token_id=tok.pad_token_id,
        )
        computer(chosen[:1])  # hooks and sketch tables warmed
        start = time.perf_counter()
        vectors[name], _ = compute_shard(
            computer, TokenBudget(max_batch=bs, max_tokens=10**6), chosen
        )
        seconds[name] = (time.perf_counter() - start) / len(chosen)
        step(f"{name}: {seconds[name]:.2f} s/sample")
    a, b = vectors["float32"], vectors["bf16"]
    iu = np.triu_indices(len(chosen), 1)
    rho = float(spearmanr((a @ a.T)[iu], (b @ b.T)[iu])[0])
    row_cos = np.sum(a * b, axis=1)
    native = hw["onednn_bf16"] and (hw["avx512_bf16"] or hw["amx_bf16"])
    result = {
        "command": common.command_line(),
        "threads": torch.get_num_threads(),
        "cpu_bf16": hw,
        "n": len(chosen),
        "pairs": len(iu[0]),
        "tokens_mean": float(np.mean([len(t.input_ids) for t in chosen])),
        "sketch_dim": args.sketch_dim,
        "warmup_steps": args.warmup_steps,
        "pairwise_cosine_spearman": rho,
        "row_cosine_min": float(row_cos.min()),
        "row_cosine_mean": float(row_cos.mean()),
        "s_per_sample": seconds,
        "bar": SPEARMAN_BAR,
        "bf16_as_cpu_default": bool(native and rho >= SPEARMAN_BAR),
    }
    print(f"CPU bf16: {hw}  threads {result['threads']}")
    print(
        f"{result['n']} samples ({result['tokens_mean']:.0f} tokens), {result['pairs']} pairs, "
        f"sketch {args.sketch_dim}"
    )
    print(f"pairwise-cosine Spearman bf16 vs float32: {rho:.4f} (bar {SPEARMAN_BAR})")
    print(f"per-sample cosine bf16 vs float32: min {row_cos.min():.4f}, mean {row_cos.mean():.4f}")
    print(f"s/sample: float32 {seconds['float32']:.2f}, bf16 {seconds['bf16']:.2f}")
    print(f"bf16 as the CPU default: {'yes' if result['bf16_as_cpu_default'] else 'no'}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
