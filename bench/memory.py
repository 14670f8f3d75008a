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


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc."""
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
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below ``pid`` (MLflow's server runs its workers as children), from
    ``children`` (``children_by_parent()``) or a fresh pass over /proc."""
    if children is None:
        children = children_by_parent()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_mb(pid: int, children: dict[int, list[int]] | None = None) -> float:
    """RSS of a process and its descendants, in MB."""
    return sum(rss_kb(p) for p in (pid, *descendants(pid, children))) / 1024


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
        """Take one sample now: one pass over /proc for every service (a pass per service cost
        ~2 ms each, twice a second, on the cores the pipeline under test runs on)."""
        children = children_by_parent()
        for name, pid in self.pids().items():
            rss = round(tree_rss_mb(pid, children), 1)
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), rss)

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
