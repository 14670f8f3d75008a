"""Canary routing and model hot-swap in the embedding worker.

A worker serves a :class:`ServingSet`: the champion, and while a rollout runs a canary that a
stable share of students is routed to (a student's share is decided by a hash of their id, so
one student always meets the same model during a rollout).  Each arm has its own model, its own
gallery (templates are per model version) and its own gallery follower.

:class:`ModelFollower` keeps the set in step with the registry: it follows ``model-events`` and,
on any event (and every ``refresh_s``), resolves the ``champion`` and ``canary`` aliases.  New
arms are loaded beside the serving ones; the switch is one reference assignment that the
worker picks up between batches, so a batch is always decided by one set, nothing is dropped
and nothing is decided twice.  If the registry cannot be reached the worker keeps serving what
it has and retries.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import redis
from kafka import TopicPartition
from prometheus_client import Counter, Gauge

from facegate.kafka_clients import Sender, make_control_consumer
from inference_worker.embedder import Embedder
from inference_worker.gallery import GalleryIndex, GalleryStore
from inference_worker.gallery_sync import GallerySync
from inference_worker.metrics import MODEL_INFO, describe_serving_model
from inference_worker.serving_model import ServingModel
from inference_worker.settings import InferenceWorkerSettings
from schemas.codec import SchemaError, decode
from schemas.messages import ModelEvent
from schemas.topics import MODEL_EVENTS

log = logging.getLogger(__name__)

Alias = Literal["champion", "canary"]

CANARY_SHARE = Gauge(
    "facegate_canary_share", "Share of students routed to the canary (0 when none is set)."
)
MODEL_SWAPS = Counter(
    "facegate_model_swaps_total",
    "Serving-set changes a worker made (new champion or canary, canary removed).",
    ["alias", "model_version"],
)
REGISTRY_ERRORS = Counter(
    "facegate_worker_registry_errors_total",
    "Failed attempts to read the registry; the worker keeps serving what it has.",
)


def in_canary(student_id: str | None, share: float) -> bool:
    """Whether a student is in the canary's share (stable for a student and a share)."""
    if not student_id or share <= 0.0:
        return False
    digest = hashlib.sha256(student_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True)
class Arm:
    """One model a worker serves, with its gallery."""

    alias: Alias
    model: ServingModel
    index: GalleryIndex
    sync: GallerySync | None = None


@dataclass(frozen=True)
class ServingSet:
    """The champion, and the canary with its share while a rollout runs."""

    champion: Arm
    canary: Arm | None = None
    canary_share: float = 0.0

    def arm_for(self, student_id: str | None) -> Arm:
        """The arm that decides for this student."""
        if self.canary is not None and in_canary(student_id, self.canary_share):
            return self.canary
        return self.champion

    def arms(self) -> list[Arm]:
        """Every arm, champion first."""
        return [self.champion] + ([self.canary] if self.canary is not None else [])

    def describe(self) -> str:
        text = f"champion {self.champion.model.name} v{self.champion.model.version}"
        if self.canary is not None:
            canary = self.canary.model
            text += f", canary {canary.name} v{canary.version} for {self.canary_share:.0%}"
        return text


@dataclass(frozen=True)
class Desired:
    """What the registry says should be served."""

    champion: str
    canary: str | None
    canary_share: float


