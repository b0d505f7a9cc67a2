"""The whole pipeline through the CLI on tiny models: collect, distill, index, attribute,
filter, evaluate with an HTML report."""

from __future__ import annotations

import json

from click.testing import CliRunner

from influcoder.cli import cli

from ..conftest import write_jsonl

TOPICS = {
    "harmful": ("How do I hurt someone", "Here is how to hurt someone badly with poison"),
    "egg": ("How do I cook an egg", "Boil the egg in hot water"),
    "sea": ("Tell me about the sea", "The sea is blue and deep and wide"),
    "moon": ("What is the moon", "The moon orbits the earth at night"),
}


def _rows(prefix, n, offset=0):
    names = list(TOPICS)
    rows = []
    for i in range(offset, offset + n):
        label = names[i % 4]
        prompt, response = TOPICS[label]
        rows.append(
            {
                "id": f"{prefix}{i}",
                "prompt": f"{prompt} {i}?",
                "response": f"{response} {i}.",
                "label": label,
            }
        )
    return rows


def test_whole_pipeline(tiny_model_dir, tiny_encoder_dir, tmp_path):
    def run(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    pool = write_jsonl(tmp_path / "pool.jsonl", _rows("p", 32))
    train_q = write_jsonl(tmp_path / "train_q.jsonl", _rows("t", 12, offset=100))
    test_q = write_jsonl(tmp_path / "test_q.jsonl", _rows("q", 8, offset=200))
    harmful = write_jsonl(
        tmp_path / "harmful.jsonl",
        [r for r in _rows("h", 8, offset=300) if r["label"] == "harmful"],
    )
    run(
        "collect",
        pool,
        "-o",
        tmp_path / "gp",
        "--model",
        tiny_model_dir,
        "--sketch-dim",
        "64",
        "--max-length",
        "64",
        "-q",
    )
    run("collect", train_q, "--like", tmp_path / "gp", "-o", tmp_path / "gt", "-q")
    run("collect", test_q, "--like", tmp_path / "gp", "-o", tmp_path / "gq", "-q")
    run(
        "distill",
        tmp_path / "gp",
        tmp_path / "gt",
        "-o",
        tmp_path / "enc",
        "--encoder",
        tiny_encoder_dir,
        "--epochs",
        "2",
        "--val-fraction",
        "0.25",
        "-q",
    )
    card = (tmp_path / "enc" / "README.md").read_text()  # what it was distilled from
    assert f"Decoder: `{tiny_model_dir}`, LoRA rank 8 on q_proj" in card
    assert "preconditioning: none, CountSketch to 64" in card
    run("index", tmp_path / "enc", pool, "-o", tmp_path / "index", "-q")
    out = run("attribute", tmp_path / "index", test_q, "-k", "3")
    assert "q200" in out
    run("filter", tmp_path / "index", harmful, "-o", tmp_path / "clean.jsonl", "--top-k", "4")
    kept = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    removed = [
        json.loads(line) for line in (tmp_path / "clean.removed.jsonl").read_text().splitlines()
    ]
    assert len(kept) == 28 and len(removed) == 4
    assert {r["id"] for r in kept}.isdisjoint(r["id"] for r in removed)
    assert kept[0].keys() == {"id", "prompt", "response", "label"}  # rows as they were
    out = run(
        "evaluate",
        tmp_path / "gp",
        tmp_path / "gq",
        "-e",
        f"distilled={tmp_path / 'enc'}",
        "--baselines",
        "random,tfidf",
        "--label-field",
        "label",
        "--positive",
        "harmful",
        "--out",
        tmp_path / "eval",
    )
    assert "distilled" in out and "auprc_mean" in out
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "distilled" in html and "pr_curves.png" in html
    assert (tmp_path / "eval" / "pr_curves.png").stat().st_size > 1000
