"""The one object-store client factory for services (the local stack's health probes aside)."""

from __future__ import annotations

import io

import urllib3
from minio import Minio
from minio.error import S3Error

from facegate.settings import ObjectStoreSettings


def make_object_store(settings: ObjectStoreSettings, retries: int = 3) -> Minio:
    """A MinIO client for ``settings.endpoint`` with its credentials and bounded timeouts."""
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key.get_secret_value(),
        secure=settings.secure,
        region=settings.region,
        http_client=urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3, read=30), retries=urllib3.Retry(total=retries)
        ),
    )


def put_bytes(client: Minio, bucket: str, key: str, data: bytes, content_type: str) -> None:
    """Store ``data`` under ``key``."""
    client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)


def get_bytes(client: Minio, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    try:
        response = client.get_object(bucket, key)
    except S3Error as error:
        if error.code in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


def object_exists(client: Minio, bucket: str, key: str) -> bool:
    """Whether the object is there (a HEAD request: nothing is downloaded)."""
    try:
        client.stat_object(bucket, key)
    except S3Error as error:
        if error.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
            return False
        raise
    return True
