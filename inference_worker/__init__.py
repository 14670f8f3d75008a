"""The embedding worker: micro-batching, ONNX Runtime (OpenVINO), gallery matching, verdicts."""
