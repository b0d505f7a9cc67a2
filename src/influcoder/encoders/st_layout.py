"""What makes an encoder directory of influcoder's own format load in plain
sentence-transformers too, with no custom code and no ``trust_remote_code``.

A one-view directory gets a top-level ``modules.json`` running the backbone's modules (under
``backbone/``) and then the head as sentence-transformers' own modules (saved under ``head/``):

- ``linear``: ``Normalize``, ``Dense`` (identity: ``weight``, ``bias``);
- ``kernel``: ``Normalize``, ``Dense`` (sigmoid), ``Dense`` (identity). With ``x`` of unit
  length, ``-gamma ||x - a||^2 = 2 gamma x.a - gamma (1 + ||a||^2)``, so the first layer gives
  every anchor's exponent, shifted down by :data:`KERNEL_SHIFT`; far below zero the sigmoid is
  the exponential (relative error ``exp(-KERNEL_SHIFT)``, under float32's), and the second
  layer's weight ``exp(KERNEL_SHIFT) coef`` undoes the shift;

then ``Normalize`` unless the similarity is ``dot``, which ``config_sentence_transformers.json``
declares (``similarity_fn_name``). Several views cannot run in sentence-transformers (it
encodes one text, not a prompt and a response apart): their ``modules.json`` names one module,
:class:`influcoder.encoders.st_refusal.MultiViewEncoder`, which refuses in one line naming
influcoder. influcoder itself keeps reading the views file
(:mod:`influcoder.encoders.directory`). Every directory gets a ``README.md`` model card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from influcoder.encoders.heads import SavedHead

ST_CONFIG = "config_sentence_transformers.json"
HEAD_DIR = "head"
#: How far below zero the kernel's exponents are shifted so that a sigmoid computes their
#: exponential: ``sigmoid(t) = exp(t) / (1 + exp(t))``, ``exp(t) < 2e-9`` there.
KERNEL_SHIFT = 20.0
#: The module every multi-view directory's ``modules.json`` names: its loading refuses.
REFUSAL_MODULE = "influcoder.encoders.st_refusal.MultiViewEncoder"


def head_modules(head: SavedHead, similarity: str) -> list:
    """The head as sentence-transformers modules (module docstring), on the CPU, float32."""
    import numpy as np
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    t = {k: np.asarray(v, dtype=np.float64) for k, v in head.tensors.items()}

    def dense(weight, bias, activation):
        return Dense(
            weight.shape[1],
            weight.shape[0],
            activation_function=activation,
            init_weight=torch.tensor(np.ascontiguousarray(weight), dtype=torch.float32),
            init_bias=torch.tensor(bias, dtype=torch.float32),
        )

    modules = [Normalize()]
    if head.kind == "linear":
        modules.append(dense(t["weight"], t["bias"], torch.nn.Identity()))
    else:
        gamma, anchors = head.gamma, t["anchors"]
        exponent_bias = -gamma * (1.0 + (anchors * anchors).sum(1)) - KERNEL_SHIFT
        modules.append(dense(2.0 * gamma * anchors, exponent_bias, torch.nn.Sigmoid()))
        weight = (t["coef"] * math.exp(KERNEL_SHIFT)).T
        modules.append(dense(weight, t["bias"], torch.nn.Identity()))
    if similarity == "cosine":
        modules.append(Normalize())
    return modules


def write_st_files(
    folder: Path,
    backbone_dir: str,
    views: Sequence[str],
    head: SavedHead,
    similarity: str,
    source: str | None = None,
) -> None:
    """Write the sentence-transformers files of the directory ``folder`` (whose backbone is
    saved under ``folder / backbone_dir``) and its model card (module docstring)."""
    one_view = tuple(views) == ("text",)
    backbone = folder / backbone_dir
    if one_view:
        modules = json.loads((backbone / "modules.json").read_text(encoding="utf-8"))
        for m in modules:
            m["path"] = f"{backbone_dir}/{m['path']}".rstrip("/")
        for module in head_modules(head, similarity):
            idx = len(modules)
            path = f"{HEAD_DIR}/{idx}_{type(module).__name__}"
            (folder / path).mkdir(parents=True)
            module.save(str(folder / path))
            ref = f"{type(module).__module__}.{type(module).__name__}"
            modules.append({"idx": idx, "name": str(idx), "path": path, "type": ref})
    else:
        modules = [{"idx": 0, "name": "0", "path": "", "type": REFUSAL_MODULE}]
    _write_json(folder / "modules.json", modules)
    config_file = backbone / ST_CONFIG
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    _write_json(folder / ST_CONFIG, {**config, "similarity_fn_name": similarity})
    (folder / "README.md").write_text(
        model_card(views, head, similarity, source, one_view), encoding="utf-8"
    )


def model_card(
    views: Sequence[str], head: SavedHead, similarity: str, source: str | None, loads: bool
) -> str:
    """The ``README.md`` of an encoder directory: what it is and how to load it."""
    origin = f"from the encoder `{source}`" if source else "from a sentence-transformers encoder"
    compare = (
        "by dot product: its vectors keep their length, do not normalise them"
        if similarity == "dot"
        else "by cosine similarity (its vectors have unit length)"
    )
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, influcoder, training-data-attribution]",
        "---",
        "",
        "# An influcoder distilled encoder",
        "",
        f"Distilled by influcoder {origin} (saved under `backbone/`) to rank training samples "
        f"like their gradients' influence. Head: {head.kind}, {head.in_dim} -> {head.out_dim}; "
        f"views: {'+'.join(views)}. Compare its vectors {compare} "
        f"(`similarity_fn_name`: `{similarity}`).",
        "",
    ]
    if loads:
        lines += [
            "Each sample is encoded as one text: the prompt, a blank line, the response. "
            "The head is made of sentence-transformers' own modules (under `head/`), so the "
            "directory loads as it is, without influcoder or custom code:",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            'model = SentenceTransformer("path/to/this/directory")',
            'vectors = model.encode(["What is the capital of France?\\n\\nParis."])',
            "```",
        ]
    else:
        lines += [
            "Its head reads several views of each sample (" + ", ".join(views) + "), which "
            "sentence-transformers cannot pass to one model, so `SentenceTransformer` refuses "
            "it: load it with influcoder (`pip install influcoder`, then `influcoder encode "
            "DATA --encoder path/to/this/directory --out STORE`, or `influcoder index`, "
            "`attribute` and `serve` with the same `--encoder`). `backbone/` alone is the "
            "backbone without the head, not this encoder.",
        ]
    return "\n".join(lines) + "\n"


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
