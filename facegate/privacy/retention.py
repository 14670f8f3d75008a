"""``facegate retention run``: delete feedback samples, stored frames and verdict audit entries
past their retention.

Feedback samples (``feedback/date=YYYY-MM-DD/part-<version>/<id>.jpg|.json`` in the feedback
bucket) are kept ``FACEGATE_RETENTION_FEEDBACK_DAYS`` days (180 by default), objects in the
frames bucket ``FACEGATE_RETENTION_FRAMES_DAYS`` days (7; nothing writes frames today), entries
of the verdict audit stream (``facegate:audit:verdicts``: one per verdict, with the student id
and score) ``FACEGATE_RETENTION_VERDICT_AUDIT_DAYS`` days (365; 0 keeps them forever).  A stream
entry's age is its id's timestamp, the Redis server's clock when the verdict was recorded.
The main audit log (``facegate:audit``) is never trimmed.

An object's age counts from when its data was collected: the day of its ``date=YYYY-MM-DD``
path segment when the key has one (a sample rewritten by a redelivery keeps its day), else its
last-modified time.  A partition day is past retention once the whole day is: ``date=D`` goes
when ``D + 1 day <= now - days``.  Objects whose age cannot be told are kept.

Each run that deletes writes one ``retention`` audit entry with the counts; a dry run lists
and writes nothing.  Running it again deletes nothing more (idempotent); a run that stops half
way leaves only objects the next run deletes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import redis
from minio import Minio
from minio.error import S3Error
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facegate.errors import FacegateError
from facegate.privacy.audit import AuditLog, default_actor
from facegate.service_process import lower_priority
from facegate.settings import (
    BaseServiceSettings,
    ObjectStoreSettings,
    RedisSettings,
    load_settings,
)
from facegate.storage_keys import FEEDBACK_PREFIX
from inference_worker.rotation_guard import deleting_face_images
from stream_processors.attendance import VERDICT_AUDIT_STREAM

DAY_S = 24 * 3600
# Stream entries read per XRANGE call when a dry run counts what would be trimmed.
STREAM_PAGE = 10_000
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


class RetentionSettings(BaseServiceSettings):
    """``facegate retention run``: how long personal data in the object store is kept."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_RETENTION_")

    feedback_days: int = Field(default=180, ge=1)
    frames_days: int = Field(default=7, ge=1)
    verdict_audit_days: int = Field(default=365, ge=0)

    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))
    s3: ObjectStoreSettings = Field(default_factory=lambda: load_settings(ObjectStoreSettings))


def partition_date(key: str) -> date | None:
    """The day of a key's ``date=YYYY-MM-DD`` path segment, or None when it has none."""
    for segment in key.split("/")[:-1]:
        match = _PARTITION.match(segment)
        if match:
            try:
                return date.fromisoformat(match.group(1))
            except ValueError:
                return None
    return None


def collected_at(key: str, last_modified: datetime | None) -> datetime | None:
    """When an object's data was collected: the end of its partition day, else last-modified.

    The end of the day (not its start) so that no object is deleted before it is ``days`` old.
    """
    day = partition_date(key)
    if day is not None:
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    if last_modified is None:
        return None
    return last_modified if last_modified.tzinfo else last_modified.replace(tzinfo=UTC)


def is_expired(key: str, last_modified: datetime | None, now: datetime, days: int) -> bool:
    """Whether an object is older than ``days`` (see :func:`collected_at`)."""
    when = collected_at(key, last_modified)
    return when is not None and when <= now - timedelta(days=days)


@dataclass
class RetentionReport:
    """What a retention run deleted (or, dry, would delete): object keys per bucket, and
    entry counts per Redis stream (``trimmed``)."""

    now: str
    dry_run: bool
    days: dict[str, int]
    deleted: dict[str, list[str]] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {**{kind: len(keys) for kind, keys in self.deleted.items()}, **self.trimmed}

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "dry_run": self.dry_run,
            "days": self.days,
            "deleted": self.counts(),
            "kept": self.kept,
            "keys": self.deleted,
        }


def _listing(store: Minio, bucket: str, prefix: str) -> Iterator[tuple[str, datetime | None]]:
    try:
        for obj in store.list_objects(bucket, prefix=prefix, recursive=True):
            if obj.object_name:
                yield str(obj.object_name), obj.last_modified
    except S3Error as error:
        if error.code != "NoSuchBucket":
            raise


