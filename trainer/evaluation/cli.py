"""``facegate eval``: evaluate a face pipeline on a pairs list or on the LFW protocols."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from facegate.errors import FacegateError
from facegate.logging_setup import configure_logging
from trainer.evaluation import tracking
from trainer.evaluation.pipeline_protocol import DEFAULT_CHUNK_SIZE, FacePipeline

# The evaluation modules pull in OpenCV, matplotlib and SciPy: imported inside the commands so
# that the rest of the command line starts fast.
if TYPE_CHECKING:
    from trainer.evaluation.embedding import ProgressCallback

log = logging.getLogger(__name__)

# The LFW copy next to the checkout (as tests/conftest.py finds it) unless FACEGATE_LFW_DIR says.
_DEFAULT_LFW_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lfw"


def default_lfw_dir() -> Path:
    """FACEGATE_LFW_DIR, else the LFW copy in ../shared/data beside the checkout."""
    return Path(os.environ.get("FACEGATE_LFW_DIR", str(_DEFAULT_LFW_DIR)))


def load_pipeline(model_name: str | None) -> FacePipeline:
    """The serving pipeline (detector + embedder) for ``model_name`` (None: the default model)."""
    try:
        from inference_worker.face_pipeline import get_pipeline
    except ImportError as err:
        raise FacegateError(f"the face pipeline cannot be loaded: {err}") from err
    pipeline: FacePipeline = get_pipeline(model_name)
    return pipeline


@contextmanager
def _progress_bars() -> Iterator[ProgressCallback]:
    """One tqdm bar per embedding run (clean images, then each slice), on stderr."""
    bars: dict[str, tqdm[Any]] = {}

    def update(label: str, done: int, total: int) -> None:
        bar = bars.get(label)
        if bar is None:
            for previous in bars.values():
                previous.close()
            bar = bars[label] = tqdm(total=total, desc=label, unit="img", disable=None)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


def _write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN would make the file unreadable to strict JSON parsers.
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _track(
    use_mlflow: bool, run_name: str, params: dict[str, Any], result: dict[str, Any], json_path: Path
) -> None:
    settings = tracking.requested_settings(use_mlflow)
    if settings is None:
        log.info(
            "MLflow: no tracking server configured (set FACEGATE_MLFLOW_TRACKING_URI or pass "
            "--mlflow); evaluation not logged"
        )
        return
    plots = [str(p) for p in result.get("plots", {}).values()]
    tracking.log_evaluation(settings, run_name, params, result, json_path, plots)


def _run(action: Callable[[], None]) -> None:
    try:
        action()
    except FacegateError as err:
        raise click.ClickException(str(err)) from err


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@click.group("eval")
def eval_group() -> None:
    """Offline evaluation of a face pipeline: pair lists and the LFW protocols."""
    configure_logging()


@eval_group.command("pairs")
@click.argument("pairs_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the CSV's paths are relative to.",
)
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "model_name", default=None, help="Model name (default: the served one).")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate at most N pairs.")
@click.option("--chunk-size", default=DEFAULT_CHUNK_SIZE, type=click.IntRange(min=1))
@click.option("--mlflow", "use_mlflow", is_flag=True, help="Log to MLflow even if not configured.")
def pairs_command(
    pairs_csv: Path,
    images_dir: Path,
    json_path: Path,
    plots_dir: Path | None,
    model_name: str | None,
    limit: int | None,
    chunk_size: int,
    use_mlflow: bool,
) -> None:
    """Verification metrics of PAIRS_CSV (path1,path2,same[,fold])."""

    def action() -> None:
        from trainer.evaluation.pairs import evaluate_pairs

        pipeline = load_pipeline(model_name)
        with _progress_bars() as progress:
            result = evaluate_pairs(
                pairs_csv, images_dir, pipeline, plots_dir, limit, chunk_size, progress
            )
        _write_json(result, json_path)
        click.echo(
            f"{result['model']}: {result['pairs']} pairs, accuracy "
            f"{result['accuracy_mean']:.4f} +- {result['accuracy_std']:.4f}, AUC "
            f"{result['roc_auc']:.4f}, EER {result['eer']:.4f}, detection failures "
            f"{result['detection_failure_rate']:.2%} -> {json_path}"
        )
        params = {"command": "pairs", "model": result["model"], "pairs_csv": str(pairs_csv)}
        _track(
            use_mlflow,
            f"eval-pairs-{result['model']}",
            {**params, "limit": limit},
            result,
            json_path,
        )

    _run(action)


@eval_group.command("lfw")
@click.option(
    "--lfw-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=lambda: os.environ.get("FACEGATE_LFW_DIR", str(_DEFAULT_LFW_DIR)),
    show_default="FACEGATE_LFW_DIR or ../shared/data/lfw",
)
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "model_name", default=None, help="Model name (default: the served one).")
@click.option("--max-images", type=click.IntRange(min=2), help="Cap the all-pairs image set.")
@click.option("--limit-pairs", type=click.IntRange(min=20), help="Cap View 2 and View 1 pairs.")
@click.option("--slice-identities", default=200, show_default=True, type=click.IntRange(min=2))
@click.option("--calibration-far", default=1e-3, show_default=True, type=float)
@click.option("--hard-pairs", default=16, show_default=True, type=click.IntRange(min=0))
@click.option("--chunk-size", default=DEFAULT_CHUNK_SIZE, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--mlflow", "use_mlflow", is_flag=True, help="Log to MLflow even if not configured.")
def lfw_command(
    lfw_dir: Path,
    json_path: Path,
    plots_dir: Path | None,
    model_name: str | None,
    max_images: int | None,
    limit_pairs: int | None,
    slice_identities: int,
    calibration_far: float,
    hard_pairs: int,
    chunk_size: int,
    seed: int,
    use_mlflow: bool,
) -> None:
    """LFW View 2, all-pairs TAR at FAR, slices, hard pairs and threshold calibration."""
    from trainer.evaluation.lfw import LfwOptions, evaluate_lfw, plan_lfw

    options = LfwOptions(
        max_images=max_images,
        limit_pairs=limit_pairs,
        calibration_far=calibration_far,
        slice_identities=slice_identities,
        hard_pairs=hard_pairs,
        seed=seed,
        chunk_size=chunk_size,
    )

    def action() -> None:
        plan = plan_lfw(lfw_dir, options)
        log.info(
            "LFW: %d clean images + %d degraded probes to embed",
            len(plan.clean_images),
            plan.total_embeddings - len(plan.clean_images),
        )
        pipeline = load_pipeline(model_name)
        with _progress_bars() as progress:
            result = evaluate_lfw(plan, pipeline, plots_dir, progress)
        _write_json(result, json_path)
        all_pairs = result["all_pairs"]
        click.echo(
            f"{result['model']}: View 2 accuracy {result['view2']['accuracy_mean']:.4f}; all pairs "
            f"({all_pairs['genuine_pairs']:,} genuine, {all_pairs['impostor_pairs']:,} impostor) "
            f"TAR@FAR1e-3 {_fmt(all_pairs['tar_at_far'].get('1e-3'))}, "
            f"TAR@FAR1e-4 {_fmt(all_pairs['tar_at_far'].get('1e-4'))}; operating threshold "
            f"{_fmt(result['operating_threshold'])} -> {json_path}"
        )
        params = {"command": "lfw", "model": result["model"], **result["options"]}
        _track(use_mlflow, f"eval-lfw-{result['model']}", params, result, json_path)

    _run(action)


@eval_group.command("cost")
@click.option(
    "--lfw-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="LFW folder for real faces (default: FACEGATE_LFW_DIR or ../shared/data/lfw).",
)
@click.option("--rounds", default=5, show_default=True, help="Timed rounds; the best is kept.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def cost_command(lfw_dir: Path | None, rounds: int, json_path: Path | None) -> None:
    """Embedding cost per face at batch 1, 8 and 32, per embedder and execution provider."""
    from trainer.evaluation.embed_cost import measure

    result = measure(lfw_dir or default_lfw_dir(), rounds=rounds)
    click.echo(f"ms per face, one thread, {result['faces']} real faces, best of {rounds}:")
    for key, row in result["results"].items():
        costs = "  ".join(f"b{size} {ms:6.2f}" for size, ms in row["ms_per_face"].items())
        click.echo(f"  {key:<26} {costs}   (ran on {row['active_provider']})")
    if json_path:
        _write_json(result, json_path)
