"""The evaluation gate: a candidate embedder against the champion, slice by slice.

Both models are evaluated by the same suite, on the same images, through the production path
(MTCNN detection, similarity alignment to each model's template, ONNX Runtime):

- ``lfw/<slice>``: identities of LFW with several images each, as they are (``clean``) and
  degraded (blurred, darkened, small faces, occluded); every same-identity pair is genuine and
  every cross-identity pair an impostor (all pairs);
- ``feedback``: the validation split of the training manifest (proctor-confirmed faces and
  enrolment photos of students the model was not trained on), all pairs likewise.

On each slice the metric is the TAR at the operating false-match rate (the FAR the champion's
threshold was calibrated at), or at the smallest FAR the slice's impostor count can measure
when that is larger; the FAR used is reported.  The candidate passes if on no slice its TAR is
lower than the champion's by more than ``tolerance``; otherwise the result names every slice
that failed and by how much.  A slice with too few pairs to measure is reported as skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from inference_worker.embedder import Embedder
from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer
from stream_processors.vision.mtcnn import MtcnnDetector
from trainer.datasets.faces import read_rgb
from trainer.evaluation.degradations import SLICES
from trainer.evaluation.metrics import MIN_FALSE_ACCEPTS, RocCurve, roc_curve, tar_at_far

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class GateSample:
    """One image of the suite: its identity and file; ``aligned`` crops skip detection."""

    key: str
    identity: str
    path: Path
    aligned: bool = False


@dataclass(frozen=True)
class GateOptions:
    """What the suite holds and how strict the gate is."""

    lfw_identities: int = 60
    images_per_identity: int = 4
    operating_far: float = 1e-3
    tolerance: float = 0.02
    slices: tuple[str, ...] = ("clean", *SLICES)
    seed: int = 0


@dataclass
class SliceResult:
    """Both models on one slice."""

    name: str
    images: int
    genuine_pairs: int
    impostor_pairs: int
    far: float | None
    champion_tar: float | None
    candidate_tar: float | None
    champion_failures: float
    candidate_failures: float
    # The candidate's threshold at ``far`` on this slice (an operating point for it).
    candidate_threshold: float | None = None
    # ROC curves ("champion", "candidate") for the gate's figures; not part of the report.
    curves: dict[str, RocCurve] = field(default_factory=dict, repr=False, compare=False)

    @property
    def delta(self) -> float | None:
        if self.champion_tar is None or self.candidate_tar is None:
            return None
        return self.candidate_tar - self.champion_tar


@dataclass
class GateResult:
    """The verdict of the gate and the evidence for it."""

    passed: bool
    tolerance: float
    slices: list[SliceResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "failures": self.failures,
            "skipped": self.skipped,
            "slices": {
                s.name: {
                    "images": s.images,
                    "genuine_pairs": s.genuine_pairs,
                    "impostor_pairs": s.impostor_pairs,
                    "far": s.far,
                    "champion_tar": s.champion_tar,
                    "candidate_tar": s.candidate_tar,
                    "delta": s.delta,
                    "champion_failure_rate": s.champion_failures,
                    "candidate_failure_rate": s.candidate_failures,
                    "candidate_threshold": s.candidate_threshold,
                }
                for s in self.slices
            },
        }

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow."""
        flat: dict[str, float] = {"gate_passed": float(self.passed)}
        for s in self.slices:
            slug = s.name.replace("/", "_")
            if s.champion_tar is not None:
                flat[f"gate_{slug}_champion_tar"] = s.champion_tar
            if s.candidate_tar is not None:
                flat[f"gate_{slug}_candidate_tar"] = s.candidate_tar
        return flat

    def summary(self) -> str:
        if self.passed:
            return f"gate passed on {len(self.slices) - len(self.skipped)} slices"
        return "gate failed: " + "; ".join(self.failures)


