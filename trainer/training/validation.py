"""Verification metrics on the validation identities (never seen in training).

Every pair of validation crops is scored by cosine similarity: pairs of one identity are
genuine, the rest impostor.  Reported: 10-fold verification accuracy (threshold chosen on the
other folds), TAR at the configured FAR (None when too few impostor pairs measure it), and the
pair counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trainer.evaluation.metrics import far_key, kfold_accuracy, tar_at_far
from trainer.training.data import FaceCrops

MIN_PAIRS_FOR_FOLDS = 10


@torch.no_grad()
def embed_crops(
    backbone: nn.Module, crops: FaceCrops, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """L2-normalised embeddings of every crop (no augmentation), in eval mode."""
    was_training = backbone.training
    backbone.eval()
    rows = []
    for start in range(0, len(crops), batch_size):
        batch = torch.stack(
            [crops[i][0] for i in range(start, min(start + batch_size, len(crops)))]
        )
        rows.append(torch.nn.functional.normalize(backbone(batch.to(device)).float()).cpu())
    backbone.train(was_training)
    return torch.cat(rows).numpy() if rows else np.zeros((0, 0), np.float32)


def pair_scores(embeddings: np.ndarray, identities: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, same-identity flags) of every unordered pair."""
    labels = np.asarray(identities)
    first, second = np.triu_indices(len(labels), k=1)
    scores = np.einsum("ij,ij->i", embeddings[first], embeddings[second])
    return scores.astype(np.float64), labels[first] == labels[second]


def verification_metrics(
    embeddings: np.ndarray, identities: Sequence[int], far: float
) -> dict[str, float]:
    """Accuracy and TAR at ``far`` over all pairs; empty when there are no genuine pairs."""
    scores, same = pair_scores(embeddings, identities)
    if not same.any() or same.all():
        return {}
    metrics = {"val_genuine_pairs": float(same.sum()), "val_impostor_pairs": float((~same).sum())}
    if scores.size >= MIN_PAIRS_FOR_FOLDS:
        metrics["val_accuracy"] = kfold_accuracy(scores, same).mean
    tar = tar_at_far(scores[same], scores[~same], fars=(far,)).tar[far_key(far)]
    if tar is not None:
        metrics[f"val_tar_at_far_{far_key(far)}"] = tar
    return metrics
