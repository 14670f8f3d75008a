"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network is dlib's ``anet_type`` from ``dnn_face_recognition_ex.cpp``: a 7x7/2 convolution
stem with 3x3/2 max pooling, then residual units in five levels (dlib's ``alevel4`` .. ``alevel0``,
here ``level4`` .. ``level0``), global average pooling and a 128-d linear layer without bias.
Each unit is ``relu(block(x) + shortcut(x))`` with ``block = affine(conv(relu(affine(conv(x)))))``.
Down-sampling units use a 3x3/2 convolution without padding and a 2x2/2 average pool as the
shortcut; dlib's ``add_prev`` then adds the two branches zero-padded to the larger size in every
dimension (channels and, at 8->3 vs 4 pixels and 4->1 vs 2 pixels, height and width), which
``DlibResidualUnit`` reproduces with fixed pads worked out from the 150x150 input.

dlib's inference-time ``affine_`` layers (batch norm folded into a per-channel scale and shift)
are ``nn.BatchNorm2d`` here, with neutral running statistics (mean 0, variance 1), so the module
stays a standard network a trainer can fine-tune. Fine-tune with the BatchNorm layers in eval
mode (or re-estimate their statistics first): in train mode they would normalise by batch
statistics that the folded scale and shift do not account for.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.importers.dlib_dat import DlibFormatError, DlibLayer, DlibNetwork, read_dlib_network