def stream_entries_before(client: redis.Redis[bytes], stream: str, min_id: str) -> int:
    """How many entries of ``stream`` have an id below ``min_id`` (read in pages)."""
    count, start = 0, "-"
    while True:
        page = client.xrange(stream, start, f"({min_id}", count=STREAM_PAGE)
        count += len(page)
        if len(page) < STREAM_PAGE:
            return count
        last = page[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def trim_stream(
    client: redis.Redis[bytes], stream: str, before: datetime, dry_run: bool
) -> tuple[int, int]:
    """Delete (or, dry, count) the entries of ``stream`` recorded before ``before``.

    Returns (deleted, kept).  Exact ``XTRIM MINID``: an entry id starts with the server's clock
    in milliseconds when it was added.
    """
    min_id = f"{int(before.timestamp() * 1000)}-0"
    if dry_run:
        deleted = stream_entries_before(client, stream, min_id)
        return deleted, int(client.xlen(stream)) - deleted
    deleted = int(client.xtrim(stream, minid=min_id, approximate=False))
    return deleted, int(client.xlen(stream))


def apply_retention(
    store: Minio,
    client: redis.Redis[bytes] | None,
    settings: RetentionSettings,
    now: datetime | None = None,
    dry_run: bool = False,
    actor: str = "retention",
    verdict_stream: str = VERDICT_AUDIT_STREAM,
) -> RetentionReport:
    """Delete expired feedback samples, frames and verdict audit entries; audit the counts
    (unless dry or none).

    ``client`` is the Redis of the audit log, the verdict stream and the rotation guard. None
    only lists (a dry run of the objects, for tools): deleting without it would go unaudited
    and could run beside a key rotation, so it is refused.
    """
    if client is None and not dry_run:
        raise FacegateError(
            "retention deletes only with Redis: its deletions are audited there and must not "
            "run beside a key rotation (use dry_run to list without it)"
        )
    now = now or datetime.now(UTC)
    s3 = settings.s3
    scopes = {
        "feedback_samples": (s3.bucket_feedback, FEEDBACK_PREFIX, settings.feedback_days),
        "frames": (s3.bucket_frames, "", settings.frames_days),
    }
    report = RetentionReport(
        now.isoformat(timespec="seconds"),
        dry_run,
        {
            "feedback_samples": settings.feedback_days,
            "frames": settings.frames_days,
            "verdict_audit": settings.verdict_audit_days,
        },
    )
    for kind, (bucket, prefix, days) in scopes.items():
        expired, kept = [], 0
        for key, modified in _listing(store, bucket, prefix):
            if is_expired(key, modified, now, days):
                expired.append(key)
            else:
                kept += 1
        report.deleted[kind] = expired
        report.kept[kind] = kept
    if client is not None and not dry_run:  # (without a client, only dry runs get here)
        # Feedback samples are face images a key rotation re-writes: none goes during one.
        with deleting_face_images(client, "retention"):
            for kind, (bucket, _, _) in scopes.items():
                for key in report.deleted[kind]:
                    store.remove_object(bucket, key)
    if client is not None and settings.verdict_audit_days > 0:
        before = now - timedelta(days=settings.verdict_audit_days)
        trimmed, kept = trim_stream(client, verdict_stream, before, dry_run)
        report.trimmed["verdict_audit"] = trimmed
        report.kept["verdict_audit"] = kept
    if client is not None and not dry_run and any(report.counts().values()):
        details = {"deleted": report.counts(), "kept": report.kept, "days": report.days}
        AuditLog(client).append("retention", "", actor, details, at=time.time())
    return report


@click.group("retention")
def retention_command() -> None:
    """Retention of personal data: delete feedback samples, frames and verdict audit entries
    past their period."""


@retention_command.command("run")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report (with every key) as JSON.",
)
def run_retention(dry_run: bool, json_path: Path | None) -> None:
    """Delete feedback samples older than FACEGATE_RETENTION_FEEDBACK_DAYS (180) and frames
    older than FACEGATE_RETENTION_FRAMES_DAYS (7), by partition day or last-modified time, and
    verdict audit entries older than FACEGATE_RETENTION_VERDICT_AUDIT_DAYS (365; 0: never).

    Safe to run again (a cron job or a Kubernetes CronJob, daily); each run that deletes
    writes its counts to the audit log.
    """
    from facegate.object_store import make_object_store
    from facegate.redis_client import make_redis

    settings = load_settings(RetentionSettings)
    lower_priority(settings)
    client = make_redis(settings.redis)
    try:
        report = apply_retention(
            make_object_store(settings.s3),
            client,
            settings,
            dry_run=dry_run,
            actor=f"retention:{default_actor()}",
        )
    finally:
        client.close()
    verb = "would delete" if dry_run else "deleted"
    for kind, count in report.counts().items():
        unit = "entries" if kind in report.trimmed else "object(s)"
        click.echo(
            f"{kind}: {verb} {count} {unit} older than {report.days[kind]} day(s); "
            f"{report.kept[kind]} kept"
        )
    if "verdict_audit" not in report.trimmed:
        click.echo("verdict_audit: kept forever (FACEGATE_RETENTION_VERDICT_AUDIT_DAYS=0)")
    if json_path:
        json_path.write_text(json.dumps(report.as_dict(), indent=2))
