"""The stream processor's alignment targets follow the models it is told about without a restart
(``refresh_alignment_targets``), and keep the current ones when the lookup fails.

The targets are looked up here from built model folders (``FACEGATE_STREAM_ALIGN_MODELS``);
the registry lookup the running service makes is exercised end to end in
``tests/e2e/test_rollout_start.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from facegate.paths import models_dir
from inference_worker.embedder import ModelCard
from stream_processors.app import refresh_alignment_targets
from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer
from stream_processors.frame_processor import FrameProcessor
from stream_processors.settings import StreamProcessorSettings
from stream_processors.vision.mtcnn import MtcnnDetector


def _target(model: str) -> AlignmentTarget:
    card = ModelCard.read(models_dir() / model)
    return AlignmentTarget(card.template_name, card.template, card.input_size)


@pytest.fixture(scope="module")
def processor() -> FrameProcessor:
    analyzer = FaceAnalyzer(MtcnnDetector(models_dir() / "mtcnn"), [_target("mobilefacenet")])
    return FrameProcessor(analyzer, 4096 * 4096, "test")


def test_new_targets_apply_once_and_the_same_ones_change_nothing(
    processor: FrameProcessor,
) -> None:
    analyzer = processor.analyzer
    first = analyzer.targets
    assert not analyzer.set_targets([_target("mobilefacenet")])
    assert analyzer.targets is first  # untouched: a frame in flight keeps its list either way
    both = [_target("mobilefacenet"), _target("dlib_resnet_v1")]
    assert analyzer.set_targets(both)
    assert [t.name for t in analyzer.targets] == [t.name for t in both]
    assert not analyzer.set_targets(both)
    with pytest.raises(ValueError, match="at least one"):
        analyzer.set_targets([])
    analyzer.set_targets(first)


def test_refresh_follows_the_models_and_survives_a_failed_lookup(
    processor: FrameProcessor,
) -> None:
    names = [t.name for t in processor.analyzer.targets]
    both = StreamProcessorSettings(align_models=["mobilefacenet", "dlib_resnet_v1"])
    assert asyncio.run(refresh_alignment_targets(processor, both))
    expected = [_target("mobilefacenet").name, _target("dlib_resnet_v1").name]
    assert [t.name for t in processor.analyzer.targets] == expected
    assert not asyncio.run(refresh_alignment_targets(processor, both))  # nothing new
    broken = StreamProcessorSettings(align_models=["no-such-model"])
    assert not asyncio.run(refresh_alignment_targets(processor, broken))
    assert [t.name for t in processor.analyzer.targets] == expected  # kept as they were
    one = StreamProcessorSettings(align_models=["mobilefacenet"])
    assert asyncio.run(refresh_alignment_targets(processor, one))
    assert [t.name for t in processor.analyzer.targets] == names
