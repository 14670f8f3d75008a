"""Where FaceGate keeps shared data: object-store key prefixes and Redis keys that one part
writes and others read, re-seal or delete.

A module without imports of its own, so the writers (enrolment, the console, the trainer's
manifests) and the tools that find, re-seal or delete their data (forget, retention, key
rotation) name the same places without importing each other.
"""

# Datasets bucket: enrollment/student=<id>/<sha256>.jpg|png, sealed (enrollment_photos.py).
ENROLLMENT_PREFIX = "enrollment/"
# Feedback bucket: feedback/date=<day>/part-<model version>/<id>.jpg (sealed) and .json
# (console/dataset.py).
FEEDBACK_PREFIX = "feedback/"
# Datasets bucket: datasets/<version>/manifest.json (trainer/datasets/manifest.py).
DATASET_MANIFEST_PREFIX = "datasets/"


def evidence_key(frame_id: str) -> str:
    """The Redis hash of a decided verdict's evidence (its face thumbnail, sealed), written by
    the console (console/actions.py) for the feedback consumer, with a TTL."""
    return f"facegate:feedback:evidence:{frame_id}"
