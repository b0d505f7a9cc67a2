"""collect and encode on a GPU, in one short run: the figures of issue 14's GPU targets.

* **collect**: milliseconds per sample of the gradient ground truth of SmolLM2-135M (the bundled
  GGUF, loaded as ``influcoder collect`` loads it) on ~220-token real samples (Big-Bench-Hard
  chain-of-thought exemplars, cut to ``--collect-tokens`` by the package's own truncation),
  through :func:`influcoder.collect` with its default settings (LoRA warm-up, sketch 8192)
  but the precision and batch size, a few pairs of which are tried (``--configs``). The time
  per sample is the store's own record of its shards' wall time (``provenance.seconds``:
  model loading and the warm-up left out); on a GPU a small collect runs first so CUDA's
  start-up is not counted. Target: <= 15 ms.
* **encode**: texts per second of the bundled MiniLM through :func:`influcoder.encode` (length-
  bucketed batches, the ``auto`` backend: bf16 on a GPU) at a large batch, on real chat and
  reasoning texts, again timed by the store's record after a warm-up. Target: >= 5,000/s.

Prints a table against the targets and writes every figure to ``--out`` (JSON), with the
machine (GPU name, torch and CUDA versions) and the peak GPU memory of each step.

    python benchmarks/bench_gpu.py --out bench_gpu.json               # on the GPU machine
    python benchmarks/bench_gpu.py --quick --model tiny-llama/ --out x.json  # tiny, for the test
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import common

COLLECT_TARGET_MS = 15.0
ENCODE_TARGET_PER_S = 5000.0


def _collect_samples(model: str, n: int, tokens: int):
    """``n`` BBH exemplars that the package's truncation leaves at (nearly) ``tokens`` tokens;
    cycled if the package holds fewer (each copy gets its own id)."""
    from influcoder.groundtruth.decoder import load_tokenizer, resolve_decoder
    from influcoder.groundtruth.tokenize import tokenize_samples
    from influcoder.io.samples import Sample
    from influcoder.workflows.datasets import load_bbh_cot

    samples = common.to_samples(load_bbh_cot())
    tok = load_tokenizer(resolve_decoder(model))
    lengths = [len(t.input_ids) for t in tokenize_samples(tok, samples, max_length=tokens)]
    long = [s for s, n_tok in zip(samples, lengths) if n_tok >= 0.9 * tokens] or samples
    chosen = [
        Sample(
            f"{long[i % len(long)].id}-{i}",
            long[i % len(long)].prompt,
            long[i % len(long)].response,
        )
        for i in range(n)
    ]
    kept = [n_tok for s, n_tok in zip(samples, lengths) if n_tok >= 0.9 * tokens] or lengths
    return chosen, sum(kept) / len(kept)


def _encode_texts(n: int) -> list:
    """``n`` real chat and reasoning samples (cycled, each copy with its own id)."""
    from influcoder.io.samples import Sample
    from influcoder.workflows.datasets import load_bbh_cot, load_chatterbot

    samples = common.to_samples(load_chatterbot() + load_bbh_cot())
    return [
        Sample(f"t{i}", samples[i % len(samples)].prompt, samples[i % len(samples)].response)
        for i in range(n)
    ]


def _gpu_peak_reset(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak_gib(torch) -> float | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def bench_collect(args, work: Path, torch) -> list[dict]:
    from influcoder import CollectArguments, collect

    samples, mean_tokens = _collect_samples(args.model, args.collect_samples, args.collect_tokens)
    base = {"model": args.model, "max_length": args.collect_tokens}
    if args.quick:
        base.update(warmup_steps=2, warmup_batch_size=2, sketch_dim=1024)
    if torch.cuda.is_available() and args.device != "cpu":
        # CUDA's context and kernels, before any timing
        collect(
            samples[:4],
            work / "collect-warm",
            CollectArguments(**base, batch_size=4),
            device=args.device,
            progress=False,
        )
    rows = []
    for precision, batch_size in args.configs:
        _gpu_peak_reset(torch)
        start = time.perf_counter()
        store = collect(
            samples,
            work / f"collect-{precision}-{batch_size}",
            CollectArguments(**base, batch_size=batch_size, precision=precision),
            device=args.device,
            progress=False,
        )
        wall = time.perf_counter() - start
        seconds = store.manifest["provenance"]["seconds"]
        ms = 1000 * seconds / store.n
        rows.append(
            {
                "step": "collect",
                "precision": store.setup["gradient"]["precision"],
                "batch": batch_size,
                "n": store.n,
                "tokens/sample": mean_tokens,
                "ms/sample": ms,
                "wall s (with load + warm-up)": wall,
                "peak GPU GiB": _gpu_peak_gib(torch),
                "device": store.manifest["provenance"].get("device"),
                "target": f"<= {COLLECT_TARGET_MS:g} ms",
                "met": ms <= COLLECT_TARGET_MS,
            }
        )
    return rows


def bench_encode(args, work: Path, torch) -> list[dict]:
    from influcoder import EncodeArguments, encode

    texts = _encode_texts(args.encode_texts)
    warm = EncodeArguments(batch_size=min(64, args.encode_batch))
    encode(texts[:256], work / "encode-warm", warm, device=args.device, progress=False)
    _gpu_peak_reset(torch)
    start = time.perf_counter()
    store = encode(
        texts,
        work / "encode",
        EncodeArguments(batch_size=args.encode_batch, shard_rows=max(1024, args.encode_batch)),
        device=args.device,
        progress=False,
    )
    wall = time.perf_counter() - start
    rate = store.n / store.manifest["provenance"]["seconds"]
    return [
        {
            "step": "encode",
            "backend": store.manifest["provenance"]["arguments"]["backend"],
            "batch": args.encode_batch,
            "n": store.n,
            "texts/s": rate,
            "wall s (with load)": wall,
            "peak GPU GiB": _gpu_peak_gib(torch),
            "device": store.manifest["provenance"].get("device"),
            "target": f">= {ENCODE_TARGET_PER_S:g}/s",
            "met": rate >= ENCODE_TARGET_PER_S,
        }
    ]


def machine(torch) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.version.cuda,
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (seconds on a CPU): for the test, not for figures",
    )
    ap.add_argument("--collect-samples", type=int, default=64)
    ap.add_argument(
        "--collect-tokens",
        type=int,
        default=224,
        help="tokens per collect sample (the package truncates to this)",
    )
    ap.add_argument(
        "--model", default="smollm2-135m", help="the decoder of collect (the test gives a tiny one)"
    )
    ap.add_argument(
        "--configs",
        default="auto:8,auto:32,fp32:32",
        help="collect runs as PRECISION:BATCH_SIZE,... (auto: bf16 on a GPU); each "
        "loads the decoder again (about 25 s for the GGUF on a slow CPU)",
    )
    ap.add_argument("--encode-texts", type=int, default=32768)
    ap.add_argument("--encode-batch", type=int, default=512)
    ap.add_argument("--out", default="bench_gpu.json", help="JSON file of every figure")
    args = ap.parse_args(argv)
    if args.quick:
        args.collect_samples, args.collect_tokens = 4, 48
        args.encode_texts, args.encode_batch = 64, 16
        args.configs = "auto:2"
    args.configs = [
        (c.split(":")[0].strip(), int(c.split(":")[1])) for c in args.configs.split(",")
    ]

    import torch

    from influcoder.io.devices import describe_device, resolve_device

    device = resolve_device(args.device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        rows = bench_collect(args, Path(tmp), torch) + bench_encode(args, Path(tmp), torch)
    result = {
        "command": common.command_line(),
        "device": describe_device(device),
        "machine": machine(torch),
        "quick": args.quick,
        "peak RSS GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "total seconds": time.perf_counter() - started,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(
        f"device: {result['device']}  ({'QUICK: tiny sizes, not figures' if args.quick else 'full'})"
    )
    print(
        common.table(
            [r for r in rows if r["step"] == "collect"],
            [
                "precision",
                "batch",
                "n",
                "tokens/sample",
                "ms/sample",
                "peak GPU GiB",
                "target",
                "met",
            ],
        )
    )
    print()
    print(
        common.table(
            [r for r in rows if r["step"] == "encode"],
            ["backend", "batch", "n", "texts/s", "peak GPU GiB", "target", "met"],
        )
    )
    print(f"\nwrote {args.out} ({result['total seconds']:.0f} s in all)")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