def lfw_samples(lfw_dir: Path, options: GateOptions) -> list[GateSample]:
    """A reproducible choice of LFW identities with several images each."""
    images_dir = lfw_dir / "images" if (lfw_dir / "images").is_dir() else lfw_dir
    people = []
    for person in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) >= 2:
            people.append((person.name, files))
    rng = np.random.default_rng(options.seed)
    chosen = rng.choice(len(people), size=min(options.lfw_identities, len(people)), replace=False)
    samples = []
    for index in sorted(chosen):
        name, files = people[index]
        for path in files[: options.images_per_identity]:
            samples.append(GateSample(f"lfw/{path.name}", name, path))
    return samples


class SuiteEmbedder:
    """Detects each image once and embeds its face with every model of the comparison."""

    def __init__(self, detector: MtcnnDetector, embedders: dict[str, Embedder]) -> None:
        self.embedders = embedders
        targets: dict[str, AlignmentTarget] = {}
        for embedder in embedders.values():
            card = embedder.card
            targets[card.template_name] = AlignmentTarget(
                card.template_name, card.template, card.input_size
            )
        # Evaluation scores every image: with several faces, take the largest central one.
        self.analyzer = FaceAnalyzer(detector, list(targets.values()), dominance_ratio=1.0)

    def embed(
        self, samples: Sequence[GateSample], transform: Transform | None, label: str
    ) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]:
        """Per model: (N, D) unit embeddings (zero rows where no face) and a validity mask."""
        crops: dict[str, list[np.ndarray | None]] = {name: [] for name in self.embedders}
        for sample in tqdm(samples, desc=f"gate {label}", unit="image", leave=False, disable=None):
            image = read_rgb(sample.path)  # validation crops are sealed working copies
            if image is not None and transform is not None:
                image = transform(image)
            for name, embedder in self.embedders.items():
                crops[name].append(self._crop(image, sample, embedder))
        result = {}
        for name, embedder in self.embedders.items():
            dim = embedder.card.embedding_dim
            rows = np.zeros((len(samples), dim), dtype=np.float32)
            valid = np.array([c is not None for c in crops[name]], dtype=bool)
            present = [c for c in crops[name] if c is not None]
            if present:
                vectors = embedder.embed(present)
                vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                rows[valid] = vectors
            result[name] = (rows, valid)
        return result

    def _crop(
        self, image: np.ndarray | None, sample: GateSample, embedder: Embedder
    ) -> np.ndarray | None:
        if image is None:
            return None
        card = embedder.card
        if sample.aligned:
            # Already aligned (feedback thumbnails): usable as is by a model of that input size.
            height, width = image.shape[:2]
            return image if (width, height) == tuple(card.input_size) else None
        analysis = self.analyzer.analyze(image)
        if analysis.face is None:
            return None
        return analysis.crops[card.template_name]


