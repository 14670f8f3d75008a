"""`facegate dlq`: which dead letters a selection takes, and the --since durations."""

from __future__ import annotations

import click
import pytest

from facegate.dead_letter_replay import Selection, parse_duration
from schemas.messages import DeadLetter
from tests.messages import make_dead_letter


def _letter(service: str, reason: str, topic: str, at: float) -> DeadLetter:
    return make_dead_letter(source_topic=topic, reason=reason, service=service, failed_at=at)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "2w", "-1h", "1h30m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_every_given_field_must_match() -> None:
    letter = _letter("stream-processor", "analysis_failed", "frames", 1000.0)
    assert Selection().matches(letter)
    assert Selection(reason="analysis_failed", service="stream-processor").matches(letter)
    assert not Selection(reason="analysis_failed", service="inference-worker").matches(letter)
    assert not Selection(reason="truncated_image").matches(letter)
    assert not Selection(source_topic="faces").matches(letter)
    assert Selection(since=1000.0).matches(letter) and not Selection(since=1000.1).matches(letter)
