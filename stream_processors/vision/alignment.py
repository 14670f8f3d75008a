"""Five-point face alignment: a similarity transform onto an embedder's landmark template.

Border: pixels of the crop that fall outside the frame are filled with black
(``cv2.BORDER_CONSTANT``) by default.  The embedders' training crops were warped that way (the
ArcFace and dlib pipelines pad with zeros), so a black margin is something they have seen, while
``BORDER_REPLICATE`` smears the frame's edge pixels into streaks that look like face texture.
A face that is cut by the frame edge is flagged by the quality checks either way.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from trainer.models.templates import ARCFACE_112_TEMPLATE

FloatArray = npt.NDArray[np.float64]

__all__ = ["ARCFACE_112_SIZE", "ARCFACE_112_TEMPLATE", "align_to_template", "estimate_similarity"]

UInt8Image = npt.NDArray[np.uint8]

# The ArcFace 112x112 template is defined once, with the other embedder templates; the
# MobileFaceNet embedder uses it and the quality thresholds are calibrated on it.
ARCFACE_112_SIZE = (112, 112)

# Shrinking by more than this with one bilinear warp skips source pixels (aliasing); the region
# the crop comes from is first reduced with area averaging.
_MAX_DIRECT_SHRINK = 2.0


def estimate_similarity(src: npt.ArrayLike, dst: npt.ArrayLike) -> FloatArray:
    """The (2, 3) similarity (rotation, uniform scale, translation) taking ``src`` onto ``dst``.

    Least squares over all point pairs (Umeyama 1991), with reflections excluded so a mirrored
    face is never produced.  ``src`` and ``dst`` are (N, 2) arrays of ``(x, y)``, N >= 2.
    """
    source = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    target = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if source.shape != target.shape or source.shape[0] < 2:
        raise ValueError(
            f"need matching (N, 2) point sets, N >= 2; got {source.shape}, {target.shape}"
        )
    mean_src, mean_dst = source.mean(axis=0), target.mean(axis=0)
    centred_src, centred_dst = source - mean_src, target - mean_dst
    var_src = float((centred_src**2).sum(axis=1).mean())
    if var_src < 1e-12:
        raise ValueError("source points coincide; no similarity is defined")
    covariance = centred_dst.T @ centred_src / source.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[1] = -1.0  # the best fit would be a reflection: take the best rotation instead
    rotation = u @ np.diag(signs) @ vt
    scale = float((singular * signs).sum()) / var_src
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]])


def align_to_template(
    image_rgb: UInt8Image,
    landmarks: npt.ArrayLike,
    template: npt.ArrayLike,
    size: tuple[int, int],
    border: Literal["constant", "replicate"] = "constant",
) -> UInt8Image:
    """The face warped so its five landmarks fall on ``template``; a ``size`` = (w, h) crop."""
    matrix = estimate_similarity(landmarks, template)
    scale = math.hypot(matrix[0, 0], matrix[0, 1])
    source = image_rgb
    if scale < 1.0 / _MAX_DIRECT_SHRINK:
        source, matrix = _shrink_source_region(image_rgb, matrix, scale, size)
    border_mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    crop = cv2.warpAffine(
        source, matrix, size, flags=cv2.INTER_LINEAR, borderMode=border_mode, borderValue=0
    )
    return np.asarray(crop, dtype=np.uint8)


def _shrink_source_region(
    image: UInt8Image, matrix: FloatArray, scale: float, size: tuple[int, int]
) -> tuple[UInt8Image, FloatArray]:
    """The part of ``image`` the crop samples, area-reduced to about the crop's resolution,
    and the transform from that reduced region to the crop."""
    width, height = size
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float)
    mapped = corners @ inverse.T
    img_h, img_w = image.shape[:2]
    x0 = max(math.floor(mapped[:, 0].min()) - 2, 0)
    y0 = max(math.floor(mapped[:, 1].min()) - 2, 0)
    x1 = min(math.ceil(mapped[:, 0].max()) + 2, img_w)
    y1 = min(math.ceil(mapped[:, 1].max()) + 2, img_h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, matrix  # the crop lies outside the frame: nothing worth reducing
    region = image[y0:y1, x0:x1]
    new_w = max(round((x1 - x0) * scale), 1)
    new_h = max(round((y1 - y0) * scale), 1)
    reduced = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
    # pixel centres: reduced u <-> region (u + 0.5) / f - 0.5 <-> frame that + offset
    to_frame = np.array(
        [[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0], [0, 0, 1]]
    )
    return np.asarray(reduced, dtype=np.uint8), matrix @ to_frame
