"""The embedding worker: faces in, verdicts out, at least once, in micro-batches.

Loop: poll ``faces`` until ``max_batch`` faces or ``max_wait_ms`` after the first one; embed the
batch in one ONNX Runtime call; match each face 1:1 against the claimed student and 1:N against
the gallery; publish every verdict (keyed by exam) and wait for the broker's acknowledgement;
only then commit the offsets.  A crash before the commit re-delivers the batch, and its
verdicts carry the same frame ids, so consumers recognise repeats.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from facegate.metrics import DEAD_LETTERS
from inference_worker.decision import decide
from inference_worker.gallery import Candidate, GalleryIndex
from inference_worker.metrics import BATCH_SIZE, STAGE_SECONDS, KafkaLag, record_verdict
from inference_worker.serving_model import ServingModel
from schemas.codec import SchemaError, decode, encode
from schemas.messages import DeadLetter, Face, Match, Verdict, now
from schemas.topics import FACES, FRAMES_DLQ, VERDICTS

log = logging.getLogger(__name__)
SERVICE = "inference-worker"


@dataclass
class Batch:
    """Records polled together, and when the first of them arrived."""

    records: list[ConsumerRecord]
    first_at: float


def crop_array(face: Face, template: str) -> npt.NDArray[np.uint8] | None:
    """The face's crop for a template as an (H, W, 3) array, if the face has one."""
    for crop in face.crops:
        if crop.template == template:
            pixels = np.frombuffer(crop.pixels, dtype=np.uint8)
            if pixels.size != crop.width * crop.height * 3:
                return None
            return pixels.reshape(crop.height, crop.width, 3)
    return None


