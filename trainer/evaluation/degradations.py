"""Image degradations for slice evaluation: blur, low light, small faces, lower-face occlusion.

Each takes and returns an RGB uint8 image of the same size, so the degraded image goes through
the same pipeline (detection included) as a clean one.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

BLUR_SIGMA = 3.0
DARKEN_FACTOR = 0.3
SMALL_FACE_SIDE = 64  # LFW's 250 px images shrink to 64 px and are scaled back up
OCCLUDER_GREY = 128
# Where the face lies in LFW's deep-funneled 250x250 images (fractions x0, y0, x1, y1), read off
# the mean of 20 images and checked on single faces: hairline to chin, cheek to cheek; its
# lower third starts near the base of the nose.  Other data sets centre faces differently.
LFW_FACE_BOX = (0.30, 0.20, 0.70, 0.74)


def blur(image: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur (out-of-focus or motion-smeared camera)."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


def darken(image: np.ndarray, factor: float = DARKEN_FACTOR) -> np.ndarray:
    """Scale brightness by ``factor`` (a dim exam hall)."""
    # Saturating multiply with rounding, in one pass over the uint8 pixels.
    return cv2.convertScaleAbs(image, alpha=factor)


def shrink(image: np.ndarray, side: int = SMALL_FACE_SIDE) -> np.ndarray:
    """Lose resolution: scale so the longer side is ``side`` px, then back to the original size."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def occlude_lower_face(
    image: np.ndarray, face_box: tuple[float, float, float, float] = LFW_FACE_BOX
) -> np.ndarray:
    """Grey rectangle over the lower third of the face box (mask or hand over mouth and chin)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = face_box
    top = round((y0 + (y1 - y0) * 2 / 3) * height)
    covered = image.copy()
    covered[top : round(y1 * height), round(x0 * width) : round(x1 * width)] = OCCLUDER_GREY
    return covered


SLICES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blurred": blur,
    "darkened": darken,
    "small_faces": shrink,
    "occluded": occlude_lower_face,
}
