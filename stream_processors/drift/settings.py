"""Settings of the drift monitor (``FACEGATE_DRIFT_*``): windows and the bounds they are held to."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from facegate.settings import BaseServiceSettings, KafkaSettings, RedisSettings, load_settings
from stream_processors.drift.thresholds import Bound

# Statistics with an upper bound: each is a field ``<statistic>_max`` (None turns it off).
UPPER_BOUNDED = (
    "brightness_mean_drop",
    "contrast_mean_drop",
    "sharpness_mean_drop",
    "face_size_mean_drop",
    "genuine_score_mean_drop",
    "genuine_below_threshold_rate",
    "mmd",
    "mean_sketch_distance",
    "no_face_rate",
    "several_faces_rate",
    "low_quality_rate",
    "false_reject_rate",
    "false_accept_rate",
)
# Statistics with a lower bound: each is a field ``<statistic>_min`` (all off by default).
LOWER_BOUNDED = ("genuine_score_mean", "genuine_score_p10", "brightness_mean")
BOUND_FIELDS = tuple(f"{s}_max" for s in UPPER_BOUNDED) + tuple(f"{s}_min" for s in LOWER_BOUNDED)
# What turns a bound off from the environment (an empty variable keeps the default).
OFF = frozenset({"none", "null", "off"})


class DriftSettings(BaseServiceSettings):
    """The consumer group that turns verdicts and feedback into drift reports.

    Default bounds were calibrated on LFW through the production face pipeline with windows
    of 40 and 50 verdicts (``python -m stream_processors.drift.calibration``): see the
    comments.  The embedding bounds (``mmd``, ``mean_sketch_distance``) assume windows of
    about that size: their noise grows as windows shrink (roughly as 1/sqrt(window)).
    """

    model_config = SettingsConfigDict(env_prefix="FACEGATE_DRIFT_")

    group_id: str = "facegate-drift"
    # Tumbling windows per gate and model version: closed after this many verdicts or this many
    # seconds since their first record, whichever comes first.
    window_size: int = Field(default=50, ge=2)
    window_seconds: float = Field(default=300.0, gt=0)
    # A window closed by time with fewer verdicts is dropped, not reported.
    min_samples: int = Field(default=20, ge=2)
    # Proctor decisions a feedback rate needs in its denominator (genuine students for the
    # false-reject rate, accepted verdicts for the false-accept rate).
    min_feedback: int = Field(default=20, ge=1)
    # Also report every model version across all gates (gate_id None, label "all").
    all_gates: bool = True
    # Keep reference windows in Redis (facegate:drift:reference:<model_version>:<gate>) so that
    # a restart keeps them; off: in memory only.
    redis_references: bool = True

    # ---- bounds (None: not checked) ----
    # Measured with `python -m stream_processors.drift.calibration` (MobileFaceNet; LFW people
    # with two images; 46 windows of 40 or 50 verdicts, seeds 0-5, each against a reference
    # window of other people): "normal" are clean windows, "dark" the same faces with pixel
    # values scaled by 0.35, "blurred" Gaussian sigma 3, "covered" the lower face occluded.
    # Relative drops of quality means against the reference window: brightness normal
    # -0.12..0.08, dark 0.61..0.68; contrast normal -0.08..0.09, dark 0.62..0.67; sharpness
    # normal -0.34..0.08 (it varies most between people), blurred 0.90..0.91; face size (eye
    # distance) normal -0.06..0.03.
    brightness_mean_drop_max: float | None = 0.25
    contrast_mean_drop_max: float | None = 0.3
    sharpness_mean_drop_max: float | None = 0.5
    face_size_mean_drop_max: float | None = 0.3
    # Absolute drop of the genuine cosine-score mean: normal -0.05..0.07, dark -0.03..0.07,
    # blurred 0.20..0.24, covered about 0.18, low resolution about 0.11.
    genuine_score_mean_drop_max: float | None = 0.1
    # Share of genuine scores below the operating threshold (2% on LFW at calibration):
    # normal and dark up to 0.08, blurred 0.13..0.25.
    genuine_below_threshold_rate_max: float | None = 0.15
    # Embedding sketches against the reference window's.  MMD (unbiased, squared): normal
    # -0.01..0.021, dark up to 0.02, blurred up to 0.016, covered 0.013..0.033.  The distance
    # between mean sketches is mostly who walked past (other people: 0.11..0.34 with 40
    # verdicts; it shrinks as 1/sqrt(window)), blurred 0.22..0.33, covered 0.28..0.39.  So
    # both flag only gross shifts of the embedding distribution (another population, a
    # broken camera or model); darkening moves neither: this embedder is nearly invariant
    # to it, and the genuine scores barely drop.
    mmd_max: float | None = 0.03
    mean_sketch_distance_max: float | None = 0.4
    # Rates over a window: LFW faces are all found (no face: 0 normal, up to 0.04 at 0.2 of the
    # light); quality checks fail 0..0.06 of normal faces, 0.92..1.0 of dark or blurred ones.
    no_face_rate_max: float | None = 0.15
    several_faces_rate_max: float | None = 0.2
    low_quality_rate_max: float | None = 0.2
    # Proctor-reported rates: at the calibrated threshold about 2% of genuine students are
    # rejected and a few % more are sent to review for quality (a false reject too, once the
    # proctor confirms them).
    false_reject_rate_max: float | None = 0.15
    false_accept_rate_max: float | None = 0.05
    genuine_score_mean_min: float | None = None
    genuine_score_p10_min: float | None = None
    brightness_mean_min: float | None = None

    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))

    @field_validator(*BOUND_FIELDS, mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in OFF:
            return None
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.min_samples > self.window_size:
            raise ValueError(
                f"min_samples ({self.min_samples}) exceeds window_size ({self.window_size})"
            )
        return self

    def bounds(self) -> list[Bound]:
        """Every bound that is set, upper bounds first."""
        found: list[Bound] = []
        for statistic in UPPER_BOUNDED:
            limit = getattr(self, f"{statistic}_max")
            if limit is not None:
                found.append(Bound(statistic, float(limit), "above"))
        for statistic in LOWER_BOUNDED:
            limit = getattr(self, f"{statistic}_min")
            if limit is not None:
                found.append(Bound(statistic, float(limit), "below"))
        return found
