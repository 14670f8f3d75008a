"""Operating thresholds and the champion embedder, chosen by measurement on LFW View 1.

``facegate models calibrate`` embeds every image of LFW View 1 (pairsDevTrain + pairsDevTest)
with every built embedder through the production detect-align path (detection is shared), scores
all pairs among those images (genuine: same person; impostor: different persons), and writes
``trainer/calibration.json``: per model the threshold at the target false-match rate and the TAR
there, and the champion, the model with the highest TAR at the selection FAR.  The file is
committed with the command and date that produced it, so that a machine without LFW (the demo)
still registers a measured threshold; running the command again replaces it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegate.errors import FacegateError
from facegate.paths import models_dir

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class ModelCalibration:
    """One model's operating point on the calibration set."""

    threshold: float
    tar_at_threshold: float
    far_at_threshold: float
    tar_at_selection_far: float | None


@dataclass(frozen=True)
class Calibration:
    """The committed calibration: thresholds per model and the measured champion."""

    champion: str
    target_far: float
    selection_far: float
    models: dict[str, ModelCalibration]
    raw: dict[str, Any]

    def threshold_for(self, model: str) -> float:
        entry = self.models.get(model)
        if entry is None:
            raise FacegateError(
                f"no calibrated threshold for {model}; run `facegate models calibrate`"
            )
        return entry.threshold


def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    """Read the calibration file."""
    if not path.is_file():
        raise FacegateError(f"no calibration at {path}; run `facegate models calibrate`")
    raw = json.loads(path.read_text())
    models = {
        name: ModelCalibration(
            threshold=float(entry["threshold"]),
            tar_at_threshold=float(entry["tar_at_threshold"]),
            far_at_threshold=float(entry["far_at_threshold"]),
            tar_at_selection_far=entry.get("tar_at_selection_far"),
        )
        for name, entry in raw["models"].items()
    }
    return Calibration(
        champion=raw["champion"],
        target_far=float(raw["target_far"]),
        selection_far=float(raw["selection_far"]),
        models=models,
        raw=raw,
    )


def calibrate(
    lfw_dir: Path,
    model_names: list[str],
    target_far: float = 1e-3,
    selection_far: float = 1e-4,
    max_images: int | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, Any]:
    """Measure every model on View 1's images; return the calibration document."""
    from inference_worker.embedder import Embedder
    from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer
    from stream_processors.vision.mtcnn import MtcnnDetector
    from trainer.evaluation import metrics
    from trainer.evaluation.embedding import decode_image
    from trainer.evaluation.lfw import LfwOptions, plan_lfw

    plan = plan_lfw(lfw_dir, LfwOptions())
    keys = plan.view1.images()[:max_images] if max_images else plan.view1.images()
    identities = np.unique([plan.identity_of[k] for k in keys], return_inverse=True)[1]
    embedders = {name: Embedder(models_dir() / name).load() for name in model_names}
    targets = [
        AlignmentTarget(e.card.template_name, e.card.template, e.card.input_size)
        for e in embedders.values()
    ]
    analyzer = FaceAnalyzer(
        MtcnnDetector(models_dir() / "mtcnn").load(), targets, dominance_ratio=1.0
    )
    dims = {name: e.card.embedding_dim for name, e in embedders.items()}
    vectors = {name: np.zeros((len(keys), dims[name]), np.float32) for name in embedders}
    valid = np.zeros(len(keys), dtype=bool)
    started = time.monotonic()
    for row, key in enumerate(keys):
        image = decode_image(lfw_dir / "images" / key)
        if image is not None:
            analysis = analyzer.analyze(image)
            if analysis.face is not None:
                valid[row] = True
                for name, embedder in embedders.items():
                    crop = analysis.crops[embedder.card.template_name]
                    vectors[name][row] = embedder.embed([crop])[0]
        progress(row + 1, len(keys))
    results: dict[str, Any] = {}
    for name in embedders:
        scores = metrics.all_pairs_scores(
            vectors[name], identities, (target_far, selection_far), 0, valid
        )
        operating = metrics.calibrate_threshold(scores.genuine, scores.impostor, target_far)
        selection = metrics.tar_at_far(scores.genuine, scores.impostor, (selection_far,))
        results[name] = {
            "threshold": operating.threshold,
            "tar_at_threshold": operating.tar,
            "far_at_threshold": operating.far,
            "tar_at_selection_far": selection.tar.get(metrics.far_key(selection_far)),
            "genuine_pairs": operating.n_genuine,
            "impostor_pairs": operating.n_impostor,
        }
    # Ties and unmeasurable selection points fall back on the TAR at the operating point.
    champion = max(
        results,
        key=lambda n: (results[n]["tar_at_selection_far"] or -1.0, results[n]["tar_at_threshold"]),
    )
    return {
        "protocol": (
            "LFW View 1 images (pairsDevTrain.csv + pairsDevTest.csv), all pairs: genuine = same "
            "person, impostor = different persons; production MTCNN + alignment + ONNX embedder"
        ),
        "images": len(keys),
        "failed_images": int((~valid).sum()),
        "target_far": target_far,
        "selection_far": selection_far,
        "selection_rule": f"highest TAR at FAR {selection_far:g}",
        "champion": champion,
        "models": results,
        "seconds": round(time.monotonic() - started, 1),
        "measured_at": time.strftime("%Y-%m-%d"),
        "command": "facegate models calibrate",
    }
