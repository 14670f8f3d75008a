"""Each service of the local stack is real and usable through its standard client."""

from __future__ import annotations

import io
import time
import uuid

import mlflow
import pytest
import redis
from kafka import TopicPartition
from minio import Minio
from minio.error import S3Error
from mlflow import MlflowClient

from facegate.kafka_clients import make_admin, make_consumer, make_producer
from facegate.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings, RedisSettings
from facegate.stack import LocalStack
from schemas.topics import ALL_TOPICS

pytestmark = pytest.mark.integration


def test_every_topic_exists_with_its_partition_count(local_stack: LocalStack) -> None:
    admin = make_admin(KafkaSettings())
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    for topic in ALL_TOPICS:
        assert described.get(topic.name) == topic.partitions, topic.name


def test_broker_consumer_group_resumes_from_committed_offset(local_stack: LocalStack) -> None:
    settings = KafkaSettings()
    topic, group = "drift", f"test-group-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex.encode()
    producer = make_producer(settings)
    for i in range(4):
        # One record per produce batch: tansu reports wrong end offsets for larger batches.
        producer.send(topic, key=b"gate-1", value=marker + b"-%d" % i).get(timeout=10)
    producer.close()

    def read(consumer_count: int) -> list[bytes]:
        consumer = make_consumer(settings, group, [topic], consumer_timeout_ms=15000)
        values: list[bytes] = []
        try:
            for record in consumer:
                if record.value.startswith(marker):
                    values.append(record.value)
                    if len(values) == consumer_count:
                        consumer.commit()
                        break
        finally:
            consumer.close()
        return values

    first = read(2)
    assert first == [marker + b"-0", marker + b"-1"]
    # A new member of the same group starts after the committed offset, not from the start.
    second = read(2)
    assert second == [marker + b"-2", marker + b"-3"]

    consumer = make_consumer(settings, group)
    try:
        committed = consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close()
    assert committed is not None and committed >= 4


def test_redis_round_trip(local_stack: LocalStack) -> None:
    client = redis.Redis.from_url(RedisSettings().url)
    key = f"test:{uuid.uuid4().hex}"
    client.set(key, b"\x00\x01template", ex=60)
    assert client.get(key) == b"\x00\x01template"
    assert client.delete(key) == 1
    client.close()


def _minio(settings: ObjectStoreSettings, secret: str | None = None) -> Minio:
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=secret or settings.secret_key.get_secret_value(),
        secure=settings.secure,
        region=settings.region,
    )


def test_object_store_put_get_and_buckets(local_stack: LocalStack) -> None:
    settings = ObjectStoreSettings()
    client = _minio(settings)
    existing = {bucket.name for bucket in client.list_buckets()}
    assert set(settings.buckets()) <= existing
    payload = uuid.uuid4().bytes * 1000
    name = f"test/{uuid.uuid4().hex}.bin"
    client.put_object(settings.bucket_datasets, name, io.BytesIO(payload), len(payload))
    response = client.get_object(settings.bucket_datasets, name)
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()


def test_object_store_rejects_a_wrong_secret(local_stack: LocalStack) -> None:
    client = _minio(ObjectStoreSettings(), secret="not-the-secret")
    with pytest.raises(S3Error) as error:
        client.list_buckets()
    assert error.value.code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}


def test_mlflow_run_logged_and_model_version_resolved_by_alias(local_stack: LocalStack) -> None:
    settings = MlflowSettings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    experiment = f"test-{uuid.uuid4().hex[:8]}"
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_param("embedder", "test")
        mlflow.log_metric("tar_at_far_1e-3", 0.97)
        mlflow.log_text("artifact stored in the object store", "notes/readme.txt")
    fetched = client.get_run(run.info.run_id)
    assert fetched.data.metrics["tar_at_far_1e-3"] == pytest.approx(0.97)
    # The artifact went through the server into the S3 store.
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/readme.txt")
    assert text == "artifact stored in the object store"

    name = f"test-model-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/notes", run.info.run_id)
    deadline = time.monotonic() + 30
    while client.get_model_version(name, version.version).status != "READY":
        assert time.monotonic() < deadline, "model version never became READY"
        time.sleep(0.5)
    client.set_registered_model_alias(name, "champion", version.version)
    resolved = client.get_model_version_by_alias(name, "champion")
    assert resolved.version == version.version
    assert resolved.run_id == run.info.run_id