def all_pair_scores(
    embeddings: npt.NDArray[np.float32],
    valid: npt.NDArray[np.bool_],
    identities: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor scores over all pairs; a pair with a failed image scores -1."""
    codes = np.unique(np.asarray(identities), return_inverse=True)[1]
    scores = embeddings @ embeddings.T
    failed = ~(valid[:, None] & valid[None, :])
    scores = np.where(failed, -1.0, np.clip(scores, -1.0, 1.0))
    upper = np.triu_indices(len(codes), k=1)
    same = codes[upper[0]] == codes[upper[1]]
    pair_scores = scores[upper]
    return pair_scores[same], pair_scores[~same]


def measurable_far(target: float, impostors: int) -> float | None:
    """The target FAR, or the smallest the impostor count can measure; None if none can."""
    if impostors == 0:
        return None
    smallest = MIN_FALSE_ACCEPTS / impostors
    if smallest > 0.1:
        return None
    return max(target, smallest)


def compare_slice(
    name: str,
    identities: Sequence[str],
    champion: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]],
    candidate: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]],
    target_far: float,
) -> SliceResult:
    """TAR of both models at the same FAR on one slice."""
    champ_gen, champ_imp = all_pair_scores(champion[0], champion[1], identities)
    cand_gen, cand_imp = all_pair_scores(candidate[0], candidate[1], identities)
    far = measurable_far(target_far, champ_imp.size) if champ_gen.size else None
    champion_tar = candidate_tar = candidate_threshold = None
    if far is not None:
        champion_tar = tar_at_far(champ_gen, champ_imp, [far]).tar[_key(far)]
        points = tar_at_far(cand_gen, cand_imp, [far])
        candidate_tar = points.tar[_key(far)]
        candidate_threshold = points.threshold[_key(far)]
    curves = {}
    if champ_gen.size and champ_imp.size:
        curves = {
            "champion": roc_curve(champ_gen, champ_imp),
            "candidate": roc_curve(cand_gen, cand_imp),
        }
    return SliceResult(
        name=name,
        images=len(identities),
        genuine_pairs=int(champ_gen.size),
        impostor_pairs=int(champ_imp.size),
        far=far,
        champion_tar=champion_tar,
        candidate_tar=candidate_tar,
        champion_failures=float(np.mean(~champion[1])) if len(identities) else 0.0,
        candidate_failures=float(np.mean(~candidate[1])) if len(identities) else 0.0,
        candidate_threshold=candidate_threshold,
        curves=curves,
    )


def plot_gate(result: GateResult, folder: Path) -> list[Path]:
    """One ROC figure per measured slice, champion against candidate, with the gate's FAR."""
    from trainer.evaluation.plots import plot_roc

    paths = []
    for s in result.slices:
        if not s.curves:
            continue
        failed = any(f.startswith(f"{s.name}:") for f in result.failures)
        title = f"gate {s.name}"
        if s.far is not None and s.delta is not None:
            title += f": TAR delta {s.delta:+.3f} at FAR {s.far:.0e}"
        title += " (FAILED)" if failed else ""
        paths.append(plot_roc(s.curves, folder / f"roc_{s.name.replace('/', '_')}.png", title))
    return paths


def _key(far: float) -> str:
    from trainer.evaluation.metrics import far_key

    return far_key(far)


def judge(slices: list[SliceResult], tolerance: float) -> GateResult:
    """Pass unless the candidate is worse than the champion beyond ``tolerance`` somewhere."""
    result = GateResult(passed=True, tolerance=tolerance, slices=slices)
    for s in slices:
        if s.delta is None:
            result.skipped.append(s.name)
            continue
        if s.delta < -tolerance:
            result.failures.append(
                f"{s.name}: candidate TAR {s.candidate_tar:.3f} vs champion "
                f"{s.champion_tar:.3f} at FAR {s.far:.0e} ({s.delta:+.3f}, tolerance "
                f"{tolerance:.3f})"
            )
    measured = [s for s in slices if s.delta is not None]
    result.passed = bool(measured) and not result.failures
    if not measured:
        result.failures.append("no slice had enough pairs to compare the models")
    return result


def run_gate(
    champion: Embedder,
    candidate: Embedder,
    detector: MtcnnDetector,
    lfw_dir: Path | None,
    feedback: Sequence[GateSample],
    options: GateOptions,
) -> GateResult:
    """Evaluate both models on every slice and judge the candidate."""
    suite = SuiteEmbedder(detector, {"champion": champion, "candidate": candidate})
    slices: list[SliceResult] = []
    if lfw_dir is not None:
        samples = lfw_samples(lfw_dir, options)
        identities = [s.identity for s in samples]
        for name in options.slices:
            transform = None if name == "clean" else SLICES[name]
            tables = suite.embed(samples, transform, f"lfw/{name}")
            slices.append(
                compare_slice(
                    f"lfw/{name}",
                    identities,
                    tables["champion"],
                    tables["candidate"],
                    options.operating_far,
                )
            )
    if feedback:
        tables = suite.embed(feedback, None, "feedback")
        slices.append(
            compare_slice(
                "feedback",
                [s.identity for s in feedback],
                tables["champion"],
                tables["candidate"],
                options.operating_far,
            )
        )
    result = judge(slices, options.tolerance)
    log.info(result.summary())
    return result
