"""Train an embedder on a dataset manifest: the one entry point the training service calls.

:func:`train` fetches and verifies the manifest's images, aligns them with the production path,
trains (resuming from the run's checkpoint when there is one), validates on the held-out
identities each epoch, writes the model folder (model.pt, card.json, model.onnx checked against
PyTorch) and logs everything to MLflow when tracking is on.  Under ``torchrun`` every process
calls it; rank 0 prepares the faces first, and only rank 0 writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minio import Minio

from facegate.errors import FacegateError
from facegate.object_store import make_object_store
from facegate.paths import home_dir
from trainer.datasets.faces import FaceAligner, FaceSample, FaceSet, prepare_faces, read_rgb
from trainer.datasets.manifest import DatasetManifest
from trainer.datasets.materialize import cache_in_use, materialize
from trainer.training.backbones import build_backbone
from trainer.training.checkpoints import CheckpointStore, LocalCheckpointStore, S3CheckpointStore
from trainer.training.data import FaceCrops
from trainer.training.distributed import DistContext, init_distributed, shutdown_distributed
from trainer.training.export import export_trained, save_trained_model
from trainer.training.loop import TrainingLoop
from trainer.training.settings import TrainerSettings
from trainer.training.tracking import TrainingTracker, tracking_settings
from trainer.training.validation import embed_crops, verification_metrics

log = logging.getLogger(__name__)

ONNX_CHECK_FACES = 8


@dataclass
class TrainResult:
    """What a training call produced (``run_id`` is None without tracking or off rank 0)."""

    model_dir: Path
    run_id: str | None
    metrics: dict[str, float]
    manifest_version: str
    run_name: str
    step: int
    total_steps: int
    complete: bool
    resumed_from_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def default_run_name(settings: TrainerSettings, manifest: DatasetManifest) -> str:
    """``<architecture>-<first 12 of the manifest version>``: same data and net, same run."""
    return settings.run_name or f"{settings.architecture}-{manifest.version[:12]}"


def checkpoint_store(settings: TrainerSettings, client: Minio | None) -> CheckpointStore:
    """The configured checkpoint store."""
    if settings.checkpoint_store == "local":
        return LocalCheckpointStore(settings.checkpoint_dir)
    return S3CheckpointStore(client or make_object_store(settings.s3), settings.s3.bucket_models)


def dataset_cache_dir(settings: TrainerSettings) -> Path:
    """Where fetched images and aligned crops are cached (``FACEGATE_TRAIN_CACHE_DIR``)."""
    return settings.cache_dir or home_dir() / "datasets"


def prepare_face_set(
    manifest: DatasetManifest,
    settings: TrainerSettings,
    ctx: DistContext,
    client: Minio | None = None,
    aligner: FaceAligner | None = None,
) -> FaceSet:
    """Fetch, verify and align the manifest's images; rank 0 first, the others from its cache."""
    cache_dir = dataset_cache_dir(settings)
    needs_store = any(e.uri.startswith("s3://") for e in manifest.entries)
    if needs_store and client is None:
        client = make_object_store(settings.s3)

    def build() -> FaceSet:
        progress = settings.progress and ctx.is_main
        local = materialize(manifest, cache_dir, client, progress=progress)
        return prepare_faces(local, cache_dir, aligner, progress=progress)

    if not ctx.is_main:
        ctx.barrier()
    faces = build()
    if ctx.is_main:
        ctx.barrier()
    return faces


def _class_index(samples: list[FaceSample]) -> tuple[list[str], list[int]]:
    classes = sorted({s.identity for s in samples})
    index = {name: i for i, name in enumerate(classes)}
    return classes, [index[s.identity] for s in samples]


def train(
    settings: TrainerSettings,
    manifest: DatasetManifest,
    output_dir: Path,
    *,
    faces: FaceSet | None = None,
    client: Minio | None = None,
    aligner: FaceAligner | None = None,
    checkpoints: CheckpointStore | None = None,
) -> TrainResult:
    """Train on ``manifest`` and write the model folder to ``output_dir`` (see module doc)."""
    joined_here = not _process_group_exists()
    ctx = init_distributed()
    try:
        # The cache is held for the whole run: its crops are read at every epoch.
        with cache_in_use(dataset_cache_dir(settings)):
            return _train(settings, manifest, output_dir, ctx, faces, client, aligner, checkpoints)
    finally:
        if joined_here:
            shutdown_distributed()


