"""MLflow down: the worker keeps serving the model it has loaded, and says so in its metrics."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import FaultPipeline, one_verdict_each
from tests.gate_frames import frames_of, publish

pytestmark = [pytest.mark.faults]

REGISTRY_ERRORS = "facegate_worker_registry_errors_total"


def test_registry_outage_keeps_the_loaded_model_serving(fault_pipeline: FaultPipeline) -> None:
    pipeline = fault_pipeline
    photos = [(s.student_id, p) for s in pipeline.students() for p in s.probe_photos[:2]]
    errors_before = pipeline.metric("worker", REGISTRY_ERRORS)

    pipeline.fault.stop("mlflow")
    try:
        ids = publish(frames_of(photos, "mlflow-outage"))
        missing = pipeline.collector.wait_for(ids, timeout_s=60)
        assert not missing, f"{len(missing)} frames without a verdict while MLflow was down"
        verdicts = one_verdict_each(pipeline.collector, ids)
        # Decided by the model the worker had loaded before the outage, not a fallback.
        assert {v.model_version for v in verdicts.values()} == {pipeline.model_version}
        assert any(v.decision == "accept" for v in verdicts.values())

        # The follower polls the registry every 2 s: it fails, counts it, and keeps serving.
        deadline = time.monotonic() + 30
        while pipeline.metric("worker", REGISTRY_ERRORS) <= errors_before:
            assert time.monotonic() < deadline, "the worker never noticed the registry was down"
            time.sleep(0.5)
        assert pipeline.stack.table.running("worker") is not None
    finally:
        pipeline.fault.restart()

    assert pipeline.stack.table.running("mlflow") is not None
    ids = publish(frames_of(photos[:4], "mlflow-back"))
    assert not pipeline.collector.wait_for(ids, timeout_s=60)
    after = one_verdict_each(pipeline.collector, ids)
    assert {v.model_version for v in after.values()} == {pipeline.model_version}
    # Once MLflow answers again the follower's polls succeed: the error count stops rising.
    deadline = time.monotonic() + 40
    settled = pipeline.metric("worker", REGISTRY_ERRORS)
    while True:
        time.sleep(6)
        now_errors = pipeline.metric("worker", REGISTRY_ERRORS)
        if now_errors == settled:
            break
        assert time.monotonic() < deadline, "registry errors keep rising after the restart"
        settled = now_errors
