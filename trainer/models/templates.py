"""Five-point alignment templates: where each embedder expects the landmarks in its input crop.

Order (MTCNN's): left eye centre, right eye centre, nose tip, left mouth corner, right mouth
corner, "left" meaning image-left; coordinates are crop pixels (x right, y down).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

# dlib chips (get_face_chip, 150 px, padding 0.25) for the dlib ResNet embedder. Derived on
# 2026-11-22 by `python -m trainer.derive_dlib_template --count 300 --seed 0`: dlib's own
# pipeline on 300 LFW photos of different people, MTCNN landmarks found on 295 chips, averaged
# (per-coordinate std 1.6-5.5 px), then mirror-averaged about x = 74.0112, the line dlib's
# template puts the face's middle on (the measured midline was 74.075).
DLIB_150_TEMPLATE: Final[npt.NDArray[np.float32]] = np.array(
    [
        [46.6605, 45.0266],
        [101.3619, 45.0266],
        [74.0112, 77.2736],
        [50.3178, 104.1990],
        [97.7046, 104.1990],
    ],
    dtype=np.float32,
)

# InsightFace's standard template for 112x112 ArcFace crops.
ARCFACE_112_TEMPLATE: Final[npt.NDArray[np.float32]] = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
