"""Resident memory of service processes, sampled in a thread (VmRSS from /proc)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def rss_kb(pid: int) -> int:
    """VmRSS of one process in kB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (MLflow's server runs its workers as children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its descendants, in MB."""
    return sum(rss_kb(p) for p in (pid, *descendants(pid))) / 1024


class RssSampler:
    """Peak RSS (process tree) of named services, sampled every ``period_s`` until stopped."""

    def __init__(self, pids: Callable[[], dict[str, int]], period_s: float = 0.5) -> None:
        self.pids = pids
        self.period_s = period_s
        self.peak_mb: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        """Take one sample now."""
        for name, pid in self.pids().items():
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), round(tree_rss_mb(pid), 1))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def stop(self) -> dict[str, float]:
        """Stop sampling; the peaks by service."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        return dict(self.peak_mb)
