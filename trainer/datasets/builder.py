"""Build a dataset manifest from sources: read, checksum, de-duplicate, filter, split, count.

The builder reads every image's bytes once to checksum them (the manifest pins bytes, not
names), drops repeated images of an identity, leaves out identities with too few images for
training (a class needs two images to teach anything), splits the rest by identity and counts
everything it kept and left out.  :func:`store_manifest` and :func:`load_manifest` move
manifests in and out of the datasets bucket.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minio import Minio
from tqdm import tqdm

from facegate.errors import FacegateError
from facegate.object_store import get_bytes, put_bytes
from trainer.datasets.manifest import (
    DatasetManifest,
    ManifestEntry,
    SourceInfo,
    SplitRule,
    assign_split,
    manifest_key,
    manifest_version,
    sorted_entries,
    utc_now,
)
from trainer.datasets.sources import DatasetSource, SourceItem, parse_s3_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    """Split and filter rules applied over all sources together."""

    val_share: float = 0.2
    seed: int = 0
    min_images_per_identity: int = 2


def build_manifest(
    sources: Sequence[DatasetSource],
    options: BuildOptions | None = None,
    progress: bool = True,
) -> DatasetManifest:
    """Scan ``sources`` and build the manifest of what they hold now."""
    options = options or BuildOptions()
    if not 0.0 <= options.val_share < 1.0:
        raise FacegateError(f"val share {options.val_share} must be in [0, 1)")
    scans = [source.scan() for source in sources]
    items = [item for scan in scans for item in scan.items]
    excluded: Counter[str] = Counter()
    by_identity: dict[str, list[tuple[SourceItem, str]]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for item in tqdm(items, desc="checksum images", unit="img", disable=not progress):
        data = item.read()
        if data is None:
            log.warning("%s disappeared while the manifest was built; skipped", item.uri)
            excluded["missing"] += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        if (item.identity, digest) in seen:
            excluded["duplicates"] += 1
            continue
        seen.add((item.identity, digest))
        by_identity[item.identity].append((item, digest))
    entries: list[ManifestEntry] = []
    for identity, images in by_identity.items():
        if len(images) < options.min_images_per_identity:
            excluded["identities_below_min"] += 1
            excluded["images_of_identities_below_min"] += len(images)
            continue
        split = assign_split(identity, options.seed, options.val_share)
        entries.extend(
            ManifestEntry(
                source=item.source,
                uri=item.uri,
                sha256=digest,
                identity=identity,
                split=split,
                aligned=item.aligned,
            )
            for item, digest in images
        )
    entries = sorted_entries(entries)
    infos = [_with_counts(scan.info, entries) for scan in scans]
    return DatasetManifest(
        version=manifest_version(entries),
        created_at=utc_now(),
        sources=infos,
        counts=_counts(entries, infos, excluded),
        split=SplitRule(seed=options.seed, val_share=options.val_share),
        entries=entries,
    )


def _with_counts(info: SourceInfo, entries: list[ManifestEntry]) -> SourceInfo:
    mine = [e for e in entries if e.source == info.kind]
    return info.model_copy(
        update={"images": len(mine), "identities": len({e.identity for e in mine})}
    )


def _counts(
    entries: list[ManifestEntry], infos: list[SourceInfo], excluded: Counter[str]
) -> dict[str, Any]:
    def tally(selected: list[ManifestEntry]) -> dict[str, int]:
        return {"images": len(selected), "identities": len({e.identity for e in selected})}

    source_excluded: Counter[str] = Counter()
    for info in infos:
        source_excluded.update({f"{info.kind}.{k}": v for k, v in info.excluded.items()})
    return {
        "images": len(entries),
        "identities": len({e.identity for e in entries}),
        "aligned_images": sum(e.aligned for e in entries),
        "splits": {s: tally([e for e in entries if e.split == s]) for s in ("train", "val")},
        "sources": {k: tally([e for e in entries if e.source == k]) for k in _kinds(infos)},
        "excluded": dict(sorted((excluded + source_excluded).items())),
    }


def _kinds(infos: list[SourceInfo]) -> list[str]:
    return sorted({info.kind for info in infos})


def store_manifest(manifest: DatasetManifest, client: Minio, bucket: str) -> str:
    """Write the manifest to ``datasets/<version>/manifest.json``; return its ``s3://`` URI."""
    key = manifest_key(manifest.version)
    put_bytes(client, bucket, key, manifest.to_json().encode(), "application/json")
    log.info("stored dataset manifest %s (%d images)", manifest.version, len(manifest.entries))
    return f"s3://{bucket}/{key}"


def load_manifest(
    ref: str | Path, client: Minio | None = None, bucket: str | None = None
) -> DatasetManifest:
    """A manifest from a file path, an ``s3://`` URI, or a version in ``bucket``."""
    text = str(ref)
    path = Path(text).expanduser()
    if path.is_file():
        return DatasetManifest.from_json(path.read_bytes(), where=str(path))
    if text.startswith("s3://"):
        bucket, key = parse_s3_uri(text)
    elif len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        key = manifest_key(text)
    else:
        raise FacegateError(f"{text}: neither a manifest file nor a manifest version")
    if client is None or bucket is None:
        raise FacegateError(f"{text}: loading a stored manifest needs the object store")
    data = get_bytes(client, bucket, key)
    if data is None:
        raise FacegateError(f"no dataset manifest at s3://{bucket}/{key}")
    return DatasetManifest.from_json(data, where=f"s3://{bucket}/{key}")
