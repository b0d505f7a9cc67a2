"""``influcoder fit`` on the tiny Llama and the tiny encoder: the whole chain, then
attribute and a real HTTP server on the result; a kill -9 and resume; the dry run; bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder.cli import cli

from ..conftest import write_jsonl
from ..tiny_encoders import POOL, pool_rows

#: small settings that still run every stage's code (a warm-up, a head, two epochs)
SMALL = ["--sketch-dim", "64", "--max-length", "64", "--warmup-steps", "2", "--epochs", "2"]


def _queries(n: int = 8) -> list[dict]:
    return [
        {"id": f"q{i}", "prompt": p, "response": r + " Yes."} for i, (p, r) in enumerate(POOL[:n])
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit-data")
    return (
        write_jsonl(folder / "train.jsonl", pool_rows()),
        write_jsonl(folder / "outputs.jsonl", _queries()),
    )


def _command(data, out, tiny_model_dir, tiny_encoder, *extra) -> list[str]:
    train, queries = data
    return [
        "fit",
        str(train),
        "--queries",
        str(queries),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--encoder",
        str(tiny_encoder),
        "--ground-truth",
        "16",
        *SMALL,
        *extra,
    ]


@pytest.fixture(scope="module")
def fitted(data, tiny_model_dir, tiny_encoder, tmp_path_factory):
    """A finished fit directory, and the output of the run that made it."""
    out = tmp_path_factory.mktemp("fit") / "run"
    r = CliRunner().invoke(cli, _command(data, out, tiny_model_dir, tiny_encoder))
    assert r.exit_code == 0, r.output
    return out, r.output


def test_fit_writes_every_stage_and_attribute_reads_it(fitted, data):
    from influcoder.attribution.index import Index
    from influcoder.io.samples import load_samples
    from influcoder.io.stores import Store

    out, output = fitted
    manifest = json.loads((out / "fit.json").read_text())
    assert set(manifest["stages"]) == {"grad_pool", "grad_queries", "encoder", "index"}
    assert all(s["done"] for s in manifest["stages"].values())
    assert manifest["settings"]["ground_truth"] == 16
    assert manifest["settings"]["distill"]["epochs"] == 2
    assert manifest["inputs"]["train"]["n"] == len(POOL)
    pool, queries = Store(out / "grad_pool"), Store(out / "grad_queries")
    train_ids = [s.id for s in load_samples(data[0])]
    assert pool.n == 16 and set(pool.ids) < set(train_ids)  # a sample, in file order
    assert pool.ids == sorted(pool.ids, key=train_ids.index)
    assert queries.setup == pool.setup and queries.n == 8
    assert Index(out / "index").n == len(POOL)  # all of TRAIN is indexed
    assert "fit 4/4" in output and "influcoder serve" in output
    r = CliRunner().invoke(
        cli,
        ["attribute", str(out / "index"), "--text", "The capital of France is Paris.", "-k", "3"],
    )
    assert r.exit_code == 0, r.output
    assert "p0" in r.output


def test_a_rerun_skips_finished_stages_and_refuses_other_options(
    fitted, data, tiny_model_dir, tiny_encoder
):
    out, _ = fitted
    before = (out / "index" / "index.json").read_bytes()
    # without -q: it silences the stage lines counted here
    r = CliRunner().invoke(cli, _command(data, out, tiny_model_dir, tiny_encoder))
    assert r.exit_code == 0, r.output
    assert r.output.count("already done (") == 4
    assert (out / "index" / "index.json").read_bytes() == before
    r = CliRunner().invoke(cli, [*_command(data, out, tiny_model_dir, tiny_encoder)[:-1], "3"])
    assert r.exit_code == 2
    assert "--epochs 2, not 3" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(
        cli, [*_command(data, out, tiny_model_dir, tiny_encoder), "--ground-truth", "all"]
    )
    assert r.exit_code == 2 and "--ground-truth 16, not 'all'" in r.output


def test_serve_a_fit_directory_over_http(fitted):
    """`serve DIR` serves DIR/index with DIR/encoder and the training sample's gradients as
    the ground truth, on a real uvicorn server."""
    httpx = pytest.importorskip("httpx")
    out, _ = fitted
    port, proc = _serve(out)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            info = c.get("/api/info").json()
            assert info["n"] == len(POOL) and info["ground_truth"]["n_common"] == 16
            pool_id = json.loads((out / "grad_pool" / "samples.jsonl").read_text().splitlines()[0])[
                "id"
            ]
            row = next(r for r in pool_rows() if r["id"] == pool_id)
            body = c.post(
                "/api/attribute",
                json={"id": pool_id, "prompt": row["prompt"], "response": row["response"], "k": 3},
            ).json()
            assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
            assert body["ground_truth"]["in_store"] is True
    finally:
        proc.terminate()
        proc.wait(20)


def _serve(folder: Path) -> tuple[int, subprocess.Popen]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "influcoder.cli",
            "serve",
            str(folder),
            "--port",
            str(port),
            "--backend",
            "torch",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                return port, proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("the server did not start")


def _contents(folder: Path) -> dict[str, object]:
    """Every file of a fit directory: bytes, or for JSON the parsed object less what a rerun
    may change: times, the seconds stages took, the order PEFT writes a set in, and the
    encoder's fingerprint (a hash of its files, whose card records how long each epoch
    took; the files themselves are compared here)."""
    volatile = {"created", "updated", "finished", "seconds", "fingerprint"}

    def strip(x):
        if isinstance(x, dict):
            return {
                k: sorted(v) if k == "target_modules" else strip(v)
                for k, v in x.items()
                if k not in volatile
            }
        return [strip(v) for v in x] if isinstance(x, list) else x

    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_dir() or any(part.startswith(".") for part in rel.parts):
            continue
        out[str(rel)] = strip(json.loads(p.read_text())) if p.suffix == ".json" else p.read_bytes()
    return out


#: Runs the CLI in a fresh process that SIGKILLs itself on the n-th call of a stage's
#: function: a real kill -9, at a chosen point.
KILLER = """
import os, signal, sys
from influcoder.distillation import blocks
from influcoder.io import stores
point, n = sys.argv[1], int(sys.argv[2])
calls = [0]
def killing(original):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper
if point == "distill":
    blocks.BlockSampler.sample = killing(blocks.BlockSampler.sample)
