"""Closed-loop load: ``clients`` threads, each keeping one request in flight, a bounded count.

``send`` carries one request to its answer and is the only thing a load knows about the system
under test (the Kafka pipeline or the naive HTTP service).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """Client-side view of one load: per-request latencies, failures and the wall time."""

    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0


def closed_loop(send: Callable[[int, int], bool], clients: int, requests: int) -> LoadResult:
    """Run ``requests`` calls of ``send(client, request_number)`` over ``clients`` threads.

    ``send`` returns whether the request was answered; it may raise, which counts as a failure.
    """
    result = LoadResult(clients)
    counter = itertools.count()
    lock = threading.Lock()

    def client(number: int) -> None:
        while (request := next(counter)) < requests:
            started = time.perf_counter()
            try:
                ok = send(number, request)
            except Exception:  # a failed request is a figure of the run, not its end
                ok = False
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if ok:
                    result.latencies_ms.append(elapsed)
                else:
                    result.failures += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - started
    return result
