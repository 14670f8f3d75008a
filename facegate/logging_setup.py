"""One logging configuration for every FaceGate process."""

from __future__ import annotations

import logging
import os


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
