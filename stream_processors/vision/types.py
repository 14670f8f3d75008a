"""Value types shared by the detector, the aligner, the quality checks and the face policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Order of the five landmarks in every (5, 2) array FaceGate passes around: image-left first,
# matching the templates on the model cards.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

FloatArray = npt.NDArray[np.float32]


# eq=False: == on ndarray fields is ambiguous; compare faces field by field.
@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face found in a frame, in that frame's pixel coordinates.

    ``box`` is ``(x1, y1, x2, y2)`` with ``x2``/``y2`` the exclusive right/bottom edges, so the
    width is ``x2 - x1``; it may extend beyond the frame.  ``landmarks`` is a read-only (5, 2)
    float32 array of ``(x, y)`` points in :data:`LANDMARK_NAMES` order (pixel-centre
    coordinates, as ``cv2.warpAffine`` uses them).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: FloatArray

    def __post_init__(self) -> None:
        points = np.array(self.landmarks, dtype=np.float32).reshape(5, 2)
        points.setflags(write=False)
        # frozen dataclass: the normalised copy has to bypass __setattr__.
        object.__setattr__(self, "landmarks", points)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        """Box centre ``(x, y)``."""
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)