INPUT_SIZE: Final = 150
EMBEDDING_DIM: Final = 128
# dlib's input_rgb_image_sized<150> of this model: (pixel - mean) / 256, means as in the file.
DLIB_RGB_MEANS: Final = (122.782, 117.001, 104.298)
DLIB_INPUT_SCALE: Final = 1.0 / 256.0
# (channels, units, first unit down-samples) per level, input side first: dlib's alevel4..0.
LEVELS: Final = (
    ("level4", 32, 3, False),
    ("level3", 64, 4, True),
    ("level2", 128, 3, True),
    ("level1", 256, 3, True),
    ("level0", 256, 1, True),
)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class DlibResidualUnit(nn.Module):
    """dlib's ``ares`` / ``ares_down`` unit for a fixed input size."""

    def __init__(self, in_channels: int, channels: int, in_size: int, downsample: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=padding)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.AvgPool2d(2, stride=2) if downsample else nn.Identity()
        block_size = _conv_out(in_size, 3, stride, padding)
        short_size = _conv_out(in_size, 2, 2, 0) if downsample else in_size
        self.out_size = max(block_size, short_size)
        # F.pad order: (left, right, top, bottom, front, back) over (W, H, C); dlib pads at the end.
        block_grow = self.out_size - block_size
        short_grow = self.out_size - short_size
        self.block_pad = (0, block_grow, 0, block_grow, 0, 0)
        self.short_pad = (0, short_grow, 0, short_grow, 0, channels - in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(block(x) + shortcut(x)), the branches zero-padded to the same shape like dlib."""
        block: torch.Tensor = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        short: torch.Tensor = self.shortcut(x)
        if any(self.block_pad):
            block = F.pad(block, self.block_pad)
        if any(self.short_pad):
            short = F.pad(short, self.short_pad)
        return torch.relu(block + short)


class DlibStem(nn.Module):
    """7x7/2 convolution, affine, relu, 3x3/2 max pooling (no padding anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.bn = nn.BatchNorm2d(32)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2)
        self.out_size = _conv_out(_conv_out(INPUT_SIZE, 7, 2, 0), 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's feature map: (N, 32, 35, 35) for 150x150 input."""
        features: torch.Tensor = self.pool(self.relu(self.bn(self.conv(x))))
        return features


class DlibResNet(nn.Module):
    """dlib's 128-d face embedder: (N, 3, 150, 150) RGB in 0..255 -> (N, 128), not normalised.

    The input is a dlib face chip (``get_face_chip(img, shape, 150, 0.25)`` or an equivalent
    5-point alignment); the network subtracts dlib's per-channel means and divides by 256 itself.
    """

    input_mean: torch.Tensor
    input_scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(DLIB_RGB_MEANS).view(1, 3, 1, 1))
        self.register_buffer("input_scale", torch.tensor(DLIB_INPUT_SCALE))
        self.stem = DlibStem()
        size = self.stem.out_size
        in_channels = 32
        levels: OrderedDict[str, nn.Module] = OrderedDict()
        for name, channels, count, downsample in LEVELS:
            units = []
            for index in range(count):
                unit = DlibResidualUnit(in_channels, channels, size, downsample and index == 0)
                units.append(unit)
                in_channels, size = channels, unit.out_size
            levels[name] = nn.Sequential(*units)
        self.levels = nn.Sequential(levels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, EMBEDDING_DIM, bias=False)

    def units(self) -> list[DlibResidualUnit]:
        """The residual units, input side first."""
        return [unit for unit in self.levels.modules() if isinstance(unit, DlibResidualUnit)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed (N, 3, 150, 150) float RGB images in 0..255."""
        x = (images - self.input_mean) * self.input_scale
        x = self.levels(self.stem(x))
        embeddings: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return embeddings


class _LayerStream:
    """The parsed dlib layers, input first, taken one by one with their kind checked."""

    def __init__(self, layers: tuple[DlibLayer, ...]) -> None:
        self._layers = layers
        self._next = 0

    def take(self, kind: str) -> DlibLayer:
        if self._next >= len(self._layers):
            raise DlibFormatError(f"dlib network ended early, expected {kind}")
        layer = self._layers[self._next]
        if layer.kind != kind:
            raise DlibFormatError(f"dlib layer {self._next} is {layer.kind}, expected {kind}")
        self._next += 1
        return layer

    def finish(self) -> None:
        if self._next != len(self._layers):
            raise DlibFormatError(f"{len(self._layers) - self._next} unexpected dlib layers left")


def _copy(target: torch.Tensor, source: np.ndarray, what: str) -> None:
    if tuple(target.shape) != source.shape:
        raise DlibFormatError(f"{what}: dlib shape {source.shape} != {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.array(source, dtype=np.float32)))


def _load_conv(conv: nn.Conv2d, layer: DlibLayer, what: str) -> None:
    a = layer.attrs
    geometry = ((a["stride_y"], a["stride_x"]), (a["padding_y"], a["padding_x"]))
    if geometry != (conv.stride, conv.padding):
        raise DlibFormatError(f"{what}: dlib stride/padding {geometry} != module's")
    _copy(conv.weight, layer.arrays["weight"], f"{what}.weight")
    if conv.bias is None or "bias" not in layer.arrays:
        raise DlibFormatError(f"{what}: expected a convolution with bias")
    _copy(conv.bias, layer.arrays["bias"], f"{what}.bias")


def _load_affine(bn: nn.BatchNorm2d, layer: DlibLayer, what: str) -> None:
    """Put dlib's y = gamma * x + beta into a BatchNorm2d whose running stats are (0, 1)."""
    if layer.attrs.get("mode") != "conv":
        raise DlibFormatError(f"{what}: expected a per-channel (conv mode) affine layer")
    assert bn.running_mean is not None and bn.running_var is not None
    gamma = layer.arrays["gamma"] * np.float32(np.sqrt(1.0 + bn.eps))
    _copy(bn.weight, gamma, f"{what}.weight")
    _copy(bn.bias, layer.arrays["beta"], f"{what}.bias")
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)


def _check_pool(layer: DlibLayer, size: int, stride: int, what: str) -> None:
    a = layer.attrs
    found = (a["nr"], a["nc"], a["stride_y"], a["stride_x"], a["padding_y"], a["padding_x"])
    if found != (size, size, stride, stride, 0, 0):
        raise DlibFormatError(f"{what}: dlib pooling {found} is not {size}x{size}/{stride}")


def _load_unit(unit: DlibResidualUnit, layers: _LayerStream, what: str) -> None:
    downsample = isinstance(unit.shortcut, nn.AvgPool2d)
    layers.take("tag_or_skip")  # tag1 on the unit's input
    _load_conv(unit.conv1, layers.take("con"), f"{what}.conv1")
    _load_affine(unit.bn1, layers.take("affine"), f"{what}.bn1")
    layers.take("relu")
    _load_conv(unit.conv2, layers.take("con"), f"{what}.conv2")
    _load_affine(unit.bn2, layers.take("affine"), f"{what}.bn2")
    if downsample:
        layers.take("tag_or_skip")  # tag2 on the block's output
        layers.take("tag_or_skip")  # skip1 back to the unit's input
        _check_pool(layers.take("avg_pool"), 2, 2, f"{what}.shortcut")
    layers.take("add_prev")
    layers.take("relu")


def fill_from_dlib(model: DlibResNet, network: DlibNetwork) -> None:
    """Copy a parsed dlib network into ``model``, checking it layer by layer against the module."""
    attrs = network.input.attrs
    size = (attrs.get("nr"), attrs.get("nc"))
    if network.input.kind != "input_rgb_image_sized" or size != (INPUT_SIZE, INPUT_SIZE):
        raise DlibFormatError(f"expected input_rgb_image_sized<{INPUT_SIZE}>, got {attrs}")
    means = np.array([attrs["avg_red"], attrs["avg_green"], attrs["avg_blue"]], np.float32)
    _copy(model.input_mean, means.reshape(1, 3, 1, 1), "input_mean")
    _copy(model.input_scale, np.array(attrs["scale"], np.float32), "input_scale")
    layers = _LayerStream(network.layers)
    stem = model.stem
    _load_conv(stem.conv, layers.take("con"), "stem.conv")
    _load_affine(stem.bn, layers.take("affine"), "stem.bn")
    layers.take("relu")
    _check_pool(layers.take("max_pool"), 3, 2, "stem.pool")
    for index, unit in enumerate(model.units()):
        _load_unit(unit, layers, f"unit{index}")
    _check_pool(layers.take("avg_pool"), 0, 1, "pool")  # 0x0: dlib's avg_pool_everything
    fc = layers.take("fc")
    if "bias" in fc.arrays:
        raise DlibFormatError("expected dlib's fc_no_bias embedding layer")
    _copy(model.fc.weight, fc.arrays["weight"], "fc.weight")
    layers.finish()


def load_dlib_resnet(dat_path: Path) -> DlibResNet:
    """A ``DlibResNet`` in eval mode with the weights of a dlib ``.dat`` file."""
    model = DlibResNet()
    fill_from_dlib(model, read_dlib_network(dat_path))
    return model.eval()
