"""The drift monitor without Kafka: records in, drift reports out.

:class:`DriftMonitor` takes decoded verdicts and feedback (and the time), keeps the tumbling
windows, and turns every closed window with enough verdicts into a ``DriftReport``: the
window's own statistics, its drift against the reference window of its gate and model version,
and the bounds breached.  The first full window (closed by count) of a gate and model version
becomes its reference when there is none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from schemas.messages import DriftReport, Feedback, Verdict, new_id
from stream_processors.drift.reference import MemoryReferenceStore, ReferenceStore, gate_label
from stream_processors.drift.settings import DriftSettings
from stream_processors.drift.statistics import (
    Reference,
    VerdictSample,
    drift_statistics,
    sketch_matrix,
    window_statistics,
)
from stream_processors.drift.thresholds import breaches
from stream_processors.drift.windows import ClosedWindow, TumblingWindows

log = logging.getLogger(__name__)


class DriftMonitor:
    """Windows, references and bounds of every gate and model version."""

    def __init__(
        self,
        settings: DriftSettings,
        references: ReferenceStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.references: ReferenceStore = references or MemoryReferenceStore()
        self.clock = clock
        self.bounds = settings.bounds()
        self.windows = TumblingWindows(
            settings.window_size, settings.window_seconds, settings.all_gates
        )
        self.dropped_windows = 0

    def add_verdict(self, verdict: Verdict) -> list[DriftReport]:
        """Count a verdict; return the reports of the windows that closed.

        A ``stale`` verdict (the frame was shed unanalysed under overload) says nothing about
        the cameras or the model: it is not counted.
        """
        if verdict.reason == "stale":
            return self.tick()
        sample = VerdictSample.from_verdict(verdict)
        closed = self.windows.add_verdict(
            verdict.gate_id, verdict.model_version, sample, self.clock()
        )
        return self._reports(closed)

    def add_feedback(self, feedback: Feedback) -> list[DriftReport]:
        """Count a proctor decision; return the reports of windows that time closed meanwhile."""
        return self._reports(self.windows.add_feedback(feedback, self.clock()))

    def tick(self) -> list[DriftReport]:
        """Close the windows that are old enough; return their reports."""
        return self._reports(self.windows.expire(self.clock()))

    def close_all(self) -> list[DriftReport]:
        """Close every open window (on shutdown); those with enough verdicts are reported."""
        return self._reports(self.windows.close_all(self.clock()))

    def _reports(self, closed: list[ClosedWindow]) -> list[DriftReport]:
        reports = []
        for window in closed:
            report = self.report(window)
            if report is not None:
                reports.append(report)
        return reports

    def report(self, window: ClosedWindow) -> DriftReport | None:
        """The report of a closed window, or None when it has too few verdicts."""
        key = window.key
        if len(window.samples) < self.settings.min_samples:
            self.dropped_windows += 1
            log.debug(
                "window of %s/%s dropped: %d verdicts < %d",
                gate_label(key.gate_id),
                key.model_version,
                len(window.samples),
                self.settings.min_samples,
            )
            return None
        statistics = window_statistics(window.samples, window.feedback, self.settings.min_feedback)
        report_id = new_id()
        reference = self.references.get(key.model_version, key.gate_id)
        if reference is not None:
            statistics.update(
                drift_statistics(statistics, sketch_matrix(window.samples), reference)
            )
        elif window.full:
            self.references.put(
                key.model_version,
                key.gate_id,
                Reference.from_window(window.samples, statistics, window.closed_at, report_id),
            )
            statistics["reference_window"] = 1.0
            log.info(
                "drift reference of %s/%s: window %s (%d verdicts)",
                gate_label(key.gate_id),
                key.model_version,
                report_id,
                len(window.samples),
            )
        return DriftReport(
            report_id=report_id,
            gate_id=key.gate_id,
            model_version=key.model_version,
            window_start=window.opened_at,
            window_end=window.closed_at,
            samples=len(window.samples),
            statistics=statistics,
            thresholds={bound.statistic: bound.limit for bound in self.bounds},
            breached=breaches(statistics, self.bounds),
        )
