"""``--device``: the resolver, the precision that goes with a device, and the CLI's errors."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from influcoder.cli import cli
from influcoder.io import devices
from influcoder.io.devices import (
    DeviceError,
    check_device,
    resolve_device,
    resolve_precision,
)

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", " CPU "])
def test_well_formed_devices_pass(spec):
    assert check_device(spec) == spec.strip().lower()


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:", "cuda:-1", "mps", "", "cpu:0"])
def test_malformed_devices_are_refused_naming_the_option(spec):
    with pytest.raises(DeviceError, match=r"--device .*expected auto, cpu, cuda or cuda:N"):
        check_device(spec)
    with pytest.raises(DeviceError, match="--where"):
        resolve_device(spec, option="--where")


def test_auto_is_the_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match=f"--device {spec}: CUDA is not available"):
            resolve_device(spec)


def test_a_gpu_number_beyond_the_machines_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="has 2 GPU"):
        resolve_device("cuda:2")


def test_precision_follows_the_device_unless_chosen_or_stored(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(devices, "cpu_default_bf16", lambda: False)
    assert resolve_precision("auto", gpu) is True
    assert resolve_precision("auto", cpu) is False
    assert resolve_precision("bf16", cpu) is True
    assert resolve_precision("fp32", gpu) is False
    # a store being resumed or copied keeps its own precision, whatever the device
    assert resolve_precision("auto", gpu, stored="float32") is False
    assert resolve_precision("auto", cpu, stored="bf16-autocast") is True
    # an explicit choice wins over the store's (the setup check then names the difference)
    assert resolve_precision("fp32", cpu, stored="bf16-autocast") is False
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


@pytest.mark.parametrize(
    "command",
    [
        ["collect", "data.jsonl", "-o", "out"],
        ["encode", "data.jsonl", "-o", "out"],
        ["index", "enc", "data.jsonl", "-o", "out"],
        ["attribute", ".", "--text", "x"],
        ["filter", ".", "q.jsonl", "-o", "x.jsonl", "-k", "1"],
        ["distill", ".", ".", "-o", "x"],
        ["evaluate", ".", "."],
        ["demo"],
        ["serve", "."],
    ],
)
def test_every_model_stage_checks_its_device_option(command):
    result = CliRunner().invoke(cli, [*command, "--device", "cuda:x"])
    assert result.exit_code == 2
    assert "Invalid value for '--device'" in result.output
    assert "'cuda:x': expected auto, cpu, cuda or cuda:N" in result.output


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_on_a_cpu_machine_exits_with_the_option_named(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hi", "response": "hello"}\n')
    result = CliRunner().invoke(
        cli, ["collect", str(data), "-o", str(tmp_path / "s"), "-q", "--device", "cuda"]
    )
    assert result.exit_code == 2
    assert "--device cuda: CUDA is not available" in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu avx512f avx512bw avx512_bf16", True),
        ("fpu amx_bf16 amx_tile", True),
        ("fpu avx512f avx512bw", False),
    ],
)
def test_native_bf16_needs_the_cpu_flag(monkeypatch, flags, native):
    """oneDNN also reports bf16 on AVX-512 CPUs that only emulate it; the flag decides."""

    class FakePath:
        def __init__(self, *a):
            pass

        def read_text(self, **kw):
            return f"processor\t: 0\nflags\t\t: {flags}\n"

    monkeypatch.setattr(devices, "Path", FakePath)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert devices.cpu_native_bf16.__wrapped__() is native


def test_cpu_auto_precision_is_fp32_even_where_the_cpu_is_native(monkeypatch):
    """bf16 did not hold the 0.99 bar on short answers (docs/GROUND_TRUTH.md)."""
    for native in (True, False):
        monkeypatch.setattr(devices, "cpu_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", torch.device("cpu")) is False
    assert resolve_precision("bf16", torch.device("cpu")) is True
