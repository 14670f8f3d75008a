"""``facegate dlq``: what is in the dead-letter topic, and sending its records back once fixed.

Every service that gives up on a record writes it whole to ``frames.dlq`` with a reason
(:mod:`facegate.dead_letters`).  Some reasons are the input's fault and stay so (a truncated
JPEG); others are FaceGate's (``analysis_failed``: the stream processor raised;
``missing_template_crop``: a deployment mismatch) and the records are good once the fault is
fixed.  ``summary`` counts the letters by service and reason; ``replay`` publishes the chosen
letters' original records again to the topics they came from, with their keys, each
acknowledged by the broker.  The topic is read from its beginning without a consumer group,
so reading it moves no service's offsets (``read_whole_topic``).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from facegate.kafka_clients import make_producer, read_whole_topic, send_acknowledged
from facegate.settings import KafkaSettings, load_settings
from schemas.codec import SchemaError, decode
from schemas.messages import DeadLetter
from schemas.topics import FRAMES_DLQ

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h`` or ``7d``."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r}: a number and s, m, h or d (e.g. 30m, 2h)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@dataclass(frozen=True)
class Selection:
    """Which dead letters: every given field must match (``since`` is epoch seconds)."""

    reason: str | None = None
    service: str | None = None
    source_topic: str | None = None
    since: float | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (self.reason is None or letter.reason == self.reason)
            and (self.service is None or letter.service == self.service)
            and (self.source_topic is None or letter.source_topic == self.source_topic)
            and (self.since is None or letter.failed_at >= self.since)
        )


@dataclass
class DeadLetters:
    """The dead-letter topic as read: its letters in order, and records that were not letters."""

    letters: list[DeadLetter]
    unreadable: int


def read_dead_letters(kafka: KafkaSettings, timeout_s: float = 600.0) -> DeadLetters:
    """Every record of ``frames.dlq``, read from its beginning until nothing new arrives."""
    letters: list[DeadLetter] = []
    unreadable = 0
    for value in read_whole_topic(kafka, FRAMES_DLQ.name, timeout_s=timeout_s):
        try:
            letters.append(decode(value, DeadLetter))
        except SchemaError:
            unreadable += 1
    letters.sort(key=lambda letter: letter.failed_at)
    return DeadLetters(letters, unreadable)


def summary_lines(found: DeadLetters, selection: Selection) -> list[str]:
    """One line per service and reason: how many letters, the oldest and newest."""
    chosen = [letter for letter in found.letters if selection.matches(letter)]
    if not chosen:
        return ["no dead letters" + (" match" if selection != Selection() else "")]
    counts = Counter((letter.service, letter.reason) for letter in chosen)
    lines = [f"{'service':<20} {'reason':<24} {'letters':>8}  oldest -> newest (UTC)"]
    for (service, reason), count in sorted(counts.items()):
        times = [
            letter.failed_at
            for letter in chosen
            if (letter.service, letter.reason) == (service, reason)
        ]
        lines.append(
            f"{service:<20} {reason:<24} {count:>8}  {_utc(min(times))} -> {_utc(max(times))}"
        )
    if found.unreadable:
        lines.append(f"({found.unreadable} records of {FRAMES_DLQ.name} are not dead letters)")
    return lines


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class ReplayReport:
    """What a replay sent, per source topic, and what it could not send."""

    sent: Counter[str]
    without_payload: int


def replay_dead_letters(
    kafka: KafkaSettings, letters: list[DeadLetter], dry_run: bool = False
) -> ReplayReport:
    """Publish each letter's original record to its source topic, with its key, acknowledged.

    A letter without a payload (the record had no value) cannot be replayed and is counted."""
    sendable = [letter for letter in letters if letter.payload is not None]
    report = ReplayReport(
        Counter(letter.source_topic for letter in sendable), len(letters) - len(sendable)
    )
    if dry_run or not sendable:
        return report
    producer = make_producer(kafka)
    try:
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for letter in sendable:
            assert letter.payload is not None
            by_topic.setdefault(letter.source_topic, []).append((letter.key, letter.payload))
        for topic, records in by_topic.items():
            send_acknowledged(producer, topic, records, threading.Event())
    finally:
        producer.close()
    return report


def _since_seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


F = TypeVar("F", bound=Callable[..., Any])


def _selection_options(command: F) -> F:
    for option in reversed(
        [
            click.option("--reason", help="Only letters with this reason."),
            click.option("--service", help="Only letters from this service."),
            click.option("--source-topic", help="Only letters of records from this topic."),
            click.option(
                "--since",
                metavar="DURATION",
                callback=_since_seconds,
                help="Only letters written in the last DURATION (30m, 2h, 7d).",
            ),
        ]
    ):
        command = option(command)
    return command


def _selection(
    reason: str | None, service: str | None, source_topic: str | None, since: float | None
) -> Selection:
    start = None if since is None else time.time() - since
    return Selection(reason, service, source_topic, start)


@click.group("dlq")
def dlq_group() -> None:
    """The dead-letter topic (frames.dlq): count its records, and publish them again."""


@dlq_group.command("summary")
@_selection_options
def summary_command(
    reason: str | None, service: str | None, source_topic: str | None, since: float | None
) -> None:
    """Count the dead letters by service and reason, with the oldest and newest of each."""
    found = read_dead_letters(load_settings(KafkaSettings))
    for line in summary_lines(found, _selection(reason, service, source_topic, since)):
        click.echo(line)


@dlq_group.command("replay")
@_selection_options
@click.option("--dry-run", is_flag=True, help="Say what would be published; publish nothing.")
def replay_command(
    reason: str | None,
    service: str | None,
    source_topic: str | None,
    since: float | None,
    dry_run: bool,
) -> None:
    """Publish the chosen dead letters' records again to the topics they came from.

    --reason is required: records whose fault is their own (a truncated image) would only be
    dead-lettered again.  Each run publishes the chosen records again (their frames keep their
    ids), so replay once per fix, narrowing with --since."""
    if reason is None:
        raise click.UsageError("--reason is required (see `facegate dlq summary`)")
    selection = _selection(reason, service, source_topic, since)
    kafka = load_settings(KafkaSettings)
    chosen = [letter for letter in read_dead_letters(kafka).letters if selection.matches(letter)]
    report = replay_dead_letters(kafka, chosen, dry_run)
    verb = "would publish" if dry_run else "published"
    if not report.sent:
        click.echo(f"no dead letters to replay ({len(chosen)} chosen)")
    for topic, count in sorted(report.sent.items()):
        click.echo(f"{verb} {count} record{'s' if count != 1 else ''} to {topic}")
    if report.without_payload:
        click.echo(f"{report.without_payload} chosen letters had no record to publish")
