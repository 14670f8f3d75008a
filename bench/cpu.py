"""Where the cores go: CPU time of each service (process tree, from /proc) over an interval.

The model-only bound assumes every core runs the models; this shows what else runs: the broker
serving fetches, consumers polling, the benchmark's own clients.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench.memory import children_by_parent, descendants

SELF = "bench client (publisher, verdict collector)"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tree: bool = True, children: dict[int, list[int]] | None = None) -> float:
    """User plus system CPU seconds of a process, and of its descendants when ``tree`` (0 for a
    vanished one); ``children`` as ``bench.memory.descendants`` takes it."""
    total = 0
    for member in (pid, *descendants(pid, children)) if tree else (pid,):
        try:
            with open(f"/proc/{member}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS_PER_S


class CpuMeter:
    """CPU used by each named service between ``start`` and ``stop``, this process included."""

    def __init__(self, pids: Callable[[], dict[str, int]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._started_at = 0.0

    def _sample(self) -> dict[str, float]:
        children = children_by_parent()
        sample = {name: cpu_seconds(pid, children=children) for name, pid in self.pids().items()}
        # Not its descendants: this process started the services it measures.
        sample[SELF] = cpu_seconds(os.getpid(), tree=False)
        return sample

    def start(self) -> CpuMeter:
        self._start = self._sample()
        self._started_at = time.monotonic()
        return self

    def stop(self, frames: int = 0) -> dict[str, Any]:
        """Per service: share of one core (%), and CPU ms per frame when ``frames`` is given."""
        end = self._sample()
        wall_s = max(time.monotonic() - self._started_at, 1e-9)
        used = {name: end[name] - self._start[name] for name in end if name in self._start}
        result: dict[str, Any] = {
            "wall_s": round(wall_s, 2),
            "core_pct": {name: round(100 * s / wall_s, 1) for name, s in used.items()},
            "total_core_pct": round(100 * sum(used.values()) / wall_s, 1),
        }
        if frames:
            result["ms_per_frame"] = {name: round(1000 * s / frames, 2) for name, s in used.items()}
            result["total_ms_per_frame"] = round(1000 * sum(used.values()) / frames, 2)
        return result


def idle_cpu(pids: Callable[[], dict[str, int]], seconds: float) -> dict[str, Any]:
    """What the services use over ``seconds`` with nothing to do."""
    meter = CpuMeter(pids).start()
    time.sleep(seconds)
    return meter.stop()
