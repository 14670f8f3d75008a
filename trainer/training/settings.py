"""Settings of embedder training (``FACEGATE_TRAIN_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facegate.settings import (
    BaseServiceSettings,
    MlflowSettings,
    ObjectStoreSettings,
    load_settings,
)

Architecture = Literal["finetune", "iresnet18", "iresnet-tiny"]
AmpMode = Literal["auto", "off", "fp16", "bf16"]


class TrainerSettings(BaseServiceSettings):
    """How an embedder is trained: network, optimisation, checkpoints, tracking.

    ``batch_size`` is per process: the effective batch is ``batch_size * world_size *
    grad_accumulation``.  ``amp``: ``auto`` = float16 autocast with a gradient scaler on CUDA,
    off on CPU; ``bf16`` = bfloat16 autocast (CPU or CUDA); ``fp16`` = float16 (CUDA only).
    ``track``: ``auto`` logs to MLflow when FACEGATE_MLFLOW_TRACKING_URI is configured and the
    server answers; ``on`` requires it; ``off`` never logs.
    """

    model_config = SettingsConfigDict(env_prefix="FACEGATE_TRAIN_")

    architecture: Architecture = "finetune"
    # Fine-tuning starts from this built model folder (model.pt); default: the production
    # embedder, models_dir()/mobilefacenet.
    base_model_dir: Path | None = None
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=0.1, gt=0)
    # Fine-tuning: the pretrained backbone learns at lr * backbone_lr_scale, the new head at lr.
    backbone_lr_scale: float = Field(default=0.1, ge=0)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = Field(default=0, ge=0)
    grad_accumulation: int = Field(default=1, ge=1)
    clip_grad_norm: float | None = 5.0
    amp: AmpMode = "auto"
    seed: int = 0
    checkpoint_every: int = Field(default=200, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    num_workers: int = Field(default=0, ge=0)
    flip: bool = True
    dropout: float = Field(default=0.0, ge=0, lt=1)
    arcface_scale: float = 64.0
    arcface_margin: float = 0.5
    easy_margin: bool = False
    run_name: str | None = None
    resume: bool = True
    # s3: checkpoints/<run_name>/last.pt in the models bucket; local: under checkpoint_dir.
    checkpoint_store: Literal["s3", "local"] = "s3"
    checkpoint_dir: Path = Path(".facegate/checkpoints")
    # Fetched images and aligned crops (default FACEGATE_HOME/datasets).
    cache_dir: Path | None = None
    track: Literal["auto", "on", "off"] = "auto"
    val_far: float = Field(default=1e-2, gt=0, lt=1)
    val_max_images: int = Field(default=2000, ge=2)
    progress: bool = True
    s3: ObjectStoreSettings = Field(default_factory=lambda: load_settings(ObjectStoreSettings))
    mlflow: MlflowSettings = Field(default_factory=lambda: load_settings(MlflowSettings))
