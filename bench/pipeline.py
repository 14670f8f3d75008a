"""The pipeline through a private local stack: `gate` and `online` profiles under closed-loop load.

The stack runs on free ports with its own state directory (a fresh in-memory broker), the
calibrated champion is registered, the demo's students are enrolled, and the stream processors
(``--stream-processors``, one consumer group) and the worker run as their own processes, as
``facegate demo`` starts them.  Everything is stopped at the end.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.broker_hop import broker_hop_ms
from bench.cpu import CpuMeter, idle_cpu
from bench.load import LoadResult, closed_loop
from bench.memory import RssSampler
from bench.models import ROSTER_SEED, BenchFrame
from bench.plan import MAX_STREAM_PROCESSORS
from bench.stats import latency_summary, stage_summary
from facegate.pipeline import VerdictCollector
from facegate.settings import KafkaSettings
from facegate.stack import LocalStack
from facegate.stack.ports import private_stack_settings
from schemas.messages import Frame, Verdict, new_id, now

STACK_SERVICES = ("broker", "redis", "s3", "mlflow")


class NotifyingCollector(VerdictCollector):
    """A verdict collector that wakes whoever waits for a frame's answer."""

    def __init__(self, kafka: KafkaSettings) -> None:
        super().__init__(kafka)
        self._waiting: dict[str, threading.Event] = {}
        self._by_frame: dict[str, Verdict] = {}
        self._guard = threading.Lock()

    def expect(self, frame_id: str) -> threading.Event:
        """An event set when ``frame_id`` is answered (verdict or dead letter)."""
        event = threading.Event()
        with self._guard:
            self._waiting[frame_id] = event
        return event

    def verdict(self, frame_id: str) -> Verdict | None:
        with self._guard:
            return self._by_frame.get(frame_id)

    def _add(self, topic: str, value: bytes) -> None:
        before = (len(self.verdicts), len(self.dead_letters))
        super()._add(topic, value)
        answered = [v.frame_id for v in self.verdicts[before[0] :]]
        answered += [d.frame_id for d in self.dead_letters[before[1] :] if d.frame_id]
        with self._guard:
            for verdict in self.verdicts[before[0] :]:
                self._by_frame[verdict.frame_id] = verdict
            for frame_id in answered:
                event = self._waiting.pop(frame_id, None)
                if event is not None:
                    event.set()


@contextmanager
def private_stack(say: Callable[[str], None]) -> Iterator[LocalStack]:
    """A private stack, its endpoints exported to this process while it runs, then stopped."""
    with tempfile.TemporaryDirectory(prefix="facegate-bench-") as state:
        stack = LocalStack(private_stack_settings(Path(state)))
        saved = dict(os.environ)
        try:
            os.environ.update(stack.up(progress=lambda line: say(f"    {line}")))
            yield stack
        finally:
            for name in pipeline_processes(MAX_STREAM_PROCESSORS):
                stack.table.stop(name)
            stack.down()
            os.environ.clear()
            os.environ.update(saved)


def prepare(photos: Path, students: int) -> list[str]:
    """Register the champion and enrol ``students`` from ``photos``; the enrolled ids."""
    from facegate.pipeline import ensure_champion
    from facegate.settings import MlflowSettings, load_settings
    from inference_worker.enrollment import RosterEntry
    from inference_worker.enrollment_service import enroll_roster
    from producers.roster import load_roster

    ensure_champion(load_settings(MlflowSettings))
    roster = load_roster(photos, students, seed=ROSTER_SEED, min_enroll=2)
    summary = enroll_roster(
        [RosterEntry(s.student_id, s.name, s.enrollment_photos) for s in roster.students]
    )
    return list(summary.enrolled)


def pipeline_processes(stream_processors: int) -> list[str]:
    """Process names of the pipeline with ``stream_processors`` stream processors."""
    from facegate.pipeline import instance_name

    names = [instance_name("stream-processor", i) for i in range(1, stream_processors + 1)]
    return [*names, "worker"]


def start_pipeline(
    stack: LocalStack,
    collector: NotifyingCollector,
    profile: str,
    warmup: Path,
    stream_processors: int = 1,
) -> float:
    """(Re)start ``stream_processors`` stream processors (one consumer group sharing the
    partitions of ``frames``) and a worker of ``profile``; seconds until serving."""
    from facegate.pipeline import service_env, start_service, wait_until_serving

    # A worker of the other profile stops first; the stream processors keep running.
    stack.table.stop("worker")
    env = service_env(stack.endpoints())
    for instance in range(1, stream_processors + 1):
        start_service(stack, "stream-processor", env, profile, instance)
    start_service(stack, "worker", env, profile)
    return wait_until_serving(collector, stack, warmup, timeout_s=300)


