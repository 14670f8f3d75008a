"""Settings of every frame producer: the camera client, the simulator and replay."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from facegate.settings import KafkaSettings, load_settings

# A 1080p JPEG at quality 90 is 0.3-1 MB; 4 MiB leaves room for a 4K frame while keeping one
# record far below the broker's and the consumers' 16 MiB limits.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024


class ProducerSettings(BaseSettings):
    """What a frame producer needs: the Kafka connection and the limits it holds frames to."""

    model_config = SettingsConfigDict(
        env_prefix="FACEGATE_PRODUCER_", extra="ignore", env_file_encoding="utf-8"
    )

    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    # Prometheus endpoint of `camera`, `simulate` and `replay` (unset: none).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    max_frame_bytes: int = Field(default=DEFAULT_MAX_FRAME_BYTES, gt=0)
    jpeg_quality: int = Field(default=90, ge=1, le=100)
    # How long one publish waits for the broker's acknowledgement before giving up.
    send_timeout_s: float = Field(default=30.0, gt=0)
