"""Quality checks on a detected face: is this frame good enough to verify someone?

Scores (keys of :attr:`QualityReport.scores`):
  sharpness         variance of the Laplacian of the grey aligned crop divided by the grey
                    variance, per tile, 40th percentile over the tiles (:func:`tile_sharpness`):
                    dividing out contrast makes a dark but sharp face fail on brightness, not on
                    blur (the raw variance scales with contrast squared)
  laplacian_var     the raw variance of the Laplacian, for monitoring
  brightness        mean grey level of the crop (0-255)
  contrast          standard deviation of the grey crop
  interocular_px    distance between the eyes in frame pixels
  box_height_px     height of the detector's box in frame pixels
  yaw_deg, pitch_deg, roll_deg
                    head pose estimated from the five landmarks (see :func:`estimate_pose`)
  outside_fraction  share of the box area beyond the frame borders
Measures on the crop are taken at 112x112 so the thresholds do not depend on the embedder's
crop size; they were calibrated on crops aligned to the ArcFace 112 template.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from stream_processors.vision.types import DetectedFace

UInt8Image = npt.NDArray[np.uint8]

ANALYSIS_SIZE = (112, 112)

# Five-point pose model.  Ratios from a generic 3D head (nose tip ahead of the plane of eyes and
# mouth corners by ~0.45 of the inter-ocular distance and ~0.4 of the eye-to-mouth distance);
# the frontal nose height is the median over LFW (see the calibration notes on the thresholds).
NOSE_DEPTH_PER_IOD = 0.45
NOSE_DEPTH_PER_EYE_MOUTH = 0.40
FRONTAL_NOSE_HEIGHT = 0.54

# Sharpness: a 4x4 grid of tiles, 40th percentile of their Laplacian-to-grey variance ratios;
# chosen on LFW crops against Gaussian blur (sigma 4) among whole-crop, centre-only and tiled
# variants as the one with the widest gap between sharp and blurred faces.
SHARPNESS_GRID = 4
SHARPNESS_PERCENTILE = 40.0
SHARPNESS_MIN_TILE_VARIANCE = 25.0

# Reasons a face fails; stable strings, they travel in messages and metrics labels.
BLURRY = "blurry"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
LOW_CONTRAST = "low_contrast"
FACE_TOO_SMALL = "face_too_small"
POSE_YAW = "pose_yaw"
POSE_PITCH = "pose_pitch"
POSE_ROLL = "pose_roll"
PARTLY_OUTSIDE = "partly_outside_frame"


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a face must meet.

    Defaults calibrated on LFW (deep-funnelled, 250x250, MTCNN min face 40, ArcFace 112 crops;
    five samples of 300 random images): 98.0-99.7% of ordinary LFW faces pass, while every one
    of those faces blurred with a Gaussian of sigma 4 fails as ``blurry``, darkened to a quarter
    fails as ``too_dark`` and shrunk to a 30 px box fails as ``face_too_small``.  The ordinary
    faces that fail have strongly turned or tilted heads or are genuinely blurred photos.
    ``python -m trainer.evaluation.detector_report`` measures it again.
    """

    # blurred LFW faces reach 0.024 at most, ordinary ones are above 0.034 in 99% of cases
    min_sharpness: float = 0.028
    # darkened LFW faces reach 47 at most, ordinary ones start at 55
    min_brightness: float = 50.0
    max_brightness: float = 230.0
    # ordinary LFW faces start at 29; a quarter of the light leaves at most 22
    min_contrast: float = 20.0
    # below ~18 px between the eyes an ArcFace crop (35 px) is mostly interpolation; the box
    # limit matches the detector's default minimum face
    min_interocular_px: float = 18.0
    min_box_height_px: float = 40.0
    # LFW has turned and tilted heads: 45 and 35 degrees failed 1.3% of its ordinary faces on
    # pose alone; estimated angles are approximate (about 10 degrees between people)
    max_abs_yaw_deg: float = 50.0
    max_abs_pitch_deg: float = 40.0
    max_abs_roll_deg: float = 35.0
    max_outside_fraction: float = 0.1


