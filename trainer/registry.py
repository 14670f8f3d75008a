"""The MLflow model registry of FaceGate's embedders: register, resolve by alias, promote.

A version's artifacts are the model folder as built (``model.onnx``, ``model.pt``,
``card.json``); its tags carry the input specification, alignment template, operating threshold,
licence and source.  Workers never copy model files by hand: they resolve an alias
(``champion``, ``canary``, ``challenger``) and download that version into a local cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from facegate.errors import FacegateError
from facegate.paths import models_dir
from facegate.settings import MlflowSettings
from inference_worker.embedder import ModelCard
from trainer.sources import sha256_of

log = logging.getLogger(__name__)

ALIASES = ("champion", "canary", "challenger")
ARTIFACT_PATH = "embedder"


@dataclass(frozen=True)
class RegisteredEmbedder:
    """A registered embedder version, downloaded and ready to load."""

    name: str
    version: str
    model_dir: Path
    threshold: float
    tags: dict[str, str]


def _client(settings: MlflowSettings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def register_embedder(
    model_dir: Path,
    threshold: float,
    settings: MlflowSettings,
    extra_tags: dict[str, str] | None = None,
    alias: str | None = None,
) -> str:
    """Log ``model_dir`` in a run, register it as a new version, tag it; return the version."""
    card = json.loads((model_dir / "card.json").read_text())
    client = _client(settings)
    mlflow.set_experiment(settings.experiment)
    tags = {
        "architecture": card["name"],
        "embedding_dim": str(card["embedding_dim"]),
        "input_spec": json.dumps(
            {
                "name": "input",
                "layout": "NCHW",
                "dtype": "float32",
                "range": "RGB 0..255",
                "size": card["input_size"],
                "batch": "dynamic",
            }
        ),
        "alignment_template": json.dumps(card["template"]),
        "operating_threshold": f"{threshold:.6f}",
        "licence": str(card.get("licence", "")),
        "source": str(card.get("source", "")),
        "onnx_sha256": str(card.get("onnx_sha256", "")),
        **(extra_tags or {}),
    }
    with mlflow.start_run(run_name=f"register-{card['name']}") as run:
        mlflow.set_tags({f"model.{k}": v for k, v in tags.items()})
        mlflow.log_param("architecture", card["name"])
        mlflow.log_param("operating_threshold", threshold)
        mlflow.log_artifacts(str(model_dir), artifact_path=ARTIFACT_PATH)
    try:
        client.get_registered_model(settings.registered_model)
    except MlflowException:
        client.create_registered_model(
            settings.registered_model, description="FaceGate face embedders (ONNX)"
        )
    version = client.create_model_version(
        settings.registered_model,
        f"runs:/{run.info.run_id}/{ARTIFACT_PATH}",
        run.info.run_id,
        tags=tags,
        description=f"{card['name']} from {card.get('source', 'unknown source')}",
    )
    _wait_ready(client, settings.registered_model, version.version)
    if alias:
        client.set_registered_model_alias(settings.registered_model, alias, version.version)
    log.info("registered %s v%s (%s)", settings.registered_model, version.version, card["name"])
    return str(version.version)


def _wait_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get_model_version(name, version).status != "READY":
        if time.monotonic() > deadline:
            raise FacegateError(f"model version {name} v{version} not READY after {timeout_s} s")
        time.sleep(0.5)


def find_version(settings: MlflowSettings, onnx_sha256: str) -> str | None:
    """The registered version whose ONNX file has this checksum, if any."""
    client = _client(settings)
    try:
        versions = client.search_model_versions(f"name='{settings.registered_model}'")
    except MlflowException:
        return None
    for version in versions:
        if version.tags.get("onnx_sha256") == onnx_sha256:
            return str(version.version)
    return None


def champion_version(settings: MlflowSettings, alias: str = "champion") -> str | None:
    """The version behind ``alias``, or None when the alias (or the model) does not exist."""
    try:
        version = _client(settings).get_model_version_by_alias(settings.registered_model, alias)
    except MlflowException:
        return None
    return str(version.version)


def set_alias(settings: MlflowSettings, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` (the only way a model is promoted or rolled back)."""
    if alias not in ALIASES:
        raise FacegateError(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}")
    _client(settings).set_registered_model_alias(settings.registered_model, alias, version)


