"""Tumbling windows of verdicts and feedback per gate and model version.

A window opens with the first record of its key and closes after ``size`` verdicts or
``seconds`` after it opened, whichever comes first; the next record of the key opens the next
window.  With ``all_gates`` every record also goes to its model version's window across all
gates (``gate_id`` None).  Time is whatever clock the caller passes (seconds), so tests drive it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.messages import Feedback
from stream_processors.drift.statistics import FeedbackCounts, VerdictSample


@dataclass(frozen=True)
class WindowKey:
    """Whose statistics a window holds: one gate (or all gates, None) under one model version."""

    gate_id: str | None
    model_version: str


@dataclass
class Window:
    """An open window: what it has collected since it opened."""

    key: WindowKey
    opened_at: float
    samples: list[VerdictSample] = field(default_factory=list)
    feedback: FeedbackCounts = field(default_factory=FeedbackCounts)


@dataclass(frozen=True)
class ClosedWindow:
    """A window that closed: ``full`` when it closed by count rather than by time."""

    key: WindowKey
    opened_at: float
    closed_at: float
    samples: list[VerdictSample]
    feedback: FeedbackCounts
    full: bool


class TumblingWindows:
    """The open windows of every key, closed by count or by age."""

    def __init__(self, size: int, seconds: float, all_gates: bool = True) -> None:
        if size < 1 or seconds <= 0:
            raise ValueError("a window needs a size of at least 1 and a positive duration")
        self.size = size
        self.seconds = seconds
        self.all_gates = all_gates
        self._open: dict[WindowKey, Window] = {}

    def __len__(self) -> int:
        return len(self._open)

    def open_windows(self) -> list[Window]:
        """The windows open now (for inspection)."""
        return list(self._open.values())

    def _keys(self, gate_id: str, model_version: str) -> list[WindowKey]:
        keys = [WindowKey(gate_id, model_version)]
        if self.all_gates:
            keys.append(WindowKey(None, model_version))
        return keys

    def _window(self, key: WindowKey, now: float, closed: list[ClosedWindow]) -> Window:
        window = self._open.get(key)
        if window is not None and now - window.opened_at >= self.seconds:
            closed.append(self._close(key, now, full=False))
            window = None
        if window is None:
            window = self._open[key] = Window(key, now)
        return window

    def _close(self, key: WindowKey, now: float, full: bool) -> ClosedWindow:
        window = self._open.pop(key)
        return ClosedWindow(key, window.opened_at, now, window.samples, window.feedback, full)

    def add_verdict(
        self, gate_id: str, model_version: str, sample: VerdictSample, now: float
    ) -> list[ClosedWindow]:
        """Add a verdict to its windows; return the windows it (or time) closed."""
        closed: list[ClosedWindow] = []
        for key in self._keys(gate_id, model_version):
            window = self._window(key, now, closed)
            window.samples.append(sample)
            if len(window.samples) >= self.size:
                closed.append(self._close(key, now, full=True))
        return closed

    def add_feedback(self, feedback: Feedback, now: float) -> list[ClosedWindow]:
        """Count a proctor decision in the windows of its gate and model version.

        It opens them if none is open (the verdict's window may have just closed); feedback
        never closes a window by count.
        """
        closed: list[ClosedWindow] = []
        for key in self._keys(feedback.gate_id, feedback.model_version):
            self._window(key, now, closed).feedback.add(feedback)
        return closed

    def expire(self, now: float) -> list[ClosedWindow]:
        """Close every window open for ``seconds`` or longer."""
        old = [k for k, w in self._open.items() if now - w.opened_at >= self.seconds]
        return [self._close(key, now, full=False) for key in old]

    def close_all(self, now: float) -> list[ClosedWindow]:
        """Close every open window (on shutdown)."""
        return [self._close(key, now, full=False) for key in list(self._open)]
