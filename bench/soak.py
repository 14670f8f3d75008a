"""The soak: the `online` pipeline at a multiple of its sustained rate for minutes, on loopback.

A private local stack (as the benchmark's), the demo's students enrolled, the stream processor
and an `online` worker as their own processes.  First the sustained rate is measured (closed
loop, 8 clients); then frames are offered open-loop at ``factor`` times that rate for the whole
duration, while a sampler records the backlog (frames published and not yet answered), the
resident memory of every service and the verdicts by reason.  After the offered load stops the
pipeline drains, and every frame must have exactly one answer.

Past its capacity the pipeline stays up to date by answering frames that waited longer than
``FACEGATE_STREAM_MAX_FRAME_AGE_S`` with review/stale, unanalysed: the backlog levels off at
about that many seconds of frames instead of growing for as long as the overload lasts.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.memory import tree_rss_mb
from bench.models import BenchFrame
from bench.pipeline import (
    STACK_SERVICES,
    NotifyingCollector,
    pipeline_load,
    prepare,
    private_stack,
    service_pids,
    start_pipeline,
)
from bench.plan import SOAK_STREAM_PROCESSORS
from bench.soak_stats import (
    SoakSample,
    backlog_check,
    loss_check,
    memory_check,
    rates,
)
from bench.stats import percentile
from facegate.errors import FacegateError
from facegate.pipeline import VerdictCollector, instance_name, metrics_port
from facegate.settings import KafkaSettings
from schemas.codec import SchemaError, decode, encode
from schemas.messages import DeadLetter, Frame, Verdict, new_id, now
from schemas.topics import FRAMES, VERDICTS


@dataclass(frozen=True)
class SoakPlan:
    """How long and how hard the soak runs."""

    duration_s: float = 600.0
    factor: float = 2.0
    # Offered rate in frames/s; None: ``factor`` times the sustained rate measured first.
    rate_fps: float | None = None
    sample_s: float = 10.0
    clients: int = 8
    calibration_requests: int = 200
    drain_timeout_s: float = 300.0
    stream_processors: int = SOAK_STREAM_PROCESSORS


class CountingCollector(VerdictCollector):
    """Counts answers by frame id without keeping the messages (a soak sees tens of thousands)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        super().__init__(kafka)
        self.ids: set[str] = set()
        self.duplicates = 0
        self.reasons: Counter[str] = Counter()
        self.dead = 0
        self.stale = 0
        self._latencies: list[float] = []

    def _add(self, topic: str, value: bytes) -> None:
        try:
            if topic == VERDICTS.name:
                verdict = decode(value, Verdict)
                frame_id: str | None = verdict.frame_id
                reason: str = verdict.reason
            else:
                letter = decode(value, DeadLetter)
                frame_id, reason = letter.frame_id, f"dead:{letter.reason}"
        except SchemaError:
            self.unreadable += 1
            return
        with self._lock:
            self.reasons[reason] += 1
            if reason.startswith("dead:"):
                self.dead += 1
            elif reason == "stale":
                self.stale += 1
            else:
                self._latencies.append((verdict.decided_at - verdict.captured_at) * 1000)
            if frame_id is None:
                return
            if frame_id in self.ids:
                self.duplicates += 1
            self.ids.add(frame_id)

    def answered_count(self, frame_ids: set[str]) -> int:
        with self._lock:
            return len(self.ids & frame_ids)

    def take_latencies(self) -> list[float]:
        """The analysed verdicts' latencies since the last call."""
        with self._lock:
            taken, self._latencies = self._latencies, []
        return taken


