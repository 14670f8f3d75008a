"""The benchmark's pure parts: percentiles, targets, the report rows, the closed-loop load, and
the naive HTTP service's request handling (with a fake model that says it is a fake)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bench.cpu import SELF, CpuMeter
from bench.load import closed_loop
from bench.naive_server import CLAIM_HEADER, PATH, make_server
from bench.report import figure_rows, markdown_table, text_table
from bench.stats import compute_targets, latency_summary, percentile, stage_summary


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    summary = latency_summary(values)
    assert summary["count"] == 100
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["mean"] == pytest.approx(50.5)


def test_empty_latencies_are_nan_not_an_error() -> None:
    summary = latency_summary([])
    assert summary["count"] == 0
    assert summary["p50"] != summary["p50"]


def test_stage_summary_covers_stages_missing_from_some_rows() -> None:
    stages = stage_summary([{"detect": 10.0, "embed": 4.0}, {"detect": 20.0}])
    assert stages["detect"]["p50"] == pytest.approx(15.0)
    assert stages["embed"]["count"] == 1


def _targets(**overrides: Any) -> dict[str, dict[str, Any]]:
    figures: dict[str, Any] = {
        "online_fps": 45.0,
        "model_bound_fps": 50.0,
        "naive_fps": 15.0,
        "gate_p50_ms": 40.0,
        "model_frame_ms": 25.0,
        "search_p99_ms": {1000: 0.1, 10000: 0.5, 100000: 4.0},
        "search_p50_ms": {1000: 0.05, 10000: 0.3, 100000: 3.0},
        "peak_rss_mb": {"broker": 40.0, "worker": 400.0},
    }
    figures.update(overrides)
    return compute_targets(**figures)


def test_targets_met() -> None:
    targets = _targets()
    assert set(targets) == {
        "online_vs_model_bound",
        "online_vs_naive",
        "gate_p50_latency_ms",
        "search_p99_ms_at_largest",
        "search_growth_vs_linear",
        "max_service_rss_mb",
    }
    assert all(t["met"] for t in targets.values()), targets
    assert targets["online_vs_model_bound"]["value"] == pytest.approx(0.9)
    assert targets["online_vs_naive"]["value"] == pytest.approx(3.0)
    assert targets["gate_p50_latency_ms"]["goal"] == pytest.approx(1.3 * 25 + 10)
    # 3.0 / 0.05 = 60x the time for 100x the gallery: better than linear.
    assert targets["search_growth_vs_linear"]["value"] == pytest.approx(0.6)
    assert targets["max_service_rss_mb"]["value"] == 400.0


def test_targets_missed_each_for_its_own_reason() -> None:
    targets = _targets(
        online_fps=20.0,
        gate_p50_ms=60.0,
        search_p99_ms={1000: 0.1, 100000: 7.0},
        search_p50_ms={1000: 0.01, 100000: 5.0},
        peak_rss_mb={"mlflow": 1500.0, "worker": 400.0},
    )
    assert not targets["online_vs_model_bound"]["met"]
    assert not targets["online_vs_naive"]["met"]
    assert not targets["gate_p50_latency_ms"]["met"]
    assert not targets["search_p99_ms_at_largest"]["met"]
    assert not targets["search_growth_vs_linear"]["met"]
    assert not targets["max_service_rss_mb"]["met"]
    assert "mlflow" in targets["max_service_rss_mb"]["what"]


def test_a_figure_not_measured_is_null_and_not_met() -> None:
    targets = _targets(naive_fps=0.0)
    assert targets["online_vs_naive"] == {
        "value": None,
        "goal": 3.0,
        "met": False,
        "what": targets["online_vs_naive"]["what"],
    }
    json.dumps(targets)  # NaN never reaches the JSON


def test_closed_loop_counts_answers_failures_and_keeps_clients_busy() -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def send(client: int, number: int) -> bool:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        if number < 4:
            barrier.wait(timeout=5)  # the first four requests are all in flight at once
        with lock:
            in_flight -= 1
        if number % 10 == 9:
            raise RuntimeError("a failed request")
        return number % 10 != 8

    result = closed_loop(send, clients=4, requests=40)
    assert most == 4
    assert len(result.latencies_ms) == 32
    assert result.failures == 8
    assert result.throughput > 0


class FakeModel:
    """FAKE model for the request-handling test: no detector, no embedder, only a record."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str | None]] = []

    def verify(self, jpeg: bytes, claimed_student_id: str | None) -> dict[str, Any]:
        if jpeg == b"bad":
            raise ValueError("undecodable_image: fake")
        self.calls.append((jpeg, claimed_student_id))
        return {"outcome": "fake", "bytes": len(jpeg)}


