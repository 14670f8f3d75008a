"""Quality checks on real LFW faces and on degraded versions of the same faces."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_processors.vision.alignment import (
    ARCFACE_112_SIZE,
    ARCFACE_112_TEMPLATE,
    align_to_template,
)
from stream_processors.vision.face_policy import choose_face
from stream_processors.vision.mtcnn import MtcnnDetector
from stream_processors.vision.quality import (
    BLURRY,
    FACE_TOO_SMALL,
    PARTLY_OUTSIDE,
    POSE_ROLL,
    SHARPNESS_GRID,
    SHARPNESS_MIN_TILE_VARIANCE,
    SHARPNESS_PERCENTILE,
    TOO_DARK,
    QualityReport,
    QualityThresholds,
    assess_quality,
    estimate_pose,
    outside_fraction,
    tile_sharpness,
)
from stream_processors.vision.types import DetectedFace
from tests.conftest import lfw_sample, read_rgb

SAMPLE_SIZE = 40


def _check(image: np.ndarray, face: DetectedFace) -> QualityReport:
    crop = align_to_template(image, face.landmarks, ARCFACE_112_TEMPLATE, ARCFACE_112_SIZE)
    return assess_quality(image, face, crop, QualityThresholds())


def _scaled(face: DetectedFace, factor: float) -> DetectedFace:
    """The same face in an image resized by ``factor`` (pixel-centre landmark coordinates)."""
    box = tuple(v * factor for v in face.box)
    return DetectedFace(box, face.score, (face.landmarks + 0.5) * factor - 0.5)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lfw_faces(
    lfw_dir: Path, mtcnn_detector: MtcnnDetector
) -> list[tuple[np.ndarray, DetectedFace]]:
    """LFW images with the face the pipeline would verify (LFW centres the labelled face)."""
    found = []
    for path in lfw_sample(lfw_dir, SAMPLE_SIZE, seed=5):
        image = read_rgb(path)
        choice = choose_face(mtcnn_detector.detect(image), image.shape, dominance_ratio=1.0)
        if choice.face is not None:
            found.append((image, choice.face))
    assert len(found) >= SAMPLE_SIZE - 1
    return found


def test_ordinary_lfw_faces_pass(lfw_faces: list[tuple[np.ndarray, DetectedFace]]) -> None:
    reports = [_check(image, face) for image, face in lfw_faces]
    passed = sum(report.ok for report in reports)
    # calibration: 97-99% of 300-image samples pass; allow for the smaller sample
    assert passed >= 0.9 * len(reports), [r.reasons for r in reports if not r.ok]
    for report in reports:
        assert report.ok == (not report.reasons)
        assert set(report.scores) >= {
            "sharpness",
            "brightness",
            "contrast",
            "interocular_px",
            "box_height_px",
            "yaw_deg",
            "pitch_deg",
            "roll_deg",
            "outside_fraction",
        }


def test_blurred_faces_fail_as_blurry(lfw_faces: list[tuple[np.ndarray, DetectedFace]]) -> None:
    for image, face in lfw_faces:
        report = _check(cv2.GaussianBlur(image, (0, 0), 4), face)
        assert BLURRY in report.reasons, report.scores


def test_darkened_faces_fail_as_too_dark(lfw_faces: list[tuple[np.ndarray, DetectedFace]]) -> None:
    for image, face in lfw_faces:
        dark = np.round(image.astype(np.float32) * 0.25).astype(np.uint8)
        report = _check(dark, face)
        assert TOO_DARK in report.reasons, report.scores
        # sharpness is contrast-free: darkness alone does not read as blur
        was_blurry = BLURRY in _check(image, face).reasons
        assert was_blurry or BLURRY not in report.reasons, report.scores


def test_tiny_faces_fail_as_too_small(lfw_faces: list[tuple[np.ndarray, DetectedFace]]) -> None:
    for image, face in lfw_faces:
        factor = 30.0 / face.height  # the face's box becomes 30 px high
        size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
        tiny = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        report = _check(tiny, _scaled(face, size[0] / image.shape[1]))
        assert FACE_TOO_SMALL in report.reasons, report.scores


def test_rotated_face_reports_its_roll(lfw_faces: list[tuple[np.ndarray, DetectedFace]]) -> None:
    image, face = lfw_faces[0]
    upright = estimate_pose(face.landmarks).roll
    centre = (image.shape[1] / 2, image.shape[0] / 2)
    # cv2's positive angle turns the picture counter-clockwise on screen: roll goes negative
    turn = cv2.getRotationMatrix2D(centre, 50, 1.0)
    rotated = cv2.warpAffine(image, turn, (image.shape[1], image.shape[0]))
    points = face.landmarks @ turn[:, :2].T + turn[:, 2]
    box = cv2.boundingRect(points.astype(np.float32))
    side = 1.2 * max(box[2], box[3])
    cx, cy = points.mean(axis=0)
    moved = DetectedFace((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 1.0, points)
    report = _check(rotated, moved)
    assert report.scores["roll_deg"] == pytest.approx(upright - 50, abs=0.5)
    assert POSE_ROLL in report.reasons


def test_mirrored_face_flips_yaw_and_keeps_pitch(
    lfw_faces: list[tuple[np.ndarray, DetectedFace]],
) -> None:
    for _, face in lfw_faces[:10]:
        pose = estimate_pose(face.landmarks)
        mirrored = face.landmarks.copy()
        mirrored[:, 0] = 249 - mirrored[:, 0]
        mirrored = mirrored[[1, 0, 2, 4, 3]]  # image-left first again
        flipped = estimate_pose(mirrored)
        assert flipped.yaw == pytest.approx(-pose.yaw, abs=1e-4)
        assert flipped.pitch == pytest.approx(pose.pitch, abs=1e-4)
        assert flipped.roll == pytest.approx(-pose.roll, abs=1e-4)


def test_in_plane_rotation_changes_roll_only() -> None:
    # the template with its nose moved right and down: a turned, nodding head
    landmarks = ARCFACE_112_TEMPLATE + np.array([[0, 0], [0, 0], [6, 3], [0, 0], [0, 0]])
    pose = estimate_pose(landmarks)
    angle = math.radians(30)  # clockwise on screen (y points down)
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    turned = estimate_pose(landmarks @ turn.T)
    assert turned.roll == pytest.approx(pose.roll + 30, abs=1e-3)
    assert turned.yaw == pytest.approx(pose.yaw, abs=1e-3)
    assert turned.pitch == pytest.approx(pose.pitch, abs=1e-3)
    assert pose.yaw > 10 and pose.pitch > estimate_pose(ARCFACE_112_TEMPLATE).pitch + 5


def test_template_face_is_frontal() -> None:
    pose = estimate_pose(ARCFACE_112_TEMPLATE)
    assert abs(pose.yaw) < 1.0
    assert abs(pose.roll) < 1.0
    assert abs(pose.pitch) < 10.0


def test_face_cut_by_the_frame_edge(lfw_faces: list[tuple[np.ndarray, DetectedFace]]) -> None:
    image, face = lfw_faces[0]
    cut_at = int(face.centre[0])  # keep the left half of the face only
    report = _check(np.ascontiguousarray(image[:, :cut_at]), face)
    assert report.scores["outside_fraction"] == pytest.approx(
        (face.box[2] - cut_at) / face.width, abs=1e-4
    )
    assert PARTLY_OUTSIDE in report.reasons


def test_outside_fraction() -> None:
    assert outside_fraction((10, 10, 50, 50), (100, 100, 3)) == 0.0
    assert outside_fraction((-20, 0, 20, 40), (100, 100, 3)) == pytest.approx(0.5)
    assert outside_fraction((200, 200, 240, 240), (100, 100, 3)) == 1.0
    assert math.isclose(outside_fraction((80, 80, 120, 120), (100, 100)), 0.75)


def test_tile_sharpness_is_the_percentile_of_each_tiles_ratio() -> None:
    """The one-pass form (sizes the grid divides) against the tile-by-tile definition, on a
    sharp and a blurred crop, and the tile-by-tile form itself on a size the grid does not
    divide."""
    rng = np.random.default_rng(3)
    sharp = rng.integers(0, 255, (112, 112)).astype(np.float64)
    blurred = np.asarray(cv2.GaussianBlur(sharp, (0, 0), 3), dtype=np.float64)
    for grey in (sharp, blurred, sharp[:110, :111]):
        laplacian = np.asarray(cv2.Laplacian(grey, cv2.CV_64F), dtype=np.float64)
        height, width = grey.shape
        ratios = []
        for row in range(SHARPNESS_GRID):
            for col in range(SHARPNESS_GRID):
                rows = slice(row * height // SHARPNESS_GRID, (row + 1) * height // SHARPNESS_GRID)
                cols = slice(col * width // SHARPNESS_GRID, (col + 1) * width // SHARPNESS_GRID)
                variance = max(grey[rows, cols].var(), SHARPNESS_MIN_TILE_VARIANCE)
                ratios.append(laplacian[rows, cols].var() / variance)
        expected = float(np.percentile(ratios, SHARPNESS_PERCENTILE))
        assert tile_sharpness(grey, laplacian) == pytest.approx(expected, rel=1e-12)
