"""The 5-point alignment templates and the symmetrisation that produced the dlib one."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.derive_dlib_template import dlib_face_axis, symmetric_template
from trainer.models.templates import ARCFACE_112_TEMPLATE, DLIB_150_TEMPLATE


def test_templates_are_five_float32_points_in_mtcnn_order() -> None:
    for template, size in ((DLIB_150_TEMPLATE, 150), (ARCFACE_112_TEMPLATE, 112)):
        assert template.shape == (5, 2) and template.dtype == np.float32
        assert ((template > 0) & (template < size)).all()
        left_eye, right_eye, nose, left_mouth, right_mouth = template
        assert left_eye[0] < nose[0] < right_eye[0]
        assert left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_dlib_template_is_symmetric_about_dlibs_face_axis() -> None:
    axis = dlib_face_axis(150, 0.25)
    assert axis == pytest.approx(74.0112, abs=1e-4)
    t = DLIB_150_TEMPLATE
    assert t[2, 0] == pytest.approx(axis, abs=1e-3)
    for left, right in ((0, 1), (3, 4)):
        assert (t[left, 0] + t[right, 0]) / 2 == pytest.approx(axis, abs=1e-3)
        assert t[left, 1] == t[right, 1]


def test_symmetric_template_keeps_widths_and_heights_of_the_mean() -> None:
    mean = np.array([[40, 50], [100, 52], [72, 80], [50, 100], [96, 104]], np.float32)
    t = symmetric_template(mean, axis=74.0)
    assert t[1, 0] - t[0, 0] == pytest.approx(60.0)  # eye distance kept
    assert t[4, 0] - t[3, 0] == pytest.approx(46.0)
    assert t[0, 1] == pytest.approx(51.0) and t[3, 1] == pytest.approx(102.0)
    assert tuple(t[2]) == (74.0, 80.0)


def test_arcface_template_is_insightfaces() -> None:
    assert ARCFACE_112_TEMPLATE[0].tolist() == pytest.approx([38.2946, 51.6963])
    assert ARCFACE_112_TEMPLATE[4].tolist() == pytest.approx([70.7299, 92.2041])
