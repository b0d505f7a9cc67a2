"""The run store end to end: parallel retraining equals serial, ``influcoder lds`` on saved
runs equals what ``validate`` computed, per-kind LDS by hand, damaged run stores, ``info``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from .test_validate_cli import run, stores, validate  # noqa: F401

LDS = ["--lds-subsets", "4"]


def run_files(folder):
    return {
        p.name: json.loads(p.read_text())
        for p in sorted((folder / "runs").glob("*.json"))
        if p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def serial(stores, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("serial") / "v"
    r = validate(stores, out, *LDS)
    assert r.exit_code == 0, r.output
    return out


def test_parallel_workers_equal_serial(stores, serial, tmp_path):  # noqa: F811
    out = tmp_path / "v"
    r = validate(stores, out, *LDS, "--workers", "2")
    assert r.exit_code == 0, r.output
    serial_runs, parallel_runs = run_files(serial), run_files(out)
    assert serial_runs.keys() == parallel_runs.keys()
    for name, record in serial_runs.items():
        assert parallel_runs[name]["losses"] == record["losses"], record["label"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows == json.loads((serial / "results.json").read_text())["rows"]


def test_dry_run_counts_workers(stores, tmp_path):  # noqa: F811
    r = validate(stores, tmp_path / "v", *LDS, "--workers", "3", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "on 3 worker(s)" in r.output and not (tmp_path / "v").exists()


def test_lds_on_saved_runs_equals_validate(stores, serial, tmp_path):  # noqa: F811
    results = json.loads((serial / "results.json").read_text())
    out = tmp_path / "lds.json"
    r = run(
        "lds",
        serial / "runs",
        stores / "pool",
        stores / "heldout",
        "--baselines",
        "bm25,random",
        "--by",
        "label",
        "--n-boot",
        "50",
        "--json",
        out,
    )
    assert r.exit_code == 0, r.output
    assert "lds_harmful" in r.output and "lds_chat" in r.output
    found = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(found) == ["gradient", "bm25", "random"]
    for row in results["rows"]:
        for key in ("lds", "lds_low", "lds_high", "lds_by"):
            assert found[row["method"]][key] == row[key], (row["method"], key)
    # fewer subsets: another figure, from the first two runs
    r = run(
        "lds",
        serial / "runs",
        stores / "pool",
        stores / "heldout",
        "--baselines",
        "none",
        "--subsets",
        "2",
        "--n-boot",
        "50",
        "--json",
        out,
    )
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["rows"][0]["lds_subsets"] == 2


def test_lds_with_query_gradients_equals_a_reference(stores, serial, tiny_encoder, tmp_path):  # noqa: F811
    """``lds --query-gradients``: the held-out store's own gradients in the encoder's basis
    against its pool embeddings, by hand, scored on the same runs; refused without a basis."""
    import shutil

    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.basis import save_basis
    from influcoder.io.stores import open_store
    from influcoder.validation.runstore import open_runs
    from influcoder.validation.saved import score_runs

    pool, heldout = open_store(stores / "pool"), open_store(stores / "heldout")
    encoder = tmp_path / "enc"
    shutil.copytree(tiny_encoder, encoder)
    dim = FastEncoder(str(encoder), backend="torch").encode_samples(pool.samples[:1]).shape[1]
    save_basis(encoder, np.eye(pool.dim)[:5], pool.setup)  # another head's: refused by name
    r = run("lds", serial / "runs", stores / "pool", stores / "heldout", "--baselines", "none",
            "-e", f"enc={encoder}", "--query-gradients")  # fmt: skip
    assert r.exit_code != 0 and "gradient basis has 5 directions" in r.output
    directions = np.linalg.qr(np.random.default_rng(0).normal(size=(pool.dim, dim)))[0].T
    save_basis(encoder, directions, pool.setup)
    out = tmp_path / "lds.json"
    args = ["lds", serial / "runs", stores / "pool", stores / "heldout", "--baselines", "none"]
    r = run(*args, "-e", f"enc={encoder}", "--query-gradients", "--n-boot", "50", "--json", out)
    assert r.exit_code == 0, r.output
    found = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(found) == ["gradient", "enc", "enc+query-grad"]

    g = heldout.vectors().astype(np.float64)
    z = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ directions.T.astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    emb = FastEncoder(str(encoder), backend="torch").encode_samples(pool.samples)
    [expected] = score_runs(
        open_runs(serial / "runs"), {"ref": emb @ z.T}, heldout.samples, n_boot=50
    )
    for key in ("lds", "lds_low", "lds_high"):
        assert found["enc+query-grad"][key] == pytest.approx(expected[key], abs=1e-9)
    assert found["enc+query-grad"]["lds"] != found["enc"]["lds"]

    # an encoder without a basis is left out beside one with; alone, refused
    r = run(*args, "-e", f"plain={tiny_encoder}", "-e", f"enc={encoder}", "--query-gradients",
            "--n-boot", "50", "--json", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert [row["method"] for row in json.loads(out.read_text())["rows"]] == [
        "gradient", "plain", "enc", "enc+query-grad"
    ]  # fmt: skip
    r = run(*args, "-e", f"plain={tiny_encoder}", "--query-gradients")
    assert r.exit_code != 0 and "no --encoder has a gradient basis" in r.output


def test_per_kind_lds_by_hand(stores, serial):  # noqa: F811
    """The random baseline's per-kind LDS, from the run files and scipy alone."""
    results = json.loads((serial / "results.json").read_text())
    manifest = json.loads((serial / "runs" / "manifest.json").read_text())
    subset_runs = sorted(
        (r for r in run_files(serial).values() if "lds" in r), key=lambda r: r["lds"]["index"]
    )
    assert len(subset_runs) == 4
    heldout = [json.loads(line) for line in (stores / "heldout" / "samples.jsonl").open()]
    ids = [s["id"] for s in heldout]
    scores = np.random.default_rng(0).random((8, len(ids)))  # the random baseline, seed 0
    per_kind: dict[str, list[float]] = {}
    for name in ("heldout", "control"):
        for j, sample_id in enumerate(manifest["eval"][name]["ids"]):
            col = ids.index(sample_id)
            predicted = [scores[r["keep"], col].sum() for r in subset_runs]
            loss = [r["losses"][name][j] for r in subset_runs]
            rho = spearmanr(predicted, -np.asarray(loss)).statistic
            kind = heldout[col]["meta"]["label"]
            per_kind.setdefault(kind, []).append(0.0 if np.isnan(rho) else rho)
    row = next(r for r in results["rows"] if r["method"] == "random")
    assert sorted(row["lds_by"]) == sorted(per_kind) == ["chat", "harmful"]
    for kind, values in per_kind.items():
        assert row["lds_by"][kind]["lds"] == pytest.approx(np.mean(values), abs=1e-12)
        assert row["lds_by"][kind]["n"] == len(values)
    assert row["lds"] == pytest.approx(np.mean(per_kind["harmful"]), abs=1e-12)


