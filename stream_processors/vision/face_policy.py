"""Which face in a frame to verify, when a frame holds none, one or several.

At a gate the student stands in front of the camera; others may be visible behind.  Policy
``largest_central`` takes the face that is large and central when it clearly dominates the
others and sends the frame to a proctor otherwise ("several_faces"); policy ``review`` sends
every frame with more than one face to a proctor (for online exams, where a second face is
itself suspicious).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from stream_processors.vision.types import DetectedFace

FacePolicy = Literal["largest_central", "review"]
Outcome = Literal["face", "no_face", "several_faces"]

NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"
DOMINANT_FACE = "dominant_face"

DEFAULT_DOMINANCE_RATIO = 2.0
DEFAULT_CENTRE_WEIGHT = 0.5


@dataclass(frozen=True)
class FaceChoice:
    """The outcome for one frame: the face to verify, or why there is none."""

    outcome: Outcome
    face: DetectedFace | None
    count: int
    reason: str | None


def centrality(face: DetectedFace, frame_shape: tuple[int, ...]) -> float:
    """1 for a face centred in the frame, falling to 0 at a corner."""
    height, width = frame_shape[:2]
    cx, cy = face.centre
    distance = math.hypot(cx - width / 2, cy - height / 2)
    half_diagonal = math.hypot(width / 2, height / 2)
    return max(0.0, 1.0 - distance / half_diagonal)


def rank_score(face: DetectedFace, frame_shape: tuple[int, ...], centre_weight: float) -> float:
    """Box area discounted by distance from the centre: the face a gate camera is aimed at.

    ``centre_weight`` 0 ranks by area alone; 1 gives a face in a corner no weight at all.
    """
    return face.area * (1.0 - centre_weight + centre_weight * centrality(face, frame_shape))


def choose_face(
    faces: Sequence[DetectedFace],
    frame_shape: tuple[int, ...],
    policy: FacePolicy = "largest_central",
    dominance_ratio: float = DEFAULT_DOMINANCE_RATIO,
    centre_weight: float = DEFAULT_CENTRE_WEIGHT,
) -> FaceChoice:
    """Pick the face to verify.

    ``largest_central``: faces are ranked by :func:`rank_score`; the first is chosen when its
    score is at least ``dominance_ratio`` times the runner-up's (with ``centre_weight`` 0 that
    is the ratio of box areas), otherwise the frame goes to review.  A ratio of 1 always
    chooses the first (evaluation protocols, where every image must yield a face).
    ``review``: any frame with more than one face goes to review.
    """
    count = len(faces)
    if count == 0:
        return FaceChoice(outcome="no_face", face=None, count=0, reason=NO_FACE)
    if count == 1:
        return FaceChoice(outcome="face", face=faces[0], count=1, reason=None)
    if policy == "review":
        return FaceChoice(outcome="several_faces", face=None, count=count, reason=SEVERAL_FACES)
    scored = sorted(
        ((rank_score(face, frame_shape, centre_weight), face) for face in faces),
        key=lambda pair: pair[0],
        reverse=True,
    )
    (best_score, best), (runner_up_score, _) = scored[0], scored[1]
    if best_score >= dominance_ratio * runner_up_score:
        return FaceChoice(outcome="face", face=best, count=count, reason=DOMINANT_FACE)
    return FaceChoice(outcome="several_faces", face=None, count=count, reason=SEVERAL_FACES)