@dataclass(frozen=True)
class QualityReport:
    """Verdict of the quality checks: ``ok`` when ``reasons`` is empty."""

    ok: bool
    scores: dict[str, float]
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees, image conventions: yaw > 0 when the nose is right of the face's
    midline, pitch > 0 when the nose is lower than in a frontal face, roll > 0 when the eye line
    goes down to the right (clockwise on screen)."""

    yaw: float
    pitch: float
    roll: float


def estimate_pose(landmarks: npt.ArrayLike) -> Pose:
    """Approximate yaw, pitch and roll from five landmarks (left eye, right eye, nose, mouth).

    Roll is the angle of the eye line.  With roll removed, yaw comes from how far the nose sits
    beside the line joining the eye and mouth midpoints (relative to the inter-ocular distance),
    pitch from how far down the nose sits between the eye line and the mouth line, compared with
    a frontal face.  A scaled-orthographic head model turns both ratios into angles.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    eye_vector = right_eye - left_eye
    roll = math.atan2(eye_vector[1], eye_vector[0])
    cos_r, sin_r = math.cos(-roll), math.sin(-roll)
    upright = points @ np.array([[cos_r, sin_r], [-sin_r, cos_r]])
    left_eye, right_eye, nose, mouth_left, mouth_right = upright
    eye_mid = (left_eye + right_eye) / 2
    mouth_mid = (mouth_left + mouth_right) / 2
    interocular = max(float(np.linalg.norm(right_eye - left_eye)), 1e-6)
    eye_to_mouth = float(mouth_mid[1] - eye_mid[1])
    if eye_to_mouth <= 1e-6:
        # mouth not below the eyes once upright: landmarks are not a plausible face
        return Pose(yaw=90.0, pitch=90.0, roll=math.degrees(roll))
    nose_height = (nose[1] - eye_mid[1]) / eye_to_mouth
    midline_x = eye_mid[0] + nose_height * (mouth_mid[0] - eye_mid[0])
    yaw = math.atan((nose[0] - midline_x) / interocular / NOSE_DEPTH_PER_IOD)
    pitch = math.atan((nose_height - FRONTAL_NOSE_HEIGHT) / NOSE_DEPTH_PER_EYE_MOUTH)
    return Pose(yaw=math.degrees(yaw), pitch=math.degrees(pitch), roll=math.degrees(roll))


def outside_fraction(box: tuple[float, float, float, float], frame_shape: tuple[int, ...]) -> float:
    """Share of the box's area that lies beyond the frame."""
    height, width = frame_shape[:2]
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    if area <= 0:
        return 1.0
    inside_w = max(min(x2, width) - max(x1, 0.0), 0.0)
    inside_h = max(min(y2, height) - max(y1, 0.0), 0.0)
    return 1.0 - inside_w * inside_h / area


def crop_scores(aligned_crop: UInt8Image) -> dict[str, float]:
    """Sharpness, brightness and contrast of an aligned RGB crop."""
    grey = cv2.cvtColor(aligned_crop, cv2.COLOR_RGB2GRAY)
    if grey.shape[:2] != (ANALYSIS_SIZE[1], ANALYSIS_SIZE[0]):
        grey = cv2.resize(grey, ANALYSIS_SIZE, interpolation=cv2.INTER_AREA)
    grey_f = grey.astype(np.float64)
    laplacian = np.asarray(cv2.Laplacian(grey_f, cv2.CV_64F), dtype=np.float64)
    return {
        "sharpness": tile_sharpness(grey_f, laplacian),
        "laplacian_var": float(laplacian.var()),
        "brightness": float(grey_f.mean()),
        "contrast": float(grey_f.std()),
    }


