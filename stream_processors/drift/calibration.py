"""Drift statistics of real faces: verdicts made from LFW through the production face path.

Each verdict is what a gate would produce for one LFW person: the probe image (optionally
degraded, e.g. darkened) goes through detection, alignment, quality and the embedder; its
score is the cosine similarity with the embedding of another image of the same person (the
"enrolled" one, always clean); its decision follows the worker's policy.  The integration test
builds its windows with :func:`lfw_verdicts`; ``python -m stream_processors.drift.calibration``
measures the statistics of many normal and darkened windows against a reference window, which
is how the default bounds of ``DriftSettings`` were chosen.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from inference_worker.decision import decide
from inference_worker.face_pipeline import LocalFacePipeline
from inference_worker.sketch import sketch
from schemas.messages import Verdict, new_id, now

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class LfwPerson:
    """One LFW person with two images: one to enrol, one shown to the camera."""

    name: str
    enrolment: Path
    probe: Path


def read_rgb(path: Path) -> Image:
    """An image file as RGB pixels."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def lfw_people(lfw_dir: Path, seed: int = 0) -> list[LfwPerson]:
    """Every LFW person with at least two images, shuffled with ``seed``."""
    images: dict[str, list[str]] = {}
    with open(lfw_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            images.setdefault(row["identity"], []).append(row["relpath"])
    people = [
        LfwPerson(name, lfw_dir / "images" / paths[0], lfw_dir / "images" / paths[1])
        for name, paths in sorted(images.items())
        if len(paths) >= 2
    ]
    random.Random(seed).shuffle(people)
    return people


def lfw_verdicts(
    pipeline: LocalFacePipeline,
    people: Sequence[LfwPerson],
    gate_id: str,
    exam_id: str,
    model_version: str,
    threshold: float,
    degrade: Callable[[Image], Image] | None = None,
) -> list[Verdict]:
    """One verdict per person whose enrolment image has a face (others are skipped)."""
    template = pipeline.embedder.card.template_name
    enrolled = pipeline.analyse([read_rgb(p.enrolment) for p in people])
    probes = [read_rgb(p.probe) for p in people]
    if degrade is not None:
        probes = [degrade(image) for image in probes]
    analyses = pipeline.analyse(probes)
    kept = [i for i, a in enumerate(enrolled) if a.face is not None]
    enrol_embeddings = pipeline.embedder.embed([enrolled[i].crops[template] for i in kept])
    with_face = [i for i in kept if analyses[i].face is not None]
    probe_embeddings = dict(
        zip(
            with_face,
            pipeline.embedder.embed([analyses[i].crops[template] for i in with_face]),
            strict=True,
        )
    )
    verdicts = []
    for row, index in enumerate(kept):
        analysis = analyses[index]
        embedding = probe_embeddings.get(index)
        score = None if embedding is None else float(embedding @ enrol_embeddings[row])
        quality = analysis.quality
        outcome = decide(
            analysis.outcome,
            people[index].name,
            True,
            bool(quality and quality.ok),
            score,
            threshold,
        )
        at = now()
        verdicts.append(
            Verdict(
                frame_id=new_id(),
                gate_id=gate_id,
                exam_id=exam_id,
                claimed_student_id=people[index].name,
                captured_at=at,
                decided_at=at,
                decision=outcome.decision,
                reason=outcome.reason,
                score=score,
                threshold=threshold,
                model_name=pipeline.model_name,
                model_version=model_version,
                quality=dict(quality.scores) if quality else {},
                quality_reasons=list(quality.reasons) if quality else [],
                embedding_sketch=None if embedding is None else sketch(embedding[None])[0].tolist(),
            )
        )
    return verdicts


def main(argv: Sequence[str] | None = None) -> None:
    """Print the statistics of normal and degraded LFW windows against a reference window."""
    from facegate.settings import load_settings
    from inference_worker.face_pipeline import get_pipeline
    from schemas.messages import DriftReport
    from stream_processors.drift.monitor import DriftMonitor
    from stream_processors.drift.settings import DriftSettings
    from trainer.calibration import load_calibration
    from trainer.evaluation.degradations import SLICES, darken

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("lfw_dir", type=Path)
    parser.add_argument("--window", type=int, default=40, help="verdicts per window")
    parser.add_argument("--windows", type=int, default=10, help="normal (and darkened) windows")
    parser.add_argument("--slice", default="darkened", choices=sorted(SLICES), help="degradation")
    parser.add_argument("--factor", type=float, default=0.35, help="darkening factor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pipeline = get_pipeline()
    threshold = load_calibration().threshold_for(pipeline.model_name)
    people = lfw_people(args.lfw_dir, args.seed)
    settings = load_settings(
        DriftSettings, window_size=args.window, min_samples=min(20, args.window), all_gates=False
    )
    monitor = DriftMonitor(settings)

    def run(verdicts: list[Verdict]) -> DriftReport:
        reports = [r for v in verdicts[: args.window] for r in monitor.add_verdict(v)]
        if len(reports) != 1:
            raise SystemExit(f"expected one report per window, got {len(reports)}")
        return reports[0]

    # Ask for a few more people than a window holds: some enrolment images have no face.
    spare = args.window + 10
    groups = [people[i * spare : (i + 1) * spare] for i in range(args.windows + 1)]

    slice_name: str = args.slice
    degraded: Callable[[Image], Image] = SLICES[slice_name]
    if slice_name == "darkened":
        degraded = lambda image: darken(image, args.factor)  # noqa: E731

    def window(group: list[LfwPerson], degrade: Callable[[Image], Image] | None) -> DriftReport:
        return run(lfw_verdicts(pipeline, group, "g", "e", "v", threshold, degrade))

    window(groups[0], None)  # the reference
    rows: dict[str, list[DriftReport]] = {"normal": [], slice_name: []}
    for group in groups[1:]:
        rows["normal"].append(window(group, None))
        rows[slice_name].append(window(group, degraded))
    names = sorted({name for reports in rows.values() for r in reports for name in r.statistics})
    print(f"{'statistic':<30} {'normal min/median/max':>28}   {slice_name + ' min/median/max':>28}")
    for name in names:
        cells = []
        for reports in rows.values():
            values = [r.statistics[name] for r in reports if name in r.statistics]
            cells.append(
                f"{min(values):8.3f} {float(np.median(values)):8.3f} {max(values):8.3f}"
                if values
                else f"{'-':>26}"
            )
        print(f"{name:<30} {cells[0]:>28}   {cells[1]:>28}")
    for kind, reports in rows.items():
        breached = sorted({b for r in reports for b in r.breached})
        count = sum(bool(r.breached) for r in reports)
        print(f"{kind}: {count}/{len(reports)} windows breached: {', '.join(breached) or '-'}")


if __name__ == "__main__":
    main()