def pipeline_load(
    collector: NotifyingCollector,
    checkins: list[BenchFrame],
    clients: int,
    requests: int,
    timeout_s: float = 60.0,
) -> tuple[LoadResult, list[Verdict]]:
    """Each client publishes a frame from its own gate and waits for its verdict, repeatedly."""
    from facegate.settings import load_settings
    from producers.publisher import FramePublisher
    from producers.settings import ProducerSettings

    frame_ids: list[str] = []
    with FramePublisher(load_settings(ProducerSettings)) as publisher:

        def send(client: int, number: int) -> bool:
            checkin = checkins[number % len(checkins)]
            frame_id = new_id()
            answered = collector.expect(frame_id)
            frame_ids.append(frame_id)
            publisher.publish(
                Frame(
                    frame_id=frame_id,
                    gate_id=f"bench-gate-{client}",
                    exam_id="bench",
                    claimed_student_id=checkin.student_id,
                    captured_at=now(),
                    published_at=now(),
                    source="test",
                    image=checkin.jpeg,
                )
            )
            return answered.wait(timeout_s)

        result = closed_loop(send, clients, requests)
    verdicts = [v for f in frame_ids if (v := collector.verdict(f)) is not None]
    return result, verdicts


def profile_figures(result: LoadResult, verdicts: list[Verdict]) -> dict[str, Any]:
    """Throughput, end-to-end latency (capture to decision) and per-stage latency of a load."""
    end_to_end = [(v.decided_at - v.captured_at) * 1000 for v in verdicts]
    return {
        "clients": result.clients,
        "answered": len(result.latencies_ms),
        "failed": result.failures,
        "wall_s": round(result.wall_s, 2),
        "throughput_fps": round(result.throughput, 2),
        "end_to_end_ms": latency_summary(end_to_end),
        "client_round_trip_ms": latency_summary(result.latencies_ms),
        "stages_ms": stage_summary([v.timings_ms for v in verdicts]),
        "decisions": _count(v.decision for v in verdicts),
        "_latencies": end_to_end,
    }


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item)] = counts.get(str(item), 0) + 1
    return counts


def service_pids(stack: LocalStack) -> dict[str, int]:
    """Pid of each running service of the stack and pipeline."""
    pids = {}
    for name in (*STACK_SERVICES, *pipeline_processes(MAX_STREAM_PROCESSORS)):
        record = stack.table.running(name)
        if record is not None:
            pids[name] = record.pid
    return pids


def run_pipeline(
    photos: Path,
    students: int,
    checkins: list[BenchFrame],
    gate_requests: int,
    online_requests: int,
    online_clients: int,
    say: Callable[[str], None],
    stream_processors: int = 1,
) -> dict[str, Any]:
    """Both profiles through a private stack, with peak RSS of every service under online load
    and the CPU of each service idle and under that load.

    ``stream_processors`` processes share the frames from the start (the gate profile's one
    gate keeps one of them busy), so that no rebalance lands in the online load."""
    with private_stack(say) as stack:
        say("    one broker hop on its own (librdkafka clients, one record at a time)")
        median_frame = sorted(checkins, key=lambda c: len(c.jpeg))[len(checkins) // 2]
        hop = broker_hop_ms(KafkaSettings(), median_frame.jpeg)
        say("    enrolling the demo students")
        prepare(photos, students)
        collector = NotifyingCollector(KafkaSettings())
        collector.start()
        try:
            first = photos_first(photos)
            warm = start_pipeline(stack, collector, "gate", first, stream_processors)
            say(f"    gate profile serving after {warm:.1f} s; {gate_requests} check-ins, 1 gate")
            gate = profile_figures(*pipeline_load(collector, checkins, 1, gate_requests))
            warm = start_pipeline(stack, collector, "online", first, stream_processors)
            say(
                f"    online profile serving after {warm:.1f} s; {online_requests} check-ins, "
                f"{online_clients} clients"
            )

            def pids() -> dict[str, int]:
                return service_pids(stack)

            say("    idle for 5 s: CPU of each service with nothing to do")
            idle = idle_cpu(pids, 5.0)
            sampler = RssSampler(pids).start()
            meter = CpuMeter(pids).start()
            result, verdicts = pipeline_load(collector, checkins, online_clients, online_requests)
            busy = meter.stop(len(result.latencies_ms))
            online = profile_figures(result, verdicts)
            rss = sampler.stop()
        finally:
            collector.stop()
    return {
        "broker_hop": hop,
        "gate": gate,
        "online": online,
        "peak_rss_mb": rss,
        "cpu": {"idle": idle, "online": busy},
    }


def photos_first(folder: Path) -> Path:
    """A photo to warm the pipeline with."""
    return next(p for p in sorted(folder.glob("*/*.jpg")))


def wait_for_port(port: int, timeout_s: float) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s:.0f} s")
