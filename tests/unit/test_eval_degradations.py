"""The slice degradations change images the way their names say, and nothing else."""

from __future__ import annotations

import numpy as np

from trainer.evaluation import degradations


def _textured(size: int = 250) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _high_frequency(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image.astype(np.float32), axis=1)).mean())


def test_every_slice_keeps_shape_and_dtype() -> None:
    image = _textured()
    for degrade in degradations.SLICES.values():
        out = degrade(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert not np.array_equal(out, image)


def test_blur_and_shrink_remove_detail() -> None:
    image = _textured()
    assert _high_frequency(degradations.blur(image)) < 0.1 * _high_frequency(image)
    assert _high_frequency(degradations.shrink(image)) < 0.5 * _high_frequency(image)


def test_darken_scales_brightness() -> None:
    image = _textured()
    ratio = degradations.darken(image).mean() / image.mean()
    assert abs(ratio - degradations.DARKEN_FACTOR) < 0.01


def test_occlusion_covers_only_the_lower_face() -> None:
    image = _textured()
    out = degradations.occlude_lower_face(image)
    changed_rows = np.flatnonzero(np.any(out != image, axis=(1, 2)))
    changed_cols = np.flatnonzero(np.any(out != image, axis=(0, 2)))
    # Lower third of the LFW face box: below the nose down to the chin, cheek to cheek.
    assert changed_rows.min() >= 135 and changed_rows.max() < 186
    assert changed_cols.min() >= 70 and changed_cols.max() < 176
    assert np.all(out[changed_rows.min() : changed_rows.max() + 1, changed_cols.min()] == 128)
