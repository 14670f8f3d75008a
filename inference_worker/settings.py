"""Settings of the embedding worker (``FACEGATE_WORKER_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facegate.settings import (
    BaseServiceSettings,
    KafkaSettings,
    MlflowSettings,
    RedisSettings,
    load_settings,
)


class InferenceWorkerSettings(BaseServiceSettings):
    """The consumer group that embeds faces, matches them and publishes verdicts."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_WORKER_")

    group_id: str = "facegate-inference"
    # gate: one face at a time, latency first; online: dynamic batching, throughput first.
    profile: Literal["gate", "online"] = "online"
    # `facegate eval cost` on this project's 2-core machines: MobileFaceNet on OpenVINO costs
    # 5.5 ms/face at batch 1, 5.4 at batch 8 and 6.7 at batch 32 (activations outgrow the cache).
    max_batch: int = 8
    # How long a batch waits for more faces after its first.  0: what one poll returns (up to
    # max_batch), which still batches under load (2.5 faces on average at 8 clients) but never
    # waits, since a face costs about the same alone as in a batch here.  `make bench` on a
    # 2-core node, three runs each: online 38.3 frames/s on average with 0, 32.0 with 20 ms.
    max_wait_ms: int = 0
    provider: Literal["openvino", "cpu"] = "openvino"
    threads: int = 1
    # registry: serve the version behind `model_alias`; local: a built model folder, no MLflow.
    model_source: Literal["registry", "local"] = "registry"
    model_alias: str = "champion"
    # Share of students routed to the canary when its version has no `rollout.canary_share` tag.
    canary_share: float = Field(default=0.2, ge=0.0, le=1.0)
    # How often the worker re-reads the registry's aliases besides following model events.
    model_refresh_s: float = 30.0
    local_model: str = "mobilefacenet"
    local_threshold: float | None = None
    top_k: int = 5
    # From this many students up, 1:N search shortlists with an int8 copy of the gallery and
    # re-scores the shortlist exactly (gallery_scan.py); 0 always scans the float32 templates.
    # `facegate bench`: at 10k students float32 still fits the cache (0.55 ms); at 100k it is
    # memory-bound (11 ms) and the int8 pass is several times faster.
    search_int8_from: int = 20000
    thumbnails: bool = True
    # A face captured more than this many seconds ago is answered review/stale without being
    # embedded: the safety net for a worker that falls behind.  Keep it above the stream
    # processor's FACEGATE_STREAM_MAX_FRAME_AGE_S, or faces analysed just in time are thrown
    # away.  0 embeds every face however late.
    max_frame_age_s: float = 30.0
    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))
    mlflow: MlflowSettings = Field(default_factory=lambda: load_settings(MlflowSettings))

    def batching(self) -> tuple[int, int]:
        """(max batch, max wait in ms) of the profile."""
        if self.profile == "gate":
            return 1, 0
        return self.max_batch, self.max_wait_ms
