"""Embedder training in PyTorch: iResNet or fine-tuned MobileFaceNet with an ArcFace head.

:func:`train` runs a whole training on a dataset manifest (resumable, DDP under torchrun,
tracked in MLflow) and writes a servable model folder; :func:`export_trained` exports and
checks its ONNX file.
"""

from trainer.training.arcface import ArcFaceHead, FaceClassifier
from trainer.training.export import export_trained, save_trained_model
from trainer.training.iresnet import IResNet, iresnet18, iresnet_tiny
from trainer.training.settings import TrainerSettings
from trainer.training.train import TrainResult, train

__all__ = [
    "ArcFaceHead",
    "FaceClassifier",
    "IResNet",
    "TrainResult",
    "TrainerSettings",
    "export_trained",
    "iresnet18",
    "iresnet_tiny",
    "save_trained_model",
    "train",
]
