"""librdkafka's errors become the kafka-python exceptions the delivery and commit loops handle."""

from __future__ import annotations

import confluent_kafka
import kafka.errors
import pytest

from facegate.kafka_clients import GROUP_MOVED_ON
from facegate.rdkafka_clients import kafka_python_error


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (27, kafka.errors.RebalanceInProgressError),
        (22, kafka.errors.IllegalGenerationError),
        (25, kafka.errors.UnknownMemberIdError),
        (10, kafka.errors.MessageSizeTooLargeError),
    ],
)
def test_broker_codes_keep_their_kafka_python_class(
    code: int, expected: type[kafka.errors.KafkaError]
) -> None:
    assert type(kafka_python_error(confluent_kafka.KafkaError(code))) is expected


def test_a_group_that_moved_on_is_recognised_by_the_commit_loop() -> None:
    for code in (27, 22, 25, confluent_kafka.KafkaError._ASSIGNMENT_LOST):
        assert isinstance(kafka_python_error(confluent_kafka.KafkaError(code)), GROUP_MOVED_ON)


@pytest.mark.parametrize(
    "code",
    [
        confluent_kafka.KafkaError._TRANSPORT,
        confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
        confluent_kafka.KafkaError._MSG_TIMED_OUT,
        confluent_kafka.KafkaError._TIMED_OUT,
    ],
)
def test_an_unreachable_broker_is_retriable(code: int) -> None:
    error = kafka_python_error(confluent_kafka.KafkaError(code))
    assert error.retriable, error


def test_a_record_the_broker_refuses_for_good_is_not_retriable() -> None:
    too_large = kafka_python_error(confluent_kafka.KafkaError(10))
    bad_argument = kafka_python_error(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError._INVALID_ARG)
    )
    assert not too_large.retriable
    assert not bad_argument.retriable
    assert "_INVALID_ARG" in str(bad_argument)
