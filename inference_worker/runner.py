"""Start an embedding worker from its settings and run it until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os

import cv2

from facegate.heartbeat import Heartbeat
from facegate.rdkafka_clients import RdConsumer, RdProducer
from facegate.redis_client import make_redis
from facegate.service_process import lower_priority, serve_metrics, stop_on_signals
from inference_worker.gallery import GalleryIndex, GalleryStore
from inference_worker.gallery_sync import GallerySync
from inference_worker.metrics import describe_serving_model
from inference_worker.rollout import ModelFollower, static_serving_set
from inference_worker.serving_model import load_serving_model
from inference_worker.settings import InferenceWorkerSettings
from inference_worker.worker import InferenceWorker
from schemas.topics import FACES

log = logging.getLogger(__name__)

# MLflow's client retries a failed request 7 times with exponential backoff: about four minutes
# before the follower hears of an outage, counts it and can act on a model event again.  The
# follower re-polls every `model_refresh_s` anyway, so once it is running it is the retry loop.
FOLLOWER_MLFLOW_RETRIES = "2"


def run_worker(settings: InferenceWorkerSettings) -> None:
    """Load the model and gallery, join the consumer group, serve until stopped."""
    cv2.setNumThreads(1)
    client = make_redis(settings.redis)
    producer = RdProducer(settings.kafka)
    follower: ModelFollower | None = None
    if settings.model_source == "registry":
        # Champion and canary from the registry's aliases, swapped as model events arrive.
        follower = ModelFollower(settings, client, producer).start()
        # After the first load (which may wait for a registry that is still starting).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", FOLLOWER_MLFLOW_RETRIES)
        serving = lambda: follower.current  # noqa: E731
        sync = None
    else:
        model = load_serving_model(settings)
        index = GalleryIndex(model.embedder.card.embedding_dim, settings.search_int8_from)
        store = GalleryStore(client, model.version)
        sync = GallerySync(store, index, settings.kafka, producer).start()
        fixed = static_serving_set(model, index)
        serving = lambda: fixed  # noqa: E731
        describe_serving_model(model.name, model.version, "local", lambda: len(index))
    max_batch, max_wait_ms = settings.batching()
    consumer = RdConsumer(settings.kafka, settings.group_id, [FACES.name])
    worker = InferenceWorker(
        serving,
        consumer,
        producer,
        max_batch,
        max_wait_ms,
        settings.top_k,
        settings.thumbnails,
        settings.max_frame_age_s,
    )

    stop_on_signals(worker.stopping, "finishing the current batch")
    serve_metrics(settings)
    lower_priority(settings)
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
