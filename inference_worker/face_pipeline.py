"""The whole verification path in one process: detect, align, embed (for enrolment and evaluation).

It is built from the same parts as the streaming services (``FaceAnalyzer`` of the stream
processor, ``Embedder`` of the worker), so what evaluation measures is what serving runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facegate.paths import models_dir
from inference_worker.embedder import Embedder
from stream_processors.face_analysis import AlignmentTarget, FaceAnalysis, FaceAnalyzer
from stream_processors.vision.mtcnn import MtcnnConfig, MtcnnDetector
from trainer.evaluation.pipeline_protocol import EmbedOutcome

DEFAULT_MODEL = "mobilefacenet"
# Evaluation protocols must take a face from every image.  Among several, the one with the
# largest area times centrality (``face_policy.rank_score`` with centre weight 1): LFW centres
# the labelled face, and with the serving weight (0.5) a larger face cut off at the image's
# edge beside it won, e.g. Paul_Shanley_0003 or Noelle_Bush_0002.  Serving never forces the
# choice: a face that does not dominate the others twice over goes to review.
EVALUATION_CENTRE_WEIGHT = 1.0


class LocalFacePipeline:
    """Detector + alignment + embedder of one built model, batched over images."""

    def __init__(
        self,
        embedder: Embedder,
        detector: MtcnnDetector,
        always_choose_a_face: bool = True,
    ) -> None:
        self.embedder = embedder
        card = embedder.card
        target = AlignmentTarget(card.template_name, card.template, card.input_size)
        # Evaluation protocols score every image: with several faces, take the most central
        # and largest one (see EVALUATION_CENTRE_WEIGHT) instead of asking for review.
        self.analyzer = FaceAnalyzer(
            detector,
            [target],
            dominance_ratio=1.0 if always_choose_a_face else None,
            centre_weight=EVALUATION_CENTRE_WEIGHT if always_choose_a_face else None,
        )
        self.model_name = card.name

    def analyse(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[FaceAnalysis]:
        """Detection, choice, alignment and quality for each image."""
        return [self.analyzer.analyze(image) for image in images]

    def embed_images(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[EmbedOutcome]:
        """One outcome per image; faces of the whole call are embedded in one batch."""
        analyses = self.analyse(images)
        name = self.embedder.card.template_name
        with_face = [i for i, a in enumerate(analyses) if a.face is not None]
        started = time.perf_counter()
        embeddings = self.embedder.embed([analyses[i].crops[name] for i in with_face])
        embed_ms = (time.perf_counter() - started) * 1000 / max(1, len(with_face))
        outcomes = [
            EmbedOutcome(embedding=None, timings_ms=dict(a.timings_ms), reason=a.outcome)
            for a in analyses
        ]
        for row, index in enumerate(with_face):
            outcomes[index] = EmbedOutcome(
                embedding=embeddings[row],
                timings_ms={**analyses[index].timings_ms, "embed": embed_ms},
                reason=None,
            )
        return outcomes


def get_pipeline(
    model_name: str | None = None,
    root: Path | None = None,
    provider: str = "openvino",
    min_face_size: int = 40,
) -> LocalFacePipeline:
    """The pipeline of a built model (default: the production default embedder)."""
    base = root or models_dir()
    embedder = Embedder(base / (model_name or DEFAULT_MODEL), provider=provider).load()  # type: ignore[arg-type]
    detector = MtcnnDetector(base / "mtcnn", MtcnnConfig(min_face_size=min_face_size)).load()
    return LocalFacePipeline(embedder, detector)
