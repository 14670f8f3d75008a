"""Load the naive one-request-at-a-time HTTP service (``bench.naive_server``) like the pipeline."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from typing import Any

from bench.load import closed_loop
from bench.memory import tree_rss_mb
from bench.models import BenchFrame
from bench.naive_server import CLAIM_HEADER, PATH
from bench.pipeline import wait_for_port
from bench.stats import latency_summary
from facegate.stack.ports import free_port_block


def post_frame(port: int, checkin: BenchFrame, timeout_s: float = 60.0) -> bool:
    """POST one frame; whether the service answered 200."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{PATH}",
        data=checkin.jpeg,
        headers={CLAIM_HEADER: checkin.student_id, "Content-Type": "image/jpeg"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()
        return bool(response.status == 200)


def run_naive(checkins: Sequence[BenchFrame], clients: int, requests: int) -> dict[str, Any]:
    """Start the naive service in its own process, load it, stop it; its figures."""
    port = free_port_block(1, start=31000)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.naive_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout_s=120)
        post_frame(port, checkins[0])  # warm-up: the first call compiles on OpenVINO
        result = closed_loop(
            lambda _client, n: post_frame(port, checkins[n % len(checkins)]), clients, requests
        )
        rss = tree_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {
        "clients": clients,
        "answered": len(result.latencies_ms),
        "failed": result.failures,
        "wall_s": round(result.wall_s, 2),
        "throughput_fps": round(result.throughput, 2),
        "end_to_end_ms": latency_summary(result.latencies_ms),
        "rss_mb": round(rss, 1),
        "_latencies": result.latencies_ms,
    }
