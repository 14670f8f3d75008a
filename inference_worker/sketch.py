"""Embedding sketches: a fixed random projection of embeddings to a few dimensions.

Verdicts carry a sketch so the drift monitor can compare embedding distributions (maximum mean
discrepancy, mean shift) without receiving templates: 16 numbers of a 128- or 192-dimensional
embedding are far too few to match a face with, and the projection is the same for every
worker, so sketches from different workers of one model version are comparable.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

SKETCH_DIM = 16
_SEED = 20260101


@cache
def projection(embedding_dim: int, sketch_dim: int = SKETCH_DIM) -> npt.NDArray[np.float32]:
    """The (embedding_dim, sketch_dim) projection, the same in every process; drawn once per
    shape (drawn for every batch, it cost 30 times the sketches themselves) and read-only, as
    every later sketch shares it."""
    rng = np.random.default_rng(_SEED + embedding_dim)
    matrix: npt.NDArray[np.float32] = (
        rng.standard_normal((embedding_dim, sketch_dim)) / np.sqrt(sketch_dim)
    ).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def sketch(embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Sketches of unit-length embeddings (rows), one row each."""
    if embeddings.ndim != 2:
        raise ValueError(f"expected (n, dim) embeddings, got shape {embeddings.shape}")
    result: npt.NDArray[np.float32] = embeddings @ projection(embeddings.shape[1])
    return result
