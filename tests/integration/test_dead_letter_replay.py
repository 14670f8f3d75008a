"""`facegate dlq`: dead letters counted and their records published again, on the real broker."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from facegate.cli import cli
from facegate.kafka_clients import make_producer
from facegate.settings import KafkaSettings, load_settings
from facegate.stack import LocalStack
from producers.publisher import encode_image
from schemas.codec import encode
from schemas.messages import DeadLetter, Frame
from schemas.topics import FRAMES_DLQ
from tests.integration.frame_helpers import make_frame, read_frames
from tests.messages import make_dead_letter

pytestmark = pytest.mark.integration


def _letter(service: str, reason: str, frame: Frame | None) -> DeadLetter:
    return make_dead_letter(
        key=b"gate-dlq",
        reason=reason,
        detail="written by the test",
        service=service,
        payload=None if frame is None else encode(frame),
        frame_id=None if frame is None else frame.frame_id,
    )


def test_summary_and_replay_of_chosen_dead_letters(local_stack: LocalStack) -> None:
    kafka = load_settings(KafkaSettings)
    # A service name of this test's own: the session's other tests write dead letters too.
    service = f"dlq-test-{uuid.uuid4().hex[:8]}"
    jpeg = encode_image(np.full((60, 80, 3), 128, dtype=np.uint8))
    fixed = [make_frame("exam-dlq", "gate-dlq", jpeg) for _ in range(2)]
    own_fault = make_frame("exam-dlq", "gate-dlq", jpeg)
    letters = [
        _letter(service, "analysis_failed", fixed[0]),
        _letter(service, "truncated_image", own_fault),
        _letter(service, "analysis_failed", fixed[1]),
        _letter(service, "analysis_failed", None),  # a record without a value: nothing to send
    ]
    producer = make_producer(kafka)
    try:
        for letter in letters:
            producer.send(FRAMES_DLQ.name, key=letter.key, value=encode(letter)).get(timeout=30)
    finally:
        producer.close()
    runner = CliRunner()

    summary = runner.invoke(cli, ["dlq", "summary", "--service", service])
    assert summary.exit_code == 0, summary.output
    rows = {tuple(line.split()[:3]) for line in summary.output.splitlines()}
    assert (service, "analysis_failed", "3") in rows and (service, "truncated_image", "1") in rows
    assert "no dead letters match" in runner.invoke(cli, ["dlq", "summary", "--reason", "x"]).output

    refused = runner.invoke(cli, ["dlq", "replay", "--service", service])
    assert refused.exit_code != 0 and "--reason is required" in refused.output

    args = ["dlq", "replay", "--reason", "analysis_failed", "--service", service]
    dry = runner.invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would publish 2 records to frames" in dry.output
    assert "1 chosen letters had no record to publish" in dry.output
    assert read_frames(kafka, [f.frame_id for f in fixed], timeout_s=5) == {}

    replayed = runner.invoke(cli, args)
    assert replayed.exit_code == 0, replayed.output
    assert "published 2 records to frames" in replayed.output
    found = read_frames(kafka, [f.frame_id for f in [*fixed, own_fault]], timeout_s=10)
    assert set(found) == {f.frame_id for f in fixed}  # the truncated image's frame stays out
    for frame in fixed:
        _, key, copy = found[frame.frame_id]
        assert key == b"gate-dlq" and copy == frame
