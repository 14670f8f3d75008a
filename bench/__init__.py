"""``facegate bench``: the benchmark harness of issue 8 (model-only bound, pipeline, baselines)."""
