"""Verdicts pushed live to the console: a Kafka consumer thread fans them out to open pages.

The consumer reads the ``verdicts`` topic from the beginning in its own group (one per console
process, so every console sees every verdict), keeps the last check-ins of each gate in memory
for pages opened later, and hands each new one to the pages watching its exam and gate.
Nothing is polled: a page's event stream waits on its own queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from facegate.rdkafka_clients import RdConsumer
from facegate.settings import KafkaSettings
from schemas.codec import SchemaError, decode
from schemas.messages import Verdict, new_id
from schemas.topics import VERDICTS

log = logging.getLogger(__name__)


def checkin_view(verdict: Verdict) -> dict[str, Any]:
    """What a page shows of a verdict (the images are fetched by URL)."""
    top = verdict.top_matches[0] if verdict.top_matches else None
    return {
        "frame_id": verdict.frame_id,
        "exam_id": verdict.exam_id,
        "gate_id": verdict.gate_id,
        "student_id": verdict.claimed_student_id,
        "decision": verdict.decision,
        "reason": verdict.reason,
        "score": verdict.score,
        "threshold": verdict.threshold,
        "top_match": top.student_id if top else None,
        "top_score": top.score if top else None,
        "model_version": verdict.model_version,
        "captured_at": verdict.captured_at,
        "decided_at": verdict.decided_at,
        "has_thumbnail": verdict.thumbnail is not None,
    }


@dataclass
class _Watcher:
    exam_id: str
    gate_id: str
    queue: asyncio.Queue[dict[str, Any]]
    loop: asyncio.AbstractEventLoop


class VerdictHub:
    """The console's one verdict consumer and what it has seen."""

    def __init__(self, kafka: KafkaSettings, keep_per_gate: int, history_s: float) -> None:
        self.kafka = kafka
        self.keep_per_gate = keep_per_gate
        self.history_s = history_s
        self.ready = threading.Event()
        self._verdicts: dict[str, Verdict] = {}
        self._by_gate: dict[tuple[str, str], deque[str]] = {}
        self._last_seen: dict[str, float] = {}
        self._watchers: list[_Watcher] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verdict-hub", daemon=True)

    def start(self) -> VerdictHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = RdConsumer(self.kafka, f"facegate-console-{new_id()[:8]}", [VERDICTS.name])
        try:
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=200)
                if consumer.assignment():
                    self.ready.set()
                for records in batches.values():
                    for record in records:
                        self._add(record.value)
        except Exception:  # the page shows the hub as down; the log says why
            log.exception("verdict consumer stopped")
            self.ready.clear()
        finally:
            consumer.close()

    def _add(self, value: bytes) -> None:
        try:
            verdict = decode(value, Verdict)
        except SchemaError as exc:
            log.warning("unreadable verdict skipped: %s", exc)
            return
        if verdict.decided_at < time.time() - self.history_s:
            return
        key = (verdict.exam_id, verdict.gate_id)
        view = checkin_view(verdict)
        with self._lock:
            if verdict.frame_id in self._verdicts:  # a repeated delivery
                return
            frames = self._by_gate.setdefault(key, deque())
            frames.append(verdict.frame_id)
            self._verdicts[verdict.frame_id] = verdict
            while len(frames) > self.keep_per_gate:
                self._verdicts.pop(frames.popleft(), None)
            self._last_seen[verdict.gate_id] = max(
                self._last_seen.get(verdict.gate_id, 0.0), verdict.decided_at
            )
            watchers = [w for w in self._watchers if (w.exam_id, w.gate_id) == key]
        for watcher in watchers:
            watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, view)

    # ---- what pages read --------------------------------------------------------------------

    def watch(self, exam_id: str, gate_id: str) -> _Watcher:
        """Register a page's queue for the new check-ins of one exam and gate."""
        watcher = _Watcher(exam_id, gate_id, asyncio.Queue(), asyncio.get_running_loop())
        with self._lock:
            self._watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: _Watcher) -> None:
        with self._lock:
            self._watchers.remove(watcher)

    def recent(self, exam_id: str, gate_id: str) -> list[dict[str, Any]]:
        """The check-ins kept for an exam and gate, oldest first."""
        with self._lock:
            frames = list(self._by_gate.get((exam_id, gate_id), ()))
            return [checkin_view(self._verdicts[f]) for f in frames if f in self._verdicts]

    def verdict(self, frame_id: str) -> Verdict | None:
        """A kept verdict by frame id."""
        with self._lock:
            return self._verdicts.get(frame_id)

    def exams_and_gates(self) -> list[tuple[str, str]]:
        """Every (exam, gate) seen, sorted."""
        with self._lock:
            return sorted(self._by_gate)

    def gate_ages(self, at: float | None = None) -> dict[str, float]:
        """Seconds since each gate's last verdict."""
        at = time.time() if at is None else at
        with self._lock:
            return {gate: max(0.0, at - seen) for gate, seen in sorted(self._last_seen.items())}

    def alive(self) -> bool:
        """Whether the consumer thread runs and has its partitions."""
        return self._thread.is_alive() and self.ready.is_set()