class ModelFollower:
    """Keeps a worker's serving set in step with the registry's aliases."""

    def __init__(
        self,
        settings: InferenceWorkerSettings,
        client: redis.Redis[bytes],
        producer: Sender | None,
        loader: Callable[[Alias], tuple[ServingModel, float]] | None = None,
        read_desired: Callable[[], Desired] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.producer = producer
        self._load_model = loader or self._load_from_registry
        self._read_desired = read_desired or self._desired_from_registry
        self._lock = threading.Lock()
        self._current: ServingSet | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self.swaps = 0

    @property
    def current(self) -> ServingSet:
        """The set the next batch is decided by."""
        current = self._current
        if current is None:
            raise RuntimeError("ModelFollower.start() has not loaded a model yet")
        return current

    def start(self) -> ModelFollower:
        """Load what the registry says (the champion must exist), then follow model events."""
        self.reconcile()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        if self._current is not None:
            for arm in self._current.arms():
                if arm.sync is not None:
                    arm.sync.stop()

    # -- registry ---------------------------------------------------------------------------

    def _desired_from_registry(self) -> Desired:
        from trainer.promotion import CANARY_SHARE_TAG
        from trainer.registry import champion_version, version_tags

        mlflow = self.settings.mlflow
        champion = champion_version(mlflow, self.settings.model_alias)
        if champion is None:
            raise RuntimeError(f"no {mlflow.registered_model}@{self.settings.model_alias}")
        canary = champion_version(mlflow, "canary")
        share = 0.0
        if canary is not None and canary != champion:
            tag = version_tags(mlflow, canary).get(CANARY_SHARE_TAG)
            share = float(tag) if tag else self.settings.canary_share
        else:
            canary = None
        return Desired(champion, canary, share)

    def _load_from_registry(self, alias: Alias) -> tuple[ServingModel, float]:
        from trainer.registry import resolve

        name = self.settings.model_alias if alias == "champion" else "canary"
        registered = resolve(self.settings.mlflow, name)
        embedder = Embedder(
            registered.model_dir, self.settings.provider, self.settings.threads, registered.version
        ).load()
        return ServingModel(embedder, registered.version, registered.threshold), time.time()

    def _arm(self, alias: Alias) -> Arm:
        model, _ = self._load_model(alias)
        store = GalleryStore(self.client, model.version)
        index = GalleryIndex(model.embedder.card.embedding_dim, self.settings.search_int8_from)
        sync = GallerySync(store, index, self.settings.kafka, self.producer).start()
        return Arm(alias, model, index, sync)

    # -- reconciling ------------------------------------------------------------------------

    def reconcile(self) -> bool:
        """Bring the serving set in line with the registry; return whether it changed."""
        desired = self._read_desired()
        current = self._current
        arms: dict[str, Arm] = {}
        if current is not None:
            arms = {arm.model.version: arm for arm in current.arms()}
        if (
            current is not None
            and current.champion.model.version == desired.champion
            and (current.canary.model.version if current.canary else None) == desired.canary
            and abs(current.canary_share - desired.canary_share) < 1e-9
        ):
            return False
        champion = arms.get(desired.champion)
        champion = replace(champion, alias="champion") if champion else self._arm("champion")
        canary = None
        if desired.canary is not None:
            existing = arms.get(desired.canary)
            canary = replace(existing, alias="canary") if existing else self._arm("canary")
        new = ServingSet(champion, canary, desired.canary_share if canary else 0.0)
        with self._lock:
            self._current = new
        self._publish_metrics(new)
        kept = {arm.model.version for arm in new.arms()}
        for version, arm in arms.items():
            if version not in kept and arm.sync is not None:
                arm.sync.stop()
        self.swaps += current is not None
        log.info("serving %s", new.describe())
        return True

    def _publish_metrics(self, serving: ServingSet) -> None:
        MODEL_INFO.clear()
        for arm in serving.arms():
            describe_serving_model(arm.model.name, arm.model.version, arm.alias, arm.index.__len__)
            MODEL_SWAPS.labels(arm.alias, arm.model.version).inc()
        CANARY_SHARE.set(serving.canary_share)

    def _try_reconcile(self) -> None:
        try:
            self.reconcile()
        except Exception as error:  # the registry being down must not stop serving
            REGISTRY_ERRORS.inc()
            log.warning("registry unavailable, serving what is loaded: %s", error)

    def _run(self) -> None:
        consumer = make_control_consumer(self.settings.kafka, None, consumer_timeout_ms=1000)
        partitions = consumer.partitions_for_topic(MODEL_EVENTS.name) or {0}
        assigned = [TopicPartition(MODEL_EVENTS.name, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        # Events are only a nudge: the registry is the truth, so reading old ones is harmless.
        consumer.seek_to_beginning(*assigned)
        last_check = time.monotonic()
        try:
            while not self._stop.is_set():
                events = 0
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        try:
                            event = decode(record.value, ModelEvent)
                        except SchemaError as error:
                            log.warning("unreadable model event: %s", error)
                            continue
                        log.info("model event: %s@%s %s", event.version, event.alias, event.action)
                        events += 1
                due = time.monotonic() - last_check >= self.settings.model_refresh_s
                if events or due:
                    self._try_reconcile()
                    last_check = time.monotonic()
        finally:
            consumer.close()


def static_serving_set(model: ServingModel, index: GalleryIndex) -> ServingSet:
    """A set with one fixed model (local models, tests, the bench)."""
    return ServingSet(Arm("champion", model, index))
