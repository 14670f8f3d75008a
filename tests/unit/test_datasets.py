"""Dataset manifests from a folder of real LFW photos (no object store): determinism, the
identity split, exclusions, checksummed rebuilds, and face preparation with the production
detector and alignment."""

from __future__ import annotations

import csv
import functools
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facegate.errors import FacegateError
from stream_processors.vision.mtcnn import MtcnnDetector
from trainer.datasets import (
    BuildOptions,
    DatasetManifest,
    FolderSource,
    PipelineAligner,
    build_manifest,
    load_manifest,
    materialize,
    prepare_faces,
)
from trainer.datasets.faces import read_rgb
from trainer.datasets.manifest import assign_split, manifest_version
from trainer.models.templates import ARCFACE_112_TEMPLATE

IDENTITIES = 16
PER_IDENTITY = 3


@functools.cache
def _lfw_index(lfw_dir: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = defaultdict(list)
    with open(lfw_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            found[row["identity"]].append(lfw_dir / "images" / row["relpath"])
    return {k: sorted(v) for k, v in sorted(found.items())}


def lfw_people(lfw_dir: Path, min_images: int) -> dict[str, list[Path]]:
    """LFW identities (sorted) with at least ``min_images`` photos, and their photos."""
    return {k: v for k, v in _lfw_index(lfw_dir).items() if len(v) >= min_images}


def write_arcface_card(folder: Path) -> Path:
    """A model card naming the ArcFace 112 template (all the aligner reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    card = {
        "name": "mobilefacenet",
        "embedding_dim": 192,
        "input_size": 112,
        "template": ARCFACE_112_TEMPLATE.tolist(),
    }
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture
def face_folder(lfw_dir: Path, tmp_path: Path) -> Path:
    """16 LFW people with 3 photos each, plus 2 people with a single photo."""
    root = tmp_path / "faces"
    people = list(lfw_people(lfw_dir, PER_IDENTITY).items())[:IDENTITIES]
    singles = [k for k, v in lfw_people(lfw_dir, 1).items() if len(v) == 1][:2]
    for name, photos in people:
        (root / name).mkdir(parents=True)
        for photo in photos[:PER_IDENTITY]:
            shutil.copy(photo, root / name / photo.name)
    for name in singles:
        photo = next(iter(lfw_people(lfw_dir, 1)[name]))
        (root / name).mkdir(parents=True)
        shutil.copy(photo, root / name / photo.name)
    return root


def _build(folder: Path, **options: Any) -> DatasetManifest:
    return build_manifest([FolderSource(folder)], BuildOptions(**options), progress=False)


def test_same_inputs_give_the_same_version(face_folder: Path, tmp_path: Path) -> None:
    first, second = _build(face_folder), _build(face_folder)
    assert first.version == second.version
    assert first.entries == second.entries
    assert first.version == manifest_version(list(reversed(first.entries)))
    stored = tmp_path / "manifest.json"
    stored.write_text(first.to_json())
    assert json.loads(stored.read_text())["schema"] == "facegate.dataset/1"
    assert load_manifest(stored).entries == first.entries
    # A different split is a different set.
    assert _build(face_folder, seed=1).version != first.version


def test_split_is_by_identity_and_deterministic(face_folder: Path) -> None:
    manifest = _build(face_folder, val_share=0.3, seed=7)
    splits: dict[str, set[str]] = defaultdict(set)
    for entry in manifest.entries:
        splits[entry.identity].add(entry.split)
        assert entry.split == assign_split(entry.identity, 7, 0.3)
        assert entry.source == "folder" and not entry.aligned
        assert Path(entry.uri).is_absolute()
    assert all(len(s) == 1 for s in splits.values()), "an identity was split"
    counts = manifest.counts
    assert counts["identities"] == IDENTITIES
    assert counts["images"] == IDENTITIES * PER_IDENTITY
    train, val = counts["splits"]["train"], counts["splits"]["val"]
    assert train["identities"] + val["identities"] == IDENTITIES
    assert 1 <= val["identities"] <= IDENTITIES - 1
    assert set(manifest.identities("train")).isdisjoint(manifest.identities("val"))
    assert manifest.split.seed == 7 and manifest.split.val_share == 0.3


def test_small_identities_and_limits_are_counted(face_folder: Path) -> None:
    manifest = _build(face_folder)
    assert manifest.counts["excluded"]["folder.identities_below_min"] == 2
    limited = build_manifest(
        [FolderSource(face_folder, max_identities=5, max_images_per_identity=2)], progress=False
    )
    assert limited.counts["identities"] == 5 and limited.counts["images"] == 10
    assert limited.sources[0].location == str(face_folder.resolve())
    # min over all sources: identities left with one image after the folder's cap are dropped
    one_each = build_manifest(
        [FolderSource(face_folder, max_images_per_identity=1)], progress=False
    )
    assert one_each.counts["images"] == 0
    assert one_each.counts["excluded"]["identities_below_min"] == IDENTITIES


def test_a_changed_file_fails_materialize_and_changes_the_version(
    face_folder: Path, tmp_path: Path
) -> None:
    manifest = _build(face_folder)
    local = materialize(manifest, tmp_path / "cache", progress=False)
    assert [item.entry for item in local] == manifest.entries
    val = materialize(manifest, tmp_path / "cache", splits=("val",), progress=False)
    assert {item.entry.split for item in val} == {"val"}
    assert len(val) == manifest.counts["splits"]["val"]["images"]
    victim = Path(manifest.entries[4].uri)
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(FacegateError, match=rf"{victim.name}.*changed since the manifest"):
        materialize(manifest, tmp_path / "cache", progress=False)
    assert _build(face_folder).version != manifest.version
    victim.unlink()
    with pytest.raises(FacegateError, match=rf"{victim.name}.*is missing"):
        materialize(manifest, tmp_path / "cache", progress=False)


def test_an_edited_manifest_is_refused(face_folder: Path, tmp_path: Path) -> None:
    data = json.loads(_build(face_folder).to_json())
    data["entries"][0]["identity"] = "someone else"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(FacegateError, match="does not match its entries"):
        load_manifest(edited)


class CountingAligner(PipelineAligner):
    calls = 0

    def align(self, image_rgb: np.ndarray) -> np.ndarray | None:
        type(self).calls += 1
        return super().align(image_rgb)


def test_faces_are_aligned_cached_and_no_face_counted(
    face_folder: Path, tmp_path: Path, mtcnn_detector: MtcnnDetector
) -> None:
    import cv2

    blank = face_folder / "Nobody_Here"
    blank.mkdir()
    for i in range(2):
        cv2.imwrite(str(blank / f"blank_{i}.jpg"), np.full((120, 120, 3), 90 + i, np.uint8))
    manifest = build_manifest(
        [FolderSource(face_folder, max_images_per_identity=2)], progress=False
    )
    local = materialize(manifest, tmp_path / "cache", progress=False)
    aligner = CountingAligner(write_arcface_card(tmp_path / "card"), mtcnn_detector)
    faces = prepare_faces(local, tmp_path / "cache", aligner, progress=False)
    assert faces.skipped == {"no_face": 2}
    assert len(faces.samples) == len(local) - 2
    assert faces.template_name == aligner.template_name
    assert (tmp_path / "cache" / "crops" / aligner.template_name).is_dir()
    crop = read_rgb(faces.samples[0].path)  # sealed when a gallery key is configured
    assert crop is not None and crop.shape == (112, 112, 3)
    calls = CountingAligner.calls
    again = prepare_faces(local, tmp_path / "cache", aligner, progress=False)
    assert CountingAligner.calls == calls, "cached crops were aligned again"
    assert [s.path for s in again.samples] == [s.path for s in faces.samples]
    assert again.skipped == faces.skipped
