"""What every long-running FaceGate service does when it starts: stop cleanly on SIGTERM or
SIGINT, open its Prometheus endpoint when it has a port, and lower its CPU priority when asked."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Protocol

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


class MetricsEndpoint(Protocol):
    metrics_port: int | None
    metrics_host: str


class CpuPriority(Protocol):
    niceness: int


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


def lower_priority(settings: CpuPriority) -> int:
    """Add the settings' ``niceness`` to every thread of this process; returns the new value.

    Linux keeps a nice value per thread and a new thread inherits its creator's, so threads
    started later (ONNX Runtime's, the executor's) follow; threads already running are changed
    one by one.  Raising niceness needs no privilege; lowering it below 0 would, so it is never
    asked for.
    """
    if settings.niceness <= 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    target = min(os.getpriority(os.PRIO_PROCESS, 0) + settings.niceness, 19)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, target)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
    log.info("CPU priority lowered: niceness %d", target)
    return target