class OpenLoopPublisher:
    """Publishes frames at a fixed rate in a thread, whatever the pipeline does meanwhile."""

    def __init__(self, checkins: list[BenchFrame], rate_fps: float, gates: int = 8) -> None:
        self.checkins = checkins
        self.rate_fps = rate_fps
        self.gates = gates
        self.frame_ids: set[str] = set()
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-publisher", daemon=True)

    def start(self) -> OpenLoopPublisher:
        self._thread.start()
        return self

    def published(self) -> int:
        with self._lock:
            return len(self.frame_ids)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.frame_ids)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        from facegate.kafka_clients import make_producer
        from facegate.settings import load_settings

        # Sends are not awaited one by one (a camera does not wait for the broker either): a
        # frame counts as published when the broker acknowledges it; at most ``in_flight``
        # frames are unacknowledged, so a broker that cannot keep up slows the offered rate,
        # which the report shows as the achieved rate.
        producer = make_producer(load_settings(KafkaSettings))
        in_flight = threading.BoundedSemaphore(256)
        started = time.monotonic()
        number = 0
        try:
            while not self._stop.is_set():
                due = started + number / self.rate_fps
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                checkin = self.checkins[number % len(self.checkins)]
                stamp = now()
                frame = Frame(
                    frame_id=new_id(),
                    gate_id=f"soak-gate-{number % self.gates}",
                    exam_id="soak",
                    claimed_student_id=checkin.student_id,
                    captured_at=stamp,
                    published_at=stamp,
                    source="test",
                    image=checkin.jpeg,
                )
                in_flight.acquire()
                future = producer.send(FRAMES.name, key=frame.gate_id.encode(), value=encode(frame))
                future.add_callback(self._acked, frame.frame_id, in_flight)
                future.add_errback(self._failed, in_flight)
                number += 1
        finally:
            producer.flush(timeout=60)
            producer.close(timeout=10)

    def _acked(self, frame_id: str, in_flight: threading.BoundedSemaphore, _: Any) -> None:
        with self._lock:
            self.frame_ids.add(frame_id)
        in_flight.release()

    def _failed(self, in_flight: threading.BoundedSemaphore, _: Any) -> None:
        with self._lock:
            self.failures += 1
        in_flight.release()


