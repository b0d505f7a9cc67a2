"""collect and score end to end through the CLI, on the tiny Llama: stores, --like, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder import open_store
from influcoder.cli import cli
from influcoder.io.layout import SHARDS_DIR

from ..conftest import write_jsonl

FAST = [
    "--adapter-init",
    "fresh",
    "--sketch-dim",
    "64",
    "--max-length",
    "64",
    "--batch-size",
    "4",
    "--shard-rows",
    "4",
    "--quiet",
]


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def test_collect_like_and_score(tiny_model_dir, small_data, tmp_path):
    r = run("collect", small_data, "-o", tmp_path / "pool", "--model", tiny_model_dir, *FAST)
    assert r.exit_code == 0, r.output
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "q1", "prompt": "What is the capital of Spain?", "response": "Madrid."},
            {"id": "q2", "prompt": "How do I poach an egg?", "response": "Simmer it gently."},
        ],
    )
    r = run("collect", queries, "--like", tmp_path / "pool", "-o", tmp_path / "q")
    assert r.exit_code == 0, r.output
    pool, q = open_store(tmp_path / "pool"), open_store(tmp_path / "q")
    assert pool.setup == q.setup and pool.n == 10 and q.n == 2 and pool.dim == 64
    v = pool.vectors()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=2e-3)
    assert pool.setup["gradient"]["target"] == "lora-b"  # fresh adapter: B only
    assert (tmp_path / "pool" / "adapter" / "adapter_config.json").is_file()

    r = run(
        "score", tmp_path / "pool", tmp_path / "q", "--top-k", "3", "--out", tmp_path / "scores"
    )
    assert r.exit_code == 0, r.output
    scores = np.load(tmp_path / "scores" / "scores.npy")
    ref = (
        v @ q.vectors().T / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(q.vectors(), axis=1))
    )
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    best = pool.ids[int(np.argmax(ref[:, 0]))]
    assert "query q1:" in r.output
    first_row = r.output.split("query q1:")[1].splitlines()[1]
    assert best in first_row


def test_like_reproduces_the_vectors(tiny_model_dir, small_data, tmp_path):
    """The same data collected --like a store gives the same vectors (adapter, sketch, template
    all come from the store)."""
    assert (
        run(
            "collect",
            small_data,
            "-o",
            tmp_path / "a",
            "--model",
            tiny_model_dir,
            "--adapter-init",
            "warmup",
            "--warmup-steps",
            "2",
            "--sketch-dim",
            "32",
            "--max-length",
            "64",
            "-q",
            "--shard-rows",
            "4",
        ).exit_code
        == 0
    )
    assert run("collect", small_data, "--like", tmp_path / "a", "-o", tmp_path / "b").exit_code == 0
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    assert a.setup["adapter"]["origin"] == "warmup" and a.setup["gradient"]["target"] == "lora"
    np.testing.assert_array_equal(a.vectors(), b.vectors())


def test_like_refuses_a_changed_model(tiny_model_dir, small_data, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    assert (
        run("collect", small_data, "-o", tmp_path / "a", "--model", tiny_model_dir, *FAST).exit_code
        == 0
    )
    # --like keeps the model path; change the weights behind it.
    moved = tmp_path / "model"
    shutil.copytree(tiny_model_dir, moved)
    m = open_store(tmp_path / "a").manifest
    m["provenance"]["arguments"]["model"] = str(moved)
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(m))
    model = AutoModelForCausalLM.from_pretrained(moved)
    with __import__("torch").no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(2)
    model.save_pretrained(moved)
    r = CliRunner().invoke(
        cli, ["collect", str(small_data), "--like", str(tmp_path / "a"), "-o", str(tmp_path / "b")]
    )
    assert r.exit_code == 2
    assert "another model" in r.output
    assert not (tmp_path / "b").exists()


def test_resume_with_other_options_is_refused(tiny_model_dir, small_data, tmp_path):
    assert (
        run("collect", small_data, "-o", tmp_path / "a", "--model", tiny_model_dir, *FAST).exit_code
        == 0
    )
    r = CliRunner().invoke(
        cli,
        [
            "collect",
            str(small_data),
            "-o",
            str(tmp_path / "a"),
            "--model",
            str(tiny_model_dir),
            *FAST[:2],
            "--sketch-dim",
            "32",
            *FAST[4:],
        ],
    )
    assert r.exit_code == 2 and "sketch_dim: 64 vs 32" in r.output


def test_score_refuses_different_setups(tiny_model_dir, small_data, tmp_path):
    for name, seed in (("a", "0"), ("b", "1")):
        assert (
            run(
                "collect",
                small_data,
                "-o",
                tmp_path / name,
                "--model",
                tiny_model_dir,
                *FAST,
                "--sketch-seed",
                seed,
            ).exit_code
            == 0
        )
    r = CliRunner().invoke(cli, ["score", str(tmp_path / "a"), str(tmp_path / "b"), "-k", "1"])
    assert r.exit_code == 2
    assert "sketch.seed: 0 vs 1" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    "content,where",
    [
        (
            b'{"prompt": "p", "response": "r"}\n{"prompt": "p2", "response": ""}\n',
            ":2: field 'response': empty",
        ),
        (b'{"prompt": "p", "response": "r"}\nnot json\n', ":2: invalid JSON"),
        (b'{"prompt": "p", "response": "r\xfe"}\n', ":1: not valid UTF-8"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tiny_model_dir, tmp_path, content, where):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(content)
    r = CliRunner().invoke(
        cli,
        ["collect", str(data), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), *FAST],
    )
    assert r.exit_code == 2
    assert f"Error: {data}{where}" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_sample_without_response_tokens_is_an_error(tiny_model_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "d.jsonl", [{"id": "long", "prompt": "word " * 100, "response": "yes"}]
    )
    r = CliRunner().invoke(
        cli,
        [
            "collect",
            str(data),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
            *FAST,
            "--truncation",
            "right",
        ],
    )
    assert r.exit_code == 2 and "no response tokens" in r.output and "'long'" in r.output
    assert not (tmp_path / "out").exists()


def test_stdin_and_csv_give_the_same_store(tiny_model_dir, small_data, tmp_path):
    import pandas as pd

    rows = [json.loads(line) for line in small_data.read_text().splitlines()]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    assert (
        run(
            "collect",
            "-",
            "-o",
            tmp_path / "a",
            "--model",
            tiny_model_dir,
            *FAST,
            input=small_data.read_text(),
        ).exit_code
        == 0
    )
    assert (
        run(
            "collect", tmp_path / "d.csv", "-o", tmp_path / "b", "--model", tiny_model_dir, *FAST
        ).exit_code
        == 0
    )
    np.testing.assert_array_equal(
        open_store(tmp_path / "a").vectors(), open_store(tmp_path / "b").vectors()
    )


def test_kill_and_resume_gives_identical_store(tiny_model_dir, tmp_path):
    """kill -9 in the middle of a run; the rerun ends with exactly the uninterrupted vectors."""
    words = "the cat sat on a mat and then it ran to the sea".split()
    rows = [
        {
            "id": f"r{i}",
            "prompt": " ".join(words[i % 7 : i % 7 + 4]) + f" {i}?",
            "response": " ".join(words[i % 5 : i % 5 + 3 + i % 4]),
        }
        for i in range(240)
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    args = [
        "collect",
        str(data),
        "--model",
        str(tiny_model_dir),
        "--adapter-init",
        "warmup",
        "--warmup-steps",
        "2",
        "--sketch-dim",
        "64",
        "--max-length",
        "64",
        "--batch-size",
        "2",
        "--shard-rows",
        "2",
        "--quiet",
    ]
    assert run(*args, "-o", tmp_path / "whole").exit_code == 0

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "influcoder.cli", *args, "-o", str(tmp_path / "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shards = tmp_path / "killed" / SHARDS_DIR
    # The wait ends at the fifth shard; the deadline only guards a hung run. A loaded machine
    # can take minutes just to import torch in the child (120 s was not enough under load).
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if shards.is_dir() and len(list(shards.glob("*.safetensors"))) >= 5:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(list(shards.glob("*.safetensors")))
    assert 5 <= n_done < 120, f"the kill must land mid-run ({n_done} of 120 shards)"
    with pytest.raises(Exception, match="incomplete store"):
        open_store(tmp_path / "killed")
    r = run(*args, "-o", tmp_path / "killed")
    assert r.exit_code == 0
    whole, resumed = open_store(tmp_path / "whole"), open_store(tmp_path / "killed")
    assert resumed.ids == whole.ids
    np.testing.assert_array_equal(resumed.vectors(), whole.vectors())
    assert resumed.setup == whole.setup


@pytest.mark.parametrize("batch_tokens", [1, 130, 200, 10_000])
def test_shards_batch_by_length_and_keep_row_order(tiny_model, tiny_tokenizer, batch_tokens):
    """Length-sorted batching by a token budget inside a shard returns each sample's own row,
    as the one-sample-at-a-time reference computes it, whatever the budget (1: one sample per
    batch; 10,000: one batch)."""
    from influcoder.groundtruth.collect import compute_shard
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.lora import attach_lora
    from influcoder.groundtruth.memory import TokenBudget
    from influcoder.groundtruth.tokenize import tokenize_samples
    from influcoder.io.samples import Sample
    from tests.references import reference_gradients

    model = attach_lora(tiny_model, seed=0)
    samples = [
        Sample(id=str(i), prompt="word " * (1 + (7 * i) % 11), response="yes " * (1 + i % 3))
        for i in range(9)
    ]
    tokd = tokenize_samples(tiny_tokenizer, samples, max_length=64)
    computer = GradientComputer(
        model,
        target="lora-b",
        sketch_dim=32,
        sketch_seed=0,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    budget = TokenBudget(max_batch=64, max_tokens=batch_tokens)
    cuts = budget.batches([len(t.input_ids) for t in tokd])
    assert (len(cuts) == 9) == (batch_tokens == 1) and (len(cuts) == 1) == (batch_tokens == 10_000)
    fast = compute_shard(computer, budget, tokd)[0]
    ref = reference_gradients(model, tokd, target="lora-b", sketch_dim=32, sketch_seed=0)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)


def test_relative_model_path_travels(tiny_model_dir, small_data, tmp_path, monkeypatch):
    """A relative --model is recorded absolute, so --like works from another folder; an old
    store that recorded it relative is found from its parent folder, else refused by name."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(tiny_model_dir, work / "tiny")
    shutil.copy(small_data, work / "d.jsonl")
    monkeypatch.chdir(work)
    assert run("collect", "d.jsonl", "-o", "pool", "--model", "tiny", *FAST).exit_code == 0
    recorded = open_store(work / "pool").manifest["provenance"]["arguments"]["model"]
    assert recorded == str((work / "tiny").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = run("collect", work / "d.jsonl", "--like", work / "pool", "-o", "q")
    assert r.exit_code == 0, r.output
    assert open_store(elsewhere / "q").setup == open_store(work / "pool").setup

    # an older store: the model as typed, relative to the folder it was made in
    manifest_path = work / "pool" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["provenance"]["arguments"]["model"] = "tiny"
    manifest_path.write_text(json.dumps(manifest))
    r = run("collect", work / "d.jsonl", "--like", work / "pool", "-o", "q2")
    assert r.exit_code == 0, r.output
    manifest["provenance"]["arguments"]["model"] = "gone/tiny"
    manifest_path.write_text(json.dumps(manifest))
    r = run("collect", work / "d.jsonl", "--like", work / "pool", "-o", "q3")
    assert r.exit_code != 0
    assert "'gone/tiny'" in r.output and "--model" in r.output and "hub" not in r.output
    assert not (elsewhere / "q3").exists()
    r = run(
        "collect", work / "d.jsonl", "--like", work / "pool", "-o", "q3", "--model", work / "tiny"
    )
    assert r.exit_code == 0, r.output


def test_saved_adapter_alone_finds_its_base(tiny_model_dir, small_data, tmp_path):
    """The adapter a store saves names its base model so --adapter alone loads it again."""
    r = run("collect", small_data, "-o", tmp_path / "pool", "--model", tiny_model_dir, *FAST)
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "pool" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    r = run(
        "collect",
        small_data,
        "-o",
        tmp_path / "again",
        "--adapter",
        tmp_path / "pool" / "adapter",
        "--sketch-dim",
        "0",
        "--max-length",
        "64",
        "--shard-rows",
        "4",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    again = open_store(tmp_path / "again")
    assert again.setup["model"] == open_store(tmp_path / "pool").setup["model"]
    assert again.setup["adapter"]["origin"] == "user"


def test_adapter_with_missing_base_names_it(tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "./models/gone"})
    )
    r = run("collect", tmp_path / "d.jsonl", "-o", tmp_path / "x", "--adapter", adapter)
    assert r.exit_code == 2
    assert "base_model_name_or_path" in r.output and "./models/gone" in r.output
    assert "--model" in r.output and "hub" not in r.output


def test_folder_holding_one_gguf_is_that_file(tmp_path):
    """PEFT records a GGUF model's folder as an adapter's base: that folder names the file."""
    from influcoder.groundtruth.decoder import resolve_decoder

    (tmp_path / "model.Q4.gguf").write_bytes(b"")
    ref = resolve_decoder(str(tmp_path))
    assert (ref.kind, ref.gguf_file) == ("gguf", "model.Q4.gguf")
