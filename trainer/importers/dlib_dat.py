"""Reader of dlib's DNN files (``dlib::serialize(net)``), written without dlib.

dlib writes a network with its own binary format (dlib/serialize.h and the ``serialize``
friends in dlib/dnn/{core,layers,input,loss,tensor}.h):

- integer: a control byte (bit 7: negative; low 4 bits: how many bytes follow), then the
  magnitude, little-endian;
- bool: the ASCII byte ``'1'`` or ``'0'``; string: integer length, then the bytes;
- float / double: integer mantissa, then integer exponent (value = mantissa * 2**exponent;
  exponents 32000 / 32001 / 32002 mean +inf / -inf / nan);
- tensor (version 2): version, n, k, nr, nc, then n*k*nr*nc little-endian float32
  (version 1 wrote every element as a dlib float instead);
- alias_tensor: version 1, n, k, nr, nc: a shape only, the numbers live in the layer's params.

A network nests from the loss towards the input. Every wrapper writes its version, then its
subnetwork, then its own layer, so the layer records come out input-first:

- add_loss_layer: version 1, loss details, subnetwork;
- add_layer: version 2, subnetwork, layer details, three bools, x_grad, cached_output,
  params_grad (training state, read and dropped);
- add_layer directly over the input layer: version 2 or 3, the input layer, layer details,
  three bools, x_grad, cached_output, grad_final, and (version 3) the sample expansion factor;
- add_tag_layer and add_skip_layer: version 1, subnetwork. Neither records its tag number, and
  add_prev_ does not record which tag it adds: the wiring lives in the network's C++ type, so a
  reader can only report a "tag or skip" marker and a model builder must know the topology.
  (For the same reason add_layer version 1, from older dlib releases, is not supported.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from facegate.errors import FacegateError

FloatArray = npt.NDArray[np.float32]
Attr = float | int | bool | str

_INF_EXPONENTS: Final = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
# Input layer records start with their name; every wrapper version is 1..3, every name longer.
_LONGEST_WRAPPER_VERSION: Final = 3


class DlibFormatError(FacegateError):
    """The file is not a dlib DNN of a kind this reader understands."""


@dataclass(frozen=True)
class DlibLayer:
    """One layer record of a dlib network.

    ``kind`` is the dlib layer name without version suffix: ``con``, ``affine``, ``relu``,
    ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``, ``input_rgb_image_sized``, ``loss_metric``,
    or ``tag_or_skip`` for the tag / skip wrappers, which carry no data. ``version`` is the
    record's own version string as written. ``arrays`` holds the weights in PyTorch layouts:
    con ``weight`` (out, in, kh, kw) and ``bias`` (out,); affine ``gamma`` and ``beta`` (C,);
    fc ``weight`` (out, in) and ``bias`` (out,) when the layer has one.
    """

    kind: str
    version: str
    arrays: Mapping[str, FloatArray] = field(default_factory=dict)
    attrs: Mapping[str, Attr] = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNetwork:
    """A parsed dlib network: its loss, its input layer and its layers, input first."""

    loss: DlibLayer
    input: DlibLayer
    layers: tuple[DlibLayer, ...]

    def computational(self) -> list[DlibLayer]:
        """The layers that compute something (tag and skip markers left out), input first."""
        return [layer for layer in self.layers if layer.kind != "tag_or_skip"]


class _Reader:
    """Sequential reader of dlib's primitive encodings over an in-memory buffer."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def _take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self._data):
            raise DlibFormatError(f"dlib file truncated at byte {self.pos}")
        chunk = self._data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _int_at(self, pos: int) -> tuple[int, int]:
        if pos >= len(self._data):
            raise DlibFormatError(f"dlib file truncated at byte {pos}")
        control = self._data[pos]
        size = control & 0x0F
        if size > 8 or pos + 1 + size > len(self._data):
            raise DlibFormatError(f"bad integer control byte {control:#04x} at byte {pos}")
        magnitude = int.from_bytes(self._data[pos + 1 : pos + 1 + size], "little")
        return (-magnitude if control & 0x80 else magnitude), pos + 1 + size

    def integer(self) -> int:
        value, self.pos = self._int_at(self.pos)
        return value

    def peek_integer(self) -> int:
        return self._int_at(self.pos)[0]

    def boolean(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {byte!r} at byte {self.pos - 1}")
        return byte == b"1"

    def string(self) -> str:
        start = self.pos
        try:
            return self._take(self.integer()).decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"expected a record name at byte {start}") from None

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent in _INF_EXPONENTS:
            return _INF_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def tensor(self) -> FloatArray:
        version = self.integer()
        shape = tuple(self.integer() for _ in range(4))
        count = math.prod(shape)
        if version == 2:
            raw = np.frombuffer(self._take(4 * count), dtype="<f4")
            return raw.astype(np.float32).reshape(shape)
        if version == 1:
            return np.array([self.real() for _ in range(count)], np.float32).reshape(shape)
        raise DlibFormatError(f"unknown tensor version {version} at byte {self.pos}")

    def alias_shape(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise DlibFormatError(f"unknown alias_tensor version {version} at byte {self.pos}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc


def _slice(params: FloatArray, offset: int, shape: tuple[int, ...]) -> FloatArray:
    count = math.prod(shape)
    flat = params.reshape(-1)
    if offset + count > flat.size:
        raise DlibFormatError(f"layer params hold {flat.size} values, need {offset + count}")
    return flat[offset : offset + count].reshape(shape).copy()


def _read_con(r: _Reader, version: str) -> DlibLayer:
    if version not in ("con_4", "con_5", "con_6"):
        raise DlibFormatError(f"unsupported convolution record {version!r}")
    params = r.tensor()
    num_filters, nr, nc = r.integer(), r.integer(), r.integer()
    stride_y, stride_x, padding_y, padding_x = (r.integer() for _ in range(4))
    filters = r.alias_shape()
    biases = r.alias_shape()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training settings only
        r.real()
    use_bias = r.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6" and r.boolean():
        raise DlibFormatError("con_ with a fused relu is not supported")
    arrays = {"weight": _slice(params, 0, filters)}
    if use_bias:
        arrays["bias"] = _slice(params, math.prod(filters), (num_filters,))
    if (
        filters[0] != num_filters
        or filters[2:] != (nr, nc)
        or (use_bias and biases[1] != num_filters)
    ):
        raise DlibFormatError(f"convolution shapes disagree: {filters} vs {num_filters}x{nr}x{nc}")
    attrs: dict[str, Attr] = {
        "num_filters": num_filters,
        "nr": nr,
        "nc": nc,
        "stride_y": stride_y,
        "stride_x": stride_x,
        "padding_y": padding_y,
        "padding_x": padding_x,
    }
    return DlibLayer("con", version, arrays, attrs)


def _read_affine(r: _Reader, version: str) -> DlibLayer:
    params = r.tensor()
    gamma = r.alias_shape()
    r.alias_shape()  # beta has gamma's shape
    mode = r.integer()
    disabled = r.boolean() if version == "affine_2" else False
    if disabled:
        raise DlibFormatError("disabled affine_ layers are not supported")
    size = math.prod(gamma)
    arrays = {"gamma": _slice(params, 0, (size,)), "beta": _slice(params, size, (size,))}
    return DlibLayer("affine", version, arrays, {"mode": "conv" if mode == 0 else "fc"})


def _read_batch_norm(r: _Reader, version: str) -> DlibLayer:
    """A bn_ record, folded into the affine_ layer dlib itself turns it into for inference."""
    params = r.tensor()
    gamma_shape = r.alias_shape()
    r.alias_shape()
    r.tensor()  # means and invstds of the last training batch
    r.tensor()
    running_means = r.tensor().reshape(-1)
    running_variances = r.tensor().reshape(-1)
    r.integer()  # num_updates
    r.integer()  # running_stats_window_size
    for _ in range(4):
        r.real()
    eps = r.real()
    size = math.prod(gamma_shape)
    gamma = _slice(params, 0, (size,))
    beta = _slice(params, size, (size,))
    scale = (gamma / np.sqrt(running_variances + np.float32(eps))).astype(np.float32)
    shift = (beta - scale * running_means).astype(np.float32)
    mode = "conv" if version == "bn_con2" else "fc"
    return DlibLayer("affine", version, {"gamma": scale, "beta": shift}, {"mode": mode})


def _read_pool(r: _Reader, version: str) -> DlibLayer:
    nr, nc, stride_y, stride_x, padding_y, padding_x = (r.integer() for _ in range(6))
    attrs: dict[str, Attr] = {
        "nr": nr,
        "nc": nc,
        "stride_y": stride_y,
        "stride_x": stride_x,
        "padding_y": padding_y,
        "padding_x": padding_x,
    }
    return DlibLayer(version.removesuffix("_2"), version, {}, attrs)


def _read_fc(r: _Reader, version: str) -> DlibLayer:
    if version not in ("fc_2", "fc_3"):
        raise DlibFormatError(f"unsupported fully connected record {version!r}")
    num_outputs, num_inputs = r.integer(), r.integer()
    params = r.tensor()
    weights = r.alias_shape()
    r.alias_shape()
    bias_mode = r.integer()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        r.real()
    use_bias = (r.boolean() if version == "fc_3" else True) and bias_mode == 0
    if weights[:2] != (num_inputs, num_outputs):
        raise DlibFormatError(f"fc weights {weights} vs {num_inputs}->{num_outputs}")
    # dlib computes x @ W with W (inputs, outputs); PyTorch's Linear keeps W transposed.
    arrays = {"weight": _slice(params, 0, (num_inputs, num_outputs)).T.copy()}
    if use_bias:
        arrays["bias"] = _slice(params, num_inputs * num_outputs, (num_outputs,))
    attrs: dict[str, Attr] = {"num_outputs": num_outputs, "num_inputs": num_inputs}
    return DlibLayer("fc", version, arrays, attrs)


def _read_details(r: _Reader) -> DlibLayer:
    version = r.string()
    if version.startswith("con_"):
        return _read_con(r, version)
    if version in ("affine_", "affine_2"):
        return _read_affine(r, version)
    if version in ("bn_con2", "bn_fc2"):
        return _read_batch_norm(r, version)
    if version in ("max_pool_2", "avg_pool_2"):
        return _read_pool(r, version)
    if version.startswith("fc_"):
        return _read_fc(r, version)
    if version == "relu_":
        return DlibLayer("relu", version)
    if version == "add_prev_":
        return DlibLayer("add_prev", version)
    raise DlibFormatError(f"unsupported dlib layer {version!r} at byte {r.pos}")


def _read_input(r: _Reader) -> DlibLayer:
    version = r.string()
    if version not in ("input_rgb_image_sized", "input_rgb_image"):
        raise DlibFormatError(f"unsupported input layer {version!r}")
    attrs: dict[str, Attr] = {
        "avg_red": r.real(),
        "avg_green": r.real(),
        "avg_blue": r.real(),
        # dlib scales (pixel - mean) by this constant in its input layers' to_tensor().
        "scale": 1.0 / 256.0,
    }
    if version == "input_rgb_image_sized":
        attrs["nr"], attrs["nc"] = r.integer(), r.integer()
    return DlibLayer(version, version, {}, attrs)


def _read_loss(r: _Reader) -> DlibLayer:
    version = r.string()
    if version not in ("loss_metric_", "loss_metric_2"):
        raise DlibFormatError(f"unsupported loss layer {version!r}")
    attrs: dict[str, Attr] = {}
    if version == "loss_metric_2":
        attrs = {"margin": r.real(), "distance_threshold": r.real()}
    return DlibLayer("loss_metric", version, {}, attrs)


def _drop_layer_state(r: _Reader, tensors: int) -> None:
    """Skip an add_layer's training state: three bools, then ``tensors`` cached tensors."""
    for _ in range(3):
        r.boolean()
    for _ in range(tensors):
        r.tensor()


def parse_dlib_network(data: bytes) -> DlibNetwork:
    """Parse a serialized dlib DNN (loss layer at the top) into its layers, input first."""
    r = _Reader(data)
    if r.integer() != 1:
        raise DlibFormatError("not a dlib add_loss_layer (version 1) at the start of the file")
    loss = _read_loss(r)
    # Walk down the wrappers (output towards input) without recursion: the stream is
    # depth-first, so each wrapper's own record follows everything below it.
    wrappers: list[int] = []
    while True:
        version = r.integer()
        if r.peek_integer() > _LONGEST_WRAPPER_VERSION:
            break
        wrappers.append(version)
    if version not in (2, 3):
        raise DlibFormatError(f"unsupported add_layer version {version} over the input layer")
    input_layer = _read_input(r)
    layers = [_read_details(r)]
    _drop_layer_state(r, tensors=3)
    if version == 3:
        r.integer()  # sample expansion factor
    for version in reversed(wrappers):
        if version == 1:
            layers.append(DlibLayer("tag_or_skip", "1"))
        elif version == 2:
            layers.append(_read_details(r))
            _drop_layer_state(r, tensors=3)
        else:
            raise DlibFormatError(f"unsupported wrapper version {version} at byte {r.pos}")
    if r.remaining:
        raise DlibFormatError(f"{r.remaining} bytes left after the network")
    return DlibNetwork(loss, input_layer, tuple(layers))


def read_dlib_network(path: Path) -> DlibNetwork:
    """Read and parse a dlib DNN ``.dat`` file."""
    return parse_dlib_network(path.read_bytes())


__all__ = [
    "DlibFormatError",
    "DlibLayer",
    "DlibNetwork",
    "parse_dlib_network",
    "read_dlib_network",
]