def test_info_describes_a_run_store(serial):
    r = run("info", serial / "runs")
    assert r.exit_code == 0, r.output
    assert "runs, " in r.output and "LDS subset 4" in r.output and '"start": "fresh"' in r.output


def test_damaged_run_store_is_named_and_resumes(stores, serial, tmp_path):  # noqa: F811
    import shutil

    out = tmp_path / "v"
    shutil.copytree(serial, out)
    files = sorted(p for p in (out / "runs").glob("*.json") if p.name != "manifest.json")
    files[0].write_text('{"seed": 0, "keep": [0, 1')
    r = validate(stores, out, *LDS)
    assert r.exit_code != 0 and files[0].name in r.output and "corrupt run file" in r.output
    record = json.loads(files[1].read_text())
    record["losses"]["heldout"] = record["losses"]["heldout"][:1]
    files[1].write_text(json.dumps(record))
    r = run("lds", out / "runs", stores / "pool", stores / "heldout", "--baselines", "none")
    assert r.exit_code != 0
    assert files[0].name in r.output or files[1].name in r.output
    files[0].unlink()
    files[1].unlink()
    r = validate(stores, out, *LDS)
    assert r.exit_code == 0, r.output
    again = json.loads((out / "results.json").read_text())["rows"]
    assert again == json.loads((serial / "results.json").read_text())["rows"]
    for name, record in run_files(serial).items():
        assert run_files(out)[name]["losses"] == record["losses"]


