"""Training sets and training on the real object store and MLflow: a manifest built from
enrolment photos (stored through EnrollmentPhotos) and a proctor feedback sample (laid out as
the feedback sink writes it), stored and loaded by version; training checkpointed in the
models bucket and resumed from it; a changed object stops a rebuild."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from minio import Minio
from mlflow import MlflowClient

from console.dataset import partition, sample_for
from facegate.errors import FacegateError
from facegate.object_store import get_bytes, make_object_store, put_bytes
from facegate.settings import ObjectStoreSettings
from facegate.stack import LocalStack
from inference_worker.embedder import Embedder
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.sealed_objects import (
    get_opened,
    open_file_bytes,
    put_sealed,
    seal_file_bytes,
)
from inference_worker.template_crypto import (
    KeyRing,
    TemplateCipher,
    default_cipher,
    new_key,
    sealed_key_id,
)
from schemas.messages import Feedback, new_id, now
from stream_processors.vision.mtcnn import MtcnnDetector
from tests.unit.test_datasets import lfw_people, write_arcface_card
from trainer.datasets import (
    BuildOptions,
    DatasetManifest,
    EnrollmentSource,
    FeedbackSource,
    PipelineAligner,
    build_manifest,
    load_manifest,
    materialize,
    prepare_faces,
    store_manifest,
)
from trainer.datasets.faces import read_rgb
from trainer.datasets.materialize import blob_path, crop_path, prune_cache
from trainer.datasets.sources import DatasetSource
from trainer.training import TrainerSettings, train
from trainer.training.checkpoints import S3CheckpointStore, checkpoint_key

pytestmark = pytest.mark.integration

STUDENTS = 6


@dataclass
class Uploaded:
    client: Minio
    s3: ObjectStoreSettings
    bucket: str  # this module's own bucket for enrolment photos and feedback samples
    students: list[str]
    photo_keys: list[str]
    feedback_image_key: str
    partition: str


def _feedback(student: str, action: str) -> Feedback:
    return Feedback(
        feedback_id=new_id(),
        frame_id=new_id(),
        exam_id="exam-train",
        gate_id="g1",
        student_id=student,
        proctor="proctor1",
        action=action,  # type: ignore[arg-type]
        verdict_decision="reject" if action != "impostor" else "accept",
        model_version="7",
        decided_at=now(),
    )


def _put_sample(client: Minio, bucket: str, feedback: Feedback, jpeg: bytes) -> str:
    sample = sample_for(feedback, {})
    assert sample is not None
    put_sealed(client, bucket, sample.image_key, jpeg, "image/jpeg")  # as the feedback sink does
    sidecar = json.dumps(sample.manifest).encode()
    put_bytes(client, bucket, sample.manifest_key, sidecar, "application/json")
    return sample.image_key


@pytest.fixture(scope="module")
def aligner(
    mtcnn_detector: MtcnnDetector, tmp_path_factory: pytest.TempPathFactory
) -> PipelineAligner:
    return PipelineAligner(write_arcface_card(tmp_path_factory.mktemp("card")), mtcnn_detector)


@pytest.fixture(scope="module")
def uploaded(
    local_stack: LocalStack, lfw_dir: Path, aligner: PipelineAligner
) -> Iterator[Uploaded]:
    """6 students x 2 enrolment photos; student 0 also has a confirmed feedback sample (an
    aligned crop of a third photo) and student 1 an impostor sample."""
    s3 = ObjectStoreSettings()
    client = make_object_store(s3)
    bucket = f"facegate-train-it-{new_id()[:8]}"
    client.make_bucket(bucket)
    photos = EnrollmentPhotos(client, bucket)
    people = list(lfw_people(lfw_dir, 3).items())[:STUDENTS]
    students = [f"s-train-{i}" for i in range(STUDENTS)]
    keys = [
        photos.put(student, path.read_bytes())
        for student, (_, paths) in zip(students, people, strict=True)
        for path in paths[:2]
    ]
    image = read_rgb(people[0][1][2])
    assert image is not None
    crop = aligner.align(image)
    assert crop is not None
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    assert ok
    genuine = _feedback(students[0], "confirm")
    image_key = _put_sample(client, bucket, genuine, jpeg.tobytes())
    _put_sample(client, bucket, _feedback(students[1], "impostor"), jpeg.tobytes())
    yield Uploaded(client, s3, bucket, students, keys, image_key, partition(genuine))
    for item in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, str(item.object_name))
    client.remove_bucket(bucket)


def _build(up: Uploaded) -> DatasetManifest:
    sources: list[DatasetSource] = [
        FeedbackSource(up.client, up.bucket),
        EnrollmentSource(up.client, up.bucket),
    ]
    return build_manifest(sources, BuildOptions(val_share=0.3, seed=1), progress=False)


def test_manifest_from_the_object_store_is_stored_and_rebuilt_identically(
    uploaded: Uploaded, aligner: PipelineAligner, tmp_path: Path
) -> None:
    up = uploaded
    manifest = _build(up)
    uri = store_manifest(manifest, up.client, up.s3.bucket_datasets)
    assert uri == f"s3://{up.s3.bucket_datasets}/datasets/{manifest.version}/manifest.json"
    loaded = load_manifest(manifest.version, up.client, up.s3.bucket_datasets)
    assert loaded.entries == manifest.entries and loaded.version == manifest.version
    assert _build(up).version == manifest.version

    counts = manifest.counts
    assert counts["sources"]["enrollment"] == {"images": 2 * STUDENTS, "identities": STUDENTS}
    assert counts["sources"]["feedback"] == {"images": 1, "identities": 1}
    assert counts["excluded"]["feedback.impostor"] == 1
    feedback_info = next(s for s in manifest.sources if s.kind == "feedback")
    assert feedback_info.partitions == [up.partition.removeprefix("feedback/")]
    (feedback,) = [e for e in manifest.entries if e.source == "feedback"]
    assert feedback.aligned and feedback.identity == up.students[0]
    assert feedback.uri == f"s3://{up.bucket}/{up.feedback_image_key}"
    assert not any(e.aligned for e in manifest.entries if e.source == "enrollment")
    # the feedback sample and the enrolment photos of a student are one identity
    assert len({e.split for e in manifest.entries if e.identity == up.students[0]}) == 1

    local = materialize(manifest, tmp_path / "cache", up.client, progress=False)
    faces = prepare_faces(local, tmp_path / "cache", aligner, progress=False)
    assert faces.skipped == {}
    assert len(faces.samples) == 2 * STUDENTS + 1
    by_sha = {s.sha256: s for s in faces.samples}
    opened = get_opened(up.client, up.bucket, up.feedback_image_key, "feedback face image")
    assert opened is not None
    assert get_bytes(up.client, up.bucket, up.feedback_image_key) != opened  # sealed in the store
    # The working copies (the fetched image, every aligned crop) are sealed too, and open to
    # the face: a copy of the cache holds no usable faces.
    cached = by_sha[feedback.sha256].path
    assert sealed_key_id(cached.read_bytes()) is not None and cached.read_bytes() != opened
    assert open_file_bytes(cached, cached.read_bytes()) == opened
    current = default_cipher().current_key_id()
    assert current is not None
    for sample in faces.samples:
        assert sealed_key_id(sample.path.read_bytes()) == current, sample.path
        crop = read_rgb(sample.path)
        assert crop is not None and crop.shape[:2] == (aligner.input_size[1], aligner.input_size[0])

    # Copies sealed under a key that is no longer in the ring (dropped after a rotation) are
    # fetched and aligned again, not skipped.
    gone = TemplateCipher(KeyRing([new_key("k-dropped")]))
    for sample in faces.samples:
        plain = open_file_bytes(sample.path, sample.path.read_bytes())
        sample.path.write_bytes(seal_file_bytes(sample.path, plain, gone))
    again = prepare_faces(
        materialize(manifest, tmp_path / "cache", up.client, progress=False),
        tmp_path / "cache",
        aligner,
        progress=False,
    )
    assert again.skipped == {} and len(again.samples) == len(faces.samples)
    assert all(sealed_key_id(s.path.read_bytes()) == current for s in again.samples)


def test_training_checkpoints_to_the_models_bucket_and_resumes(
    uploaded: Uploaded, aligner: PipelineAligner, tmp_path: Path
) -> None:
    up = uploaded
    manifest = _build(up)
    run_name = f"it-{new_id()[:8]}"
    common = {
        "architecture": "iresnet-tiny",
        "epochs": 2,
        "batch_size": 2,
        "run_name": run_name,
        "checkpoint_store": "s3",
        "cache_dir": tmp_path / "cache",
        "track": "on",
        "progress": False,
    }
    first = train(
        TrainerSettings(**common, max_steps=2),  # type: ignore[arg-type]
        manifest,
        tmp_path / "first",
        client=up.client,
        aligner=aligner,
    )
    assert (first.step, first.complete) == (2, False)
    key = checkpoint_key(run_name)
    assert key == f"checkpoints/{run_name}/last.pt"
    checkpoint = S3CheckpointStore(up.client, up.s3.bucket_models).load(run_name)
    assert checkpoint is not None and checkpoint.step == 2
    assert checkpoint.manifest_version == manifest.version
    assert checkpoint.mlflow_run_id == first.run_id

    rest = train(
        TrainerSettings(**common),  # type: ignore[arg-type]
        manifest,
        tmp_path / "rest",
        client=up.client,
        aligner=aligner,
    )
    assert rest.resumed_from_step == 2 and rest.complete and rest.step == rest.total_steps
    assert rest.run_id == first.run_id  # one MLflow run per training
    stored = S3CheckpointStore(up.client, up.s3.bucket_models).load(run_name)
    assert stored is not None and stored.step == rest.total_steps

    mlflow = MlflowClient(TrainerSettings().mlflow.tracking_uri)
    assert rest.run_id is not None
    run = mlflow.get_run(rest.run_id)
    assert run.data.tags["data_manifest"] == manifest.version
    assert run.data.tags["code_version"]
    assert run.data.params["architecture"] == "iresnet-tiny"
    assert [m.step for m in mlflow.get_metric_history(rest.run_id, "loss")] == [1, 2]
    artifacts = {a.path for a in mlflow.list_artifacts(rest.run_id)}
    assert {"dataset_manifest.json", "model"} <= artifacts
    model_files = {a.path for a in mlflow.list_artifacts(rest.run_id, "model")}
    assert {"model/model.onnx", "model/card.json", "model/model.pt"} <= model_files
    embedder = Embedder(tmp_path / "rest", provider="cpu").load()
    assert embedder.card.embedding_dim == 64


def test_a_changed_object_stops_the_rebuild(uploaded: Uploaded, tmp_path: Path) -> None:
    up = uploaded
    manifest = _build(up)
    key = up.photo_keys[3]
    original = get_bytes(up.client, up.bucket, key)
    assert original is not None
    photo = EnrollmentPhotos(up.client, up.bucket).get(key)
    assert photo is not None
    warm = tmp_path / "warm"
    materialize(manifest, warm, up.client, progress=False)
    (entry,) = [e for e in manifest.entries if e.uri.endswith(f"/{key}")]
    try:
        # The photo is sealed (sealed_objects.py): altered bytes fail to open.
        put_bytes(up.client, up.bucket, key, original[:-10] + b"\0" * 10, "image/jpeg")
        with pytest.raises(FacegateError, match=rf"{key}.*cannot be opened.*fails authentication"):
            materialize(manifest, tmp_path / "fresh", up.client, progress=False)
        # A plaintext photo (stored before sealing existed) that changed: its hash says so.
        put_bytes(up.client, up.bucket, key, photo[:-10] + b"\0" * 10, "image/jpeg")
        with pytest.raises(FacegateError, match=rf"{key}.*changed since the manifest"):
            materialize(manifest, tmp_path / "fresh1", up.client, progress=False)
        up.client.remove_object(up.bucket, key)
        # Aligned crops cached by earlier runs (two templates, one image without a face): the
        # deleted object takes them with it, with or without its fetched copy beside them.
        crops = [
            crop_path(cache, "template-a", entry.sha256) for cache in (tmp_path / "fresh2", warm)
        ]
        crops.append(crop_path(warm, "template-b", entry.sha256).with_suffix(".noface"))
        for crop in crops:
            crop.parent.mkdir(parents=True, exist_ok=True)
            crop.write_bytes(seal_file_bytes(crop, b"crop"))
        with pytest.raises(FacegateError, match=rf"{key}.*is missing"):
            materialize(manifest, tmp_path / "fresh2", up.client, progress=False)
        assert not crops[0].exists()
        # A cached copy does not stand in for a deleted object (a forgotten student's photo):
        # the rebuild stops the same way and the copy is deleted.
        assert blob_path(warm, entry.sha256).is_file()
        with pytest.raises(FacegateError, match=rf"{key}.*is missing"):
            materialize(manifest, warm, up.client, progress=False)
        assert not blob_path(warm, entry.sha256).exists()
        assert not any(crop.exists() for crop in crops)
        other = next(e for e in manifest.entries if e.sha256 != entry.sha256 and e.uri != entry.uri)
        assert blob_path(warm, other.sha256).is_file()  # only the missing image's copies go
    finally:
        put_bytes(up.client, up.bucket, key, original, "image/jpeg")
    assert len(materialize(manifest, tmp_path / "fresh3", up.client, progress=False)) == len(
        manifest.entries
    )


def test_a_new_dataset_prunes_the_cached_copies_of_images_no_longer_stored(
    uploaded: Uploaded, tmp_path: Path
) -> None:
    # A retraining run prunes its cache against the manifest it has just built: a student's
    # photos deleted from the store (forget, unenrol) lose their fetched copies and aligned
    # crops on the trainer's disk, which forget itself cannot reach.
    up = uploaded
    cache = tmp_path / "cache"
    before = _build(up)
    materialize(before, cache, up.client, progress=False)
    for entry in before.entries:
        for crop in (
            crop_path(cache, "template-a", entry.sha256),
            crop_path(cache, "template-b", entry.sha256).with_suffix(".noface"),
        ):
            crop.parent.mkdir(parents=True, exist_ok=True)
            crop.write_bytes(seal_file_bytes(crop, b"crop"))
    student = up.students[2]
    keys = [k for k in up.photo_keys if f"student={student}/" in k]
    assert len(keys) == 2
    originals = {key: get_bytes(up.client, up.bucket, key) for key in keys}
    gone = [e for e in before.entries if e.identity == student]
    kept = [e for e in before.entries if e.identity != student]
    assert gone and kept
    try:
        for key in keys:
            up.client.remove_object(up.bucket, key)
        after = _build(up)
        assert {e.sha256 for e in after.entries} == {e.sha256 for e in kept}
        pruned = prune_cache(cache, after)
        for entry in gone:
            assert not blob_path(cache, entry.sha256).exists()
            assert not list(cache.glob(f"crops/*/*/{entry.sha256}.*"))
        assert len(pruned) == 3 * len(gone)  # the blob and both templates' crops of each
        for entry in kept:
            assert blob_path(cache, entry.sha256).is_file()
            assert crop_path(cache, "template-a", entry.sha256).is_file()
        assert prune_cache(cache, after) == []
        # The pruned cache still serves the new manifest without fetching what it keeps.
        assert len(materialize(after, cache, up.client, progress=False)) == len(after.entries)
    finally:
        for key, data in originals.items():
            assert data is not None
            put_bytes(up.client, up.bucket, key, data, "application/octet-stream")


def test_cli_builds_stores_and_trains(
    local_stack: LocalStack,
    lfw_dir: Path,
    mtcnn_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from facegate.paths import models_dir
    from trainer.train_cli import train_group

    if not (models_dir() / "mobilefacenet" / "card.json").is_file():
        pytest.skip("mobilefacenet not built: its card sets the alignment template")
    monkeypatch.setenv("FACEGATE_TRAIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEGATE_TRAIN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("FACEGATE_TRAIN_TRACK", "off")
    monkeypatch.setenv("FACEGATE_TRAIN_PROGRESS", "false")
    runner = CliRunner()
    built = runner.invoke(
        train_group,
        [
            "dataset",
            "--folder",
            str(lfw_dir / "images"),
            "--max-identities",
            "6",
            "--max-images-per-identity",
            "3",
            "--no-feedback",
            "--no-enrollment",
            "--json",
            str(tmp_path / "manifest.json"),
        ],
    )
    assert built.exit_code == 0, built.output
    version = json.loads((tmp_path / "manifest.json").read_text())["version"]
    assert f"dataset {version}" in built.output
    s3 = ObjectStoreSettings()
    assert get_bytes(make_object_store(s3), s3.bucket_datasets, f"datasets/{version}/manifest.json")
    trained = runner.invoke(
        train_group,
        [
            "run",
            "--manifest",
            version,
            "--arch",
            "iresnet-tiny",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--max-steps",
            "2",
            "--checkpoints",
            "local",
            "--out",
            str(tmp_path / "model"),
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "stopped at step 2" in trained.output
    assert (tmp_path / "checkpoints" / "checkpoints").is_dir()
    assert Embedder(tmp_path / "model", provider="cpu").load().card.name == "iresnet-tiny"
