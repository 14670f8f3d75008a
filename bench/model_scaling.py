"""The model-only bound measured on every core at once, one process per core.

Per-core throughput times the number of cores assumes that the cores add up.  On the 2-core
nodes here they do not: two processes running the models together each ran at about two thirds
of the speed of one alone (why is not visible from inside the VM: two vCPUs on one physical
core, memory bandwidth, neighbours).  So the bound the pipeline is compared with is measured,
not multiplied: every process decodes, detects, aligns and embeds the same frames in a loop, all
starting together, for a fixed time.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.models import BenchFrame, load_models

START_TIMEOUT_S = 300.0


def _run_models(start: Any, results: Any, jpegs: list[bytes], batch: int, seconds: float) -> None:
    """One process: the models in a loop over ``jpegs`` for ``seconds``; frames/s to ``results``."""
    from stream_processors.image_decoding import decode_image

    models = load_models()
    template = models.embedder.card.template_name
    max_pixels = models.settings.max_pixels
    models.analyzer.analyze(decode_image(jpegs[0], max_pixels))  # warm-up
    start.wait(START_TIMEOUT_S)
    crops: list[npt.NDArray[np.uint8]] = []
    frames = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        analysis = models.analyzer.analyze(decode_image(jpegs[frames % len(jpegs)], max_pixels))
        if analysis.face is not None:
            crops.append(analysis.crops[template])
        if len(crops) >= batch:
            models.embedder.embed(crops)
            crops = []
        frames += 1
    # The last frame ends past the deadline: its time counts too.
    results.put(frames / (time.perf_counter() - started))


def all_cores_fps(
    frames: Sequence[BenchFrame], processes: int, batch: int, seconds: float
) -> dict[str, Any]:
    """Frames/s of ``processes`` model loops running together (spawned, so nothing is shared)."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    jpegs = [frame.jpeg for frame in frames]
    workers = [
        context.Process(target=_run_models, args=(start, results, jpegs, batch, seconds))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        rates = [results.get(timeout=START_TIMEOUT_S + seconds) for _ in workers]
    except queue.Empty as error:
        raise RuntimeError("a model process of the all-cores bound did not report") from error
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    return {
        "processes": processes,
        "batch": batch,
        "seconds": seconds,
        "fps_per_process": [round(rate, 2) for rate in rates],
        "fps": round(sum(rates), 2),
    }
