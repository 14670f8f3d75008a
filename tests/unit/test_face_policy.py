"""Choosing the face to verify.  Faces here are made-up boxes (fakes): only geometry matters."""

from __future__ import annotations

import numpy as np
import pytest

from inference_worker.face_pipeline import EVALUATION_CENTRE_WEIGHT
from stream_processors.vision.face_policy import centrality, choose_face
from stream_processors.vision.types import DetectedFace

FRAME = (720, 1280, 3)


def _face(cx: float, cy: float, side: float, score: float = 0.99) -> DetectedFace:
    """A fake square face centred at (cx, cy) with plausible landmarks inside its box."""
    half = side / 2
    unit = np.array([[-0.2, -0.1], [0.2, -0.1], [0.0, 0.1], [-0.15, 0.3], [0.15, 0.3]])
    landmarks = (unit * side + [cx, cy]).astype(np.float32)
    return DetectedFace((cx - half, cy - half, cx + half, cy + half), score, landmarks)


def test_no_face() -> None:
    choice = choose_face([], FRAME)
    assert (choice.outcome, choice.face, choice.count, choice.reason) == (
        "no_face",
        None,
        0,
        "no_face",
    )


@pytest.mark.parametrize("policy", ["largest_central", "review"])
def test_one_face_is_chosen_under_any_policy(policy: str) -> None:
    face = _face(300, 200, 80)  # off-centre and small: still the only one
    choice = choose_face([face], FRAME, policy)  # type: ignore[arg-type]
    assert choice.outcome == "face"
    assert choice.face is face
    assert choice.count == 1
    assert choice.reason is None


def test_dominant_central_face_is_chosen_over_a_small_one_behind() -> None:
    student = _face(640, 360, 300)
    behind = _face(1000, 200, 120)
    choice = choose_face([behind, student], FRAME)
    assert choice.outcome == "face"
    assert choice.face is student
    assert choice.count == 2
    assert choice.reason == "dominant_face"


def test_two_similar_faces_go_to_review() -> None:
    choice = choose_face([_face(500, 360, 200), _face(800, 360, 190)], FRAME)
    assert choice.outcome == "several_faces"
    assert choice.face is None
    assert choice.count == 2
    assert choice.reason == "several_faces"


def test_margin_is_configurable() -> None:
    faces = [_face(640, 360, 200), _face(1100, 150, 150)]
    assert choose_face(faces, FRAME, dominance_ratio=2.0).outcome == "face"
    assert choose_face(faces, FRAME, dominance_ratio=4.0).outcome == "several_faces"


def test_ratio_one_always_chooses_the_top_ranked_face() -> None:
    central = _face(640, 360, 200)
    choice = choose_face([_face(200, 200, 210), central], FRAME, dominance_ratio=1.0)
    assert choice.face is central


def test_a_bigger_face_in_the_corner_does_not_win_by_area_alone() -> None:
    central = _face(640, 360, 200)
    corner = _face(150, 120, 230)  # about 1.3 times the area, far from the centre
    ranked_by_area = choose_face([central, corner], FRAME, dominance_ratio=1.0, centre_weight=0)
    assert ranked_by_area.face is corner
    with_centre = choose_face([central, corner], FRAME, dominance_ratio=1.0, centre_weight=0.5)
    assert with_centre.face is central
    # and neither dominates clearly, so by default a proctor looks at it
    assert choose_face([central, corner], FRAME).outcome == "several_faces"


def test_review_policy_sends_any_second_face_to_review() -> None:
    student = _face(640, 360, 400)
    tiny_background = _face(100, 100, 45)
    choice = choose_face([student, tiny_background], FRAME, "review")
    assert choice.outcome == "several_faces"
    assert choice.face is None
    assert choice.count == 2
    assert choice.reason == "several_faces"


def test_centrality() -> None:
    assert centrality(_face(640, 360, 100), FRAME) == pytest.approx(1.0)
    assert centrality(_face(0, 0, 100), FRAME) == pytest.approx(0.0)
    assert 0.4 < centrality(_face(320, 180, 100), FRAME) < 0.6


def test_evaluation_takes_the_centred_face_over_a_larger_one_at_the_edge() -> None:
    """The boxes MTCNN found in LFW's Paul_Shanley_0003 (250x250): the labelled face in the
    centre, a larger one cut off at the right edge.  The serving weight ranks the edge face
    first by a hair (serving would ask for review: neither dominates); the evaluation weight
    takes the centred one, as the protocol means."""
    lfw = (250, 250, 3)
    unit = np.array([[-0.2, -0.1], [0.2, -0.1], [0.0, 0.1], [-0.15, 0.3], [0.15, 0.3]])
    labelled = DetectedFace((77, 63, 170, 186), 0.99, unit * 93 + [123, 125])
    edge = DetectedFace((128, 42, 228, 180), 0.92, unit * 100 + [178, 111])
    serving = choose_face([labelled, edge], lfw, dominance_ratio=1.0)
    assert serving.face is edge
    assert choose_face([labelled, edge], lfw).outcome == "several_faces"
    evaluation = choose_face(
        [labelled, edge], lfw, dominance_ratio=1.0, centre_weight=EVALUATION_CENTRE_WEIGHT
    )
    assert evaluation.face is labelled
