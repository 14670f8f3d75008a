"""Start an embedding worker from its settings and run it until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import cv2
from prometheus_client import start_http_server

from facegate.heartbeat import Heartbeat
from facegate.kafka_clients import make_consumer, make_producer
from facegate.redis_client import make_redis
from inference_worker.gallery import GalleryIndex, GalleryStore
from inference_worker.gallery_sync import GallerySync
from inference_worker.metrics import describe_serving_model
from inference_worker.rollout import ModelFollower, static_serving_set
from inference_worker.serving_model import load_serving_model
from inference_worker.settings import InferenceWorkerSettings
from inference_worker.worker import InferenceWorker
from schemas.topics import FACES

log = logging.getLogger(__name__)


def run_worker(settings: InferenceWorkerSettings) -> None:
    """Load the model and gallery, join the consumer group, serve until stopped."""
    cv2.setNumThreads(1)
    client = make_redis(settings.redis)
    producer = make_producer(settings.kafka)
    follower: ModelFollower | None = None
    if settings.model_source == "registry":
        # Champion and canary from the registry's aliases, swapped as model events arrive.
        follower = ModelFollower(settings, client, producer).start()
        serving = lambda: follower.current  # noqa: E731
        sync = None
    else:
        model = load_serving_model(settings)
        index = GalleryIndex(model.embedder.card.embedding_dim)
        store = GalleryStore(client, model.version)
        sync = GallerySync(store, index, settings.kafka, producer).start()
        fixed = static_serving_set(model, index)
        serving = lambda: fixed  # noqa: E731
        describe_serving_model(model.name, model.version, "local", lambda: len(index))
    max_batch, max_wait_ms = settings.batching()
    consumer = make_consumer(
        settings.kafka, settings.group_id, [FACES.name], max_poll_records=max_batch
    )
    worker = InferenceWorker(
        serving,
        consumer,
        producer,
        max_batch,
        max_wait_ms,
        settings.top_k,
        settings.thumbnails,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    heartbeat = Heartbeat(client, "worker").start()
    try:
        worker.run()
    finally:
        heartbeat.stop()
        if follower is not None:
            follower.stop()
        if sync is not None:
            sync.stop()
        consumer.close()
        producer.close()
        log.info("worker stopped after %d verdicts", worker.verdicts_published)
