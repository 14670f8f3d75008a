"""The embedding worker: faces in, verdicts out, at least once, in micro-batches.

Loop: poll ``faces`` until ``max_batch`` faces or ``max_wait_ms`` after the first one; route each
face to the arm that decides it (the champion, or the canary for its share of students; see
rollout.py); embed each arm's faces in one ONNX Runtime call; match each face 1:1 against the
claimed student and 1:N against that arm's gallery; publish every verdict (keyed by exam) and
wait for the broker's acknowledgement, however long the broker is away (a verdict whose delivery
failed is sent again); only then commit the offsets, retrying the commit through an outage too.
A crash before the commit re-delivers the batch, and its verdicts carry the same frame ids, so
consumers recognise repeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from facegate.dead_letters import dead_letter_record
from facegate.kafka_clients import commit_processed, send_acknowledged
from facegate.rdkafka_clients import RdConsumer, RdProducer, Record
from inference_worker.decision import decide
from inference_worker.gallery import Candidate
from inference_worker.metrics import BATCH_SIZE, STAGE_SECONDS, KafkaLag, record_verdict
from inference_worker.rollout import Arm, ServingSet
from inference_worker.sketch import sketch
from schemas.codec import SchemaError, decode, encode
from schemas.messages import Face, Match, Verdict, now
from schemas.topics import FRAMES_DLQ, VERDICTS

log = logging.getLogger(__name__)
SERVICE = "inference-worker"


@dataclass
class Batch:
    """Records polled together, and when the first of them arrived."""

    records: list[Record]
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


def shed_if_stale(face: Face, max_age_s: float | None, at: float) -> Face:
    """The face as ``stale`` (no crops) if at ``at`` it was captured more than ``max_age_s``
    ago: too late to be worth embedding, and under overload the worker catches up this way
    instead of falling further behind.  Other outcomes, and every face without a limit, pass."""
    if max_age_s is None or face.outcome != "face":
        return face
    age_s = at - face.captured_at
    if age_s <= max_age_s:
        return face
    timings = {**face.timings_ms, "waited": age_s * 1000}
    return face.model_copy(update={"outcome": "stale", "crops": [], "timings_ms": timings})


class InferenceWorker:
    """Consumes faces and publishes verdicts for the serving set (champion, canary)."""

    def __init__(
        self,
        serving: Callable[[], ServingSet],
        consumer: RdConsumer,
        producer: RdProducer,
        max_batch: int,
        max_wait_ms: int,
        top_k: int = 5,
        thumbnails: bool = True,
        max_frame_age_s: float | None = None,
    ) -> None:
        self.serving = serving
        self.consumer = consumer
        self.producer = producer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.top_k = top_k
        self.thumbnails = thumbnails
        # A face captured longer ago than this is answered ``stale`` without being embedded.
        self.max_frame_age_s = max_frame_age_s or None
        self.stopping = threading.Event()
        self.verdicts_published = 0
        self.lag = KafkaLag(consumer, consumer.group_id)

    def run(self) -> None:
        """Process batches until ``stopping`` is set."""
        log.info(
            "worker serving %s (batch %d, wait %.0f ms)",
            self.serving().describe(),
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
        records: list[Record] = []
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

    def _route(self, serving: ServingSet, face: Face) -> tuple[Arm, npt.NDArray[np.uint8] | None]:
        """The arm that decides a face and the face's crop for that arm's template."""
        arm = serving.arm_for(face.claimed_student_id)
        crop = crop_array(face, arm.model.template_name)
        if crop is None and arm is not serving.champion:
            # The stream processor did not align this face for the canary's template (it was
            # started before the canary): the champion decides it.
            arm = serving.champion
            crop = crop_array(face, arm.model.template_name)
        return arm, crop

    def handle(self, batch: Batch) -> None:
        """Verdicts for a batch, published and acknowledged, then the offsets committed."""
        started = time.perf_counter()
        # One serving set decides the whole batch, even if a model swap lands meanwhile.
        serving = self.serving()
        faces: list[tuple[Face, Arm]] = []
        crops: dict[str, tuple[Arm, npt.NDArray[np.uint8]]] = {}
        # Records that cannot be decided, for the dead-letter topic (acknowledged like verdicts).
        letters: list[tuple[bytes | None, bytes]] = []
        for record in batch.records:
            try:
                face = decode(record.value, Face)
            except SchemaError as error:
                letters.append(dead_letter_record(record, error, SERVICE))
                continue
            face = self._shed_if_stale(face)
            arm, crop = self._route(serving, face)
            if face.outcome == "face":
                if crop is None:
                    # The stream processor aligned this face for other models only: a
                    # deployment mismatch, kept whole in the dead-letter topic, not guessed at.
                    missing = SchemaError(
                        "missing_template_crop", f"no crop for {arm.model.template_name}"
                    )
                    letters.append(dead_letter_record(record, missing, SERVICE, face.frame_id))
                    continue
                width, height = arm.model.embedder.card.input_size
                if crop.shape != (height, width, 3):
                    # Tagged with the template but not its size (a faulty or hostile producer):
                    # the embedder would raise and the worker would stop on this record.
                    wrong = SchemaError(
                        "bad_crop_size",
                        f"{crop.shape[1]}x{crop.shape[0]} crop for "
                        f"{arm.model.template_name}, which is {width}x{height}",
                    )
                    letters.append(dead_letter_record(record, wrong, SERVICE, face.frame_id))
                    continue
                crops[face.frame_id] = (arm, crop)
            faces.append((face, arm))
        embedded: dict[str, tuple[npt.NDArray[np.float32], list[Candidate]]] = {}
        per_face: dict[str, dict[str, float]] = {}
        for arm in serving.arms():
            frames = [frame for frame, (a, _) in crops.items() if a is arm]
            if frames:
                embedded.update(self._embed_arm(arm, frames, crops, per_face))
        verdicts: list[Verdict] = []
        for face, arm in faces:
            found = embedded.get(face.frame_id)
            crop_entry = crops.get(face.frame_id)
            verdict = self._verdict(
                face,
                arm,
                found[0] if found else None,
                found[1] if found else [],
                crop_entry[1] if crop_entry else None,
                {
                    "faces_hop": max(
                        0.0, (batch.first_at - (face.sent_at or batch.first_at)) * 1000
                    ),
                    **per_face.get(face.frame_id, {}),
                },
                batch.first_at,
            )
            verdicts.append(verdict)
        records = [(v.exam_id.encode(), encode(v)) for v in verdicts]
        if not send_acknowledged(self.producer, VERDICTS.name, records, self.stopping):
            return  # stopping during a broker outage: uncommitted, redelivered after restart
        if not send_acknowledged(self.producer, FRAMES_DLQ.name, letters, self.stopping):
            return
        for verdict in verdicts:
            record_verdict(verdict)
        # Every verdict is acknowledged by the broker: only now may the offsets move on.
        commit_processed(self.consumer, self.stopping)
        self.verdicts_published += len(faces)
        STAGE_SECONDS.labels("batch_total", serving.champion.model.version).observe(
            time.perf_counter() - started
        )

    def _shed_if_stale(self, face: Face) -> Face:
        return shed_if_stale(face, self.max_frame_age_s, time.time())

    def _embed_arm(
        self,
        arm: Arm,
        frames: list[str],
        crops: dict[str, tuple[Arm, npt.NDArray[np.uint8]]],
        per_face: dict[str, dict[str, float]],
    ) -> dict[str, tuple[npt.NDArray[np.float32], list[Candidate]]]:
        """Embed one arm's faces in one call and search its gallery."""
        version = arm.model.version
        clock = time.perf_counter()
        embeddings = arm.model.embedder.embed([crops[frame][1] for frame in frames])
        embed_s = time.perf_counter() - clock
        clock = time.perf_counter()
        searches = arm.index.search(embeddings, self.top_k)
        match_s = time.perf_counter() - clock
        BATCH_SIZE.labels(version).observe(len(frames))
        STAGE_SECONDS.labels("embed", version).observe(embed_s)
        STAGE_SECONDS.labels("match", version).observe(match_s)
        for frame in frames:
            per_face[frame] = {
                "embed": embed_s * 1000 / len(frames),
                "match": match_s * 1000 / len(frames),
                "batch_size": float(len(frames)),
            }
        return {frame: (embeddings[row], searches[row]) for row, frame in enumerate(frames)}

    def _verdict(
        self,
        face: Face,
        arm: Arm,
        embedding: npt.NDArray[np.float32] | None,
        top: list[Candidate],
        crop: npt.NDArray[np.uint8] | None,
        worker_timings: dict[str, float],
        received_at: float,
    ) -> Verdict:
        claimed = face.claimed_student_id
        model = arm.model
        score = None
        if embedding is not None and claimed:
            score = arm.index.verify(embedding, claimed)
        outcome = decide(
            face.outcome,
            claimed,
            claimed in arm.index if claimed else False,
            face.quality_ok,
            score,
            model.threshold,
        )
        decided_at = now()
        timings = {**face.timings_ms, **worker_timings}
        # What the face waited in this worker: ``embed`` and ``match`` are its share of the
        # batch's cost, but every face of a batch waits for the whole batch.
        timings["in_worker"] = max(0.0, (decided_at - received_at) * 1000)
        timings["end_to_end"] = (decided_at - face.captured_at) * 1000
        sketch_row = None
        if embedding is not None:
            sketch_row = [round(float(v), 5) for v in sketch(embedding[None, :])[0]]
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
            threshold=model.threshold,
            top_matches=[Match(student_id=c.student_id, score=c.score) for c in top],
            model_name=model.name,
            model_version=model.version,
            quality=face.quality,
            quality_reasons=face.quality_reasons,
            timings_ms=timings,
            thumbnail=thumbnail(crop) if crop is not None and self.thumbnails else None,
            model_alias=arm.alias,
            embedding_sketch=sketch_row,
        )
