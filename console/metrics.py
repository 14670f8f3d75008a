"""Prometheus metrics of the console package.

The feedback consumer's (served on its metrics port): what proctors see the system get wrong.
The web console's (served on its own web port, at ``/metrics``): logins and live pages.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FEEDBACK_ACTIONS = Counter(
    "facegate_proctor_feedback_total",
    "Proctors' decisions, by action and by the pipeline's verdict they judged.",
    ["action", "verdict_decision", "model_version"],
)
FALSE_REJECTS = Counter(
    "facegate_proctor_false_rejects_total",
    "Students the pipeline did not accept whom a proctor accepted as who they claimed.",
    ["model_version"],
)
FALSE_ACCEPTS = Counter(
    "facegate_proctor_false_accepts_total",
    "Check-ins the pipeline accepted that a proctor marked as impostors.",
    ["model_version"],
)
RETRIES = Counter(
    "facegate_proctor_retries_total", "Retries proctors asked for.", ["model_version"]
)
RETRIES_PER_STUDENT = Histogram(
    "facegate_proctor_retries_per_student",
    "Retries a student needed before the proctor's final decision.",
    buckets=(0, 1, 2, 3, 5, 8),
)
CHECKIN_SECONDS = Histogram(
    "facegate_proctor_checkin_seconds",
    "Per student: from the first captured frame to the proctor's final decision.",
    buckets=(2, 5, 10, 20, 30, 60, 120, 300, 600),
)
SAMPLES = Counter(
    "facegate_feedback_samples_total", "Training samples written, by label.", ["label"]
)

# ---- the web console (console/app.py) -------------------------------------------------------

# What ``POST /login`` answered: ok (a session), wrong_password (unknown name or wrong password),
# locked_out (too many failures for the name: refused without checking), csrf_rejected (the
# login form's double-submit token missing or wrong).
LOGIN_OUTCOMES = ("ok", "wrong_password", "locked_out", "csrf_rejected")
LOGINS = Counter(
    "facegate_console_logins_total",
    "Login attempts on the proctor console, by outcome.",
    ["outcome"],
)
for _outcome in LOGIN_OUTCOMES:  # every outcome is a series from the start, at 0
    LOGINS.labels(_outcome)
LIVE_CLIENTS = Gauge(
    "facegate_console_live_clients",
    "Live check-in pages connected to the console's event stream (Server-Sent Events).",
)
