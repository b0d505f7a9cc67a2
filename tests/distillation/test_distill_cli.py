"""`influcoder distill` on gradient stores collected from the tiny Llama."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sentence_transformers import SentenceTransformer

from influcoder.cli import cli
from influcoder.encoders.backends import FastEncoder
from influcoder.encoders.views import sample_encoder
from influcoder.io.samples import Sample

from ..conftest import write_jsonl

COLLECT = ["--adapter-init", "fresh", "--sketch-dim", "64", "--max-length", "64", "-q"]


def _rows(prefix, n):
    topics = [
        "the cat sat on the mat",
        "boil the egg in water",
        "gravity pulls the moon",
        "the sea is blue and deep",
    ]
    return [
        {
            "id": f"{prefix}{i}",
            "prompt": f"Tell me about {topics[i % 4].split()[1]} {i}",
            "response": topics[i % 4],
        }
        for i in range(n)
    ]


def collect_stores(run, tiny_model_dir, tmp_path) -> None:
    """Gradient stores of 24 pool samples (tmp_path/gp) and 12 queries (tmp_path/gq)."""
    pool = write_jsonl(tmp_path / "pool.jsonl", _rows("p", 24))
    queries = write_jsonl(tmp_path / "q.jsonl", _rows("q", 12))
    assert (
        run.invoke(
            cli,
            [
                "collect",
                str(pool),
                "-o",
                str(tmp_path / "gp"),
                "--model",
                str(tiny_model_dir),
                *COLLECT,
            ],
        ).exit_code
        == 0
    )
    assert (
        run.invoke(
            cli,
            ["collect", str(queries), "--like", str(tmp_path / "gp"), "-o", str(tmp_path / "gq")],
        ).exit_code
        == 0
    )


def test_distill_from_stores(tiny_model_dir, tiny_encoder_dir, tmp_path):
    run = CliRunner()
    collect_stores(run, tiny_model_dir, tmp_path)
    r = run.invoke(
        cli,
        [
            "distill",
            str(tmp_path / "gp"),
            str(tmp_path / "gq"),
            "-o",
            str(tmp_path / "enc"),
            "--encoder",
            tiny_encoder_dir,
            "--epochs",
            "1",
            "--val-fraction",
            "0.25",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "untrained: per_anchor_spearman" in r.output
    card = json.loads((tmp_path / "enc" / "influcoder_distill.json").read_text())
    assert card["ground_truth"]["pool"]["n"] == 24
    assert card["ground_truth"]["setup"]["sketch"]["dim"] == 64
    # The default head (auto: linear or kernel by its cross-validation): the 36 samples' rank
    # caps its components; the CLI reports it and both kinds' figures.
    k, kind = card["head"]["components"], card["head"]["kind"]
    assert kind in ("linear", "kernel") and 2 <= k <= 36
    assert f"{kind} head: {k} components" in r.output
    kinds = card["head"]["kinds_validation_per_anchor_spearman"]
    assert set(kinds) == {"linear", "kernel"} and kinds[kind] == max(kinds.values())
    assert "head kinds: linear " in r.output
    # --views auto: the views its cross-validation kept, said and recorded
    assert f"views kept: {'+'.join(card['head']['views'])} (text " in r.output
    if card["head"]["views"] == ["text"] and kind == "linear":
        assert SentenceTransformer(str(tmp_path / "enc")).encode(["hi"]).shape == (1, k)
    encoder = sample_encoder(str(tmp_path / "enc"), lambda p: FastEncoder(p, backend="torch"))
    assert encoder.encode_samples([Sample("s", "hi", "there")]).shape == (1, k)
    r = run.invoke(
        cli,
        [
            "distill",
            str(tmp_path / "gp"),
            str(tmp_path / "gq"),
            "-o",
            str(tmp_path / "enc2"),
            "--encoder",
            tiny_encoder_dir,
            "--epochs",
            "0",
            "--head",
            "none",
            "-q",
        ],
    )
    assert r.exit_code == 2 and "epochs must be >= 1, or 0 with a head" in r.output


def test_distill_errors(tiny_model_dir, tiny_encoder_dir, tmp_path):
    run = CliRunner()
    pool = write_jsonl(tmp_path / "pool.jsonl", _rows("p", 3))
    assert (
        run.invoke(
            cli,
            [
                "collect",
                str(pool),
                "-o",
                str(tmp_path / "gp"),
                "--model",
                str(tiny_model_dir),
                *COLLECT,
            ],
        ).exit_code
        == 0
    )
    r = run.invoke(
        cli,
        [
            "distill",
            str(tmp_path / "gp"),
            str(tmp_path / "gp"),
            "-o",
            str(tmp_path / "enc"),
            "--encoder",
            tiny_encoder_dir,
            "-q",
        ],
    )
    assert r.exit_code == 2 and "too few" in r.output
    assert not (tmp_path / "enc").exists()
    (tmp_path / "notenc").mkdir()
    r = run.invoke(
        cli,
        [
            "distill",
            str(tmp_path / "gp"),
            str(tmp_path / "gp"),
            "-o",
            str(tmp_path / "enc"),
            "--encoder",
            str(tmp_path / "notenc"),
            "-q",
        ],
    )
    assert (
        r.exit_code == 2
        and "not a sentence-transformers, HF or multi-view encoder directory" in r.output
    )


class Killed(BaseException):
    """Stands for the process being killed (not an Exception: the CLI's handler lets it by)."""


def test_killed_distill_resumes_with_the_same_options(
    tiny_model_dir, tiny_encoder_dir, tmp_path, monkeypatch
):
    from influcoder.distillation import blocks

    run = CliRunner()
    collect_stores(run, tiny_model_dir, tmp_path)
    enc = tmp_path / "enc"
    distill = [
        "distill",
        str(tmp_path / "gp"),
        str(tmp_path / "gq"),
        "-o",
        str(enc),
        "--encoder",
        tiny_encoder_dir,
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--val-fraction",
        "0.25",
        "-q",
    ]
    original, calls = blocks.BlockSampler.sample, []

    def sample(self):  # killed at the first step of epoch 2, after epoch 1's checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return original(self)

    with monkeypatch.context() as m:
        m.setattr(blocks.BlockSampler, "sample", sample)
        try:
            run.invoke(cli, distill, catch_exceptions=False)
        except Killed:
            pass
    assert len(calls) == 3 and not enc.exists() and (tmp_path / "enc.checkpoint").is_dir()

    r = run.invoke(cli, [*distill, "--lr", "1e-4"])
    assert r.exit_code == 2 and "another distillation run" in r.output
    assert "args.lr: 0.0002 vs 0.0001" in r.output
    r = run.invoke(cli, distill[:-1])  # without -q: it silences the resume line
    assert r.exit_code == 0, r.output
    assert "resuming from" in r.output and "1 of 2 epochs already done" in r.output
    assert (enc / "influcoder_distill.json").is_file()
    assert not (tmp_path / "enc.checkpoint").exists()


def test_a_setting_with_fixed_choices_is_checked_by_the_cli(tmp_path):
    """A Literal setting becomes a choice: a wrong value stops with exit code 2 and the
    choices, before any store is read; --help lists them."""
    for folder in ("gp", "gq"):
        (tmp_path / folder).mkdir()
    run = CliRunner()
    res = run.invoke(
        cli,
        [
            "distill",
            str(tmp_path / "gp"),
            str(tmp_path / "gq"),
            "-o",
            str(tmp_path / "enc"),
            "--validate-queries",
            "training",
        ],
    )
    assert res.exit_code == 2
    assert "'training' is not one of 'held-out', 'all'" in res.output
    assert not (tmp_path / "enc").exists()
    assert "--validate-queries [held-out|all]" in run.invoke(cli, ["distill", "--help"]).output


@pytest.mark.parametrize("former,now", [("ridge", "linear"), ("rbf", "kernel")])
def test_a_former_head_name_is_refused_with_its_new_name(tmp_path, former, now):
    """``--head ridge`` (the name before the kinds became ``linear|kernel``) stops with exit 2
    and names the value to use instead, before any store is read."""
    for folder in ("gp", "gq"):
        (tmp_path / folder).mkdir()
    res = CliRunner().invoke(
        cli,
        [
            "distill",
            str(tmp_path / "gp"),
            str(tmp_path / "gq"),
            "-o",
            str(tmp_path / "enc"),
            "--head",
            former,
        ],
    )
    assert res.exit_code == 2
    assert f"'{former}' is now called '{now}'" in res.output
    assert not (tmp_path / "enc").exists()
    assert (
        "--head [auto|linear|kernel|none]" in CliRunner().invoke(cli, ["distill", "--help"]).output
    )


def test_distill_head_only_on_a_dozen_samples(tiny_model_dir, tiny_encoder_dir, tmp_path):
    """12 pool samples x 4 queries: the default share held out widens to leave 2 queries
    for validation, so --epochs 0 (head only) works; a share the user gives is kept, and
    the error names its option."""
    run = CliRunner()
    pool = write_jsonl(tmp_path / "pool.jsonl", _rows("p", 12))
    queries = write_jsonl(tmp_path / "q.jsonl", _rows("q", 4))
    r = run.invoke(
        cli,
        ["collect", str(pool), "-o", str(tmp_path / "gp"), "--model", str(tiny_model_dir)]
        + COLLECT,
    )
    assert r.exit_code == 0, r.output
    r = run.invoke(
        cli, ["collect", str(queries), "--like", str(tmp_path / "gp"), "-o", str(tmp_path / "gq")]
    )
    assert r.exit_code == 0, r.output
    common = [str(tmp_path / "gp"), str(tmp_path / "gq"), "--encoder", tiny_encoder_dir, "-q"]
    r = run.invoke(cli, ["distill", *common, "-o", str(tmp_path / "enc"), "--epochs", "0"])
    assert r.exit_code == 0, r.output
    assert "holding out 0.5 of the samples for validation (--val-fraction)" in r.output
    card = json.loads((tmp_path / "enc" / "influcoder_distill.json").read_text())
    assert card["head"]["kind"] in ("linear", "kernel")
    r = run.invoke(
        cli,
        ["distill", *common, "-o", str(tmp_path / "e2"), "--epochs", "0", "--val-fraction", "0.1"],
    )
    assert r.exit_code == 2 and "too few pool samples" in r.output and "--val-fraction" in r.output
    assert not (tmp_path / "e2").exists()
