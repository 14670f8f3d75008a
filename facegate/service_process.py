"""What every long-running FaceGate service does when it starts: stop cleanly on SIGTERM or
SIGINT, and open its Prometheus endpoint when it has a port."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Protocol

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


class MetricsEndpoint(Protocol):
    metrics_port: int | None
    metrics_host: str


def stop_on_signals(stopping: threading.Event, what: str) -> None:
    """Set ``stopping`` on SIGTERM or SIGINT, logging ``what`` the service does then."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: %s", signum, what)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def serve_metrics(settings: MetricsEndpoint) -> None:
    """Start the ``/metrics`` endpoint on the settings' port, if one is set."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