def _process_group_exists() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _train(
    settings: TrainerSettings,
    manifest: DatasetManifest,
    output_dir: Path,
    ctx: DistContext,
    faces: FaceSet | None,
    client: Minio | None,
    aligner: FaceAligner | None,
    checkpoints: CheckpointStore | None,
) -> TrainResult:
    import torch

    faces = faces or prepare_face_set(manifest, settings, ctx, client, aligner)
    train_samples, val_samples = faces.split("train"), faces.split("val")
    classes, labels = _class_index(train_samples)
    if len(classes) < 2:
        raise FacegateError(
            f"dataset {manifest.version[:12]} has {len(classes)} training identities with faces; "
            "ArcFace needs at least two"
        )
    train_set = FaceCrops([s.path for s in train_samples], labels, settings.flip, settings.seed)
    val_samples = val_samples[: settings.val_max_images]
    val_classes, val_labels = _class_index(val_samples)
    val_set = FaceCrops([s.path for s in val_samples], val_labels)

    def validate(backbone: torch.nn.Module) -> dict[str, float]:
        if len(val_classes) < 2:
            return {}
        embeddings = embed_crops(backbone, val_set, ctx.device, settings.batch_size)
        return verification_metrics(embeddings, val_labels, settings.val_far)

    torch.manual_seed(settings.seed)
    backbone = build_backbone(settings.architecture, settings.base_model_dir, settings.dropout)
    run_name = default_run_name(settings, manifest)
    store = checkpoints or checkpoint_store(settings, client)
    resume_from = store.load(run_name) if settings.resume else None
    tracker = None
    if ctx.is_main and (mlflow_settings := tracking_settings(settings)) is not None:
        run_id = resume_from.mlflow_run_id if resume_from is not None else None
        tracker = TrainingTracker(mlflow_settings, run_id, run_name)
    loop = TrainingLoop(
        backbone,
        classes,
        train_set,
        settings,
        ctx,
        manifest_version=manifest.version,
        run_name=run_name,
        checkpoints=store,
        validate=validate,
        on_epoch=tracker.log_epoch if tracker is not None else None,
    )
    if tracker is not None:
        loop.mlflow_run_id = tracker.run_id
        tracker.start(settings, manifest, _run_params(ctx, faces, classes, val_classes, loop))
    result = loop.fit(resume_from)
    if tracker is not None:
        loop.mlflow_run_id = tracker.run_id
    metrics = result.history[-1] if result.history else {}
    summary: dict[str, Any] = {
        "run_name": run_name,
        "step": result.step,
        "total_steps": result.total_steps,
        "epochs": settings.epochs,
        "resumed_from_step": result.resumed_from_step,
        "world_size": ctx.world_size,
        "classes": len(classes),
        "final_metrics": metrics,
        "skipped_images": faces.skipped,
    }
    if ctx.is_main:
        save_trained_model(backbone, output_dir, manifest.version, summary)
        check = [read_rgb(s.path) for s in (val_samples + train_samples)[:ONNX_CHECK_FACES]]
        export_trained(output_dir, [c for c in check if c is not None])
        if tracker is not None:
            tracker.finish(output_dir, summary, result.complete)
        log.info("trained %s (%d steps) into %s", backbone.name, result.step, output_dir)
    ctx.barrier()
    return TrainResult(
        model_dir=output_dir,
        run_id=tracker.run_id if tracker is not None else None,
        metrics=metrics,
        manifest_version=manifest.version,
        run_name=run_name,
        step=result.step,
        total_steps=result.total_steps,
        complete=result.complete,
        resumed_from_step=result.resumed_from_step,
        history=result.history,
    )


def _run_params(
    ctx: DistContext,
    faces: FaceSet,
    classes: list[str],
    val_classes: list[str],
    loop: TrainingLoop,
) -> dict[str, Any]:
    return {
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "train_images": len(loop.train_set),
        "train_identities": len(classes),
        "val_identities": len(val_classes),
        "steps_per_epoch": loop.steps_per_epoch,
        "total_steps": loop.total_steps,
        "skipped_images": sum(faces.skipped.values()),
        "precision": str(loop.precision.dtype or "float32"),
    }
