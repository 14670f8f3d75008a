"""Pair-list evaluation driven by a FAKE pipeline (tests/unit/eval_fakes.py).

The fake returns a fixed embedding per identity plus a little fixed noise per image, and
``"no_face"`` for one image, so that the accounting of detection failures, the JSON and the plots
can be checked exactly.  No detector or model runs here.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facegate.errors import FacegateError
from tests.unit.eval_fakes import CodedFacePipeline, coded_face_image
from trainer.evaluation.cli import eval_group
from trainer.evaluation.embedding import embed_files
from trainer.evaluation.pairs import (
    evaluate_pairs,
    limit_pairs,
    read_pairs_csv,
    resolve_images,
    score_pairs,
)
from trainer.evaluation.pipeline_protocol import EmbedOutcome

IDENTITIES, PER_IDENTITY = 20, 4
FACELESS = "id00/img_2.png"  # the one image the fake pipeline finds no face in


def _write_dataset(root: Path, with_folds: bool) -> Path:
    """Coded images on disk and a pairs CSV: every genuine pair and every impostor pair."""
    images = root / "images"
    relpaths: list[tuple[str, int]] = []
    for identity in range(IDENTITIES):
        for variant in range(PER_IDENTITY):
            relpath = f"id{identity:02d}/img_{variant}.png"
            (images / relpath).parent.mkdir(parents=True, exist_ok=True)
            rgb = coded_face_image(identity, variant, has_face=relpath != FACELESS)
            cv2.imwrite(str(images / relpath), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            relpaths.append((relpath, identity))
    csv_path = root / "pairs.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["fold", "path1", "path2", "same"] if with_folds else ["path1", "path2", "same"]
        )
        for n, ((p1, i1), (p2, i2)) in enumerate(itertools.combinations(relpaths, 2)):
            row = [p1, p2, int(i1 == i2)]
            writer.writerow([n % 10 + 1, *row] if with_folds else row)
    return csv_path


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return _write_dataset(tmp_path, with_folds=True)


def test_pairs_report_accounts_for_the_faceless_image(dataset: Path, tmp_path: Path) -> None:
    pipeline = CodedFacePipeline()
    plots = tmp_path / "plots"
    result = evaluate_pairs(dataset, tmp_path / "images", pipeline, plots, chunk_size=32)

    n_images = IDENTITIES * PER_IDENTITY
    genuine = IDENTITIES * PER_IDENTITY * (PER_IDENTITY - 1) // 2
    assert result["pairs"] == n_images * (n_images - 1) // 2
    assert result["genuine_pairs"] == genuine
    assert result["model"] == "fake-coded"
    assert result["images"] == n_images
    assert result["failed_images"] == 1
    assert result["detection_failure_rate"] == pytest.approx(1 / n_images)
    assert result["failure_reasons"] == {"no_face": 1}
    assert result["failed_pairs"] == n_images - 1  # every pair that includes the faceless image
    assert result["failed_pairs_policy"] == "scored_as_nonmatch"
    # Each distinct image embedded once, in chunks of at most 32.
    assert sum(pipeline.calls) == n_images and max(pipeline.calls) <= 32
    # Other pairs separate perfectly; the faceless image's 3 genuine and 76 impostor pairs tie at
    # -1, below everything: the genuine ones are missed at any threshold, ties count half.
    failed_impostors = n_images - 1 - 3
    impostors = result["impostor_pairs"]
    assert result["roc_auc"] == pytest.approx(
        (genuine - 3) / genuine + 3 / genuine * 0.5 * failed_impostors / impostors
    )
    assert result["eer"] == pytest.approx(3 / genuine)
    assert result["accuracy_mean"] > 0.99
    assert result["folds_from"] == "csv" and len(result["accuracy_folds"]) == 10
    assert set(result["tar_at_far"]) == {"1e-2", "1e-3", "1e-4"}
    assert result["tar_at_far"]["1e-2"] == pytest.approx((genuine - 3) / genuine)
    assert result["tar_at_far"]["1e-4"] is None  # 3,040 impostors cannot measure FAR 1e-4
    for stage in ("decode", "detect", "align", "embed", "total"):
        assert set(result["timing_ms"][stage]) == {"mean", "p50", "p95", "n"}
    assert result["timing_ms"]["detect"]["p50"] == 2.0
    assert result["timing_ms"]["decode"]["n"] == n_images
    for name in ("roc", "det", "histogram"):
        png = Path(result["plots"][name])
        assert png.parent == plots
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    json.dumps(result, allow_nan=False)


def test_failed_pairs_score_minus_one(dataset: Path, tmp_path: Path) -> None:
    pairs = read_pairs_csv(dataset)
    keys = pairs.images()
    table = embed_files(keys, resolve_images(tmp_path / "images", keys), CodedFacePipeline())
    scores, failed = score_pairs(table, pairs)
    touches = np.array([FACELESS in (a, b) for a, b in zip(pairs.path1, pairs.path2, strict=True)])
    assert np.array_equal(failed, touches)
    assert np.all(scores[failed] == -1.0)
    assert np.all(scores[~failed] > -1.0)


def test_random_folds_and_limit(tmp_path: Path) -> None:
    csv_path = _write_dataset(tmp_path, with_folds=False)
    result = evaluate_pairs(csv_path, tmp_path / "images", CodedFacePipeline(), limit=200)
    assert result["pairs"] == 200
    # The limit takes labels in turn, so both stay represented.
    assert result["genuine_pairs"] == 100
    assert result["folds_from"].startswith("random 10-fold split")
    assert result["plots"] == {}


def test_limit_pairs_keeps_every_fold(dataset: Path) -> None:
    limited = limit_pairs(read_pairs_csv(dataset), 40)
    assert limited.fold is not None
    assert len(limited) == 40 and set(limited.fold.tolist()) == set(range(1, 11))


def test_unreadable_images_count_as_failures(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "images" / "id05/img_1.png").write_bytes(b"not an image")
    result = evaluate_pairs(dataset, tmp_path / "images", CodedFacePipeline())
    assert result["failure_reasons"] == {"no_face": 1, "unreadable": 1}
    assert result["failed_pairs"] == 2 * (IDENTITIES * PER_IDENTITY - 1) - 1


def test_missing_images_are_a_one_line_error(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "images" / "id03/img_0.png").unlink()
    with pytest.raises(FacegateError, match="1 of 80 images not found"):
        evaluate_pairs(dataset, tmp_path / "images", CodedFacePipeline())


def test_cli_pairs_writes_json_and_skips_mlflow(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    requested: list[str | None] = []

    def get_pipeline(model_name: str | None) -> CodedFacePipeline:
        requested.append(model_name)
        return CodedFacePipeline()

    # The real factory lives in inference_worker.face_pipeline; the command imports it lazily.
    fake_module = types.ModuleType("inference_worker.face_pipeline")
    fake_module.get_pipeline = get_pipeline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inference_worker", types.ModuleType("inference_worker"))
    monkeypatch.setitem(sys.modules, "inference_worker.face_pipeline", fake_module)
    monkeypatch.delenv("FACEGATE_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FACEGATE_ENV_FILE", str(tmp_path / "absent.env"))
    out = tmp_path / "out" / "pairs.json"
    caplog.set_level("INFO")

    args = ["pairs", str(dataset), "--images", str(tmp_path / "images"), "--json", str(out)]
    run = CliRunner().invoke(eval_group, [*args, "--plots", str(tmp_path / "p"), "--model", "m1"])

    assert run.exit_code == 0, run.output
    assert requested == ["m1"]
    written = json.loads(out.read_text())
    assert written["failed_pairs_policy"] == "scored_as_nonmatch"
    assert Path(written["plots"]["roc"]).is_file()
    assert "accuracy" in run.output
    assert "no tracking server configured" in caplog.text


class _BlindPipeline:
    """FAKE: never finds a face."""

    model_name = "fake-blind"

    def embed_images(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        return [EmbedOutcome(None, {"detect": 1.0}, "no_face") for _ in images]


def test_a_pipeline_that_finds_no_faces_still_reports(dataset: Path, tmp_path: Path) -> None:
    result = evaluate_pairs(dataset, tmp_path / "images", _BlindPipeline(), tmp_path / "plots")
    assert result["detection_failure_rate"] == 1.0
    assert result["failed_pairs"] == result["pairs"]
    assert result["roc_auc"] == 0.5
    assert result["tar_at_far"]["1e-2"] == 0.0
    json.dumps(result, allow_nan=False)
