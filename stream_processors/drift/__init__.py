"""Drift monitoring: windowed statistics of verdicts and feedback, compared with a reference.

The monitor (``facegate drift run``) follows the ``verdicts`` and ``feedback`` topics, keeps
tumbling windows per gate and model version (and across all gates), and publishes a
``DriftReport`` for every closed window to the ``drift`` topic, with Prometheus metrics beside.
:func:`stream_processors.drift.thresholds.retraining_reasons` says which breaches of a report
call for retraining.
"""
