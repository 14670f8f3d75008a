"""Embedder training: ArcFace math, the iResNet contract and its ONNX export, a training step on
real aligned LFW faces, exact resume from a checkpoint (local checkpoint folder, no object
store, no MLflow), and the exported model folder served by the production Embedder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from facegate.errors import FacegateError
from facegate.paths import models_dir
from inference_worker.embedder import Embedder, ModelCard
from stream_processors.vision.mtcnn import MtcnnDetector
from tests.unit.test_datasets import lfw_people, write_arcface_card
from trainer.datasets import (
    BuildOptions,
    DatasetManifest,
    FaceSample,
    FaceSet,
    FolderSource,
    PipelineAligner,
    build_manifest,
)
from trainer.datasets.faces import read_rgb, write_png
from trainer.datasets.manifest import assign_split
from trainer.onnx_export import export_embedder
from trainer.sources import sha256_of
from trainer.training import (
    ArcFaceHead,
    FaceClassifier,
    TrainerSettings,
    export_trained,
    train,
)
from trainer.training.backbones import build_backbone
from trainer.training.checkpoints import LocalCheckpointStore
from trainer.training.iresnet import iresnet18, iresnet_tiny
from trainer.training.loop import lr_factor, make_optimizer, precision_for, train_step

PEOPLE = 8
PER_PERSON = 3


# ---- ArcFace ------------------------------------------------------------------------------


def _head_with_angles(
    cosines: list[float], margin: float = 0.5, easy: bool = False
) -> tuple[ArcFaceHead, torch.Tensor]:
    """A head whose 2-d class centres sit at known angles from the embedding (1, 0)."""
    head = ArcFaceHead(2, len(cosines), scale=64.0, margin=margin, easy_margin=easy)
    with torch.no_grad():
        for i, c in enumerate(cosines):
            head.weight[i] = torch.tensor([c, math.sqrt(1 - c * c)])
    return head, torch.tensor([[3.0, 0.0]])


def test_arcface_margin_goes_on_the_target_logit_only() -> None:
    cosines = [0.8, 0.3, -0.2, 0.6]
    head, embedding = _head_with_angles(cosines)
    logits = head(embedding, torch.tensor([0]))[0]
    expected = [64 * c for c in cosines]
    expected[0] = 64 * math.cos(math.acos(0.8) + 0.5)
    np.testing.assert_allclose(logits.detach().numpy(), expected, rtol=1e-5, atol=1e-4)
    # Same embedding, another target: only that logit moves.
    logits = head(embedding, torch.tensor([3]))[0]
    assert logits[0].item() == pytest.approx(64 * 0.8, rel=1e-5)
    assert logits[3].item() == pytest.approx(64 * math.cos(math.acos(0.6) + 0.5), rel=1e-5)


def test_arcface_logits_are_bounded_and_the_fallback_keeps_them_monotonic() -> None:
    torch.manual_seed(0)
    head = ArcFaceHead(16, 40)
    embeddings, labels = torch.randn(64, 16) * 10, torch.randint(0, 40, (64,))
    logits = head(embeddings, labels)
    assert logits.max().item() <= 64.0 + 1e-4
    others = torch.ones_like(logits, dtype=torch.bool).scatter(1, labels[:, None], False)
    assert logits[others].abs().max().item() <= 64.0 + 1e-4
    # theta + m past pi (cos below cos(pi - m)): cos - m sin(m) instead of cos(theta + m)
    head, embedding = _head_with_angles([-0.95, 0.1])
    target = head(embedding, torch.tensor([0]))[0, 0].item()
    assert target == pytest.approx(64 * (-0.95 - math.sin(math.pi - 0.5) * 0.5), rel=1e-5)
    # easy margin: no margin while cos <= 0, the margin when cos > 0
    easy, embedding = _head_with_angles([-0.3, 0.7], easy=True)
    assert easy(embedding, torch.tensor([0]))[0, 0].item() == pytest.approx(64 * -0.3, rel=1e-5)
    with_margin = easy(embedding, torch.tensor([1]))[0, 1].item()
    assert with_margin == pytest.approx(64 * math.cos(math.acos(0.7) + 0.5), rel=1e-5)


# ---- iResNet ------------------------------------------------------------------------------


def test_iresnet_output_shapes() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        assert iresnet_tiny().eval()(images).shape == (2, 64)
        assert iresnet18().eval()(images).shape == (2, 512)
    assert sum(p.numel() for p in iresnet18().parameters()) > 20_000_000


def test_iresnet_exports_to_onnx_with_a_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = iresnet_tiny()
    with torch.no_grad():  # move BN statistics away from their initial values
        for _ in range(3):
            model.train()(torch.rand(8, 3, 112, 112) * 255)
    model.eval()
    path = export_embedder(model, tmp_path / "tiny.onnx", 112, 64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = (np.random.default_rng(1).uniform(0, 255, (3, 3, 112, 112))).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    for batch in (images[:1], images):
        got = session.run(["embedding"], {"input": batch})[0]
        np.testing.assert_allclose(got, expected[: len(batch)], rtol=1e-4, atol=1e-4)


# ---- training on real faces ---------------------------------------------------------------


@pytest.fixture(scope="module")
def aligned_folder(
    lfw_dir: Path, mtcnn_detector: MtcnnDetector, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """8 LFW people x 3 photos, aligned by the production path, one sub-folder per person."""
    root = tmp_path_factory.mktemp("aligned")
    aligner = PipelineAligner(write_arcface_card(root.parent / "card"), mtcnn_detector)
    people = list(lfw_people(lfw_dir, PER_PERSON + 1).items())[:PEOPLE]
    for name, photos in people:
        kept = 0
        for photo in photos:
            image = read_rgb(photo)
            crop = aligner.align(image) if image is not None else None
            if crop is not None and kept < PER_PERSON:
                write_png(root / name / f"{kept}.png", crop)
                kept += 1
        assert kept == PER_PERSON
    return root


def _seed_with_two_val_people(names: list[str]) -> int:
    return next(s for s in range(100) if sum(assign_split(n, s, 0.25) == "val" for n in names) == 2)


@pytest.fixture(scope="module")
def face_set(aligned_folder: Path) -> tuple[DatasetManifest, FaceSet]:
    """A manifest over the aligned crops (6 training people, 2 validation people)."""
    seed = _seed_with_two_val_people(sorted(p.name for p in aligned_folder.iterdir()))
    manifest = build_manifest(
        [FolderSource(aligned_folder)], BuildOptions(0.25, seed), progress=False
    )
    samples = [FaceSample(Path(e.uri), e.identity, e.split, e.sha256) for e in manifest.entries]
    return manifest, FaceSet(samples, "align112", (112, 112))


def test_one_training_step_reduces_the_loss(face_set: tuple[DatasetManifest, FaceSet]) -> None:
    _, faces = face_set
    samples = faces.split("train")[:8]
    classes = sorted({s.identity for s in samples})
    images = torch.stack(
        [torch.from_numpy(read_rgb(s.path).transpose(2, 0, 1).copy()).float() for s in samples]  # type: ignore[union-attr]
    )
    labels = torch.tensor([classes.index(s.identity) for s in samples])
    torch.manual_seed(0)
    model = FaceClassifier(iresnet_tiny(), ArcFaceHead(64, len(classes)))
    settings = TrainerSettings(lr=0.05, architecture="iresnet-tiny")
    optimizer = make_optimizer(model, settings, pretrained=False)
    stats = train_step(
        model,
        [(images, labels)],
        optimizer,
        torch.device("cpu"),
        clip_grad_norm=settings.clip_grad_norm,
    )
    with torch.no_grad():
        logits, _ = model(images, labels)
        after = F.cross_entropy(logits, labels).item()
    assert stats.count == 8
    assert after < stats.loss - 1.0, (stats.loss, after)


def _settings(tmp_path: Path, **overrides: object) -> TrainerSettings:
    values: dict[str, object] = {
        "architecture": "iresnet-tiny",
        "epochs": 2,
        "batch_size": 3,
        "grad_accumulation": 2,
        "lr": 0.05,
        "seed": 3,
        "checkpoint_store": "local",
        "checkpoint_dir": tmp_path / "checkpoints",
        "checkpoint_every": 100,
        "track": "off",
        "progress": False,
        **overrides,
    }
    return TrainerSettings(**values)  # type: ignore[arg-type]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(model_dir / "model.pt", weights_only=True)
    return state


def test_resume_continues_exactly_where_the_run_stopped(
    face_set: tuple[DatasetManifest, FaceSet], tmp_path: Path
) -> None:
    manifest, faces = face_set
    full = train(_settings(tmp_path, run_name="full"), manifest, tmp_path / "full", faces=faces)
    # 18 training crops, batch 3 x 2 accumulated: 3 steps per epoch, 6 in all.
    assert (full.step, full.total_steps, full.complete) == (6, 6, True)
    assert [m["epoch"] for m in full.history] == [1.0, 2.0]
    assert {"loss", "train_accuracy", "val_accuracy"} <= set(full.metrics)

    part = train(
        _settings(tmp_path, run_name="split", max_steps=4), manifest, tmp_path / "part", faces=faces
    )
    assert (part.step, part.complete) == (4, False)
    checkpoint = LocalCheckpointStore(tmp_path / "checkpoints").load("split")
    assert checkpoint is not None and checkpoint.step == 4 and checkpoint.epoch == 1
    assert checkpoint.manifest_version == manifest.version
    part_weights = _weights(tmp_path / "part")
    assert all(torch.equal(part_weights[k], v) for k, v in checkpoint.model.items())

    resumed = train(_settings(tmp_path, run_name="split"), manifest, tmp_path / "rest", faces=faces)
    assert (resumed.resumed_from_step, resumed.step, resumed.complete) == (4, 6, True)
    expected, got = _weights(tmp_path / "full"), _weights(tmp_path / "rest")
    assert expected.keys() == got.keys()
    differing = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differing, f"resumed weights differ from the uninterrupted run: {differing[:5]}"
    assert not torch.equal(expected["fc.weight"], part_weights["fc.weight"])


def test_exported_model_folder_is_served_by_the_embedder(
    face_set: tuple[DatasetManifest, FaceSet], tmp_path: Path
) -> None:
    manifest, faces = face_set
    out = tmp_path / "model"
    train(_settings(tmp_path, epochs=1, max_steps=1), manifest, out, faces=faces)
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == "iresnet-tiny" and card["embedding_dim"] == 64
    assert card["data_manifest"] == manifest.version
    assert card["licence"] == f"trained by FaceGate on dataset manifest {manifest.version}"
    assert card["onnx_check"]["min_cosine_vs_pytorch"] >= 0.999
    assert card["onnx_check"]["faces"] >= 2
    # train() exported and checked it: exporting again without faces keeps that export
    assert export_trained(out) == card
    embedder = Embedder(out, provider="cpu").load()
    # Same template as the production aligner: served on the crops it already makes.
    production = ModelCard.read(write_arcface_card(tmp_path / "card"))
    assert embedder.card.template_name == production.template_name
    crops = [read_rgb(s.path) for s in faces.samples[:3]]
    embeddings = embedder.embed([c for c in crops if c is not None])
    assert embeddings.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    with open(out / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(FacegateError, match="no checked ONNX export"):
        export_trained(out)
    export_trained(out, crops)  # type: ignore[arg-type]
    assert export_trained(out)["onnx_sha256"] == sha256_of(out / "model.onnx")


def test_a_checkpoint_of_other_data_is_refused(
    face_set: tuple[DatasetManifest, FaceSet], tmp_path: Path
) -> None:
    manifest, faces = face_set
    settings = _settings(tmp_path, run_name="shared", max_steps=1)
    train(settings, manifest, tmp_path / "a", faces=faces)
    other = manifest.model_copy(update={"version": "0" * 64})
    with pytest.raises(FacegateError, match=r"does not fit this run.*dataset"):
        train(settings, other, tmp_path / "b", faces=faces)


# ---- settings and small parts -------------------------------------------------------------


def test_precision_and_learning_rate_schedule() -> None:
    cpu = torch.device("cpu")
    assert precision_for("auto", cpu).dtype is None
    assert precision_for("bf16", cpu).dtype == torch.bfloat16
    assert not precision_for("bf16", cpu).scaler
    with pytest.raises(FacegateError, match="fp16 needs CUDA"):
        precision_for("fp16", cpu)
    assert precision_for("auto", torch.device("cuda", 0)) == precision_for(
        "fp16", torch.device("cuda", 0)
    )
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)


def test_settings_come_from_facegate_train_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGATE_TRAIN_ARCHITECTURE", "iresnet18")
    monkeypatch.setenv("FACEGATE_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("FACEGATE_TRAIN_AMP", "bf16")
    monkeypatch.setenv("FACEGATE_TRAIN_MAX_STEPS", "50")
    monkeypatch.setenv("FACEGATE_S3_BUCKET_MODELS", "elsewhere")
    settings = TrainerSettings()
    assert (settings.architecture, settings.epochs, settings.amp) == ("iresnet18", 3, "bf16")
    assert settings.max_steps == 50 and settings.s3.bucket_models == "elsewhere"


def test_finetune_starts_from_the_production_weights_with_a_slower_backbone() -> None:
    base = models_dir() / "mobilefacenet"
    if not (base / "model.pt").is_file():
        pytest.skip("mobilefacenet not built (make models)")
    backbone = build_backbone("finetune", base)
    stored = torch.load(base / "model.pt", weights_only=True)
    state = backbone.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    assert backbone.embedding_dim == 192 and backbone.per_face_loop
    assert backbone.licence("v") == json.loads((base / "card.json").read_text())["licence"]
    model = FaceClassifier(backbone.module, ArcFaceHead(192, 4))
    optimizer = make_optimizer(model, TrainerSettings(lr=0.1, backbone_lr_scale=0.1), True)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.1])
