"""What ``influcoder info`` says about a folder: a gradient or embedding store (with the
decoder's architecture), an encoder directory (backbone, head, views, similarity), an embedding
index (encoder, rows, FAISS kind) or a run store. Each is recognised by the file it is written
with; anything else is refused in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from influcoder.errors import InflucoderError


def describe_folder(path: str | os.PathLike) -> list[str]:
    """Lines describing the influcoder folder at ``path``; an :class:`InflucoderError` when it
    is none."""
    from influcoder.attribution.index import INDEX_FILE
    from influcoder.encoders.directory import ST_CONFIG, VIEWS_FILE
    from influcoder.io.layout import MANIFEST_NAME
    from influcoder.validation.runstore import is_run_store, open_runs

    folder = Path(path)
    if not folder.is_dir():
        raise InflucoderError(f"{folder}: not a folder")
    if is_run_store(folder):
        return open_runs(folder).describe()
    if (folder / MANIFEST_NAME).is_file():
        return _describe_store(folder)
    if (folder / INDEX_FILE).is_file():
        return _describe_index(folder)
    if any((folder / f).is_file() for f in (VIEWS_FILE, ST_CONFIG, "modules.json")):
        return _describe_encoder(folder)
    raise InflucoderError(
        f"{folder}: not an influcoder folder (no {MANIFEST_NAME}, {INDEX_FILE}, {VIEWS_FILE} "
        f"or {ST_CONFIG}): info describes stores, run stores, indexes and encoders"
    )


def _read(file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InflucoderError(f"{file}: cannot read: {e}") from None
    if not isinstance(value, dict):
        raise InflucoderError(f"{file}: not a JSON object")
    return value


def _architecture(folder: Path) -> str | None:
    """``Type (L layers, hidden H)`` from a Hugging Face ``config.json`` in ``folder``."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    config = _read(config_file)
    kind = (config.get("architectures") or [config.get("model_type", "?")])[0]
    layers, hidden = config.get("num_hidden_layers"), config.get("hidden_size")
    return f"{kind} ({layers} layers, hidden {hidden})"


def _describe_store(folder: Path) -> list[str]:
    from influcoder.io.stores import Store

    s = Store(folder, allow_incomplete=True)
    m = s.manifest
    state = "complete" if m["complete"] else f"{len(s.present_shards())}/{s.n_shards} shards"
    lines = [f"{s.path}: {m['kind']}, {s.n} samples x {s.dim} ({s.dtype}), {state}"]
    provenance = m.get("provenance", {})
    model = provenance.get("model_name") or provenance.get("arguments", {}).get("model")
    if m["kind"] == "gradients" and model:
        lines.append(f"model: {model}, {_decoder_architecture(model)}")
    lines.append(json.dumps({"setup": m["setup"], "provenance": provenance}, indent=2))
    return lines


def _decoder_architecture(model: str) -> str:
    from influcoder.groundtruth.decoder import resolve_decoder

    try:
        ref = resolve_decoder(model)
    except InflucoderError:
        return "not found here"
    if ref.kind == "gguf":
        return f"GGUF file {ref.gguf_file}"
    if ref.kind == "hub":
        return "a Hugging Face hub id"
    return _architecture(Path(ref.path)) or "no config.json"


def _describe_index(folder: Path) -> list[str]:
    from influcoder.attribution.index import read_index_meta

    meta = read_index_meta(folder)
    encoder = meta.get("encoder", {})
    faiss = meta.get("faiss", {})
    return [
        f"{folder}: index, {meta.get('n')} rows in {len(meta.get('segments', []))} segment(s), "
        f"FAISS kind {faiss.get('kind')}",
        f"encoder: {encoder.get('name')} ({encoder.get('fingerprint')})",
        json.dumps(meta, indent=2),
    ]


def _describe_encoder(folder: Path) -> list[str]:
    from influcoder.distillation.trainer import CARD_NAME
    from influcoder.encoders.directory import (
        backbone_path,
        encoder_similarity,
        is_multi_view,
        read_views,
    )

    if is_multi_view(folder):
        views, head = read_views(folder)
        backbone, head_kind = Path(backbone_path(folder)), head.kind
    else:
        modules = folder / "modules.json"
        dense = modules.is_file() and any(
            m.get("type", "").endswith("Dense") for m in json.loads(modules.read_text())
        )
        views, backbone, head_kind = ("text",), folder, "linear (Dense)" if dense else "none"
    card_file = folder / CARD_NAME
    card = _read(card_file) if card_file.is_file() else {}
    base = card.get("base_encoder")
    lines = [
        f"{folder}: encoder, backbone {_architecture(backbone) or 'unknown'}"
        + (f" distilled from {base}" if base else ""),
        f"head: {head_kind}; views: {'+'.join(views)}; similarity: {encoder_similarity(str(folder))}",
    ]
    if isinstance(card.get("fidelity"), dict):
        from influcoder.distillation.fidelity import advice_line, summary

        try:
            lines.append(summary(card["fidelity"]))
            lines += filter(None, [advice_line(card["fidelity"])])
        except (KeyError, TypeError, ValueError) as e:
            raise InflucoderError(f"{card_file}: a malformed 'fidelity' entry ({e})") from None
    elif card:
        lines.append(
            "held-out fidelity: none recorded (--holdout-fraction 0, too little ground truth, or an older encoder)"
        )
    return lines
