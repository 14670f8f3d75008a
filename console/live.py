"""Verdicts pushed live to the console: a Kafka consumer thread fans them out to open pages.

The consumer reads the ``verdicts`` topic from the beginning in its own group (one per console
process, so every console sees every verdict), keeps the last check-ins of each gate in memory
for pages opened later, and hands each new one to the pages watching its exam and gate.
Nothing is polled: a page's event stream waits on its own queue.

It reads ``frames.dlq`` too: a check-in whose frame or face could not be processed (a corrupt
image, an analysis that failed) is shown at its gate as ``unprocessed`` with the reason, so
the proctor asks for a new picture instead of waiting for a verdict that will not come.  A
verdict for the same frame (after ``facegate dlq replay``) takes its place.
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
from schemas.messages import DeadLetter, Face, Frame, Verdict, new_id
from schemas.topics import FACES, FRAMES, FRAMES_DLQ, VERDICTS

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


def letter_view(letter: DeadLetter) -> dict[str, Any] | None:
    """What a page shows of a check-in that could not be processed, from the frame or face
    record the dead letter carries; None when it names no check-in (another topic's record,
    or one too broken to tell its exam and gate)."""
    if letter.payload is None or letter.source_topic not in (FRAMES.name, FACES.name):
        return None
    message: Frame | Face
    try:
        if letter.source_topic == FRAMES.name:
            message = decode(letter.payload, Frame)
        else:
            message = decode(letter.payload, Face)
    except SchemaError:
        return None
    return {
        "frame_id": message.frame_id,
        "exam_id": message.exam_id,
        "gate_id": message.gate_id,
        "student_id": message.claimed_student_id,
        "decision": "unprocessed",
        "reason": letter.reason,
        "score": None,
        "threshold": None,
        "top_match": None,
        "top_score": None,
        "model_version": None,
        "captured_at": message.captured_at,
        "decided_at": letter.failed_at,
        "has_thumbnail": False,
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
        # What pages show, by frame id: every kept verdict's view, and unprocessed check-ins.
        self._views: dict[str, dict[str, Any]] = {}
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
        consumer = RdConsumer(
            self.kafka, f"facegate-console-{new_id()[:8]}", [VERDICTS.name, FRAMES_DLQ.name]
        )
        try:
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=200)
                if consumer.assignment():
                    self.ready.set()
                for records in batches.values():
                    for record in records:
                        if record.topic == FRAMES_DLQ.name:
                            self._add_letter(record.value)
                        else:
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
        self._keep(checkin_view(verdict), verdict)

    def _add_letter(self, value: bytes) -> None:
        try:
            view = letter_view(decode(value, DeadLetter))
        except SchemaError as exc:
            log.warning("unreadable dead letter skipped: %s", exc)
            return
        if view is None or view["decided_at"] < time.time() - self.history_s:
            return
        self._keep(view, None)

    def _keep(self, view: dict[str, Any], verdict: Verdict | None) -> None:
        """Keep a check-in's view (and its verdict) and push it to the pages watching its gate."""
        frame_id = view["frame_id"]
        key = (view["exam_id"], view["gate_id"])
        with self._lock:
            # A repeated delivery, or a dead letter of a frame answered anyway: nothing new.
            # A verdict after a dead letter (the frame replayed) takes the letter's place.
            if frame_id in self._verdicts or (verdict is None and frame_id in self._views):
                return
            frames = self._by_gate.setdefault(key, deque())
            if frame_id not in self._views:
                frames.append(frame_id)
            self._views[frame_id] = view
            if verdict is not None:
                self._verdicts[frame_id] = verdict
                self._last_seen[verdict.gate_id] = max(
                    self._last_seen.get(verdict.gate_id, 0.0), verdict.decided_at
                )
            while len(frames) > self.keep_per_gate:
                gone = frames.popleft()
                self._views.pop(gone, None)
                self._verdicts.pop(gone, None)
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
            return [self._views[f] for f in frames if f in self._views]

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