def thumbnail(crop: npt.NDArray[np.uint8]) -> bytes:
    """A small JPEG of the aligned face for the proctor console."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]
    )
    return data.tobytes() if ok else b""


class InferenceWorker:
    """Consumes faces and publishes verdicts for one serving model."""

    def __init__(
        self,
        model: ServingModel,
        index: GalleryIndex,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        max_batch: int,
        max_wait_ms: int,
        top_k: int = 5,
        thumbnails: bool = True,
    ) -> None:
        self.model = model
        self.index = index
        self.consumer = consumer
        self.producer = producer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.top_k = top_k
        self.thumbnails = thumbnails
        self.stopping = threading.Event()
        self.verdicts_published = 0
        self.lag = KafkaLag(consumer, str(getattr(consumer, "config", {}).get("group_id")))

    def run(self) -> None:
        """Process batches until ``stopping`` is set."""
        log.info(
            "worker serving %s v%s (batch %d, wait %.0f ms)",
            self.model.name,
            self.model.version,
            self.max_batch,
            self.max_wait_s * 1000,
        )
        while not self.stopping.is_set():
            batch = self.next_batch()
            self.lag.update()
            if batch.records:
                self.handle(batch)

    def next_batch(self) -> Batch:
        """Up to ``max_batch`` records, waiting at most ``max_wait`` after the first."""
        records: list[ConsumerRecord] = []
        first_at = 0.0
        deadline = None
        while len(records) < self.max_batch and not self.stopping.is_set():
            if deadline is None:
                timeout_ms = 200
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                timeout_ms = max(1, int(remaining * 1000))
            polled = self.consumer.poll(
                timeout_ms=timeout_ms, max_records=self.max_batch - len(records)
            )
            for partition_records in polled.values():
                records.extend(partition_records)
            if records and deadline is None:
                first_at = time.time()
                deadline = time.monotonic() + self.max_wait_s
                if self.max_wait_s == 0:
                    break
        return Batch(records, first_at)

    def handle(self, batch: Batch) -> None:
        """Verdicts for a batch, published and acknowledged, then the offsets committed."""
        started = time.perf_counter()
        faces: list[Face] = []
        crops: dict[str, npt.NDArray[np.uint8]] = {}
        for record in batch.records:
            try:
                face = decode(record.value, Face)
            except SchemaError as error:
                self._dead_letter(record, error.reason, error.detail)
                continue
            if face.outcome == "face":
                crop = crop_array(face, self.model.template_name)
                if crop is None:
                    # The stream processor aligned this face for other models only: a
                    # deployment mismatch, kept whole in the dead-letter topic, not guessed at.
                    self._dead_letter(
                        record, "missing_template_crop", f"no crop for {self.model.template_name}"
                    )
                    continue
                crops[face.frame_id] = crop
            faces.append(face)
        embed_started = time.perf_counter()
        embeddings = self.model.embedder.embed(list(crops.values()))
        embed_s = time.perf_counter() - embed_started
        by_frame = dict(zip(crops, embeddings, strict=True))
        match_started = time.perf_counter()
        searches = self.index.search(embeddings, self.top_k) if len(embeddings) else []
        top_by_frame = dict(zip(crops, searches, strict=True))
        match_s = time.perf_counter() - match_started
        version = self.model.version
        BATCH_SIZE.labels(version).observe(len(crops))
        STAGE_SECONDS.labels("embed", version).observe(embed_s)
        STAGE_SECONDS.labels("match", version).observe(match_s)
        futures = []
        verdicts: list[Verdict] = []
        for face in faces:
            verdict = self._verdict(
                face,
                by_frame.get(face.frame_id),
                top_by_frame.get(face.frame_id, []),
                crops.get(face.frame_id),
                {
                    "faces_hop": max(
                        0.0, (batch.first_at - (face.sent_at or batch.first_at)) * 1000
                    ),
                    "embed": embed_s * 1000 / max(1, len(crops)),
                    "match": match_s * 1000 / max(1, len(crops)),
                    "batch_size": float(len(crops)),
                },
            )
            verdicts.append(verdict)
            futures.append(
                self.producer.send(VERDICTS.name, key=face.exam_id.encode(), value=encode(verdict))
            )
        for future in futures:
            future.get(timeout=30)
        for verdict in verdicts:
            record_verdict(verdict)
        # Every verdict is acknowledged by the broker: only now may the offsets move on.
        self.consumer.commit()
        self.verdicts_published += len(faces)
        STAGE_SECONDS.labels("batch_total", version).observe(time.perf_counter() - started)

    def _verdict(
        self,
        face: Face,
        embedding: npt.NDArray[np.float32] | None,
        top: list[Candidate],
        crop: npt.NDArray[np.uint8] | None,
        worker_timings: dict[str, float],
    ) -> Verdict:
        claimed = face.claimed_student_id
        score = None
        if embedding is not None and claimed:
            score = self.index.verify(embedding, claimed)
        outcome = decide(
            face.outcome,
            claimed,
            claimed in self.index if claimed else False,
            face.quality_ok,
            score,
            self.model.threshold,
        )
        decided_at = now()
        timings = {**face.timings_ms, **worker_timings}
        timings["end_to_end"] = (decided_at - face.captured_at) * 1000
        return Verdict(
            frame_id=face.frame_id,
            gate_id=face.gate_id,
            exam_id=face.exam_id,
            claimed_student_id=claimed,
            captured_at=face.captured_at,
            decided_at=decided_at,
            decision=outcome.decision,
            reason=outcome.reason,
            score=score,
            threshold=self.model.threshold,
            top_matches=[Match(student_id=c.student_id, score=c.score) for c in top],
            model_name=self.model.name,
            model_version=self.model.version,
            quality=face.quality,
            quality_reasons=face.quality_reasons,
            timings_ms=timings,
            thumbnail=thumbnail(crop) if crop is not None and self.thumbnails else None,
        )

    def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        letter = DeadLetter(
            source_topic=FACES.name,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            reason=reason,
            detail=detail,
            service=SERVICE,
            failed_at=now(),
            payload=record.value,
        )
        self.producer.send(FRAMES_DLQ.name, key=record.key, value=encode(letter)).get(timeout=30)
        DEAD_LETTERS.labels(SERVICE, reason).inc()
        log.warning("dead letter %s: %s", reason, detail)
