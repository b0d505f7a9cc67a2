"""What makes a one-view encoder directory of influcoder's own format load in plain
sentence-transformers too: a top-level ``modules.json`` running the backbone's modules (under
``backbone/``) and then the custom module :mod:`influcoder.encoders.influcoder_head` (copied
into the directory, loaded with ``trust_remote_code=True``), and a ``README.md`` model card.
influcoder itself keeps reading the views file (:mod:`influcoder.encoders.directory`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from influcoder.encoders.heads import SavedHead

ST_CONFIG = "config_sentence_transformers.json"
HEAD_MODULE = "influcoder_head.InflucoderHead"
#: The custom module's source (not imported here: it imports torch, which the torch-free
#: query path never loads) and the config file it reads (its ``CONFIG_FILE``).
HEAD_SOURCE = Path(__file__).with_name("influcoder_head.py")
HEAD_CONFIG = "influcoder_head.json"


def write_st_files(
    folder: Path,
    backbone_dir: str,
    views: Sequence[str],
    head: SavedHead,
    similarity: str,
    source: str | None = None,
) -> None:
    """Write the sentence-transformers files of the directory ``folder`` (whose backbone is
    saved under ``folder / backbone_dir``, its head tensors as ``head.safetensors``) and its
    model card. Several views cannot run in sentence-transformers (it encodes one text, not a
    prompt and a response apart): those directories get the card only."""
    one_view = tuple(views) == ("text",)
    if one_view:
        backbone = folder / backbone_dir
        modules = json.loads((backbone / "modules.json").read_text(encoding="utf-8"))
        for m in modules:
            m["path"] = f"{backbone_dir}/{m['path']}".rstrip("/")
        modules.append(
            {"idx": len(modules), "name": str(len(modules)), "path": "", "type": HEAD_MODULE}
        )
        _write_json(folder / "modules.json", modules)
        shutil.copyfile(HEAD_SOURCE, folder / HEAD_SOURCE.name)
        _write_json(
            folder / HEAD_CONFIG,
            {"kind": head.kind, "gamma": head.gamma, "similarity": similarity},
        )
        config_file = backbone / ST_CONFIG
        config = (
            json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        )
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
        f"views: {'+'.join(views)}. Compare its vectors {compare}.",
        "",
    ]
    if loads:
        lines += [
            "Each sample is encoded as one text: the prompt, a blank line, the response. "
            "The head runs in `influcoder_head.py` (torch and safetensors only), so "
            "sentence-transformers needs `trust_remote_code=True`:",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            'model = SentenceTransformer("path/to/this/directory", trust_remote_code=True)',
            'vectors = model.encode(["What is the capital of France?\\n\\nParis."])',
            "```",
        ]
    else:
        lines += [
            "Its head reads several views of each sample (" + ", ".join(views) + "), which "
            "sentence-transformers cannot pass to one model: load it with influcoder "
            "(`influcoder index --encoder path/to/this/directory`). `backbone/` alone is the "
            "backbone without the head, not this encoder.",
        ]
    return "\n".join(lines) + "\n"


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
