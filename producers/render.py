"""Turn a planned check-in into the JPEG a gate camera would send.

Photos are scaled down to at most 640 px on their long side (a gate camera's VGA frame) before
anything else, so that the blur and the frame sizes mean the same for a 250 px LFW crop and a
2,000 px portrait.  Loading photos is the only I/O; the transforms are pure functions.

The empty scene for ``no_face`` is a wall: a vertical light-to-shade gradient in a warm grey
(seeded jitter of the colour), lit brighter at the centre, above a darker floor band, with
Gaussian sensor noise (sigma 3).  Smooth enough that no detector should find a face, noisy
enough to look like a camera frame rather than a synthetic flat image.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from producers.publisher import encode_image

if TYPE_CHECKING:
    from producers.simulator import PlannedCheckin
    from stream_processors.vision.mtcnn import MtcnnDetector

log = logging.getLogger(__name__)

RGBImage = npt.NDArray[np.uint8]

CAMERA_LONG_SIDE = 640
BLUR_SIGMA = 6.0
DARK_FACTOR = 0.2
SCENE_SIZE = (480, 640)  # height, width


def load_photo(path: Path) -> RGBImage:
    """A photo as RGB, scaled to the camera's frame size."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read the photo {path}")
    return fit_to_camera(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))


def fit_to_camera(rgb: RGBImage, long_side: int = CAMERA_LONG_SIDE) -> RGBImage:
    """Scale down (never up) so the longer side is at most ``long_side``."""
    height, width = rgb.shape[:2]
    scale = long_side / max(height, width)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def blur(rgb: RGBImage, sigma: float = BLUR_SIGMA) -> RGBImage:
    """Out of focus: a Gaussian blur of the given sigma in pixels."""
    return np.asarray(cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma), dtype=np.uint8)


def darken(rgb: RGBImage, factor: float = DARK_FACTOR) -> RGBImage:
    """Low light: every pixel scaled by ``factor``."""
    scaled = np.clip(rgb.astype(np.float32) * factor, 0, 255).round()
    return np.asarray(scaled, dtype=np.uint8)


def portrait_square(rgb: RGBImage, side: int) -> RGBImage:
    """The head-and-shoulders square of a photo: the top square of a tall one, the middle of a
    wide one, resized to ``side`` pixels, so that two people framed this way stand about equally
    close to the camera."""
    height, width = rgb.shape[:2]
    edge = min(height, width)
    top = 0 if height > width else (height - edge) // 2
    left = (width - edge) // 2
    square = rgb[top : top + edge, left : left + edge]
    return np.asarray(cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA), np.uint8)


def face_square(rgb: RGBImage, side: int) -> RGBImage:
    """A square around the photo's largest face, the face filling the same share of it in every
    photo (two people standing equally close to the camera); the portrait square when the
    detector is not built or finds no face."""
    detector = _detector()
    faces = detector.detect(rgb) if detector is not None else []
    if not faces:
        return portrait_square(rgb, side)
    face = max(faces, key=lambda f: f.area)
    centre_x, centre_y = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    half = FACE_SHARE_INVERSE * max(face.width, face.height) / 2
    matrix = np.array(
        [
            [side / (2 * half), 0, side / 2 - centre_x * side / (2 * half)],
            [0, side / (2 * half), side / 2 - centre_y * side / (2 * half)],
        ],
        dtype=np.float64,
    )
    square = cv2.warpAffine(rgb, matrix, (side, side), borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(square, dtype=np.uint8)


# A face takes 1/2.2 of its square: head and shoulders, as a gate camera frames a student.
FACE_SHARE_INVERSE = 2.2


@functools.cache
def _detector() -> MtcnnDetector | None:
    from facegate.paths import models_dir
    from stream_processors.vision.mtcnn import MtcnnDetector

    folder = models_dir() / "mtcnn"
    if not (folder / "card.json").is_file():
        log.warning("MTCNN not built: several-faces frames framed without face detection")
        return None
    return MtcnnDetector(folder).load()


def side_by_side(left: RGBImage, right: RGBImage, side: int = 480) -> RGBImage:
    """Two people in one frame, next to each other and at the same distance."""
    return np.ascontiguousarray(np.hstack([face_square(left, side), face_square(right, side)]))


def empty_scene(seed: int, size: tuple[int, int] = SCENE_SIZE) -> RGBImage:
    """A wall and a floor with sensor noise, and nobody in it (see module doc)."""
    rng = np.random.default_rng(seed)
    height, width = size
    wall = np.array([196.0, 188.0, 172.0]) + rng.uniform(-20, 20, size=3)
    rows = np.linspace(1.0, 0.8, height)[:, None, None]
    columns = 1.0 - 0.15 * np.linspace(-1, 1, width)[None, :, None] ** 2
    image = wall[None, None, :] * rows * columns
    floor_top = int(height * 0.8)
    floor = np.array([120.0, 108.0, 96.0]) + rng.uniform(-15, 15, size=3)
    image[floor_top:] = floor * np.linspace(1.0, 0.85, height - floor_top)[:, None, None]
    image += rng.normal(0.0, 3.0, size=image.shape)
    return np.asarray(np.clip(image, 0, 255).round(), dtype=np.uint8)


def truncate_jpeg(jpeg: bytes) -> bytes:
    """The first half of a JPEG, as if the transfer had been cut: no decoder gets all pixels."""
    return jpeg[: len(jpeg) // 2]


def render_pixels(planned: PlannedCheckin) -> RGBImage:
    """What the camera sees for a check-in, as RGB (corrupt ones look genuine until encoded)."""
    if planned.kind == "no_face":
        return empty_scene(planned.render_seed)
    photos = [load_photo(path) for path in planned.photos]
    if planned.kind == "several_faces":
        return side_by_side(photos[0], photos[1])
    if planned.kind == "blurred":
        return blur(photos[0])
    if planned.kind == "dark":
        return darken(photos[0])
    return photos[0]


def render_checkin(planned: PlannedCheckin, jpeg_quality: int = 90) -> bytes:
    """The JPEG bytes the camera sends for a planned check-in (truncated for ``corrupt``)."""
    jpeg = encode_image(render_pixels(planned), jpeg_quality)
    return truncate_jpeg(jpeg) if planned.kind == "corrupt" else jpeg
