"""Which LFW images and pair lists an evaluation run uses (see ``lfw.py`` for the protocols).

Planning reads only the CSV lists, so a run's size is known before any image is embedded.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.errors import FacegateError
from trainer.evaluation.degradations import SLICES
from trainer.evaluation.pairs import PairList, limit_pairs, read_pairs_csv
from trainer.evaluation.pipeline_protocol import DEFAULT_CHUNK_SIZE

# The name of the undegraded probes and of the clean embedding run.
CLEAN = "clean"


@dataclass(frozen=True)
class LfwOptions:
    """What to evaluate and how much of it (the reductions make a quick run possible)."""

    max_images: int | None = None  # cap on the all-pairs image set (whole people, seeded)
    limit_pairs: int | None = None  # cap on View 2 pairs and on View 1 pairs (train + test)
    max_images_per_identity: int = 10
    all_pairs_fars: tuple[float, ...] = (1e-3, 1e-4)
    calibration_far: float = 1e-3
    slice_identities: int = 200
    slice_fars: tuple[float, ...] = (1e-2, 1e-3)
    hard_pairs: int = 16
    seed: int = 0
    chunk_size: int = DEFAULT_CHUNK_SIZE


@dataclass(frozen=True)
class LfwLayout:
    """Where the LFW files are."""

    root: Path

    @property
    def images(self) -> Path:
        """``images/<Name>/<Name>_NNNN.jpg``."""
        return self.root / "images"

    @property
    def view2(self) -> Path:
        """The View 2 pair list (fold, path1, path2, same)."""
        return self.root / "pairs_view2.csv"

    @property
    def view1(self) -> tuple[Path, Path]:
        """The View 1 pair lists (path1, path2, same)."""
        return self.root / "pairsDevTrain.csv", self.root / "pairsDevTest.csv"

    @property
    def manifest(self) -> Path:
        """relpath, identity, bytes, md5 of every image."""
        return self.root / "manifest.csv"

    def check(self) -> None:
        """A one-line error naming the first missing part."""
        for path in (self.images, self.view2, *self.view1, self.manifest):
            if not path.exists():
                raise FacegateError(f"LFW incomplete at {self.root}: missing {path.name}")


@dataclass(frozen=True)
class LfwPlan:
    """The image sets and pair lists of one run, before any embedding."""

    layout: LfwLayout
    options: LfwOptions
    identity_of: dict[str, str]
    view2: PairList
    view1: PairList
    all_pairs_images: list[str]
    slice_references: list[str]
    slice_probes: list[str]

    @property
    def clean_images(self) -> list[str]:
        """Every image embedded clean, each once."""
        view1_images = self.view1.images()
        return list(dict.fromkeys([*self.view2.images(), *view1_images, *self.all_pairs_images]))

    @property
    def total_embeddings(self) -> int:
        """Clean images plus one degraded probe per slice and person."""
        return len(self.clean_images) + len(SLICES) * len(self.slice_probes)


def read_identities(manifest: Path) -> dict[str, str]:
    """relpath -> person, from ``manifest.csv``."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        return {row["relpath"]: row["identity"] for row in csv.DictReader(handle)}


def select_all_pairs_images(
    identity_of: dict[str, str], per_identity: int, max_images: int | None, seed: int
) -> list[str]:
    """The first ``per_identity`` images of each person; with ``max_images``, whole people in a
    seeded random order until the cap (so genuine pairs stay as in the full set)."""
    by_person: dict[str, list[str]] = {}
    for relpath in sorted(identity_of):
        by_person.setdefault(identity_of[relpath], []).append(relpath)
    people = sorted(by_person)
    if max_images is not None:
        people = [people[i] for i in np.random.default_rng(seed).permutation(len(people))]
    chosen: list[str] = []
    for person in people:
        images = by_person[person][:per_identity]
        if max_images is not None and len(chosen) + len(images) > max_images:
            continue
        chosen.extend(images)
    return sorted(chosen)


def select_slice_pairs(
    images: Sequence[str], identity_of: dict[str, str], n_identities: int, seed: int
) -> tuple[list[str], list[str]]:
    """(references, probes): first and second image of up to ``n_identities`` seeded people."""
    by_person: dict[str, list[str]] = {}
    for relpath in sorted(images):
        by_person.setdefault(identity_of[relpath], []).append(relpath)
    eligible = sorted(p for p, imgs in by_person.items() if len(imgs) >= 2)
    order = np.random.default_rng(seed).permutation(len(eligible))[:n_identities]
    people = sorted(eligible[i] for i in order)
    return [by_person[p][0] for p in people], [by_person[p][1] for p in people]


def plan_lfw(lfw_dir: Path, options: LfwOptions) -> LfwPlan:
    """Read the LFW lists and choose the image sets of a run."""
    layout = LfwLayout(lfw_dir)
    layout.check()
    identity_of = read_identities(layout.manifest)
    view1_lists = [read_pairs_csv(p) for p in layout.view1]
    view1 = PairList(
        path1=[p for pl in view1_lists for p in pl.path1],
        path2=[p for pl in view1_lists for p in pl.path2],
        same=np.concatenate([pl.same for pl in view1_lists]),
        fold=None,
    )
    all_images = select_all_pairs_images(
        identity_of, options.max_images_per_identity, options.max_images, options.seed
    )
    references, probes = select_slice_pairs(
        all_images, identity_of, options.slice_identities, options.seed
    )
    return LfwPlan(
        layout=layout,
        options=options,
        identity_of=identity_of,
        view2=limit_pairs(read_pairs_csv(layout.view2), options.limit_pairs),
        view1=limit_pairs(view1, options.limit_pairs),
        all_pairs_images=all_images,
        slice_references=references,
        slice_probes=probes,
    )
