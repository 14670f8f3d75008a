"""An int8 copy of a large gallery for the first pass of 1:N search.

A full float32 scan of 100k students reads 77 MB per query: on the 2-core machines this project
is measured on, that is memory-bound at about 11 ms (``facegate bench``).  This scan keeps each
student's mean template as int8 with one scale per student (a quarter of the bytes) and scores
a probe with ONNX Runtime's ``DynamicQuantizeMatMul`` (MLAS int8 GEMM, weights pre-packed when
the session is built).  Its scores differ from the float32 cosines by a few thousandths, so it
only shortlists: :class:`inference_worker.gallery.GalleryIndex` re-scores the shortlist exactly
in float32 and returns the exact top-k of the shortlist.  1:1 verification never uses it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

Vector = npt.NDArray[np.float32]
# The ONNX IR version this onnxruntime build accepts for a hand-built graph.
IR_VERSION = 9


def _graph(quantized: npt.NDArray[np.int8], scales: Vector) -> bytes:
    """probes (m, d) float32 and k (1,) int64 -> the k best rows (m, k) by approximate cosine,
    the gallery as constants."""
    rows, dim = quantized.shape
    nodes = [
        helper.make_node(
            "DynamicQuantizeMatMul",
            ["probes", "gallery", "scales", "zero_points"],
            ["scores"],
            domain="com.microsoft",
        ),
        # A partial sort in the same call: cheaper than numpy's argpartition over 100k scores.
        helper.make_node("TopK", ["scores", "k"], ["best", "rows"], axis=1, sorted=0),
    ]
    graph = helper.make_graph(
        nodes,
        "facegate_int8_scan",
        [
            helper.make_tensor_value_info("probes", TensorProto.FLOAT, ["m", dim]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("rows", TensorProto.INT64, ["m", "k"])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(quantized.T), "gallery"),
            numpy_helper.from_array(scales, "scales"),
            numpy_helper.from_array(np.zeros(rows, np.int8), "zero_points"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = IR_VERSION
    serialized: bytes = model.SerializeToString()
    return serialized


def quantize(means: Vector) -> tuple[npt.NDArray[np.int8], Vector]:
    """Symmetric int8 per row: ``row ~= quantized * scale``."""
    scales = (np.abs(means).max(axis=1) / 127.0).astype(np.float32)
    scales = np.maximum(scales, np.float32(1e-12))
    quantized = np.clip(np.rint(means / scales[:, None]), -127, 127).astype(np.int8)
    return quantized, scales


class Int8Scan:
    """Approximate scores of probes against ``means`` (unit rows), from an int8 copy."""

    def __init__(self, means: Vector, threads: int = 1) -> None:
        self.means = means  # the float32 rows this scan was built from (identity is checked)
        quantized, scales = quantize(means)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            _graph(quantized, scales), options, providers=["CPUExecutionProvider"]
        )

    def shortlist(self, probes: Vector, size: int) -> npt.NDArray[np.int64]:
        """(m, size) rows of ``means`` with the best approximate cosines, in no order."""
        feeds = {
            "probes": np.ascontiguousarray(probes, np.float32),
            "k": np.array([size], np.int64),
        }
        rows: npt.NDArray[np.int64] = self._session.run(["rows"], feeds)[0]
        return rows