elif point == "shard":
    stores.StoreWriter.write_shard = killing(stores.StoreWriter.write_shard)
from influcoder.cli import main
main(sys.argv[3:])
"""


def _run(command: list[str], point: str = "none", n: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILLER, point, str(n), *command],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_kill_9_then_rerun_ends_like_an_uninterrupted_run(
    data, tiny_model_dir, tiny_encoder, tmp_path
):
    """A fit killed (SIGKILL) in its second distillation epoch, then killed again while
    indexing, then run again, ends with the files of an uninterrupted run."""
    out = tmp_path / "fit"  # both runs in one place: paths are recorded
    command = _command(data, out, tiny_model_dir, tiny_encoder)
    whole = _run(command)
    assert whole.returncode == 0, whole.stderr
    out.rename(tmp_path / "whole")
    command = _command(data, out, tiny_model_dir, tiny_encoder)
    first = _run(command, "distill", 2)  # one step per epoch: epoch 2's
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert (out / "encoder.checkpoint").is_dir() and not (out / "encoder").exists()
    assert set(json.loads((out / "fit.json").read_text())["stages"]) == {
        "grad_pool",
        "grad_queries",
    }
    second = _run(command, "shard", 1)  # the index's first shard
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert "resuming from" in second.stderr and second.stderr.count("already done (") == 2
    assert (out / "index").is_dir() and not (out / "index" / "index.json").exists()
    last = _run(command)
    assert last.returncode == 0, last.stderr
    assert last.stderr.count("already done (") == 3
    want, got = _contents(tmp_path / "whole"), _contents(out)
    assert sorted(got) == sorted(want)
    assert [name for name in want if want[name] != got[name]] == []


def test_dry_run_prints_the_plan_and_writes_nothing(data, tiny_model_dir, tiny_encoder, tmp_path):
    out = tmp_path / "dry"
    r = CliRunner().invoke(cli, [*_command(data, out, tiny_model_dir, tiny_encoder), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert not out.exists()
    for text in (
        "1. collect (training sample)",
        "16 of 24 training samples",
        "estimate for collect of 16 samples",
        "the 8 queries",
        "distill: 2 epochs",
        f"estimate for encode of {len(POOL)} samples",
        "4. index",
    ):
        assert text in r.output, text


@pytest.mark.parametrize(
    "which, row, message",
    [
        ("train", {"id": "x", "prompt": "hi"}, "train.jsonl:3: field 'response'"),
        (
            "queries",
            {"id": "q0", "prompt": "a", "response": "b"},
            "outputs.jsonl:3: field 'id': duplicate id 'q0'",
        ),
    ],
)
def test_bad_input_is_located_exits_2_and_writes_nothing(
    which, row, message, tiny_model_dir, tiny_encoder, tmp_path
):
    train, queries = pool_rows(), _queries()
    (train if which == "train" else queries).insert(2, row)
    files = (
        write_jsonl(tmp_path / "train.jsonl", train),
        write_jsonl(tmp_path / "outputs.jsonl", queries),
    )
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, _command(files, out, tiny_model_dir, tiny_encoder))
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output and not out.exists()


def test_a_sample_the_decoder_refuses_is_named_in_its_file(
    data, tiny_model_dir, tiny_encoder, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is a fresh --out
    r = CliRunner().invoke(
        cli,
        [
            *_command(data, out, tiny_model_dir, tiny_encoder),
            "--truncation",
            "error",
            "--max-length",
            "8",
        ],
    )
    assert r.exit_code == 2, r.output
    assert f"{data[0]}: field 'sample 'p" in r.output and "more than max_length=8" in r.output
    assert list(out.iterdir()) == []


def test_serving_an_unfinished_fit_says_so(tmp_path):
    from influcoder.errors import StoreError
    from influcoder.serve.server import open_service

    (tmp_path / "fit.json").write_text("{}")
    with pytest.raises(StoreError, match="the fit is not finished"):
        open_service(tmp_path)


def test_too_few_queries_and_a_foreign_out_are_refused(
    data, tiny_model_dir, tiny_encoder, tmp_path
):
    few = write_jsonl(tmp_path / "few.jsonl", _queries(3))
    r = CliRunner().invoke(
        cli, _command((data[0], few), tmp_path / "o", tiny_model_dir, tiny_encoder)
    )
    assert r.exit_code == 2 and "few.jsonl: 3 queries; fit distils on at least 4" in r.output
    assert not (tmp_path / "o").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, _command(data, tmp_path / "busy", tiny_model_dir, tiny_encoder))
    assert r.exit_code == 2 and "is not a fit directory" in r.output
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_the_sample_is_seeded(data):
    from influcoder.workflows.fit_plan import FitArguments, plan_fit

    one = plan_fit(data[0], data[1], "unused", FitArguments(ground_truth=10, seed=3))
    two = plan_fit(data[0], data[1], "unused", FitArguments(ground_truth=10, seed=3))
    other = plan_fit(data[0], data[1], "unused", FitArguments(ground_truth=10, seed=4))
    ids = [[s.id for s in p.pool_samples] for p in (one, two, other)]
    assert ids[0] == ids[1] != ids[2] and len(set(ids[0])) == 10
    assert np.all(np.diff([int(i[1:]) for i in ids[0]]) > 0)