def consumer_lag(metrics_ports: dict[str, int]) -> dict[str, float]:
    """``facegate_consumer_lag`` summed per topic, from each service's metrics endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    lag: dict[str, float] = {}
    for port in metrics_ports.values():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name != "facegate_consumer_lag":
                continue
            for sample in family.samples:
                topic = sample.labels.get("topic", "?")
                lag[topic] = lag.get(topic, 0.0) + sample.value
    return lag


def _sample(
    t_s: float,
    publisher: OpenLoopPublisher,
    collector: CountingCollector,
    pids: dict[str, int],
    metrics_ports: dict[str, int],
) -> SoakSample:
    ids = publisher.ids()
    latencies = collector.take_latencies()
    return SoakSample(
        t_s=round(t_s, 1),
        published=len(ids),
        answered=collector.answered_count(ids),
        stale=collector.stale,
        dead_letters=collector.dead,
        duplicates=collector.duplicates,
        rss_mb={name: round(tree_rss_mb(pid), 1) for name, pid in pids.items()},
        consumer_lag=consumer_lag(metrics_ports),
        e2e_p50_ms=round(percentile(latencies, 50), 1) if latencies else None,
        e2e_p95_ms=round(percentile(latencies, 95), 1) if latencies else None,
    )


def run_soak(
    plan: SoakPlan,
    photos: Path,
    students: int,
    checkins: list[BenchFrame],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The whole soak; its report (samples, rates and checks)."""
    from bench.pipeline import photos_first

    with private_stack(say) as stack:
        say("    enrolling the demo students")
        prepare(photos, students)
        # The services export their consumer lag; the soak reads it (private_stack restores
        # the environment afterwards).
        from facegate.stack.ports import free_port_block

        # Stream processor n serves 10 * (n - 1) ports above the first (metrics_port).
        first = free_port_block(10 * plan.stream_processors, start=30000)
        ports = {
            "FACEGATE_STREAM_METRICS_PORT": str(first),
            "FACEGATE_WORKER_METRICS_PORT": str(first + 1),
        }
        os.environ.update(ports)
        instances = [("stream-processor", n) for n in range(1, plan.stream_processors + 1)]
        metrics_ports: dict[str, int] = {}
        for service, instance in [*instances, ("worker", 1)]:
            port = metrics_port(service, ports, instance)
            assert port is not None  # both variables are set just above
            metrics_ports[instance_name(service, instance)] = port
        waiter = NotifyingCollector(KafkaSettings())
        waiter.start()
        try:
            warm = start_pipeline(
                stack, waiter, "online", photos_first(photos), plan.stream_processors
            )
            say(f"    online pipeline serving after {warm:.1f} s")
            sustained: float | None = None
            if plan.rate_fps is None:
                say(f"    sustained rate: {plan.calibration_requests} check-ins, 8 clients")
                result, _ = pipeline_load(waiter, checkins, plan.clients, plan.calibration_requests)
                sustained = result.throughput
        finally:
            waiter.stop()
        offered = plan.rate_fps if plan.rate_fps is not None else (sustained or 0.0) * plan.factor
        if offered <= 0:
            raise FacegateError(
                f"nothing to offer: sustained rate {sustained} fps, factor {plan.factor}, "
                f"--rate {plan.rate_fps}; see the services' logs under {stack.state_dir}"
            )
        say(
            f"    sustained {sustained or float('nan'):.2f} fps; offering {offered:.2f} fps for "
            f"{plan.duration_s:.0f} s, a sample every {plan.sample_s:.0f} s"
        )
        collector = CountingCollector(KafkaSettings())
        collector.start()
        pids = service_pids(stack)
        samples: list[SoakSample] = []
        publisher = OpenLoopPublisher(checkins, offered).start()
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < plan.duration_s:
                time.sleep(min(plan.sample_s, max(0.0, plan.duration_s - elapsed)))
                sample = _sample(
                    time.monotonic() - started, publisher, collector, pids, metrics_ports
                )
                samples.append(sample)
                rss = ", ".join(f"{k} {v:.0f}" for k, v in sample.rss_mb.items())
                lag = ", ".join(f"{k} {v:.0f}" for k, v in sorted(sample.consumer_lag.items()))
                say(
                    f"    t={sample.t_s:5.0f}s published {sample.published} answered "
                    f"{sample.answered} backlog {sample.backlog} stale {sample.stale} "
                    f"p50 {sample.e2e_p50_ms} ms | lag {lag} | RSS MB {rss}"
                )
            publisher.stop()
            offered_s = time.monotonic() - started
            ids = publisher.ids()
            say(f"    offered load stopped; draining {len(ids)} frames")
            deadline = time.monotonic() + plan.drain_timeout_s
            while collector.answered_count(ids) < len(ids) and time.monotonic() < deadline:
                time.sleep(1.0)
            drained_s = time.monotonic() - started - offered_s
            time.sleep(2.0)  # late duplicates, if any, arrive
            final = _sample(time.monotonic() - started, publisher, collector, pids, metrics_ports)
        finally:
            publisher.stop()
            collector.stop()
    checks = {
        "backlog": backlog_check(samples, offered, plan.sample_s),
        # FaceGate's own services (every stream processor and the worker) are judged on memory;
        # the stack's servers are reported only (the in-memory broker keeps every record for
        # the topic's retention, by design).
        "memory": memory_check(samples, [n for n in pids if n not in STACK_SERVICES]),
        "loss": loss_check(final.published, final.answered, final.duplicates),
    }
    met = checks["backlog"]["met"] and checks["loss"]["met"]
    met = met and all(c["met"] for c in checks["memory"].values())
    second_half = samples[len(samples) // 2 :]
    p50s = [s.e2e_p50_ms for s in second_half if s.e2e_p50_ms is not None]
    p95s = [s.e2e_p95_ms for s in second_half if s.e2e_p95_ms is not None]
    analysed = final.answered - final.stale - final.dead_letters
    return {
        "sustained_fps": round(sustained, 2) if sustained is not None else None,
        "analysed_total": analysed,
        "analysed_fps": round(analysed / offered_s, 2) if offered_s else 0.0,
        # Medians of the per-sample figures (each sample: the verdicts since the previous one).
        "second_half_e2e_p50_ms": round(percentile(p50s, 50), 1) if p50s else None,
        "second_half_e2e_p95_ms": round(percentile(p95s, 50), 1) if p95s else None,
        "factor": plan.factor,
        "offered_fps": round(offered, 2),
        "duration_s": round(offered_s, 1),
        "published_fps": round(final.published / offered_s, 2) if offered_s else 0.0,
        "publish_failures": publisher.failures,
        "drain_s": round(drained_s, 1),
        "stale_total": collector.stale,
        "dead_letters_total": collector.dead,
        "reasons": dict(collector.reasons),
        "unreadable": collector.unreadable,
        "samples": [s.as_dict() for s in samples],
        "final": final.as_dict(),
        "rates": rates(samples),
        "other_rss_end_mb": {k: v for k, v in final.rss_mb.items() if k in STACK_SERVICES},
        "checks": checks,
        "met": met,
    }
