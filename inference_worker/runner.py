"""Start an embedding worker from its settings and run it until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import cv2
import redis
from prometheus_client import start_http_server

from facegate.kafka_clients import make_consumer, make_producer
from inference_worker.gallery import GalleryIndex, GalleryStore
from inference_worker.gallery_sync import GallerySync
from inference_worker.serving_model import load_serving_model
from inference_worker.settings import InferenceWorkerSettings
from inference_worker.worker import InferenceWorker
from schemas.topics import FACES

log = logging.getLogger(__name__)


def run_worker(settings: InferenceWorkerSettings) -> None:
    """Load the model and gallery, join the consumer group, serve until stopped."""
    cv2.setNumThreads(1)
    model = load_serving_model(settings)
    client = redis.Redis.from_url(
        settings.redis.url, socket_timeout=settings.redis.socket_timeout_s
    )
    store = GalleryStore(client, model.version)
    index = GalleryIndex(model.embedder.card.embedding_dim)
    sync = GallerySync(store, index, settings.kafka).start()
    max_batch, max_wait_ms = settings.batching()
    consumer = make_consumer(
        settings.kafka, settings.group_id, [FACES.name], max_poll_records=max_batch
    )
    producer = make_producer(settings.kafka)
    worker = InferenceWorker(
        model,
        index,
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
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    try:
        worker.run()
    finally:
        sync.stop()
        consumer.close()
        producer.close()
        log.info("worker stopped after %d verdicts", worker.verdicts_published)
