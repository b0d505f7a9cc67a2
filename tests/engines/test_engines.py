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

from ..encoders import pool_rows, tiny_encoder  # noqa: F401

QUIET = dict(progress=False)


def test_local_engine_never_imports_ray():
    code = ("import sys, influcoder.attribution.encode, influcoder.attribution.build, "
            "influcoder.groundtruth.collect, influcoder.attribution.attributor\n"
            "from influcoder.engines import get_engine\n"
            "with get_engine('local') as e:\n"
            "    out = list(e.map(lambda: (lambda p: p * 2), [(0, 1), (1, 2)]))\n"
            "assert out == [(0, 2), (1, 4)]\n"
            "assert 'ray' not in sys.modules\n")
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
    with get_engine("ray", num_workers=1) as engine, pytest.raises(StoreError,
                                                                 match="sha256:another"):
        list(engine.map(worker, [(0, ["a text"])]))


def test_collect_on_ray_equals_local(ray_instance, tiny_model_dir, small_data, tmp_path):
    from influcoder.groundtruth.collect import collect
    from influcoder.groundtruth.settings import CollectArguments

    args = CollectArguments(model=str(tiny_model_dir), adapter_init="fresh", sketch_dim=64,
                            max_length=64, batch_size=4, shard_rows=4)
    local = collect(str(small_data), tmp_path / "local", args, **QUIET)
    remote = collect(str(small_data), tmp_path / "ray", args, engine="ray", num_workers=2,
                     **QUIET)
    assert remote.setup == local.setup
    np.testing.assert_array_equal(remote.vectors(), local.vectors())
