"""The production MTCNN detector on real LFW photos (no services needed, real ONNX models)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_processors.vision.mtcnn import MtcnnConfig, MtcnnDetector
from stream_processors.vision.types import DetectedFace
from tests.conftest import lfw_sample, read_rgb

SAMPLE_SIZE = 30


@pytest.fixture(scope="module")
def lfw_images(lfw_dir: Path) -> list[np.ndarray]:
    return [read_rgb(path) for path in lfw_sample(lfw_dir, SAMPLE_SIZE, seed=3)]


@pytest.fixture(scope="module")
def detections(
    lfw_images: list[np.ndarray], mtcnn_detector: MtcnnDetector
) -> list[list[DetectedFace]]:
    return [mtcnn_detector.detect(image) for image in lfw_images]


def _central(faces: list[DetectedFace], shape: tuple[int, ...]) -> DetectedFace:
    centre = np.array([shape[1] / 2, shape[0] / 2])
    return min(faces, key=lambda f: float(np.linalg.norm(np.array(f.centre) - centre)))


def _single_face_images(
    images: list[np.ndarray], detections: list[list[DetectedFace]]
) -> list[tuple[np.ndarray, DetectedFace]]:
    return [
        (img, faces[0]) for img, faces in zip(images, detections, strict=True) if len(faces) == 1
    ]


def test_typical_images_have_exactly_one_face(
    lfw_images: list[np.ndarray], detections: list[list[DetectedFace]]
) -> None:
    counts = [len(faces) for faces in detections]
    assert min(counts) >= 1, counts
    # LFW photos are news pictures: now and then someone stands behind the person
    assert counts.count(1) >= SAMPLE_SIZE - 4, counts
    for image, faces in zip(lfw_images, detections, strict=True):
        face = _central(faces, image.shape)
        x1, y1, x2, y2 = face.box
        assert x1 < 125 < x2 and y1 < 125 < y2  # LFW centres the labelled face
        assert 60 < face.height < 200
        assert face.score > 0.9


def test_landmarks_are_plausible(detections: list[list[DetectedFace]]) -> None:
    for faces in detections:
        for face in faces:
            points = face.landmarks
            assert points.shape == (5, 2)
            assert points.dtype == np.float32
            x1, y1, x2, y2 = face.box
            assert (points[:, 0] > x1).all() and (points[:, 0] < x2).all()
            assert (points[:, 1] > y1).all() and (points[:, 1] < y2).all()
            left_eye, right_eye, nose, mouth_left, mouth_right = points
            assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # image-left first
            assert max(left_eye[1], right_eye[1]) < min(mouth_left[1], mouth_right[1])
            assert min(left_eye[1], right_eye[1]) < nose[1] < max(mouth_left[1], mouth_right[1])


def test_results_are_sorted_and_boxes_sensible(detections: list[list[DetectedFace]]) -> None:
    for faces in detections:
        scores = [f.score for f in faces]
        assert scores == sorted(scores, reverse=True)
        assert all(f.width > 0 and f.height > 0 for f in faces)


def test_two_faces_side_by_side(
    lfw_images: list[np.ndarray],
    detections: list[list[DetectedFace]],
    mtcnn_detector: MtcnnDetector,
) -> None:
    singles = _single_face_images(lfw_images, detections)
    (left, left_face), (right, right_face) = singles[0], singles[1]
    composite = np.ascontiguousarray(np.hstack([left, right]))
    faces = mtcnn_detector.detect(composite)
    assert len(faces) == 2
    found_left, found_right = sorted(faces, key=lambda f: f.centre[0])
    width = left.shape[1]
    np.testing.assert_allclose(found_left.box, left_face.box, atol=4)
    np.testing.assert_allclose(
        found_right.box, np.add(right_face.box, [width, 0, width, 0]), atol=4
    )


def test_blank_and_noise_images_have_no_face(mtcnn_detector: MtcnnDetector) -> None:
    rng = np.random.default_rng(0)
    assert mtcnn_detector.detect(np.full((480, 640, 3), 128, dtype=np.uint8)) == []
    assert mtcnn_detector.detect(np.zeros((250, 250, 3), dtype=np.uint8)) == []
    noise = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    assert mtcnn_detector.detect(noise) == []


def test_min_face_size_is_respected(
    lfw_images: list[np.ndarray],
    detections: list[list[DetectedFace]],
    mtcnn_dir: Path,
) -> None:
    image, face = _single_face_images(lfw_images, detections)[0]
    # shrink the photo so the face's box is about 30 px high
    factor = 30.0 / face.height
    small = np.asarray(
        cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), np.uint8
    )
    default = MtcnnDetector(mtcnn_dir, MtcnnConfig(min_face_size=40)).load()
    finer = MtcnnDetector(mtcnn_dir, MtcnnConfig(min_face_size=20)).load()
    assert default.detect(small) == []
    found = finer.detect(small)
    assert len(found) == 1
    assert found[0].height == pytest.approx(30, rel=0.25)
    # and a detector for big faces only does not report the ~120 px LFW face
    assert MtcnnDetector(mtcnn_dir, MtcnnConfig(min_face_size=200)).load().detect(image) == []


def test_batched_refinement_matches_one_candidate_at_a_time(
    lfw_images: list[np.ndarray], mtcnn_dir: Path
) -> None:
    batched = MtcnnDetector(mtcnn_dir, MtcnnConfig(refine_batch_size=None)).load()
    one_by_one = MtcnnDetector(mtcnn_dir, MtcnnConfig(refine_batch_size=1)).load()
    composite = np.ascontiguousarray(np.hstack(lfw_images[:3]))
    for image in [*lfw_images[:8], composite]:
        expected = one_by_one.detect(image)
        got = batched.detect(image)
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)


def test_large_frame_with_max_side(
    lfw_images: list[np.ndarray],
    detections: list[list[DetectedFace]],
    mtcnn_dir: Path,
) -> None:
    image, face = _single_face_images(lfw_images, detections)[0]
    frame = np.full((720, 1280, 3), 110, dtype=np.uint8)
    frame[300:550, 700:950] = image
    full = MtcnnDetector(mtcnn_dir, MtcnnConfig()).load()
    reduced = MtcnnDetector(mtcnn_dir, MtcnnConfig(max_side=640)).load()
    expected_box = np.add(face.box, [700, 300, 700, 300])
    timings: dict[str, float] = {}
    for detector in (full, reduced):
        faces = detector.detect(frame, timings)
        assert len(faces) == 1
        # mapped back to the frame: the same face, to a few pixels at half resolution
        np.testing.assert_allclose(faces[0].box, expected_box, atol=8)
        np.testing.assert_allclose(faces[0].landmarks, np.add(face.landmarks, [700, 300]), atol=4)
    assert set(timings) == {"pnet", "rnet", "onet"}


def test_detector_must_be_loaded_and_given_rgb_uint8(mtcnn_detector: MtcnnDetector) -> None:
    with pytest.raises(RuntimeError, match="load"):
        MtcnnDetector().detect(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        mtcnn_detector.detect(np.zeros((50, 50, 3), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        mtcnn_detector.detect(np.zeros((50, 50), np.uint8))