def tile_sharpness(grey: npt.NDArray[np.float64], laplacian: npt.NDArray[np.float64]) -> float:
    """Contrast-free sharpness: per tile of a grid, variance of the Laplacian over the variance
    of the grey levels; then a low percentile over the tiles.

    Per tile and as a percentile, so one hard edge (a black border from the frame edge or from
    LFW's funnelling, a spectacle frame) cannot make a blurred face look sharp, as it did with
    one ratio over the whole crop (3 of 900 blurred LFW faces passed that way).
    """
    height, width = grey.shape
    grid = SHARPNESS_GRID
    if height % grid == 0 and width % grid == 0:  # always for ANALYSIS_SIZE: one numpy pass
        shape = (grid, height // grid, grid, width // grid)
        grey_variance = grey.reshape(shape).var(axis=(1, 3))
        laplacian_variance = laplacian.reshape(shape).var(axis=(1, 3))
        tile_ratios = laplacian_variance / np.maximum(grey_variance, SHARPNESS_MIN_TILE_VARIANCE)
        return float(np.percentile(tile_ratios, SHARPNESS_PERCENTILE))
    ratios = []
    for row in range(SHARPNESS_GRID):
        for col in range(SHARPNESS_GRID):
            rows = slice(row * height // SHARPNESS_GRID, (row + 1) * height // SHARPNESS_GRID)
            cols = slice(col * width // SHARPNESS_GRID, (col + 1) * width // SHARPNESS_GRID)
            # the floor keeps flat tiles (a plain wall) from dividing noise by almost nothing
            tile_variance = max(float(grey[rows, cols].var()), SHARPNESS_MIN_TILE_VARIANCE)
            ratios.append(float(laplacian[rows, cols].var()) / tile_variance)
    return float(np.percentile(ratios, SHARPNESS_PERCENTILE))


def assess_quality(
    image_rgb: UInt8Image,
    face: DetectedFace,
    aligned_crop: UInt8Image,
    thresholds: QualityThresholds | None = None,
) -> QualityReport:
    """Score a detected face and list every threshold it misses."""
    limits = thresholds if thresholds is not None else QualityThresholds()
    pose = estimate_pose(face.landmarks)
    scores = crop_scores(aligned_crop)
    scores.update(
        interocular_px=float(np.linalg.norm(face.landmarks[1] - face.landmarks[0])),
        box_height_px=face.height,
        yaw_deg=pose.yaw,
        pitch_deg=pose.pitch,
        roll_deg=pose.roll,
        outside_fraction=outside_fraction(face.box, image_rgb.shape),
    )
    checks = [
        (scores["sharpness"] < limits.min_sharpness, BLURRY),
        (scores["brightness"] < limits.min_brightness, TOO_DARK),
        (scores["brightness"] > limits.max_brightness, TOO_BRIGHT),
        (scores["contrast"] < limits.min_contrast, LOW_CONTRAST),
        (
            scores["interocular_px"] < limits.min_interocular_px
            or scores["box_height_px"] < limits.min_box_height_px,
            FACE_TOO_SMALL,
        ),
        (abs(pose.yaw) > limits.max_abs_yaw_deg, POSE_YAW),
        (abs(pose.pitch) > limits.max_abs_pitch_deg, POSE_PITCH),
        (abs(pose.roll) > limits.max_abs_roll_deg, POSE_ROLL),
        (
            scores["outside_fraction"] > limits.max_outside_fraction
            or not _landmarks_inside(face, image_rgb.shape),
            PARTLY_OUTSIDE,
        ),
    ]
    reasons = [reason for failed, reason in checks if failed]
    return QualityReport(ok=not reasons, scores=scores, reasons=reasons)


def _landmarks_inside(face: DetectedFace, frame_shape: tuple[int, ...]) -> bool:
    height, width = frame_shape[:2]
    xs, ys = face.landmarks[:, 0], face.landmarks[:, 1]
    return bool((xs >= 0).all() and (xs < width).all() and (ys >= 0).all() and (ys < height).all())
