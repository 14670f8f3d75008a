"""ArcFace: additive angular margin on the target class, logits for cross-entropy.

For an embedding ``x`` and class centres ``W`` (both L2-normalised), the logit of class ``j``
is ``s * cos(theta_j)``, except the target class, which gets ``s * cos(theta_y + m)``: the
network must beat the other classes by an angle ``m``.  Where ``theta_y + m`` would pass pi,
``cos`` stops decreasing; there the target logit is ``s * (cos(theta_y) - m * sin(m))`` instead
(InsightFace's fallback), or with ``easy_margin`` the margin applies only while
``cos(theta_y) > 0``.  Every logit is at most ``s``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Keeps sqrt(1 - cos^2) differentiable at |cos| = 1.
_EPS = 1e-7


class ArcFaceHead(nn.Module):
    """Class centres and the margin; ``forward(embeddings, labels)`` gives scaled logits."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("ArcFace needs at least two classes")
        self.scale = scale
        self.margin = margin
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        # theta + m > pi exactly when cos(theta) < cos(pi - m).
        self.threshold = math.cos(math.pi - margin)
        self.fallback = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine of every embedding with every class centre, (N, C), in float32."""
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        return cos.clamp(-1.0, 1.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.margin_logits(self.cosine(embeddings), labels)

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits from cosines: the margin on each row's target class only."""
        index = labels.long().view(-1, 1)
        target = cos.gather(1, index).clamp(-1.0 + _EPS, 1.0 - _EPS)
        sine = torch.sqrt(1.0 - target * target)
        with_margin = target * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            with_margin = torch.where(target > 0, with_margin, target)
        else:
            with_margin = torch.where(target > self.threshold, with_margin, target - self.fallback)
        return cos.scatter(1, index, with_margin) * self.scale


class FaceClassifier(nn.Module):
    """Backbone and ArcFace head in one module (one DDP wrapper covers both)."""

    def __init__(self, backbone: nn.Module, head: ArcFaceHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits with margin, cosines without margin) for a batch."""
        embeddings = self.backbone(images)
        # The head runs in float32 whatever autocast chose for the backbone.
        with torch.autocast(device_type=images.device.type, enabled=False):
            cos = self.head.cosine(embeddings)
            logits = self.head.margin_logits(cos, labels)
        return logits, cos.detach()
