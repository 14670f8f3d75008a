"""Embedding sketches (inference_worker/sketch.py): the fixed projection verdicts carry for the
drift monitor."""

from __future__ import annotations

import numpy as np
import pytest

from inference_worker.sketch import SKETCH_DIM, projection, sketch


def test_the_projection_is_drawn_once_per_shape_and_cannot_be_changed() -> None:
    matrix = projection(192)
    assert matrix.shape == (192, SKETCH_DIM) and matrix.dtype == np.float32
    assert projection(192) is matrix  # not drawn again for every batch
    assert not np.array_equal(projection(128)[:128], matrix[:128])  # its own draw per dimension
    with pytest.raises(ValueError, match="read-only"):
        matrix[0, 0] = 1.0  # shared by every later sketch: a write would corrupt them all


def test_a_sketch_is_the_embedding_through_the_projection() -> None:
    # A one-hot embedding's sketch is its row of the projection; a batch sketches row by row.
    embeddings = np.eye(192, dtype=np.float32)[[3, 150]]
    sketches = sketch(embeddings)
    np.testing.assert_allclose(sketches, projection(192)[[3, 150]], rtol=1e-6)
    # The same numbers in every process: the projection is seeded, not random per process.
    again = np.random.default_rng(20260101 + 192).standard_normal((192, SKETCH_DIM))
    np.testing.assert_allclose(projection(192), again / np.sqrt(SKETCH_DIM), rtol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        sketch(embeddings[0])
