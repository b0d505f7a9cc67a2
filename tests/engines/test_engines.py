"""Engines: the local engine needs no Ray; Ray (a local instance) gives the same stores."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from influcoder.attribution.encode import EncoderWorker, encode
from influcoder.attribution.settings import EncodeArguments
from influcoder.engines import get_engine
from influcoder.errors import MissingPackageError, StoreError

from ..tiny_encoders import pool_rows

QUIET = dict(progress=False)


def test_local_engine_never_imports_ray():
    code = (
        "import sys, influcoder.attribution.encode, influcoder.attribution.build, "
        "influcoder.groundtruth.collect, influcoder.attribution.attributor\n"
        "from influcoder.engines import get_engine\n"
        "with get_engine('local') as e:\n"
        "    out = list(e.map(lambda: (lambda p: p * 2), [(0, 1), (1, 2)]))\n"
        "assert out == [(0, 2), (1, 4)]\n"
        "assert 'ray' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingPackageError, match="pip install 'influcoder\\[ray\\]'"):
        get_engine("ray")


def test_engine_names_are_checked():
    with pytest.raises(ValueError, match="engine must be one of"):
        get_engine("spark")
    with pytest.raises(ValueError, match="needs the ray engine"):
        get_engine("local", address="auto")


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _samples(n=None):
    from influcoder.io.samples import Sample

    return [Sample(r["id"], r["prompt"], r["response"]) for r in pool_rows(n)]


def test_encode_on_ray_equals_local(ray_instance, tiny_encoder, tmp_path):
    args = EncodeArguments(encoder=str(tiny_encoder), shard_rows=5)
    local = encode(_samples(), tmp_path / "local", args, **QUIET)
    remote = encode(_samples(), tmp_path / "ray", args, engine="ray", num_workers=2, **QUIET)
    assert remote.setup == local.setup and remote.ids == local.ids
    np.testing.assert_array_equal(remote.vectors(), local.vectors())
    assert ray_instance.is_initialized()  # an instance the caller started is left running


def test_a_worker_error_reads_as_the_users_error(ray_instance, tiny_encoder):
    worker = EncoderWorker("sha256:another", str(tiny_encoder), "torch", 64, 8)
    with (
        get_engine("ray", num_workers=1) as engine,
        pytest.raises(StoreError, match="sha256:another"),
    ):
        list(engine.map(worker, [(0, ["a text"])]))


def test_collect_on_ray_equals_local(ray_instance, tiny_model_dir, small_data, tmp_path):
    from influcoder.groundtruth.collect import collect
    from influcoder.groundtruth.settings import CollectArguments

    args = CollectArguments(
        model=str(tiny_model_dir),
        adapter_init="fresh",
        sketch_dim=64,
        max_length=64,
        batch_size=4,
        shard_rows=4,
    )
    local = collect(str(small_data), tmp_path / "local", args, **QUIET)
    remote = collect(str(small_data), tmp_path / "ray", args, engine="ray", num_workers=2, **QUIET)
    assert remote.setup == local.setup
    np.testing.assert_array_equal(remote.vectors(), local.vectors())


def test_actor_resources_follow_the_device():
    from influcoder.engines.ray import actor_options

    assert actor_options(0) == {"num_cpus": 1}
    assert actor_options(1) == {"num_cpus": 1, "num_gpus": 1}
    with pytest.raises(ValueError):
        actor_options(-1)


def test_worker_count_is_one_per_gpu_on_a_gpu_run():
    from influcoder.engines.ray import worker_count

    free = {"CPU": 16.0, "GPU": 4.0}
    assert worker_count(free, n_jobs=100) == 16
    assert worker_count(free, n_jobs=100, gpus_per_worker=1) == 4
    assert worker_count(free, n_jobs=3, gpus_per_worker=1) == 3
    assert worker_count({"CPU": 16.0}, n_jobs=3, num_workers=8) == 3
    assert worker_count({"CPU": 0.0}, n_jobs=3) == 1


def test_the_device_reaches_the_ray_engine(monkeypatch):
    """A stage on a GPU (Plan.gpus_per_worker) asks get_engine for one GPU per actor."""
    from influcoder import engines
    from influcoder.io.job import fill_store

    asked = {}

    def fake_engine(name, **kw):
        asked.update(kw, name=name)
        raise RuntimeError("stop here")

    monkeypatch.setattr(engines, "get_engine", fake_engine)

    class Writer:
        n, path = 1, "x"

        def missing_shards(self):
            return [0]

        def missing_rows(self):
            return 1

        def shard_range(self, k):
            return 0, 1

    with pytest.raises(RuntimeError, match="stop here"):
        fill_store(
            Writer(),
            lambda: None,
            lambda a, b: None,
            desc="t",
            engine="ray",
            gpus_per_worker=1,
            progress=False,
        )
    assert asked == {"name": "ray", "address": None, "num_workers": None, "gpus_per_worker": 1}


def test_a_gpu_run_on_a_cluster_without_gpus_is_refused(ray_instance):
    from influcoder.errors import InflucoderError

    with get_engine("ray", gpus_per_worker=1) as engine:
        assert engine.options == {"num_cpus": 1, "num_gpus": 1}
        if ray_instance.cluster_resources().get("GPU", 0):
            pytest.skip("this Ray instance has a GPU")
        with pytest.raises(InflucoderError, match="the Ray cluster has 0 GPU"):
            list(engine.map(lambda: lambda p: p, [(0, 1)]))
