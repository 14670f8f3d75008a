"""Where face images for training come from: feedback samples, enrolment photos, folders.

Each source scans its location and lists :class:`SourceItem` s (URI, identity, whether the image
is already aligned, and how to read its bytes); the builder reads, checksums and splits them.
Sources are abstract so the folder source works without an object store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from minio import Minio

from facegate.object_store import get_bytes
from facegate.storage_keys import ENROLLMENT_PREFIX, FEEDBACK_PREFIX
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.sealed_objects import FEEDBACK_IMAGE, get_opened
from trainer.datasets.manifest import SourceInfo, SourceKind

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class SourceItem:
    """One image a source offers."""

    source: SourceKind
    uri: str
    identity: str
    aligned: bool
    read: Callable[[], bytes | None] = field(compare=False, repr=False)


@dataclass
class SourceScan:
    """What a scan found: its items and the source's description (counts filled by the builder)."""

    info: SourceInfo
    items: list[SourceItem]


class DatasetSource(Protocol):
    """Anything that lists labelled face images."""

    def scan(self) -> SourceScan:
        """List the source's images."""
        ...


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://`` URI."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise ValueError(f"not an s3://bucket/key URI: {uri}")
    return bucket, key


class FolderSource:
    """A folder with one sub-folder of images per identity (the LFW layout).

    Identities with fewer than ``min_images_per_identity`` images are left out (counted); of
    the rest, the first ``max_identities`` by name are kept, each with its first
    ``max_images_per_identity`` images by file name.
    """

    def __init__(
        self,
        root: Path,
        max_identities: int | None = None,
        max_images_per_identity: int | None = None,
        min_images_per_identity: int = 2,
    ) -> None:
        self.root = Path(root).resolve()
        self.max_identities = max_identities
        self.max_images_per_identity = max_images_per_identity
        self.min_images_per_identity = min_images_per_identity

    def scan(self) -> SourceScan:
        from facegate.errors import FacegateError

        if not self.root.is_dir():
            raise FacegateError(f"dataset folder {self.root} does not exist")
        excluded = {"identities_below_min": 0, "images_of_identities_below_min": 0}
        items: list[SourceItem] = []
        kept = 0
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name[0] != "."):
            files = sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if len(files) < self.min_images_per_identity:
                excluded["identities_below_min"] += 1
                excluded["images_of_identities_below_min"] += len(files)
                continue
            if self.max_identities is not None and kept >= self.max_identities:
                break
            kept += 1
            for path in files[: self.max_images_per_identity]:
                items.append(SourceItem("folder", str(path), folder.name, False, path.read_bytes))
        info = SourceInfo(kind="folder", location=str(self.root), excluded=excluded)
        return SourceScan(info, items)


class EnrollmentSource:
    """Students' enrolment photos (full photos, not aligned) in the datasets bucket."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.photos = EnrollmentPhotos(client, bucket)

    def scan(self) -> SourceScan:
        bucket = self.photos.bucket
        items = [
            SourceItem("enrollment", s3_uri(bucket, key), student, False, _reader(self.photos, key))
            for student, keys in sorted(self.photos.by_student().items())
            for key in keys
        ]
        info = SourceInfo(kind="enrollment", location=s3_uri(bucket, ENROLLMENT_PREFIX))
        return SourceScan(info, items)


def _reader(photos: EnrollmentPhotos, key: str) -> Callable[[], bytes | None]:
    return lambda: photos.get(key)


class FeedbackSource:
    """Proctor-confirmed feedback samples (aligned thumbnails) in the feedback bucket.

    Only ``label == "genuine"`` samples name who the face is; impostor samples are counted as
    excluded.  ``since`` (``YYYY-MM-DD``) skips partitions of earlier days; ``partitions``
    limits the scan to those ``date=.../part-...`` partitions.
    """

    def __init__(
        self,
        client: Minio,
        bucket: str,
        since: str | None = None,
        partitions: Sequence[str] | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.since = since
        self.partitions = set(partitions) if partitions is not None else None

    def _wanted(self, partition: str) -> bool:
        if self.partitions is not None and partition not in self.partitions:
            return False
        day = partition.split("/")[0].removeprefix("date=")
        return self.since is None or day >= self.since

    def scan(self) -> SourceScan:
        objects = self.client.list_objects(self.bucket, prefix=FEEDBACK_PREFIX, recursive=True)
        sidecars = sorted(
            str(o.object_name) for o in objects if str(o.object_name or "").endswith(".json")
        )
        excluded = {"impostor": 0, "unreadable_sidecar": 0, "no_student": 0}
        partitions: set[str] = set()
        items: list[SourceItem] = []
        for key in sidecars:
            parts = key.split("/")
            if len(parts) != 4:
                continue
            partition = f"{parts[1]}/{parts[2]}"
            if not self._wanted(partition):
                continue
            partitions.add(partition)
            sample = self._sidecar(key)
            if sample is None:
                excluded["unreadable_sidecar"] += 1
                continue
            if sample.get("label") != "genuine":
                excluded["impostor"] += 1
                continue
            student = str(sample.get("student_id") or "")
            if not student:
                excluded["no_student"] += 1
                continue
            image_key = str(sample.get("image") or key.removesuffix(".json") + ".jpg")
            uri = s3_uri(self.bucket, image_key)
            items.append(SourceItem("feedback", uri, student, True, self._image(image_key)))
        info = SourceInfo(
            kind="feedback",
            location=s3_uri(self.bucket, FEEDBACK_PREFIX),
            partitions=sorted(partitions),
            excluded=excluded,
        )
        return SourceScan(info, items)

    def _sidecar(self, key: str) -> dict[str, object] | None:
        data = get_bytes(self.client, self.bucket, key)
        try:
            parsed = json.loads(data) if data is not None else None
        except ValueError:
            log.warning("feedback sidecar %s is not JSON; skipped", key)
            return None
        return parsed if isinstance(parsed, dict) else None

    def _image(self, key: str) -> Callable[[], bytes | None]:
        return lambda: get_opened(self.client, self.bucket, key, FEEDBACK_IMAGE)


def object_store_sources(
    client: Minio,
    bucket_feedback: str,
    bucket_datasets: str,
    feedback: bool = True,
    enrollment: bool = True,
    since: str | None = None,
) -> list[DatasetSource]:
    """The object-store sources FaceGate trains on: feedback samples and enrolment photos."""
    sources: list[DatasetSource] = []
    if feedback:
        sources.append(FeedbackSource(client, bucket_feedback, since=since))
    if enrollment:
        sources.append(EnrollmentSource(client, bucket_datasets))
    return sources
