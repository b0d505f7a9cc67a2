"""collect's --device and --precision: where a run computes is not what it computes."""

from __future__ import annotations

import numpy as np
import pytest

from influcoder.errors import StoreError
from influcoder.groundtruth.collect import CollectJob, collect
from influcoder.groundtruth.settings import CollectArguments
from influcoder.io import devices

QUIET = {"progress": False}


def _args(model, **kw):
    return CollectArguments(
        model=str(model),
        adapter_init="fresh",
        sketch_dim=64,
        max_length=64,
        batch_size=4,
        shard_rows=4,
        **kw,
    )


def test_the_device_is_provenance_not_a_setting(tiny_model_dir, small_data, tmp_path):
    store = collect(str(small_data), tmp_path / "s", _args(tiny_model_dir), device="cpu", **QUIET)
    prov = store.manifest["provenance"]
    assert prov["device"] == "cpu"
    assert "device" not in prov["arguments"] and "device" not in str(store.setup)
    # auto on this machine: the same store, and the same settings, so it resumes as it is
    again = collect(str(small_data), tmp_path / "s", _args(tiny_model_dir), device="auto", **QUIET)
    np.testing.assert_array_equal(again.vectors(), store.vectors())


def test_cpu_precision_is_float32_unless_bf16_is_chosen(
    tiny_model_dir, small_data, tmp_path, monkeypatch
):
    monkeypatch.setattr(devices, "cpu_default_bf16", lambda: False)
    auto = collect(str(small_data), tmp_path / "auto", _args(tiny_model_dir), device="cpu", **QUIET)
    fp32 = collect(
        str(small_data),
        tmp_path / "fp32",
        _args(tiny_model_dir, precision="fp32"),
        device="cpu",
        **QUIET,
    )
    bf16 = collect(
        str(small_data),
        tmp_path / "bf16",
        _args(tiny_model_dir, precision="bf16"),
        device="cpu",
        **QUIET,
    )
    legacy = collect(
        str(small_data),
        tmp_path / "legacy",
        _args(tiny_model_dir, bf16=True),
        device="cpu",
        **QUIET,
    )
    assert auto.setup["gradient"]["precision"] == "float32" == fp32.setup["gradient"]["precision"]
    assert bf16.setup["gradient"]["precision"] == "bf16-autocast"
    assert legacy.setup == bf16.setup
    np.testing.assert_array_equal(auto.vectors(), fp32.vectors())
    np.testing.assert_array_equal(legacy.vectors(), bf16.vectors())
    assert not np.array_equal(bf16.vectors(), fp32.vectors()), "bf16 autocast had no effect"
    with pytest.raises(ValueError, match="contradict"):
        _args(tiny_model_dir, bf16=True, precision="fp32")


def test_auto_precision_keeps_the_stores_own_on_another_machine(
    tiny_model_dir, small_data, tmp_path, monkeypatch
):
    """A store begun where auto meant bf16 (a GPU) is continued in bf16 on a CPU machine, and
    stores made --like it are bf16 too: its rows never mix two precisions."""
    monkeypatch.setattr(devices, "cpu_default_bf16", lambda: True)  # as on a GPU machine
    first = collect(str(small_data), tmp_path / "s", _args(tiny_model_dir), device="cpu", **QUIET)
    assert first.setup["gradient"]["precision"] == "bf16-autocast"
    monkeypatch.setattr(devices, "cpu_default_bf16", lambda: False)  # now a float32 machine
    again = collect(str(small_data), tmp_path / "s", _args(tiny_model_dir), device="cpu", **QUIET)
    assert again.setup == first.setup
    like = collect(str(small_data), tmp_path / "q", like=tmp_path / "s", device="cpu", **QUIET)
    assert like.setup == first.setup
    np.testing.assert_array_equal(like.vectors(), first.vectors())
    # an explicit other precision is refused, naming the difference
    with pytest.raises(StoreError, match="precision"):
        collect(
            str(small_data),
            tmp_path / "s",
            _args(tiny_model_dir, precision="fp32"),
            device="cpu",
            **QUIET,
        )


def test_a_gpu_run_asks_ray_for_a_gpu_per_actor(tiny_model_dir, small_data, tmp_path, monkeypatch):
    """The plan of a run whose device is a GPU sets one GPU per Ray actor and sends the
    workers to 'cuda' (the GPU Ray gives each); faked here by a 'cuda' device that is the CPU."""
    import torch

    from influcoder.io.samples import load_samples

    real = torch.device("cpu")

    class FakeCuda:
        type = "cuda"

    monkeypatch.setattr(devices, "resolve_device", lambda spec, option="--device": real)
    job = CollectJob(_args(tiny_model_dir), progress=False, device="cpu")
    plan = job.plan(load_samples(str(small_data)), str(small_data), tmp_path / "s")
    assert plan.gpus_per_worker == 0
    monkeypatch.setattr(devices, "resolve_device", lambda spec, option="--device": FakeCuda())
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)
    monkeypatch.setattr(devices, "describe_device", lambda d: "cuda:0 (fake)")
    plan = CollectJob(_args(tiny_model_dir), progress=False, device="cuda").plan(
        load_samples(str(small_data)), str(small_data), tmp_path / "t"
    )
    assert plan.gpus_per_worker == 1 and plan.provenance["device"] == "cuda:0 (fake)"
    worker = plan.remote()
    assert worker.device == "cuda" and worker.bf16 is True  # auto on a GPU: bf16


def test_like_takes_a_device_but_no_setting(tiny_model_dir, small_data, tmp_path):
    from click.testing import CliRunner

    from influcoder.cli import cli

    fast = ["--adapter-init", "fresh", "--sketch-dim", "64", "--max-length", "64", "-q"]
    runner = CliRunner()
    r = runner.invoke(
        cli,
        [
            "collect",
            str(small_data),
            "-o",
            str(tmp_path / "p"),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            *fast,
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli,
        [
            "collect",
            str(small_data),
            "--like",
            str(tmp_path / "p"),
            "-o",
            str(tmp_path / "q"),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli,
        [
            "collect",
            str(small_data),
            "--like",
            str(tmp_path / "p"),
            "-o",
            str(tmp_path / "r"),
            "--precision",
            "bf16",
        ],
    )
    assert r.exit_code == 2 and "drop --precision" in r.output
