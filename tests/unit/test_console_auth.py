"""Console users (argon2 hashes), sessions that expire, CSRF comparison, feedback labelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.dataset import is_false_accept, is_false_reject, partition, sample_for
from console.sessions import SessionStore, csrf_matches
from console.users import User, UserStore
from facegate.errors import FacegateError
from schemas.messages import Feedback


def test_users_are_stored_as_argon2_hashes_and_checked(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("alice", "correct horse", "admin")
    text = (tmp_path / "users.json").read_text()
    assert "correct horse" not in text and "$argon2id$" in text
    assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    assert store.authenticate("alice", "correct horse") == User("alice", "admin")
    assert store.authenticate("alice", "wrong horse!") is None
    assert store.authenticate("nobody", "correct horse") is None


def test_user_names_roles_and_passwords_are_checked(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    with pytest.raises(FacegateError, match="8 characters"):
        store.add("bob", "short", "proctor")
    with pytest.raises(FacegateError, match="invalid user name"):
        store.add("bob smith", "long enough", "proctor")
    with pytest.raises(FacegateError, match="unknown role"):
        store.add("bob", "long enough", "root")  # type: ignore[arg-type]


def test_sessions_expire_and_end() -> None:
    clock = [1000.0]
    sessions = SessionStore(ttl_s=60, clock=lambda: clock[0])
    session = sessions.create(User("p", "proctor"))
    assert sessions.get(session.token) == session
    assert sessions.get("forged") is None and sessions.get(None) is None
    clock[0] += 61
    assert sessions.get(session.token) is None
    again = sessions.create(User("p", "proctor"))
    sessions.end(again.token)
    assert sessions.get(again.token) is None


def test_csrf_token_must_match_the_session() -> None:
    session = SessionStore(ttl_s=60).create(User("p", "proctor"))
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, None)
    assert not csrf_matches(session, "")
    assert not csrf_matches(session, session.csrf[:-1] + "x")


def _feedback(action: str, decision: str) -> Feedback:
    return Feedback(
        feedback_id="fb1",
        frame_id="fr1",
        exam_id="ex",
        gate_id="g",
        student_id="s1",
        proctor="p",
        action=action,  # type: ignore[arg-type]
        verdict_decision=decision,  # type: ignore[arg-type]
        model_version="3",
        decided_at=1_700_000_000.0,
    )


def test_feedback_becomes_a_labelled_sample_in_a_versioned_partition() -> None:
    sample = sample_for(_feedback("accept_manual", "reject"), {"captured_at": "1.0"})
    assert sample is not None
    assert sample.image_key == "feedback/date=2023-11-14/part-3/fb1.jpg"
    assert sample.manifest_key == "feedback/date=2023-11-14/part-3/fb1.json"
    assert sample.manifest["label"] == "genuine" and sample.manifest["model_version"] == "3"
    assert sample_for(_feedback("impostor", "accept"), {}).manifest["label"] == "impostor"  # type: ignore[union-attr]
    assert sample_for(_feedback("retry", "review"), {}) is None
    assert partition(_feedback("confirm", "accept")) == "feedback/date=2023-11-14/part-3"


def test_proctor_seen_errors() -> None:
    assert is_false_reject(_feedback("accept_manual", "reject"))
    assert is_false_reject(_feedback("confirm", "review"))
    assert not is_false_reject(_feedback("confirm", "accept"))
    assert is_false_accept(_feedback("impostor", "accept"))
    assert not is_false_accept(_feedback("impostor", "reject"))


def test_console_settings_read_their_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from console.settings import ConsoleSettings

    monkeypatch.setenv("FACEGATE_CONSOLE_PORT", "18999")
    monkeypatch.setenv("FACEGATE_CONSOLE_USERS_FILE", str(tmp_path / "u.json"))
    monkeypatch.setenv("FACEGATE_S3_BUCKET_FEEDBACK", "fb-bucket")
    settings = ConsoleSettings()
    assert settings.port == 18999
    assert settings.users_path() == tmp_path / "u.json"
    assert settings.s3.bucket_feedback == "fb-bucket"


def test_gate_status_shows_a_service_without_live_instances() -> None:
    from console.pages import gate_status

    html = gate_status({"gate-1": 5.0}, 120.0, True, {"stream-processor": 1, "worker": 0})
    assert "worker: DOWN" in html and 'class="gate down"' in html
    assert "stream-processor: 1 up" in html and "gate-1: live" in html
