"""What a benchmark or soak run measures and with how many processes: shared by the CLI and
the modules that run them (which must not import the CLI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchPlan:
    """How much each part measures (bounded, so that the whole run has a known length)."""

    frames: int
    batch_sizes: tuple[int, ...]
    search_queries: int
    gate_requests: int
    online_requests: int
    naive_requests: int
    clients: int = 8
    gallery_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    # Stream processors of the pipeline profiles: detection is the heaviest stage and one
    # processor analyses one frame at a time (Helm's default streamProcessor.replicaCount is 2).
    stream_processors: int = 2
    # How long the model loops of the all-cores bound run together.
    all_cores_s: float = 10.0


# The students enrolled from the demo photos; their probe photos are the frames of every part.
STUDENTS = 6
# The most stream processors a bench starts (``--stream-processors``).
MAX_STREAM_PROCESSORS = 8
FULL = BenchPlan(60, (1, 2, 4, 8, 16), 500, 100, 600, 240)
QUICK = BenchPlan(16, (1, 8), 100, 20, 80, 40, all_cores_s=4.0)
# The soak runs one, unlike the benchmark's two: on a 2-core node under 2x overload the
# 10-minute soak failed its lag check with two (faces piled up before the worker, which shares
# the cores with them and waits on the local broker), also with the processors niced (README,
# Soak).
SOAK_STREAM_PROCESSORS = 1
