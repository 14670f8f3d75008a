"""One logging configuration for every FaceGate process."""

from __future__ import annotations

import logging
import os

# kafka-python 3 warns when one step of its network loop took over 0.1 s of wall time.
SLOW_STEP_NOTICE = "threshold). It is blocking the event loop"


class SlowClientStepFilter(logging.Filter):
    """Keeps kafka-python's slow-step warning out of the log unless the level is DEBUG.

    The client times a step by the wall clock, so the warning fires whenever another thread of
    the process holds the GIL for a while: in FaceGate, a model loading or running (it shows at
    the start of ``make demo`` and ``make bench``, while the enrolment embeds photos beside the
    verdict collector's consumer). It reads as a bug in the caller ("likely a tight sync loop
    inside a coroutine") and is not one; the client's real failures (timeouts, disconnections)
    are logged apart.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and SLOW_STEP_NOTICE in record.getMessage())


def configure_logging(level: str | None = None) -> None:
    """Log to stderr with timestamps; level from the argument or ``FACEGATE_LOG_LEVEL``."""
    chosen = (level or os.environ.get("FACEGATE_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=chosen,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Client libraries are chatty at INFO; their warnings still show.
    for noisy in ("kafka", "aiokafka", "urllib3", "botocore", "alembic", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    selector = logging.getLogger("kafka.net.selector")
    for old in [f for f in selector.filters if isinstance(f, SlowClientStepFilter)]:
        selector.removeFilter(old)
    if logging.getLogger().level > logging.DEBUG:
        selector.addFilter(SlowClientStepFilter())
