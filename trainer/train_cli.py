"""``facegate train``: build a versioned training set, train an embedder on it.

``facegate train run`` also runs under torchrun, one process per GPU or CPU share::

    torchrun --nproc_per_node=2 --standalone -m trainer.train_cli run --manifest V --out DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from facegate.errors import FacegateError
from facegate.logging_setup import configure_logging


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


@click.group("train")
def train_group() -> None:
    """Training sets and embedder training (PyTorch; resumable; DDP under torchrun).

    Settings come from FACEGATE_TRAIN_* variables (architecture, epochs, batch size, lr, amp,
    checkpoints...), the object store from FACEGATE_S3_*, tracking from FACEGATE_MLFLOW_*;
    options given here override them.
    """
    configure_logging()


@train_group.command("dataset")
@click.option(
    "--folder",
    "folders",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder with one sub-folder of photos per identity (repeatable).",
)
@click.option("--max-identities", type=click.IntRange(min=1), help="Per folder: keep N people.")
@click.option(
    "--max-images-per-identity", type=click.IntRange(min=1), help="Per folder: N photos each."
)
@click.option(
    "--min-images-per-identity",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Leave out identities with fewer images (over all sources).",
)
@click.option("--no-feedback", is_flag=True, help="Leave out proctor-confirmed feedback samples.")
@click.option("--no-enrollment", is_flag=True, help="Leave out students' enrolment photos.")
@click.option("--since", help="Only feedback partitions from this day on (YYYY-MM-DD).")
@click.option("--val-share", default=0.2, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed", default=0, show_default=True, help="Seed of the identity split.")
@click.option("--no-store", is_flag=True, help="Do not write the manifest to the object store.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the manifest to this file.",
)
def dataset_command(
    folders: tuple[Path, ...],
    max_identities: int | None,
    max_images_per_identity: int | None,
    min_images_per_identity: int,
    no_feedback: bool,
    no_enrollment: bool,
    since: str | None,
    val_share: float,
    seed: int,
    no_store: bool,
    json_path: Path | None,
) -> None:
    """Build a training-set manifest from feedback, enrolment photos and folders; store it.

    The manifest pins every image by SHA-256 and splits by identity; its version is a hash of
    its entries, so the same inputs give the same version. Stored at
    datasets/<version>/manifest.json in the datasets bucket (FACEGATE_S3_BUCKET_DATASETS).
    """
    from facegate.object_store import make_object_store
    from facegate.settings import ObjectStoreSettings, load_settings
    from trainer.datasets import BuildOptions, FolderSource, build_manifest, store_manifest
    from trainer.datasets.sources import DatasetSource, object_store_sources

    s3 = load_settings(ObjectStoreSettings)
    needs_store = not no_store or not (no_feedback and no_enrollment)
    client = make_object_store(s3) if needs_store else None
    sources: list[DatasetSource] = []
    if client is not None:
        sources += object_store_sources(
            client,
            s3.bucket_feedback,
            s3.bucket_datasets,
            feedback=not no_feedback,
            enrollment=not no_enrollment,
            since=since,
        )
    sources += [
        FolderSource(folder, max_identities, max_images_per_identity, min_images_per_identity)
        for folder in folders
    ]
    if not sources:
        raise click.UsageError("no sources: give --folder or keep feedback/enrolment")
    started = time.monotonic()
    options = BuildOptions(val_share, seed, min_images_per_identity)
    manifest = build_manifest(sources, options)
    where = "not stored"
    if not no_store and client is not None:
        where = store_manifest(manifest, client, s3.bucket_datasets)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(manifest.to_json(), encoding="utf-8")
    counts = manifest.counts
    click.echo(f"dataset {manifest.version}")
    click.echo(
        f"  {counts['images']} images of {counts['identities']} identities "
        f"({time.monotonic() - started:.1f} s) -> {where}"
    )
    for split, tally in counts["splits"].items():
        click.echo(f"  {split:<5} {tally['images']:>6} images {tally['identities']:>5} identities")
    for source, tally in counts["sources"].items():
        click.echo(f"  {source:<10} {tally['images']:>6} images {tally['identities']:>5} ids")
    if counts["excluded"]:
        click.echo(f"  excluded: {json.dumps(counts['excluded'])}")


@train_group.command("run")
@click.option(
    "--manifest",
    "manifest_ref",
    required=True,
    help="Dataset manifest: a version (64 hex), an s3:// URI or a JSON file.",
)
@click.option(
    "--arch",
    type=click.Choice(["finetune", "iresnet18", "iresnet-tiny"]),
    help="finetune = the production MobileFaceNet with a new ArcFace head (default).",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (FACEGATE_TRAIN_EPOCHS).")
@click.option(
    "--out",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model folder to write (model.pt, model.onnx, card.json).",
)
@click.option("--run-name", help="Checkpoint/MLflow run name (default <arch>-<manifest[:12]>).")
@click.option(
    "--resume/--no-resume",
    default=None,
    help="Continue from the run's checkpoint if there is one (default: resume).",
)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after N optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Per-process batch size.")
@click.option("--lr", type=float, help="Learning rate of the head (backbone: scaled for finetune).")
@click.option(
    "--checkpoints",
    "checkpoint_store",
    type=click.Choice(["s3", "local"]),
    help="Where checkpoints go: the models bucket (default) or FACEGATE_TRAIN_CHECKPOINT_DIR.",
)
def run_command(
    manifest_ref: str,
    arch: str | None,
    epochs: int | None,
    output_dir: Path,
    run_name: str | None,
    resume: bool | None,
    max_steps: int | None,
    batch_size: int | None,
    lr: float | None,
    checkpoint_store: str | None,
) -> None:
    """Train an embedder on a dataset manifest and write a servable model folder.

    Resumes from checkpoints/<run name>/last.pt in the models bucket, logs to MLflow when
    FACEGATE_MLFLOW_TRACKING_URI is set, exports ONNX checked against PyTorch. Under torchrun
    every process runs this command; rank 0 writes.
    """
    from facegate.object_store import make_object_store
    from facegate.service_process import lower_priority
    from facegate.settings import load_settings
    from trainer.datasets import load_manifest
    from trainer.training import TrainerSettings, train

    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "architecture": arch,
            "epochs": epochs,
            "run_name": run_name,
            "resume": resume,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "checkpoint_store": checkpoint_store,
        }.items()
        if value is not None
    }
    settings = load_settings(TrainerSettings, **overrides)
    lower_priority(settings)
    client = None
    if manifest_ref.startswith("s3://") or not Path(manifest_ref).is_file():
        client = make_object_store(settings.s3)
    manifest = load_manifest(manifest_ref, client, settings.s3.bucket_datasets)
    started = time.monotonic()
    result = train(settings, manifest, output_dir, client=client)
    if not _is_main_rank():
        return
    state = "complete" if result.complete else f"stopped at step {result.step}"
    click.echo(
        f"run {result.run_name}: {state} ({result.step}/{result.total_steps} steps, "
        f"{time.monotonic() - started:.1f} s) -> {result.model_dir}"
    )
    for key, value in sorted(result.metrics.items()):
        click.echo(f"  {key:<24} {value:.4f}")
    if result.run_id:
        click.echo(f"  MLflow run {result.run_id}")


def main() -> None:
    """``python -m trainer.train_cli``: the train group alone (what torchrun launches)."""
    try:
        train_group.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FacegateError as exc:
        click.echo(f"facegate: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