def remove_alias(settings: MlflowSettings, alias: str) -> None:
    """Remove ``alias`` (no error when it is not set)."""
    with contextlib.suppress(MlflowException):
        _client(settings).delete_registered_model_alias(settings.registered_model, alias)


def version_tags(settings: MlflowSettings, version: str) -> dict[str, str]:
    """The tags of a registered version."""
    found = _client(settings).get_model_version(settings.registered_model, version)
    return dict(found.tags)


def tag_version(settings: MlflowSettings, version: str, tags: dict[str, str]) -> None:
    """Set tags on a registered version (rollout history, gate results)."""
    client = _client(settings)
    for key, value in tags.items():
        client.set_model_version_tag(settings.registered_model, version, key, value)


def list_versions(settings: MlflowSettings) -> list[dict[str, Any]]:
    """Every registered version with its aliases and main tags, newest first."""
    client = _client(settings)
    try:
        model = client.get_registered_model(settings.registered_model)
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for version in client.search_model_versions(f"name='{settings.registered_model}'"):
        rows.append(
            {
                "version": str(version.version),
                "aliases": sorted(aliases.get(str(version.version), [])),
                "architecture": version.tags.get("architecture", ""),
                "threshold": version.tags.get("operating_threshold", ""),
                "created": version.creation_timestamp,
            }
        )
    return sorted(rows, key=lambda row: int(row["version"]), reverse=True)


def resolve(
    settings: MlflowSettings, alias: str = "champion", version_number: str | None = None
) -> RegisteredEmbedder:
    """Download the version behind ``alias`` (or ``version_number``) into the local cache
    (once) and describe it."""
    client = _client(settings)
    name = f"v{version_number}" if version_number else f"@{alias}"
    try:
        if version_number:
            version = client.get_model_version(settings.registered_model, version_number)
        else:
            version = client.get_model_version_by_alias(settings.registered_model, alias)
    except MlflowException as exc:
        raise FacegateError(
            f"no {settings.registered_model} {name} in the registry at {settings.tracking_uri}: "
            f"{exc.message.splitlines()[0] if exc.message else exc}"
        ) from None
    cache = models_dir() / "registry" / settings.registered_model / str(version.version)
    expected = version.tags.get("onnx_sha256", "")
    onnx_file = cache / "model.onnx"
    if not (onnx_file.is_file() and sha256_of(onnx_file) == expected):
        shutil.rmtree(cache, ignore_errors=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        downloaded = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{settings.registered_model}/{version.version}",
                dst_path=str(cache.parent / f".{version.version}.tmp"),
            )
        )
        downloaded.rename(cache)
        shutil.rmtree(cache.parent / f".{version.version}.tmp", ignore_errors=True)
        if expected and sha256_of(onnx_file) != expected:
            raise FacegateError(f"downloaded model v{version.version} fails its checksum")
    return RegisteredEmbedder(
        name=settings.registered_model,
        version=str(version.version),
        model_dir=cache,
        threshold=float(version.tags.get("operating_threshold", "nan")),
        tags=dict(version.tags),
    )


def card_from_tags(tags: dict[str, str]) -> ModelCard:
    """The model card a registry version's tags describe (no download needed)."""
    spec = json.loads(tags["input_spec"])
    size = spec["size"]
    return ModelCard(
        name=tags["architecture"],
        embedding_dim=int(tags["embedding_dim"]),
        input_size=(int(size[0]), int(size[1])) if isinstance(size, list) else (size, size),
        template=np.asarray(json.loads(tags["alignment_template"]), dtype=np.float32).reshape(5, 2),
        licence=tags.get("licence", ""),
        source=tags.get("source", ""),
        onnx_sha256=tags.get("onnx_sha256", ""),
    )


def resolve_alias_cards(
    settings: MlflowSettings, aliases: tuple[str, ...] = ("champion", "canary")
) -> list[ModelCard]:
    """Cards of the versions behind ``aliases`` (champion first); the champion must exist."""
    client = _client(settings)
    cards: list[ModelCard] = []
    for alias in aliases:
        try:
            version = client.get_model_version_by_alias(settings.registered_model, alias)
        except MlflowException:
            if alias == "champion":
                raise FacegateError(
                    f"no {settings.registered_model}@champion at {settings.tracking_uri}; "
                    "run `facegate models register --alias champion`"
                ) from None
            continue
        card = card_from_tags(dict(version.tags))
        if all(c.template_name != card.template_name for c in cards):
            cards.append(card)
    return cards
