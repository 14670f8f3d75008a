"""Settings of the stream processor (``FACEGATE_STREAM_*``)."""

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


class StreamProcessorSettings(BaseServiceSettings):
    """The Faust app that turns frames into aligned, quality-checked faces."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_STREAM_")

    app_id: str = "facegate-stream"
    # MTCNN: faces smaller than this (in the downscaled frame) are not looked for.
    min_face_size: int = 40
    # Frames whose longer side exceeds this are downscaled before detection (gate cameras).
    max_side: int | None = 640
    # Decompression-bomb guard: images declaring more pixels are dead-lettered.
    max_pixels: int = 4096 * 4096
    # Frames that arrive more than this many seconds after capture are answered review/stale
    # without analysis (the student is asked for a new picture); 0 analyses every frame.
    # Under overload this keeps the backlog at about this many seconds of frames.
    max_frame_age_s: float = 15.0
    face_policy: Literal["largest_central", "review"] = "largest_central"
    # Embedder models (folders under the models directory) whose templates faces are aligned to;
    # empty: follow the registry's champion and canary.
    align_models: list[str] = Field(default_factory=list)
    # Following the registry (``align_models`` empty): how often the champion's and canary's
    # templates are looked up again, so a new canary's faces are aligned for it without a
    # restart; 0 reads them at start only.
    align_refresh_s: float = Field(default=15.0, ge=0.0)
    detector_threads: int = 1
    # The event loop Faust and its consumer thread run on: uvloop (libuv) spends less CPU per
    # message than asyncio's own loop (README, Performance).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Below the worker's priority by default: on shared cores under overload, CPU given to the
    # worker finishes faces already analysed, and the stream processor sheds stale frames
    # cheaply.  `facegate soak --minutes 5 --rate 85 --stream-processors 2`, twice each on a
    # 2-core node: 31.4 and 31.4 analysed frames/s with 5, 26.8 and 27.5 with 0.
    niceness: int = Field(default=5, ge=0, le=19)
    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))
    mlflow: MlflowSettings = Field(default_factory=lambda: load_settings(MlflowSettings))
