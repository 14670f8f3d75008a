"""Fetch a manifest's images to local files, each checked against its recorded SHA-256.

The same manifest always rebuilds the same set: an image that is gone or whose bytes changed
stops the rebuild with an error naming it, never silently changes the set.  Objects from the
store are cached by checksum under ``<cache_dir>/blobs`` (content-addressed, so a cached blob
is exactly what the manifest names), sealed with the gallery key like the objects they copy
(``sealed_objects.seal_file_bytes``); folder images are checked in place.  A cached blob that
no longer opens (its key was dropped) or no longer matches is fetched again.  The cache never
stands in for the store: a blob is used only while its object still exists; when the object
is gone (a forgotten student's, an expired sample's) the rebuild stops and every cached copy of
that image goes with it: the blob and its aligned crops (``crop_path``, written by ``faces.py``).

Several runs may share a cache (a manual ``facegate train`` beside the training service, the
ranks of a distributed run): a run holds it shared while it reads it (``cache_in_use``), and
``prune_cache`` holds it alone while it deletes, so it never deletes a crop a running run
still has to read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from minio import Minio
from tqdm import tqdm

from facegate.errors import FacegateError
from facegate.object_store import object_exists
from inference_worker.sealed_objects import get_opened, open_file_bytes, seal_file_bytes
from inference_worker.template_crypto import TemplateKeyError
from trainer.datasets.manifest import DatasetManifest, ManifestEntry, Split
from trainer.datasets.sources import parse_s3_uri

log = logging.getLogger(__name__)

CROPS = "crops"


@dataclass(frozen=True)
class LocalEntry:
    """A manifest entry and the local file holding its verified bytes."""

    entry: ManifestEntry
    path: Path


def blob_path(cache_dir: Path, sha256: str) -> Path:
    """Where a blob with this checksum is cached."""
    return cache_dir / "blobs" / sha256[:2] / sha256


def crop_path(cache_dir: Path, template: str, sha256: str) -> Path:
    """Where the crop of the image with this checksum, aligned to ``template``, is cached (a
    ``.noface`` file beside it says the image has no face)."""
    return cache_dir / CROPS / template / sha256[:2] / f"{sha256}.png"


def forget_cached(cache_dir: Path, sha256: str) -> list[Path]:
    """Delete every cached copy of an image: its blob and its crops under every template."""
    copies = [blob_path(cache_dir, sha256), *(cache_dir / CROPS).glob(f"*/{sha256[:2]}/{sha256}.*")]
    gone = [path for path in copies if path.is_file()]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


@contextlib.contextmanager
def cache_in_use(cache_dir: Path, exclusive: bool = False) -> Iterator[None]:
    """Hold the dataset cache: shared while a run reads it, alone (``exclusive``) while copies
    are deleted.  An advisory lock (``flock``) on ``<cache_dir>/.lock``, released when the
    process ends however it ends; a holder that has to wait says so in the log."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(cache_dir / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("dataset cache %s is in use by another training run: waiting", cache_dir)
            fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prune_cache(cache_dir: Path, manifest: DatasetManifest) -> list[Path]:
    """Delete every cached copy (blob or aligned crop) of an image ``manifest`` does not name.

    Run with the manifest a retraining run has just built from the store as it is now: the
    copies of images that left the store since (a forgotten or unenrolled student's photos,
    feedback samples past their retention) go, however many manifests named them before.  A
    later run of an older manifest fetches and aligns what it needs again.  Waits for the
    runs reading the cache to end (``cache_in_use``)."""
    keep = {entry.sha256 for entry in manifest.entries}
    gone = []
    with cache_in_use(cache_dir, exclusive=True):
        copies = [*(cache_dir / "blobs").glob("*/*"), *(cache_dir / CROPS).glob("*/*/*")]
        for path in copies:
            # Crops are <sha256>.png or <sha256>.noface; blobs are named by the bare checksum.
            if path.is_file() and path.name.split(".", 1)[0] not in keep:
                path.unlink(missing_ok=True)
                gone.append(path)
    return gone


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers (other ranks) never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cached(path: Path) -> bytes | None:
    """A cached file's bytes, opened; None when it cannot be opened (a dropped key, altered)."""
    try:
        return open_file_bytes(path, path.read_bytes())
    except TemplateKeyError as error:
        log.info("cached copy %s is not usable (%s): fetched again", path.name, error)
        return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _missing(entry: ManifestEntry, version: str) -> FacegateError:
    return FacegateError(
        f"dataset {version[:12]}: {entry.uri} (identity {entry.identity}) is missing; "
        "the manifest cannot be rebuilt: build a new manifest"
    )


def _check(entry: ManifestEntry, data: bytes | None, version: str) -> bytes:
    if data is None:
        raise _missing(entry, version)
    actual = _sha256(data)
    if actual != entry.sha256:
        raise FacegateError(
            f"dataset {version[:12]}: {entry.uri} (identity {entry.identity}) changed since the "
            f"manifest was built (sha256 {actual[:12]}, recorded {entry.sha256[:12]}); the same "
            "manifest must rebuild the same set: build a new manifest"
        )
    return data


def _local(entry: ManifestEntry, cache_dir: Path, client: Minio | None, version: str) -> Path:
    if not entry.uri.startswith("s3://"):
        path = Path(entry.uri)
        _check(entry, path.read_bytes() if path.is_file() else None, version)
        return path
    if client is None:
        raise FacegateError(f"{entry.uri}: fetching from the object store needs a client")
    bucket, key = parse_s3_uri(entry.uri)
    cached = blob_path(cache_dir, entry.sha256)
    if cached.is_file() and not object_exists(client, bucket, key):
        data = None
    else:
        if cached.is_file() and _sha256(read_cached(cached) or b"") == entry.sha256:
            return cached
        # Face images are sealed in the store (sealed_objects.py); the manifest hashes them
        # opened.
        try:
            data = get_opened(client, bucket, key, "dataset image")
        except TemplateKeyError as error:  # altered, or sealed with a key no longer in the ring
            raise FacegateError(
                f"dataset {version[:12]}: {entry.uri} (identity {entry.identity}) cannot be "
                f"opened: {error}"
            ) from None
    if data is None:  # the object is gone: so is every copy of it here
        for path in forget_cached(cache_dir, entry.sha256):
            log.info("deleted %s: a cached copy of %s, which is gone", path, entry.uri)
        raise _missing(entry, version)
    write_atomic(cached, seal_file_bytes(cached, _check(entry, data, version)))
    return cached


def materialize(
    manifest: DatasetManifest,
    cache_dir: Path,
    client: Minio | None = None,
    entries: Sequence[ManifestEntry] | None = None,
    progress: bool = True,
    splits: Sequence[Split] | None = None,
) -> list[LocalEntry]:
    """Local, verified files of every entry (or of ``entries``, or of ``splits``' entries)."""
    selected = manifest.entries if entries is None else list(entries)
    if splits is not None:
        selected = [e for e in selected if e.split in splits]
    return [
        LocalEntry(entry, _local(entry, cache_dir, client, manifest.version))
        for entry in tqdm(selected, desc="fetch images", unit="img", disable=not progress)
    ]
