"""Metrics the services export: verdict counts, lag bookkeeping, model and gallery gauges."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import pytest
from prometheus_client import REGISTRY

from facegate.metrics import CONSUMER_LAG, LagReporter, partition_lags
from inference_worker.metrics import KafkaLag, describe_serving_model, record_verdict
from schemas.messages import Verdict
from tests.messages import make_verdict


def _value(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _verdict(**changes: object) -> Verdict:
    fields: dict[str, object] = {
        "frame_id": "f1",
        "gate_id": "gate-unit",
        "exam_id": "e1",
        "decided_at": 100.25,
        "score": 0.82,
        "model_name": "mobilefacenet",
        "model_version": "unit-7",
    }
    return make_verdict(**(fields | changes))


def test_record_verdict_counts_by_decision_reason_version_and_gate() -> None:
    labels = {"decision": "accept", "reason": "match", "model_version": "unit-7"}
    before = _value("facegate_verdicts_total", labels) or 0.0
    gate_before = _value("facegate_gate_verdicts_total", {"gate_id": "gate-unit"}) or 0.0
    record_verdict(_verdict())
    record_verdict(_verdict(decision="review", reason="no_face", score=None))
    assert _value("facegate_verdicts_total", labels) == before + 1
    assert _value("facegate_gate_verdicts_total", {"gate_id": "gate-unit"}) == gate_before + 2
    # Only the verdict with a score is in the score histogram; both have a latency.
    score = {"model_version": "unit-7", "decision": "accept"}
    assert _value("facegate_verdict_score_count", score) == 1
    assert _value("facegate_verdict_score_sum", score) == pytest.approx(0.82)
    latency = {"model_version": "unit-7"}
    assert _value("facegate_verdict_latency_seconds_count", latency) == 2
    assert _value("facegate_verdict_latency_seconds_sum", latency) == pytest.approx(0.5)


def test_model_info_and_gallery_size_read_at_scrape_time() -> None:
    students = ["a", "b"]
    describe_serving_model("mobilefacenet", "unit-8", "canary", lambda: len(students))
    info = {"model": "mobilefacenet", "model_version": "unit-8", "alias": "canary"}
    assert _value("facegate_model_info", info) == 1
    assert _value("facegate_gallery_students", {"model_version": "unit-8"}) == 2
    students.append("c")
    assert _value("facegate_gallery_students", {"model_version": "unit-8"}) == 3


def test_partition_lags_skip_partitions_without_a_fetch_yet() -> None:
    lags = partition_lags(
        [("faces", 0), ("faces", 1), ("faces", 2)],
        highwater={("faces", 0): 10, ("faces", 1): None, ("faces", 2): 4},
        position={("faces", 0): 7, ("faces", 1): 3, ("faces", 2): 9},
    )
    # A position past the last known high watermark (a newer fetch) is no lag, not negative.
    assert lags == {("faces", 0): 3, ("faces", 2): 0}


def _lag(group: str, topic: str, partition: int) -> float | None:
    return _value(
        "facegate_consumer_lag", {"group": group, "topic": topic, "partition": str(partition)}
    )


def test_lag_reporter_drops_partitions_a_rebalance_took_away() -> None:
    reporter = LagReporter("unit-group")
    reporter.report({("faces", 0): 5, ("faces", 1): 2})
    assert _lag("unit-group", "faces", 0) == 5
    reporter.report({("faces", 1): 0})
    assert _lag("unit-group", "faces", 0) is None
    assert _lag("unit-group", "faces", 1) == 0


class _TP(NamedTuple):
    topic: str
    partition: int


class _FakeConsumer:
    """A stand-in for kafka-python's consumer (unit test: the real one is in integration)."""

    config = {"group_id": "unit-kafka"}

    def __init__(self) -> None:
        self.positions = {_TP("faces", 0): 4, _TP("faces", 1): 6}

    def assignment(self) -> set[_TP]:
        return set(self.positions)

    def highwater(self, tp: _TP) -> int:
        return 10

    def position(self, tp: _TP, timeout_ms: int | None = None) -> int:
        if tp.partition == 1:
            raise RuntimeError("partition is not assigned")  # taken by a rebalance meanwhile
        return self.positions[tp]


@pytest.fixture
def clean_lag() -> Iterator[None]:
    yield
    CONSUMER_LAG.clear()


def test_kafka_lag_reports_what_it_can_read(clean_lag: None) -> None:
    KafkaLag(_FakeConsumer(), "unit-kafka").update()
    assert _lag("unit-kafka", "faces", 0) == 6
    assert _lag("unit-kafka", "faces", 1) is None
