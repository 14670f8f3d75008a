"""Five-point alignment: the similarity estimate and the warp onto a template."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_processors.vision.alignment import (
    ARCFACE_112_SIZE,
    ARCFACE_112_TEMPLATE,
    align_to_template,
    estimate_similarity,
)


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    angle = math.radians(degrees)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    moved: np.ndarray = points @ matrix[:, :2].T + matrix[:, 2]
    return moved


@pytest.mark.parametrize(
    ("scale", "degrees", "tx", "ty"),
    [
        (1.0, 0.0, 0.0, 0.0),
        (1.7, 23.0, -40.0, 12.5),
        (0.31, -75.0, 300.0, 80.0),
        (4.0, 170.0, 5, 5),
    ],
)
def test_recovers_a_known_similarity(scale: float, degrees: float, tx: float, ty: float) -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, size=(5, 2))
    truth = _similarity(scale, degrees, tx, ty)
    estimated = estimate_similarity(src, _apply(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_least_squares_with_noisy_points_stays_close() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, size=(40, 2))
    truth = _similarity(1.3, 12.0, 7.0, -3.0)
    dst = _apply(truth, src) + rng.normal(0, 0.5, size=src.shape)
    estimated = estimate_similarity(src, dst)
    scale = math.hypot(estimated[0, 0], estimated[1, 0])
    angle = math.degrees(math.atan2(estimated[1, 0], estimated[0, 0]))
    assert scale == pytest.approx(1.3, rel=0.01)
    assert angle == pytest.approx(12.0, abs=0.5)
    # where it maps the points differs from the truth by far less than the noise
    assert np.abs(_apply(estimated, src) - _apply(truth, src)).max() < 0.25


def test_never_returns_a_reflection() -> None:
    src = ARCFACE_112_TEMPLATE.astype(np.float64)
    mirrored = src * np.array([-1.0, 1.0])  # left and right swapped: only a reflection fits
    matrix = estimate_similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_coincident_points_are_rejected() -> None:
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_112_TEMPLATE)


def _blobs_image(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian blobs centred exactly on ``points`` (smooth, so interpolation keeps centroids)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    grey = np.zeros(shape)
    for x, y in points:
        grey += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.round(255 * np.clip(grey, 0, 1)).astype(np.uint8)[:, :, None], 3, axis=2)


def _centroids(crop: np.ndarray, near: np.ndarray, window: int) -> np.ndarray:
    grey = crop[:, :, 0].astype(np.float64)
    found = []
    for x, y in near:
        x0, y0 = int(x) - window, int(y) - window
        patch = grey[y0 : y0 + 2 * window + 1, x0 : x0 + 2 * window + 1]
        ys, xs = np.mgrid[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]]
        found.append([(xs * patch).sum() / patch.sum(), (ys * patch).sum() / patch.sum()])
    return np.array(found)


@pytest.mark.parametrize(
    ("scale", "degrees"),
    [(1.0, 0.0), (1.6, 18.0), (4.0, -30.0), (9.0, 65.0)],  # 4 and 9: the area-reduced path
)
def test_aligned_landmarks_land_on_the_template(scale: float, degrees: float) -> None:
    # Five blobs where a face's landmarks would be, placed by a known similarity; after alignment
    # the blobs must sit on the template (their centroids, to a fraction of a pixel).
    to_frame = _similarity(scale, degrees, 0.0, 0.0)
    frame_points = _apply(to_frame, ARCFACE_112_TEMPLATE.astype(np.float64))
    frame_points += 60 * scale - frame_points.min(axis=0)
    size = int(frame_points.max() + 60 * scale)
    image = _blobs_image(frame_points, (size, size), sigma=1.2 * scale)
    crop = align_to_template(image, frame_points, ARCFACE_112_TEMPLATE, ARCFACE_112_SIZE)
    assert crop.shape == (112, 112, 3)
    assert crop.dtype == np.uint8
    centroids = _centroids(crop, ARCFACE_112_TEMPLATE, window=5)
    np.testing.assert_allclose(centroids, ARCFACE_112_TEMPLATE, atol=0.1)


def test_crop_size_is_width_then_height() -> None:
    image = np.full((300, 300, 3), 128, dtype=np.uint8)
    crop = align_to_template(image, ARCFACE_112_TEMPLATE + 100, ARCFACE_112_TEMPLATE, (96, 112))
    assert crop.shape == (112, 96, 3)


def test_border_outside_the_frame() -> None:
    # The face sits at the frame's top-left corner, so the crop reaches beyond the frame.
    image = np.full((120, 120, 3), 200, dtype=np.uint8)
    landmarks = ARCFACE_112_TEMPLATE - 40
    constant = align_to_template(image, landmarks, ARCFACE_112_TEMPLATE, ARCFACE_112_SIZE)
    replicate = align_to_template(
        image, landmarks, ARCFACE_112_TEMPLATE, ARCFACE_112_SIZE, border="replicate"
    )
    assert constant[0, 0].tolist() == [0, 0, 0]
    assert constant[100, 100].tolist() == [200, 200, 200]
    assert replicate.min() == 200