@pytest.fixture
def naive_server() -> Iterator[tuple[int, FakeModel]]:
    model = FakeModel()
    server = make_server(model, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], model
    finally:
        server.shutdown()
        server.server_close()


def _post(port: int, body: bytes, path: str = PATH) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={CLAIM_HEADER: "s1"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_naive_server_answers_each_request_with_the_models_result(
    naive_server: tuple[int, FakeModel],
) -> None:
    port, model = naive_server
    assert _post(port, b"\xff\xd8frame") == (200, {"outcome": "fake", "bytes": 7})
    assert model.calls == [(b"\xff\xd8frame", "s1")]


def test_naive_server_refuses_bad_images_and_unknown_paths(
    naive_server: tuple[int, FakeModel],
) -> None:
    port, model = naive_server
    status, body = _post(port, b"bad")
    assert status == 422 and "undecodable_image" in body["error"]
    assert _post(port, b"x", path="/other")[0] == 404
    assert model.calls == []


def test_naive_server_under_concurrent_clients_answers_all(
    naive_server: tuple[int, FakeModel],
) -> None:
    port, model = naive_server
    result = closed_loop(lambda _c, n: _post(port, b"f%d" % n)[0] == 200, clients=8, requests=40)
    assert len(result.latencies_ms) == 40 and result.failures == 0
    assert len(model.calls) == 40


def test_report_rows_show_every_target_with_its_goal() -> None:
    summary = latency_summary([10.0, 20.0, 30.0])
    profile = {"clients": 8, "throughput_fps": 30.0, "end_to_end_ms": summary, "stages_ms": {}}
    results: dict[str, Any] = {
        "plan": {"stream_processors": 2},
        "model_only": {
            "front_ms_mean": 20.0,
            "embed_ms_per_face": {"1": 6.0, "8": 5.0},
            "per_core_fps": {"1": 38.5, "8": 40.0},
            "best_batch": 8,
            "cores": 2,
            "linear_bound_fps": 80.0,
            "one_process": {"fps": 40.0},
            "all_cores": {"fps": 50.0},
            "all_cores_after": {"fps": 54.0},
            "bound_fps": 52.0,
            "frame_ms_batch1": 14.3,
            "frame_ms_batch1_after": 13.9,
            "frame_ms_batch1_mean": 14.1,
        },
        "broker_hop": {
            "record_bytes": 52_000,
            "produce_ack_ms": latency_summary([2.0, 3.0]),
            "hop_ms": summary,
        },
        "gate": {**profile, "clients": 1},
        "online": profile,
        "naive": profile,
        "search_ms": {
            "1000": {**summary, "enrolment_ms": {"new": 0.02, "replayed": 0.01, "changed": 0.2}}
        },
        "providers": {"cpu_over_openvino": {"1": 1.4}},
        "peak_rss_mb": {"worker": 400.0},
        "cpu": {
            "idle": {"core_pct": {"broker": 20.0}, "total_core_pct": 20.0},
            "online": {
                "core_pct": {"broker": 30.0},
                "total_core_pct": 30.0,
                "ms_per_frame": {"broker": 7.5},
                "total_ms_per_frame": 7.5,
            },
        },
        "targets": _targets(),
    }
    rows = figure_rows(results)
    target_rows = [r for r in rows if r[0].startswith("target ")]
    assert len(target_rows) == 6
    assert all("goal" in r[2] and "met" in r[2] for r in target_rows)
    assert "gate (1 client) throughput" in text_table(rows)
    assert ("pipeline stream processors (one consumer group)", "2", "") in rows
    hop = "broker hop alone p50/p95/p99 ms (52 KB record, produce ack 2.5 ms p50)"
    assert (hop, "20.0 / 29.0 / 29.8", "") in rows
    enrolment = "enrolment into 1,000 p50 ms (new / replayed / changed)"
    assert (enrolment, "0.02 / 0.01 / 0.2", "") in rows
    bound = (
        "model-only bound: 2 processes at once, before / after the pipeline; their mean "
        "(frames/s; x one process alone)"
    )
    assert (bound, "50.0 / 54.0; 52.0 (x1.30)", "") in rows
    frame = (
        "model-only ms for one frame, batch 1 (the gate goal's yardstick), before / after the "
        "pipeline; their mean"
    )
    assert (frame, "14.3 / 13.9; 14.1", "") in rows
    cpu = "CPU broker: % of a core idle / online, online ms per frame"
    assert (cpu, "20.0 / 30.0, 7.5", "") in rows
    assert markdown_table(rows).count("\n") == len(rows) + 2


def test_cpu_meter_counts_this_process_burning_a_core() -> None:
    meter = CpuMeter(dict).start()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    used = meter.stop(frames=3)
    assert 200 <= used["ms_per_frame"][SELF] * 3 <= 600
    assert used["core_pct"][SELF] > 30
    assert used["total_ms_per_frame"] == used["ms_per_frame"][SELF]


def test_cpu_meter_leaves_the_services_this_process_started_out_of_its_own_share() -> None:
    burn = "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        meter = CpuMeter(lambda: {"service": child.pid}).start()
        time.sleep(0.5)
        used = meter.stop()
    finally:
        child.wait()
    assert used["core_pct"]["service"] > 30
    # Counting the child would make this process's share at least the child's; its own threads
    # (a test session's clients) may use some CPU meanwhile.
    assert used["core_pct"][SELF] < used["core_pct"]["service"] / 2


def test_rss_sampler_counts_a_services_children_and_keeps_its_peak() -> None:
    from bench.memory import RssSampler

    # A service whose child holds 64 MB for a moment (as MLflow's server runs its workers as
    # children), then exits: the peak stays.
    hold = "import time\nblock = bytearray(64 << 20)\ntime.sleep(1.5)"
    parent = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {hold!r}])\n"
        "import time\ntime.sleep(0.5)"
    )
    service = subprocess.Popen([sys.executable, "-c", parent])
    try:
        sampler = RssSampler(lambda: {"service": service.pid}, period_s=0.1).start()
        time.sleep(1.2)
        during = dict(sampler.peak_mb)
        service.wait(timeout=10)
        peaks = sampler.stop()
    finally:
        service.kill()
    # The child's block counted with its parent, and still the peak once both have exited.
    assert peaks["service"] >= during["service"] > 64


def test_all_cores_bound_runs_the_models_in_every_process_together() -> None:
    from bench.model_scaling import all_cores_fps
    from bench.models import probe_frames
    from producers.roster import demo_photo_folder

    frames = probe_frames(demo_photo_folder(), 6)[:4]
    result = all_cores_fps(frames, processes=2, batch=2, seconds=1.0)
    assert result["processes"] == 2 and len(result["fps_per_process"]) == 2
    # Real frames through the real models: tens of frames a second, not zero, not thousands.
    assert all(2 < rate < 1000 for rate in result["fps_per_process"])
    assert result["fps"] == pytest.approx(sum(result["fps_per_process"]), abs=0.02)


def test_model_only_figures_are_the_mean_of_the_measurements_before_and_after_the_pipeline() -> (
    None
):
    from bench.stats import bracketing_mean

    assert bracketing_mean(97.16, 80.0) == 88.58
    assert bracketing_mean(60.0, 60.0) == 60.0
