"""``facegate bench --quick`` end to end: every figure and every target lands in the JSON.

It starts its own private stack and takes one to two minutes on 2 cores, so it is ``slow``
(kept out of the default run; `make test-all` runs it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TARGETS = {
    "online_vs_model_bound",
    "online_vs_naive",
    "gate_p50_latency_ms",
    "search_p99_ms_at_largest",
    "search_growth_vs_linear",
    "max_service_rss_mb",
}


def test_bench_quick_writes_every_figure_and_target(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "facegate", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["targets"]) == TARGETS
    for entry in results["targets"].values():
        assert {"value", "goal", "met"} <= set(entry)
    bound = results["model_only"]
    # Measured before and after the pipeline; the pipeline is compared with their mean.
    before, after = bound["all_cores"]["fps"], bound["all_cores_after"]["fps"]
    assert before > 0 and after > 0
    assert bound["bound_fps"] == round((before + after) / 2, 2)
    online = results["targets"]["online_vs_model_bound"]["value"]
    assert online == pytest.approx(
        results["online"]["throughput_fps"] / bound["bound_fps"], abs=1e-3
    )
    frame_ms = (bound["frame_ms_batch1"] + bound["frame_ms_batch1_after"]) / 2
    assert bound["frame_ms_batch1_mean"] == round(frame_ms, 2)
    gate = results["targets"]["gate_p50_latency_ms"]
    assert gate["goal"] == pytest.approx(1.3 * bound["frame_ms_batch1_mean"] + 10.0, abs=0.01)
    for measured in (bound["all_cores"], bound["all_cores_after"]):
        assert len(measured["fps_per_process"]) == bound["cores"]
    assert bound["one_process"]["fps"] > 0
    for profile in ("gate", "online", "naive"):
        assert results[profile]["answered"] > 0
        assert results[profile]["end_to_end_ms"]["p50"] > 0
    assert {"detect", "embed"} <= set(results["online"]["stages_ms"])
    hop = results["broker_hop"]
    assert hop["hop_ms"]["count"] == hop["records"] == 100
    assert 0 < hop["produce_ack_ms"]["p50"] < hop["hop_ms"]["p50"]
    assert set(results["search_ms"]) == {"1000", "10000", "100000"}
    assert set(results["peak_rss_mb"]) >= {"broker", "redis", "s3", "mlflow", "worker"}
    cpu = results["cpu"]
    assert set(cpu["online"]["core_pct"]) >= {"broker", "worker", "stream-processor"}
    # Under load the services use more of the cores than idle, and the frames cost CPU.
    assert cpu["online"]["total_core_pct"] > cpu["idle"]["total_core_pct"]
    assert cpu["online"]["ms_per_frame"]["worker"] > 0
    assert (tmp_path / "bench.md").is_file()
    assert (tmp_path / "bench-online-latency.png").is_file()
    assert "target online_vs_naive" in run.stdout