def test_bad_run_store_input(stores, serial, tmp_path):  # noqa: F811
    r = run("lds", tmp_path, stores / "pool", stores / "heldout")
    assert r.exit_code != 0 and "not a run store" in r.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text('{"kind": "runs", "version": 1}')
    r = run("lds", bad, stores / "pool", stores / "heldout")
    assert r.exit_code != 0 and "manifest.json" in r.output and "'recipe'" in r.output
    r = run("lds", serial / "runs", stores / "targets", stores / "heldout")
    assert r.exit_code != 0 and "pool.samples_sha256" in r.output
    r = run("lds", serial / "runs", stores / "pool", stores / "targets")
    assert r.exit_code != 0 and "held-out samples" in r.output
    # another recipe into the same folder: refused, naming the setting
    r = validate(stores, serial, *LDS, "--lr", "0.02")
    assert r.exit_code != 0 and "training.lr" in r.output


def test_outputs_of_older_validate_keep_working(stores, serial, tmp_path):  # noqa: F811
    """A folder of runs without a manifest, whose LDS runs do not say so, as validate wrote
    before run stores: rerun, it trains nothing and reports the same figures."""
    import shutil

    out = tmp_path / "v"
    shutil.copytree(serial, out)
    (out / "runs" / "manifest.json").unlink()
    for path in (out / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        record.pop("lds", None)
        path.write_text(json.dumps(record))
    names = set(run_files(out))
    r = validate(stores, out, *LDS)
    assert r.exit_code == 0, r.output
    assert set(run_files(out)) == names and (out / "runs" / "manifest.json").is_file()
    assert (
        json.loads((out / "results.json").read_text())["rows"]
        == json.loads((serial / "results.json").read_text())["rows"]
    )


def test_warm_start_on_ray_equals_serial(stores, tmp_path):  # noqa: F811
    """Runs from the pool store's warmed-up adapter, trained by two Ray actors, equal the
    same runs trained here one by one; the manifest records the start."""
    pytest.importorskip("ray")
    serial_out, ray_out = tmp_path / "serial", tmp_path / "ray"
    r = validate(stores, serial_out, "--lds-subsets", "2", "--start", "warm")
    assert r.exit_code == 0, r.output
    manifest = json.loads((serial_out / "runs" / "manifest.json").read_text())
    assert manifest["training"]["start"] == "warm" and manifest["adapter_sha256"]
    r = validate(
        stores,
        ray_out,
        "--lds-subsets",
        "2",
        "--start",
        "warm",
        "--engine",
        "ray",
        "--workers",
        "2",
    )
    assert r.exit_code == 0, r.output
    serial_runs, ray_runs = run_files(serial_out), run_files(ray_out)
    assert serial_runs.keys() == ray_runs.keys()
    for name, record in serial_runs.items():
        assert {k: v for k, v in ray_runs[name].items() if "seconds" not in k} == {
            k: v for k, v in record.items() if "seconds" not in k
        }
    assert (
        json.loads((ray_out / "results.json").read_text())["rows"]
        == json.loads((serial_out / "results.json").read_text())["rows"]
    )


def test_tradeoff_benchmark_on_a_run_store(stores, serial, tmp_path, capsys):  # noqa: F811
    """All subsets drawn: the benchmark's figures are validate's; fewer: narrower draws."""
    from tests.benchmarks.test_bench_peers import _bench

    bench = _bench("lds_tradeoff")
    out = tmp_path / "t.json"
    bench.main(
        [
            str(serial / "runs"),
            str(stores / "pool"),
            str(stores / "heldout"),
            "--baselines",
            "bm25,random",
            "--by",
            "label",
            "--counts",
            "2,3,4",
            "--draws",
            "3",
            "--n-boot",
            "50",
            "--json",
            str(out),
        ]
    )
    assert "4 subset runs" in capsys.readouterr().out
    table = json.loads(out.read_text())
    assert table["costs"]["cpu_s"] > 0 and table["costs"]["steps"] >= 1
    results = {r["method"]: r for r in json.loads((serial / "results.json").read_text())["rows"]}
    rows = table["rows"]
    assert [r["subsets"] for r in rows] == [2] * 3 + [3] * 3 + [4] * 3
    for row in rows[-3:]:
        expected = results[row["method"]]
        assert row["lds"] == expected["lds"] and row["lds_sd_over_draws"] == 0
        assert row["half_width"] == pytest.approx((expected["lds_high"] - expected["lds_low"]) / 2)
        harmful = expected["lds_by"]["harmful"]
        assert row["half_width_harmful"] == pytest.approx((harmful["high"] - harmful["low"]) / 2)


def test_validate_reads_a_given_run_store(stores, serial, tmp_path):  # noqa: F811
    """--runs: another output folder, the saved runs of an earlier validation; nothing is
    trained, the figures are the same."""
    stamps = {p: p.stat().st_mtime_ns for p in (serial / "runs").glob("*.json")}
    r = validate(stores, tmp_path / "v", *LDS, "--runs", serial / "runs", "--dry-run")
    assert r.exit_code == 0 and "nothing to train" in r.output, r.output
    r = validate(stores, tmp_path / "v", *LDS, "--runs", serial / "runs")
    assert r.exit_code == 0, r.output
    assert {p: p.stat().st_mtime_ns for p in (serial / "runs").glob("*.json")} == stamps
    assert not (tmp_path / "v" / "runs").exists()
    assert (
        json.loads((tmp_path / "v" / "results.json").read_text())["rows"]
        == json.loads((serial / "results.json").read_text())["rows"]
    )


def test_kill_9_then_resume_equals_uninterrupted(stores, serial, tmp_path):  # noqa: F811
    """A validation killed (SIGKILL) while training, rerun, ends with exactly the runs and
    figures of the uninterrupted one (``serial``)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .test_validate_cli import TRAIN

    out = tmp_path / "v"
    command = [
        sys.executable,
        "-m",
        "influcoder.cli",
        "validate",
        str(stores / "pool"),
        str(stores / "targets"),
        str(stores / "heldout"),
        "-o",
        str(out),
        "--where",
        "label=harmful",
        "--label-field",
        "label",
        "--positive",
        "harmful",
        *TRAIN,
        *LDS,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ}
    )
    deadline = time.monotonic() + 120
    while (
        len(list((out / "runs").glob("*.json"))) < 4
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert process.poll() is None, "the validation ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = len(run_files(out))
    assert 0 < saved < len(run_files(serial)), "killed too late to test resumption"
    r = validate(stores, out, *LDS)
    assert r.exit_code == 0, r.output
    assert run_files(out).keys() == run_files(serial).keys()
    for name, record in run_files(serial).items():
        assert run_files(out)[name]["losses"] == record["losses"]
    assert (
        json.loads((out / "results.json").read_text())["rows"]
        == json.loads((serial / "results.json").read_text())["rows"]
    )


def test_lds_scores_a_store_pair_by_inner_product(stores, serial, tmp_path):  # noqa: F811
    """``-m NAME=POOL,QUERIES,inner``: the LDS of the unnormalised gradients' inner products,
    as scoring those products by hand gives; without the suffix, the cosine (the gradient
    row)."""
    from influcoder import open_store
    from influcoder.similarity import normalize_rows
    from influcoder.validation.runstore import open_runs
    from influcoder.validation.saved import score_runs

    out = tmp_path / "lds.json"
    pair = f"{stores / 'pool'},{stores / 'heldout'}"
    r = run(
        "lds",
        serial / "runs",
        stores / "pool",
        stores / "heldout",
        "--baselines",
        "none",
        "-m",
        f"cos={pair}",
        "-m",
        f"inner={pair},inner",
        "--n-boot",
        "50",
        "--json",
        out,
    )
    assert r.exit_code == 0, r.output
    found = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert found["cos"]["lds"] == found["gradient"]["lds"]
    pool, heldout = open_store(stores / "pool"), open_store(stores / "heldout")
    by_hand = (normalize_rows(pool.vectors()) * pool.norms()[:, None]) @ (
        normalize_rows(heldout.vectors()) * heldout.norms()[:, None]
    ).T
    expected = score_runs(open_runs(serial / "runs"), {"x": by_hand}, heldout.samples, n_boot=50)[0]
    assert found["inner"]["lds"] == pytest.approx(expected["lds"], abs=1e-12)
    r = run("lds", serial / "runs", stores / "pool", stores / "heldout", "-m", f"x={pair},dot")
    assert r.exit_code == 2 and "cosine, inner" in r.output


def test_ceiling_benchmark_is_the_seed_to_seed_spearman(stores, serial, tmp_path, capsys):  # noqa: F811
    """The same subsets trained with another seed: per query, the Spearman between the two
    seeds' losses over the subsets, by hand; a store against itself agrees perfectly."""
    from influcoder import open_store
    from influcoder.validation.runstore import open_runs
    from influcoder.validation.saved import measured_queries
    from tests.benchmarks.test_bench_peers import _bench

    other = tmp_path / "seed1"
    r = validate(stores, other, *LDS, "--seeds", "1", "--baselines", "none")
    assert r.exit_code == 0, r.output
    bench = _bench("lds_ceiling")
    out = tmp_path / "c.json"
    args = [str(serial / "runs"), str(other / "runs"), str(stores / "heldout"), "--by", "label"]
    bench.main([*args, "--n-boot", "50", "--json", str(out)])
    assert "4 subsets trained with both seeds" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    queries = open_store(stores / "heldout").samples
    a, b = open_runs(serial / "runs"), open_runs(other / "runs")
    cols, parts = measured_queries(a, queries)
    la = np.concatenate([a.lds_runs()[1][n][:, p] for n, p in parts], axis=1)
    lb = np.concatenate([b.lds_runs()[1][n][:, p] for n, p in parts], axis=1)
    by_hand = [spearmanr(la[:, q], lb[:, q])[0] for q in range(la.shape[1])]
    by_hand = np.nan_to_num(by_hand, nan=0.0)
    assert figures["all"]["seed_to_seed"] == pytest.approx(by_hand.mean())
    assert figures["all"]["ceiling"] == pytest.approx(np.sqrt(np.clip(by_hand, 0, None)).mean())
    assert not np.allclose(la, lb)  # another seed, other losses
    bench.main([str(serial / "runs"), str(serial / "runs"), str(stores / "heldout")])
    assert "1.000" in capsys.readouterr().out


def test_group_removal_runs_and_their_spearman_by_hand(stores, serial, tmp_path):  # noqa: F811
    """validate --group-removal adds one run per group to a saved store (nothing else is
    retrained); lds --group-removal's figures equal the aggregates, effects and Spearman
    correlations computed by hand from the run files; a store without them is refused."""
    import shutil

    from influcoder import open_store
    from influcoder.similarity import cosine_matrix
    from influcoder.validation.group_removal import removal_groups

    out = tmp_path / "v"
    shutil.copytree(serial, out)
    before = set(run_files(out))
    r = validate(stores, out, *LDS, "--group-removal", "topic", "--group-min-size", "2")
    assert r.exit_code == 0, r.output
    added = {k: v for k, v in run_files(out).items() if k not in before}
    assert sorted(v["label"] for v in added.values()) == [
        f"without group topic=t{i}" for i in range(3)
    ]
    pool, heldout = open_store(stores / "pool"), open_store(stores / "heldout")
    js = tmp_path / "g.json"
    args = ["lds", out / "runs", stores / "pool", stores / "heldout", "--baselines", "none"]
    r = run(*args, "--group-removal", "topic", "--group-min-size", "2", "--n-boot", "20",
            "--json", js)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "group removal by topic: Spearman over 3 removed groups" in r.output
    [row] = json.loads(js.read_text())["rows"]
    assert sorted(row["group_removal"]) == ["max", "mean", "softmax", "sum"]

    files = run_files(out)
    full = next(v for v in files.values() if v["label"] == "full")
    names = list(full["losses"])  # heldout, control: lds orders the columns so

    def losses(v):  # noqa: E306
        return np.concatenate([v["losses"][n] for n in names])

    ids = [
        i
        for n in names
        for i in json.loads((out / "runs" / "manifest.json").read_text())["eval"][n]["ids"]
    ]  # noqa: E501
    cols = [heldout.ids.index(i) for i in ids]
    scores = cosine_matrix(pool.vectors(), heldout.vectors())[:, cols]
    groups = removal_groups(pool.samples, "topic", 2)
    effects = np.stack([
        losses(next(v for v in added.values() if v["label"].endswith(f"={name}")))
        - losses(full)
        for name, _ in groups
    ])  # fmt: skip
    for aggregate, fn in (("sum", np.sum), ("mean", np.mean), ("max", np.max)):
        predicted = np.stack([fn(scores[members], axis=0) for _, members in groups])
        per_query = [spearmanr(predicted[:, q], effects[:, q])[0] for q in range(len(cols))]
        expected = np.nan_to_num(per_query, nan=0.0).mean()
        assert row["group_removal"][aggregate]["group_spearman"] == pytest.approx(expected)
    assert row["group_removal"]["sum"]["groups"] == 3

    r = run("lds", serial / "runs", stores / "pool", stores / "heldout", "--baselines", "none",
            "--group-removal", "topic", "--group-min-size", "2")  # fmt: skip
    assert r.exit_code != 0 and "no saved run 'without group topic=t0'" in r.output
    r = run(*args, "--group-removal", "topic")  # groups of 3, 3 and 2: none of 5 or more
    assert r.exit_code != 0 and "ranking groups needs 3 or more" in r.output


def test_lds_paired_difference_by_hand(stores, serial, tmp_path):  # noqa: F811
    """lds --paired A,B: A's LDS minus B's on the held-out set and per --by value, the point
    figure equal to the two LDS rows' difference, its paired interval around it; unknown
    names and malformed pairs refused."""
    out = tmp_path / "p.json"
    args = ["lds", serial / "runs", stores / "pool", stores / "heldout", "--n-boot", "50"]
    r = run(*args, "--by", "label", "--paired", "gradient,random", "--json", out)
    assert r.exit_code == 0, r.output
    assert "LDS of A minus LDS of B" in r.output and "gradient - random" in r.output
    rows = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    found = {p["queries"]: p for p in rows["gradient"]["paired"]}
    assert sorted(found) == ["held-out", "label=chat", "label=harmful"]
    held = found["held-out"]
    assert held["difference"] == pytest.approx(rows["gradient"]["lds"] - rows["random"]["lds"])
    assert held["low"] <= held["difference"] <= held["high"]
    for kind in ("chat", "harmful"):
        expected = rows["gradient"]["lds_by"][kind]["lds"] - rows["random"]["lds_by"][kind]["lds"]
        assert found[f"label={kind}"]["difference"] == pytest.approx(expected)
    r = run(*args, "--paired", "gradient,nothing")
    assert r.exit_code != 0 and "--paired names no method ['nothing']" in r.output
    r = run(*args, "--paired", "gradient")
    assert r.exit_code != 0 and "give two method names, A,B" in r.output
