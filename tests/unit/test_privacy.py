"""The pure parts of the privacy operations (partition days, ages, audit entries, key patterns),
and retention refusing to delete without Redis."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from facegate.errors import FacegateError
from facegate.privacy.audit import AuditEntry, decode_entry, encode_entry
from facegate.privacy.forget import glob_escape, version_of_template_key
from facegate.privacy.retention import (
    RetentionSettings,
    apply_retention,
    collected_at,
    is_expired,
    partition_date,
)

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("feedback/date=2026-05-01/part-7/abc.jpg", date(2026, 5, 1)),
        ("feedback/date=2026-05-01/part-7/abc.json", date(2026, 5, 1)),
        ("cam/date=2025-12-31/student=s1/f.jpg", date(2025, 12, 31)),
        ("feedback/part-7/abc.jpg", None),  # no partition segment
        ("feedback/date=2026-13-01/part-7/abc.jpg", None),  # not a real day
        ("feedback/date=26-05-01/part-7/abc.jpg", None),  # not YYYY-MM-DD
        ("feedback/x/date=2026-05-01.jpg", None),  # the file name is not a partition
    ],
)
def test_partition_date_reads_only_a_well_formed_date_segment(
    key: str, expected: date | None
) -> None:
    assert partition_date(key) == expected


def test_partition_day_decides_age_over_last_modified() -> None:
    # Rewritten today (a redelivery) but collected 200 days ago: its day decides.
    old_key = f"feedback/date={(NOW - timedelta(days=200)).date()}/part-7/a.json"
    assert is_expired(old_key, NOW, NOW, days=180)
    # Written long ago under today's partition cannot happen, but the day still decides.
    new_key = f"feedback/date={NOW.date()}/part-7/a.json"
    assert not is_expired(new_key, NOW - timedelta(days=400), NOW, days=180)


def test_a_partition_goes_only_once_its_whole_day_is_past_retention() -> None:
    day = date(2026, 5, 1)
    key = f"feedback/date={day}/part-7/a.jpg"
    end_of_day = datetime(2026, 5, 2, tzinfo=UTC)
    assert collected_at(key, None) == end_of_day
    assert not is_expired(key, None, end_of_day + timedelta(days=7) - timedelta(seconds=1), 7)
    assert is_expired(key, None, end_of_day + timedelta(days=7), 7)


def test_last_modified_decides_without_a_partition_and_unknown_age_is_kept() -> None:
    key = "frames/gate-1/f.jpg"
    assert is_expired(key, NOW - timedelta(days=8), NOW, days=7)
    assert not is_expired(key, NOW - timedelta(days=6), NOW, days=7)
    naive = (NOW - timedelta(days=8)).replace(tzinfo=None)  # read as UTC
    assert is_expired(key, naive, NOW, days=7)
    assert not is_expired(key, None, NOW, days=7)


def test_audit_entry_round_trips() -> None:
    entry = AuditEntry("forget", "s1", "alice", 1_700_000_000.0, {"removed": {"templates": 2}})
    raw = encode_entry(entry)
    stored = json.loads(raw)
    assert (stored["actor"], stored["subject"], stored["action"]) == ("alice", "s1", "forget")
    assert decode_entry(raw, "1-0") == AuditEntry(
        "forget", "s1", "alice", 1_700_000_000.0, {"removed": {"templates": 2}}, "1-0"
    )


def test_a_proctor_decision_reads_as_an_audit_entry() -> None:
    feedback = {
        "feedback_id": "f1",
        "frame_id": "fr1",
        "exam_id": "e1",
        "gate_id": "g1",
        "student_id": "s9",
        "proctor": "proctor1",
        "action": "impostor",
        "verdict_decision": "accept",
        "model_version": "7",
        "decided_at": 12.5,
        "note": "",
    }
    entry = decode_entry(json.dumps(feedback))
    assert (entry.action, entry.subject, entry.actor, entry.at) == (
        "feedback:impostor",
        "s9",
        "proctor1",
        12.5,
    )
    assert entry.details["exam_id"] == "e1" and "proctor" not in entry.details


def test_version_is_read_from_a_template_key_of_that_student_only() -> None:
    assert version_of_template_key("facegate:gallery:7:t:s1", "s1") == "7"
    assert version_of_template_key("facegate:gallery:v:2:t:s1", "s1") == "v:2"
    assert version_of_template_key("facegate:gallery:7:t:s1x", "s1") is None
    assert version_of_template_key("facegate:gallery:7:t:xs1", "s1") is None
    assert version_of_template_key("facegate:gallery:7:students", "s1") is None
    assert version_of_template_key("facegate:gallery::t:s1", "s1") is None
    # Student "a:t:s1" of version 7, never s1 of a version "7:t:a".
    assert version_of_template_key("facegate:gallery:7:t:a:t:s1", "s1") is None


def test_glob_escape_makes_pattern_characters_literal() -> None:
    # Redis MATCH glob syntax: * ? [ ] and the backslash escape.
    assert glob_escape("a*b?[c]\\d") == "a\\*b\\?\\[c\\]\\\\d"
    assert glob_escape("plain-id_1:x") == "plain-id_1:x"


class _UntouchableStore:
    """A stand-in object store (a unit test's fake) that fails the test if it is used at all."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the object store was used ({name})")


def test_retention_deletes_nothing_without_redis() -> None:
    """Without Redis its deletions would go unaudited and could run beside a key rotation:
    refused before the object store is touched."""
    with pytest.raises(FacegateError, match="retention deletes only with Redis"):
        apply_retention(_UntouchableStore(), None, RetentionSettings())  # type: ignore[arg-type]
