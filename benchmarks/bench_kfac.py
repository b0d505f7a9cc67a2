"""K-FAC preconditioner: fit time, file size and per-process set-up, shared roots vs first layout.

Builds a randomly initialised Llama with SmolLM2-135M's projection shapes (hidden 576,
intermediate 1536, 9 heads, 3 key/value heads; fewer blocks, a small vocabulary), LoRA rank 8
on the seven projections, and random samples. Prints, for the same fitted factors:

* the fit: seconds of ``fit_kfac`` (the input factor of q/k/v and of gate/up accumulated once)
  and of the damped inverse roots (one eigendecomposition per distinct factor);
* the file: bytes of the first layout (one pair of raw factors per block) and of the saved
  roots (each once);
* the set-up of every process that builds a GradientComputer (each ``--like`` store, each Ray
  worker): seconds of ``kfac_transforms`` from each file, the first layout decomposing every
  block's pair, the roots only loaded.

Times are CPU seconds (fairer than wall time on a shared machine). The real model is never
loaded: per-block figures scale with the number of blocks.

    OMP_NUM_THREADS=1 python benchmarks/bench_kfac.py --layers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sets the offline environment)


def _model(layers: int, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from influcoder.groundtruth.lora import attach_lora

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    return attach_lora(LlamaForCausalLM(config).eval(), rank=8, seed=0)


def _samples(n: int, length: int, vocab: int):
    import numpy as np

    from influcoder.groundtruth.tokenize import TokenizedSample

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        ids = rng.integers(3, vocab, size=length).tolist()
        out.append(TokenizedSample(ids, [-100] * (length // 2) + ids[length // 2 :]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=512)
    a = parser.parse_args()

    from influcoder.groundtruth.kfac import fit_kfac, kfac_transforms
    from influcoder.groundtruth.lora import gradient_modules
    from influcoder.groundtruth.precondition import load_moments, save_moments

    model = _model(a.layers, a.vocab)
    modules = gradient_modules(model, "lora")
    data = _samples(a.samples, a.length, a.vocab)
    batches = [data[i : i + 8] for i in range(0, len(data), 8)]
    start = time.process_time()
    fitted = fit_kfac(model, batches, modules)
    fit_s = time.process_time() - start
    start = time.process_time()
    roots = fitted.roots()
    roots_s = time.process_time() - start
    blocks = [
        (block, fitted.factors[i].shape[0] * fitted.factors[o].shape[0])
        for block, (i, o) in fitted.blocks.items()
    ]
    print(f"{a.layers} blocks, {len(blocks)} LoRA matrices, {len(data)} x {a.length} tokens")
    print(
        f"fit_kfac: {fit_s:.2f} CPU s; roots of {len(fitted.factors)} factors: {roots_s:.2f} CPU s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for layout, content in (("first layout", fitted.per_block()), ("roots", roots.saved())):
            path = Path(tmp) / "preconditioner.safetensors"
            save_moments(path, content)
            size = path.stat().st_size
            start = time.process_time()
            kfac_transforms(load_moments(path), blocks)
            setup_s = time.process_time() - start
            print(f"{layout:>12}: {size / 1e6:8.2f} MB, per-process set-up {setup_s:.2f} CPU s")


if __name__ == "__main__":
    main()
