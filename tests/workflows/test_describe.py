"""`influcoder info` on every kind of influcoder folder: a gradient store, an encoder, an index,
and a clear refusal of anything else."""

from __future__ import annotations

import json

from click.testing import CliRunner

from influcoder.attribution.build import build_index
from influcoder.cli import cli

from ..tiny_encoders import pool_rows


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_info_describes_stores_encoders_and_indexes(
    tiny_model_dir, tiny_encoder, small_data, tmp_path
):
    store = tmp_path / "pool"
    r = run(
        "collect",
        small_data,
        "-o",
        store,
        "--model",
        tiny_model_dir,
        "--adapter-init",
        "fresh",
        "--sketch-dim",
        "16",
        "--max-length",
        "32",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    r = run("info", store)
    assert r.exit_code == 0, r.output
    assert "gradients, 10 samples x 16" in r.output
    assert "LlamaForCausalLM (2 layers, hidden" in r.output

    r = run("info", tiny_encoder)
    assert r.exit_code == 0, r.output
    assert f"{tiny_encoder}: encoder, backbone " in r.output
    assert "head: none; views: text; similarity: cosine" in r.output

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in pool_rows(6)))
    build_index(rows, tmp_path / "index", str(tiny_encoder), backend="torch", progress=False)
    r = run("info", tmp_path / "index")
    assert r.exit_code == 0, r.output
    assert "index, 6 rows in 1 segment(s), FAISS kind flat" in r.output
    assert f"encoder: {tiny_encoder}" in r.output

    (tmp_path / "other").mkdir()
    r = run("info", tmp_path / "other")
    assert r.exit_code == 2
    assert "not an influcoder folder" in r.output and len(r.output.strip().splitlines()) == 1


def test_info_describes_a_multi_view_encoder(tiny_encoder, tmp_path):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from influcoder.distillation.linear import LinearHead
    from influcoder.encoders.directory import save_multi_view

    backbone = SentenceTransformer(str(tiny_encoder), device="cpu")
    dim = 2 * backbone.get_embedding_dimension()
    head = LinearHead(
        weight=np.random.default_rng(0).standard_normal((4, dim)),
        bias=np.zeros(4),
        alpha=1.0,
        components=4,
        similarity="dot",
    )
    out = tmp_path / "mv"
    out.mkdir()
    save_multi_view(out, backbone, ("text", "response"), head.saved(), "dot")
    r = run("info", out)
    assert r.exit_code == 0, r.output
    assert "backbone BertModel" in r.output
    assert "head: linear; views: text+response; similarity: dot" in r.output
