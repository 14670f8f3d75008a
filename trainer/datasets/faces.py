"""Turn materialised images into aligned face crops for training, with the production aligner.

Photos that are not aligned (enrolment photos, folder images) go through the production path:
MTCNN, the face policy and the similarity transform to the embedder's template, exactly as
:class:`inference_worker.face_pipeline.LocalFacePipeline` runs them for enrolment and
evaluation.  Images where no face is found are skipped and counted.  Crops are cached as PNG
under ``<cache_dir>/crops/<template name>/`` by the source's SHA-256 (``materialize.crop_path``),
sealed with the gallery key (``sealed_objects.seal_file_bytes``), so re-runs skip detection; a
cached crop that no longer opens is aligned again, and one whose source object is gone is
deleted with the fetched copy (``materialize.forget_cached``).  Feedback thumbnails are
already aligned crops and are used as they are.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from facegate.paths import models_dir
from inference_worker.sealed_objects import seal_file_bytes
from trainer.datasets.manifest import Split
from trainer.datasets.materialize import LocalEntry, crop_path, read_cached, write_atomic

if TYPE_CHECKING:
    from inference_worker.face_pipeline import LocalFacePipeline
    from stream_processors.vision.mtcnn import MtcnnDetector

log = logging.getLogger(__name__)

UInt8Image = npt.NDArray[np.uint8]
DEFAULT_CARD_MODEL = "mobilefacenet"


class FaceAligner(Protocol):
    """Finds the face in an RGB photo and returns it aligned to a template, or None."""

    template_name: str
    input_size: tuple[int, int]  # (width, height)

    def align(self, image_rgb: UInt8Image) -> UInt8Image | None:
        """The aligned RGB crop of the photo's face, or None when there is none."""
        ...


class PipelineAligner:
    """The production detector and alignment of a built embedder's card.

    Only the card is read up front (it names the template); the MTCNN detector is loaded on
    the first photo, so a run whose crops are all cached never loads it.
    """

    def __init__(self, card_dir: Path | None = None, detector: MtcnnDetector | None = None) -> None:
        from inference_worker.embedder import Embedder

        # The card alone sets the template; the embedder's ONNX session is never opened.
        self.embedder = Embedder(card_dir or models_dir() / DEFAULT_CARD_MODEL)
        self.template_name = self.embedder.card.template_name
        self.input_size = self.embedder.card.input_size
        self._detector = detector
        self._pipeline: LocalFacePipeline | None = None

    def align(self, image_rgb: UInt8Image) -> UInt8Image | None:
        if self._pipeline is None:
            from inference_worker.face_pipeline import LocalFacePipeline
            from stream_processors.vision.mtcnn import MtcnnDetector

            detector = self._detector or MtcnnDetector().load()
            self._pipeline = LocalFacePipeline(self.embedder, detector)
        analysis = self._pipeline.analyse([image_rgb])[0]
        return analysis.crops.get(self.template_name) if analysis.face is not None else None


@dataclass(frozen=True)
class FaceSample:
    """An aligned face crop on disk and whose face it is."""

    path: Path
    identity: str
    split: Split
    sha256: str


@dataclass
class FaceSet:
    """The aligned crops of a manifest, and what was skipped and why."""

    samples: list[FaceSample]
    template_name: str
    input_size: tuple[int, int]
    skipped: dict[str, int] = field(default_factory=dict)

    def split(self, name: Split) -> list[FaceSample]:
        """The samples of one split."""
        return [s for s in self.samples if s.split == name]


def read_rgb(path: Path) -> UInt8Image | None:
    """An image file (a sealed working copy opened first) as an (H, W, 3) uint8 RGB array, or
    None when it cannot be opened or decoded."""
    opened = read_cached(path)
    data = np.frombuffer(opened, dtype=np.uint8) if opened else np.empty(0, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return None
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def write_png(path: Path, crop_rgb: UInt8Image) -> None:
    """Store an RGB crop losslessly, sealed."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode {path.name}")
    write_atomic(path, seal_file_bytes(path, encoded.tobytes()))


def prepare_faces(
    local: Sequence[LocalEntry],
    cache_dir: Path,
    aligner: FaceAligner | None = None,
    progress: bool = True,
) -> FaceSet:
    """Aligned crops of ``local`` entries (see the module docstring).

    ``aligner`` defaults to the production pipeline of the default embedder's card.
    """
    aligner = aligner or PipelineAligner()
    name, size = aligner.template_name, aligner.input_size
    samples: list[FaceSample] = []
    skipped: Counter[str] = Counter()
    for item in tqdm(local, desc="align faces", unit="img", disable=not progress):
        entry = item.entry
        if entry.aligned:
            image = read_rgb(item.path)
            if image is None:
                skipped["unreadable"] += 1
            elif image.shape[:2] != (size[1], size[0]):
                skipped["aligned_wrong_size"] += 1
            else:
                samples.append(FaceSample(item.path, entry.identity, entry.split, entry.sha256))
            continue
        cached = crop_path(cache_dir, name, entry.sha256)
        no_face = cached.with_suffix(".noface")
        if cached.is_file() and read_cached(cached) is None:
            cached.unlink()  # sealed under a dropped key, or altered: aligned again
        if not cached.is_file() and not no_face.is_file():
            image = read_rgb(item.path)
            crop = aligner.align(image) if image is not None else None
            if crop is None:
                write_atomic(no_face, b"")
            else:
                write_png(cached, crop)
        if cached.is_file():
            samples.append(FaceSample(cached, entry.identity, entry.split, entry.sha256))
        else:
            skipped["no_face"] += 1
    if skipped:
        log.info("face preparation skipped %s", dict(skipped))
    return FaceSet(samples, name, size, dict(skipped))
