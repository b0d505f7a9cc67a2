"""Where bf16 autocast's error in the gradients comes from, on a peer benchmark's samples.

``benchmarks/bench_peers.py`` found bf16 collect ranking the gradients of short answers unlike
float32 (Spearman 0.754 among 5-token answers). This script takes that run's work directory
(``--work``: the saved adapter and tokenized samples) and, per sample, compares:

* the response loss in float32 and under bf16 autocast (one forward pass each);
* the cosine between each sample's dense LoRA gradient under bf16 autocast and in float32, with
  every module of one kind kept in float32 inside the autocast region (``--float32``: the LM
  head, the attention blocks, the MLP blocks, nothing), so the error can be placed;
* the Spearman of the pairwise cosines against float32's, per variant.

    .venv/bin/python benchmarks/bench_peers.py --methods plain,collect,collect-bf16 --work W
    python benchmarks/bf16_error.py --work W --short 6 --long 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common
import numpy as np

VARIANTS = {
    "bf16": (),
    "bf16, LM head fp32": ("lm_head",),
    "bf16, attention fp32": ("self_attn",),
    "bf16, MLP fp32": ("mlp",),
}


class Float32Modules:
    """Inside an autocast region, run the modules whose name ends with one of ``suffixes`` in
    float32: a pre-hook switches autocast off (and casts the inputs up), a post-hook on."""

    def __init__(self, model, suffixes):
        self.modules = [
            m for n, m in model.named_modules() if suffixes and n.split(".")[-1] in suffixes
        ]
        self.handles, self.contexts = [], []

    def _pre(self, module, args):
        import torch

        context = torch.autocast("cpu", enabled=False)
        context.__enter__()
        self.contexts.append(context)
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def _post(self, module, args, output):
        self.contexts.pop().__exit__(None, None, None)

    def __enter__(self):
        for m in self.modules:
            self.handles += [
                m.register_forward_pre_hook(self._pre),
                m.register_forward_hook(self._post),
            ]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False


def main(argv=None) -> list[dict]:
    import torch
    from scipy.stats import spearmanr

    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import load_adapter
    from influcoder.groundtruth.loss import pad_batch, response_losses
    from influcoder.groundtruth.tokenize import TokenizedSample

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="a bench_peers.py --work directory")
    ap.add_argument("--model", default="smollm2-135m", help="its decoder")
    ap.add_argument("--short", type=int, default=6, help="samples with <= 8 response tokens")
    ap.add_argument("--long", type=int, default=2, help="samples with more")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    prepared = json.loads((work / "prepared.json").read_text())
    model, _, _ = load_decoder(args.model)
    model = load_adapter(model, work / "adapter")
    samples = [TokenizedSample(**d) for d in json.loads((work / "samples.json").read_text())]
    batch = [s for s in samples if s.n_response <= 8][: args.short] + [
        s for s in samples if s.n_response > 8
    ][: args.long]
    pad = prepared["pad_token_id"]

    def losses(bf16):
        out = []
        for s in batch:
            ids, mask, labels = pad_batch([s], pad, torch.device("cpu"))
            with torch.no_grad():
                out.append(response_losses(model, mask, labels, input_ids=ids, bf16=bf16).item())
        return out

    def vectors(bf16, suffixes=()):
        computer = GradientComputer(model, target="lora", sketch_dim=0, bf16=bf16, pad_token_id=pad)
        with Float32Modules(model, suffixes):
            return np.concatenate([computer([s]) for s in batch])

    reference = vectors(False)
    pairs = np.triu_indices(len(batch), 1)
    rows = [
        {
            "variant": "float32 (reference)",
            "cosine to fp32 per sample": "1",
            "pairwise spearman": 1.0,
        }
    ]
    for name, suffixes in VARIANTS.items():
        v = vectors(True, suffixes)
        cosines = (v * reference).sum(1)
        rows.append(
            {
                "variant": name,
                "cosines": cosines.tolist(),
                "cosine to fp32 per sample": " ".join(f"{c:.2f}" for c in cosines),
                "pairwise spearman": spearmanr((reference @ reference.T)[pairs], (v @ v.T)[pairs])[
                    0
                ],
            }
        )
    print(f"{len(batch)} samples, response tokens {[s.n_response for s in batch]}")
    print("response loss fp32: " + " ".join(f"{x:.3f}" for x in losses(False)))
    print("response loss bf16: " + " ".join(f"{x:.3f}" for x in losses(True)))
    print(common.table(rows, ["variant", "cosine to fp32 per sample", "pairwise spearman"]))
    print(f"reproduce: {common.command_line()}")
    return rows


if __name__ == "__main__":
    main()
