"""Topics that carry faces are created with a retention period.

tansu (the local broker) accepts topic configurations but does not report them back, so this
checks what ensure_topics asks the broker for, with a stand-in admin client that records the
requests (the only stand-in here); the topics themselves are created on the real broker by
every integration test session.
"""

from __future__ import annotations

from typing import Any

import pytest

from facegate import kafka_clients
from facegate.settings import KafkaSettings
from schemas.topics import ALL_TOPICS, DAY_MS, ENROLLMENTS, FACES, FRAMES, VERDICTS


class RecordingAdmin:
    def __init__(self) -> None:
        self.created: list[Any] = []

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, topics: list[Any], timeout_ms: int) -> None:
        self.created.extend(topics)

    def close(self) -> None:
        pass


def test_face_carrying_topics_ask_for_their_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = RecordingAdmin()
    monkeypatch.setattr(kafka_clients, "make_admin", lambda settings: admin)
    kafka_clients.ensure_topics(KafkaSettings())
    configs = {t.name: t.topic_configs for t in admin.created}
    assert set(configs) == {t.name for t in ALL_TOPICS}
    assert configs[FRAMES.name] == {"retention.ms": str(DAY_MS)}
    assert configs[FACES.name] == {"retention.ms": str(DAY_MS)}
    assert configs[VERDICTS.name] == {"retention.ms": str(14 * DAY_MS)}
    # The gallery's change log is read from its beginning by every worker: kept.
    assert not configs[ENROLLMENTS.name]
