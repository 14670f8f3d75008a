"""The logging configuration keeps kafka-python's misleading slow-step warning out of the log
(unless at DEBUG) and every other client warning in."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from facegate.logging_setup import SlowClientStepFilter, configure_logging

SLOW_STEP = (
    "Task <kafka.net.selector.Task object at 0x7f37afdd3e90> ran for 0.455s (>0.100s "
    "threshold). It is blocking the event loop -- likely a tight sync loop inside a coroutine. "
    "Other pollers will time out."
)


@pytest.fixture
def root_level() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)
    configure_logging(logging.getLevelName(level) if level else "INFO")


def test_the_slow_step_warning_is_dropped_and_other_warnings_kept(
    root_level: None, caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger().setLevel(logging.INFO)
    configure_logging("INFO")
    selector = logging.getLogger("kafka.net.selector")
    with caplog.at_level(logging.INFO):
        selector.warning(SLOW_STEP)
        selector.warning("Node 1 connection failed -- refusing to send")
    assert [r.getMessage() for r in caplog.records] == [
        "Node 1 connection failed -- refusing to send"
    ]
    # Configured again (a CLI that calls it twice): one filter, not two.
    configure_logging("INFO")
    assert sum(isinstance(f, SlowClientStepFilter) for f in selector.filters) == 1


def test_at_debug_the_slow_step_warning_shows(
    root_level: None, caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    configure_logging("DEBUG")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("kafka.net.selector").warning(SLOW_STEP)
    assert [r.getMessage() for r in caplog.records] == [SLOW_STEP]
