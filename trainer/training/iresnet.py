"""iResNet (InsightFace's ArcFace backbone) for 112x112 aligned faces.

Blocks are InsightFace's ``IBasicBlock``: BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN,
plus the shortcut.  The stem is conv3x3 - BN - PReLU at full resolution, four stages each
halve the size (112 -> 7), and the head is BN - dropout - FC - BN (the embedding).  The tiny
variant strides its stem too (112 -> 4 at the end): narrow convs on full-resolution maps are
slow on CPU, and it exists for tests.

The module follows FaceGate's embedder contract, like :class:`MobileFaceNet`: input float32
NCHW RGB 0..255, normalised inside as ``(x - 127.5) / 128``; output (N, D), not normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.models.mobilefacenet import INPUT_MEAN, INPUT_STD

INPUT_SIZE = 112


def _strided(size: int) -> int:
    """Output size of a 3x3 conv with padding 1 and stride 2."""
    return (size - 1) // 2 + 1


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN - conv - BN - PReLU - conv(stride) - BN, added to the (projected) input."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        result: torch.Tensor = out + shortcut
        return result


class IResNet(nn.Module):
    """iResNet: (N, 3, 112, 112) RGB 0..255 -> (N, embedding_dim), not L2-normalised."""

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        embedding_dim: int = 512,
        dropout: float = 0.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError("stem_stride is 1 (InsightFace) or 2 (a cheaper test network)")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("iResNet has four stages: give four layer counts and four widths")
        self.embedding_dim = embedding_dim
        self.conv1 = _conv3x3(3, widths[0], stem_stride)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        stages: list[nn.Module] = []
        inplanes = widths[0]
        for blocks, planes in zip(layers, widths, strict=True):
            stage = [IBasicBlock(inplanes, planes, stride=2)]
            stage += [IBasicBlock(planes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            inplanes = planes
        self.stages = nn.Sequential(*stages)
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        size = INPUT_SIZE if stem_stride == 1 else _strided(INPUT_SIZE)
        for _ in range(4):
            size = _strided(size)
        self.fc = nn.Linear(inplanes * size * size, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        # InsightFace keeps the embedding BN's scale fixed at 1 (only its shift learns).
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - INPUT_MEAN) * (1.0 / INPUT_STD)
        x = self.stages(self.prelu(self.bn1(self.conv1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        embedding: torch.Tensor = self.features(self.fc(x))
        return embedding


def iresnet18(embedding_dim: int = 512, dropout: float = 0.0) -> IResNet:
    """iResNet-18: [2, 2, 2, 2] blocks, widths 64-512."""
    return IResNet([2, 2, 2, 2], embedding_dim=embedding_dim, dropout=dropout)


def iresnet_tiny(embedding_dim: int = 64, dropout: float = 0.0) -> IResNet:
    """One block per stage, narrow, stride-2 stem: a cheap iResNet for tests and smoke runs."""
    return IResNet(
        [1, 1, 1, 1],
        widths=(16, 32, 64, 128),
        embedding_dim=embedding_dim,
        dropout=dropout,
        stem_stride=2,
    )
