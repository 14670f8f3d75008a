"""Rendering check-ins on real LFW photos, and publishing a small day into a list.

``ListSink`` stands in for Kafka here (a fake, said so): the publishing path against the real
broker is tested in tests/integration.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from producers.render import empty_scene, render_checkin
from producers.replay import iter_recording
from producers.roster import Roster, load_roster
from producers.simulator import (
    KINDS,
    PlannedCheckin,
    exam_morning,
    plan_exam_day,
    publish_exam_day,
)
from schemas.codec import decode
from schemas.messages import Frame


class ListSink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def publish(self, frame: Frame) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def roster(lfw_dir: Path) -> Roster:
    return load_roster(lfw_dir / "images", max_students=6, seed=2, max_outsiders=3)


@pytest.fixture(scope="module")
def plan(roster: Roster) -> list[PlannedCheckin]:
    return plan_exam_day(roster.students, roster.outsiders, ["gate-1"], exam_morning(2), seed=5)


def _first(plan: list[PlannedCheckin], kind: str) -> PlannedCheckin:
    return next(p for p in plan if p.kind == kind)


def _decode(jpeg: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)


def test_every_kind_renders(plan: list[PlannedCheckin]) -> None:
    assert {p.kind for p in plan} == set(KINDS)
    images = {kind: render_checkin(_first(plan, kind)) for kind in KINDS}
    for kind, jpeg in images.items():
        assert jpeg[:2] == b"\xff\xd8", kind
        if kind != "corrupt":
            assert _decode(jpeg) is not None, kind
    genuine = _decode(images["genuine"])
    assert genuine is not None and genuine.shape == (250, 250, 3)  # LFW crops stay as they are
    # Dark is a fifth of the brightness, blurred loses its fine detail.
    dark = _decode(images["dark"])
    assert dark is not None and dark.mean() < 0.3 * genuine.mean()
    blurred = _decode(images["blurred"])
    assert blurred is not None
    sharpness = [
        cv2.Laplacian(cv2.cvtColor(i, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        for i in (genuine, blurred)
    ]
    assert sharpness[1] < 0.05 * sharpness[0]


def test_corrupt_frames_do_not_decode(plan: list[PlannedCheckin]) -> None:
    corrupt = _first(plan, "corrupt")
    jpeg = render_checkin(corrupt)
    assert _decode(jpeg) is None
    assert not jpeg.endswith(b"\xff\xd9")
    # It is the genuine frame cut short, so that it fails in decoding, not in the envelope.
    whole = render_checkin(replace(corrupt, kind="genuine"))
    assert whole.startswith(jpeg) and len(jpeg) == len(whole) // 2


def test_several_faces_is_two_squares_side_by_side(plan: list[PlannedCheckin]) -> None:
    planned = _first(plan, "several_faces")
    both = _decode(render_checkin(planned))
    assert both is not None
    # Two people framed the same way: two equal squares, one from each photo.
    assert both.shape[:2] == (480, 960)
    left, right = both[:, :480].astype(np.float32), both[:, 480:].astype(np.float32)
    assert float(np.abs(left - right).mean()) > 10


def test_the_empty_scene_is_smooth_noise_and_seeded() -> None:
    scene = empty_scene(seed=1)
    assert scene.shape == (480, 640, 3)
    assert np.array_equal(scene, empty_scene(seed=1))
    assert not np.array_equal(scene, empty_scene(seed=2))
    # No structure but noise: the local detail is the sensor noise (sigma 3) and little else.
    detail = scene.astype(np.float32) - cv2.GaussianBlur(scene, (0, 0), 3).astype(np.float32)
    assert 1.5 < float(detail.std()) < 6.0


def test_publishing_a_day_writes_truth_and_a_recording(
    plan: list[PlannedCheckin], tmp_path: Path
) -> None:
    sink = ListSink()
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    day = plan[:8]
    report = publish_exam_day(
        day,
        sink,
        time_scale=60.0,
        truth_path=tmp_path / "truth.jsonl",
        record_path=tmp_path / "day.rec",
        progress=False,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert report.frames == len(sink.frames) == 8
    # The clock starts at the first arrival; a simulated minute is a real second.
    assert sum(sleeps) == pytest.approx((day[-1].offset_s - day[0].offset_s) / 60.0)
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert [t["frame_id"] for t in truth] == [f.frame_id for f in sink.frames]
    for line, planned, frame in zip(truth, day, sink.frames, strict=True):
        assert line["kind"] == planned.kind
        assert line["claimed_student_id"] == frame.claimed_student_id
        assert line["expected"] == sorted(planned.expected)
        assert frame.source == "simulator" and frame.gate_id == planned.gate_id
    recorded = list(iter_recording(tmp_path / "day.rec"))
    assert [decode(r.value, Frame).frame_id for r in recorded] == [f.frame_id for f in sink.frames]
    assert [r.key for r in recorded] == [b"gate-1"] * 8
