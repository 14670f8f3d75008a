"""The dataset manifest: which face images, whose they are, which split, pinned by checksum.

A manifest (schema ``facegate.dataset/1``) lists every image of a training set as an entry
(source, URI, SHA-256 of the bytes, identity, split, whether it is already an aligned crop).
Its ``version`` is the SHA-256 over the sorted entries, so the same inputs always give the same
version and a version names exactly one set of bytes.  Manifests are stored in the datasets
bucket at ``datasets/<version>/manifest.json``.

Identities are plain strings: a student id from feedback and from enrolment is the same person,
so both use the student id as it is; a folder's identities are its sub-folder names.  Nothing
namespaces them, so a folder whose sub-folder is named like a student id merges with that
student: point the builder at folders of other people only.

The split is by identity, never by image: an identity goes to ``val`` when
``sha256(f"{seed}:{identity}")`` read as a fraction of 2**256 is below ``val_share``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from facegate.storage_keys import DATASET_MANIFEST_PREFIX

SCHEMA = "facegate.dataset/1"
SPLIT_RULE = "identity -> val when int(sha256(f'{seed}:{identity}'), 16) / 2**256 < val_share"

Split = Literal["train", "val"]
SourceKind = Literal["feedback", "enrollment", "folder"]


class ManifestEntry(BaseModel):
    """One image of the set."""

    model_config = ConfigDict(frozen=True)

    source: SourceKind
    uri: str  # s3://bucket/key or an absolute file path
    sha256: str
    identity: str
    split: Split
    aligned: bool  # already a crop aligned to the ArcFace 112 template (feedback thumbnails)


class SplitRule(BaseModel):
    """How identities were assigned to splits."""

    rule: str = SPLIT_RULE
    seed: int = 0
    val_share: float = 0.2


class SourceInfo(BaseModel):
    """What one source contributed and where it was read."""

    kind: SourceKind
    location: str  # s3://bucket/prefix/ or a folder path
    partitions: list[str] = Field(default_factory=list)
    images: int = 0
    identities: int = 0
    excluded: dict[str, int] = Field(default_factory=dict)


class DatasetManifest(BaseModel):
    """A versioned training set."""

    model_config = ConfigDict(populate_by_name=True)

    schema_id: str = Field(default=SCHEMA, alias="schema")
    version: str
    created_at: str
    sources: list[SourceInfo]
    counts: dict[str, Any]
    split: SplitRule
    entries: list[ManifestEntry]

    def identities(self, split: Split | None = None) -> list[str]:
        """Sorted identities, of one split or of all."""
        return sorted({e.identity for e in self.entries if split is None or e.split == split})

    def to_json(self) -> str:
        """The manifest as stored (schema field named ``schema``)."""
        return self.model_dump_json(by_alias=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "manifest") -> DatasetManifest:
        """Parse a stored manifest and check that its version matches its entries."""
        from facegate.errors import FacegateError

        manifest = cls.model_validate_json(text)
        if manifest.schema_id != SCHEMA:
            raise FacegateError(f"{where}: schema {manifest.schema_id!r}, expected {SCHEMA!r}")
        expected = manifest_version(manifest.entries)
        if manifest.version != expected:
            raise FacegateError(
                f"{where}: version {manifest.version} does not match its entries ({expected}); "
                "the manifest was edited or damaged"
            )
        return manifest


def assign_split(identity: str, seed: int, val_share: float) -> Split:
    """The split of an identity: deterministic from the seed and the identity alone."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).hexdigest()
    return "val" if int(digest, 16) / float(2**256) < val_share else "train"


def sorted_entries(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """Entries in the manifest's canonical order: identity, source, URI."""
    return sorted(entries, key=lambda e: (e.identity, e.source, e.uri))


def manifest_version(entries: list[ManifestEntry]) -> str:
    """SHA-256 over the schema and the sorted entries (canonical JSON, one line each)."""
    digest = hashlib.sha256(SCHEMA.encode())
    for entry in sorted_entries(entries):
        line = json.dumps(entry.model_dump(), sort_keys=True, separators=(",", ":"))
        digest.update(b"\n" + line.encode())
    return digest.hexdigest()


def manifest_key(version: str) -> str:
    """Where a manifest version lives in the datasets bucket."""
    return f"{DATASET_MANIFEST_PREFIX}{version}/manifest.json"


def utc_now() -> str:
    """ISO 8601 UTC timestamp (seconds) for ``created_at``."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
