"""Template encryption at rest: sealing, opening, key rings and key files (no Redis needed:
the cipher works on bytes and Redis key names; the integration test runs it against Redis)."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from facegate.stack import LocalStack
from inference_worker.template_crypto import (
    MAGIC,
    GalleryKey,
    GallerySecuritySettings,
    KeyRing,
    TemplateCipher,
    TemplateKeyError,
    default_cipher,
    ensure_key_file,
    format_keys,
    new_key,
    parse_keys,
    read_key_file,
    ring_from_settings,
    sealed_key_id,
    write_key_file,
)
from tests.conftest import stack_settings_on_free_ports

KEY = "facegate:gallery:3:t:s001"
ZERO_KEY = base64.b64encode(bytes(32)).decode()


def _template() -> bytes:
    rows = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.tobytes()


def _cipher(*keys: GalleryKey) -> TemplateCipher:
    return TemplateCipher(KeyRing(list(keys) or [new_key("k1")]))


def test_round_trip_hides_the_template_and_names_the_key() -> None:
    cipher = _cipher(new_key("k1"))
    plain = _template()
    sealed = cipher.seal(KEY, plain)
    assert sealed.startswith(MAGIC)
    assert sealed_key_id(sealed) == "k1"
    assert plain not in sealed and plain[:16] not in sealed
    assert cipher.open(KEY, sealed) == plain
    # A fresh nonce each time: the same template never gives the same bytes twice.
    assert cipher.seal(KEY, plain) != sealed


@pytest.mark.parametrize("where", [3, 4, 5, 10, 30, -1])
def test_any_flipped_byte_is_detected(where: int) -> None:
    """Version, key id length, key id, nonce, ciphertext, tag."""
    cipher = _cipher(new_key("k1"))
    sealed = bytearray(cipher.seal(KEY, _template()))
    sealed[where] ^= 0x01
    with pytest.raises(TemplateKeyError):
        cipher.open(KEY, bytes(sealed))


def test_a_broken_header_reads_as_plaintext_only_while_plaintext_is_allowed() -> None:
    """A value without the header is a legacy plaintext one: readable for the migration,
    refused once FACEGATE_GALLERY_ALLOW_PLAINTEXT is false (no unsealed template slips in)."""
    ring = KeyRing([new_key("k1")])
    sealed = bytearray(TemplateCipher(ring).seal(KEY, _template()))
    sealed[0] ^= 0x01
    assert TemplateCipher(ring).open(KEY, bytes(sealed)) == bytes(sealed)
    strict = TemplateCipher(ring, allow_plaintext=False)
    with pytest.raises(TemplateKeyError, match="not encrypted"):
        strict.open(KEY, bytes(sealed))
    with pytest.raises(TemplateKeyError, match="ALLOW_PLAINTEXT"):
        strict.open(KEY, _template())


def test_truncated_value_is_detected() -> None:
    cipher = _cipher()
    sealed = cipher.seal(KEY, _template())
    with pytest.raises(TemplateKeyError, match="fails authentication"):
        cipher.open(KEY, sealed[:-1])
    with pytest.raises(TemplateKeyError, match="truncated"):
        cipher.open(KEY, sealed[:20])


def test_value_moved_to_another_students_key_does_not_open() -> None:
    cipher = _cipher()
    sealed = cipher.seal(KEY, _template())
    for other in ("facegate:gallery:3:t:s002", "facegate:gallery:4:t:s001"):
        with pytest.raises(TemplateKeyError, match=f"{other} fails authentication"):
            cipher.open(other, sealed)


def test_unknown_key_id_and_missing_key_are_one_line_errors() -> None:
    sealed = _cipher(new_key("k1")).seal(KEY, _template())
    with pytest.raises(TemplateKeyError) as unknown:
        _cipher(new_key("k2")).open(KEY, sealed)
    assert "'k1'" in str(unknown.value) and "k2" in str(unknown.value)
    with pytest.raises(TemplateKeyError) as missing:
        TemplateCipher(None).open(KEY, sealed)
    assert "no gallery key is configured" in str(missing.value)
    for error in (unknown.value, missing.value):
        assert "\n" not in str(error)


def test_same_id_with_another_key_fails_authentication() -> None:
    sealed = _cipher(new_key("k1")).seal(KEY, _template())
    with pytest.raises(TemplateKeyError, match="fails authentication"):
        _cipher(new_key("k1")).open(KEY, sealed)


def test_older_keys_of_the_ring_still_open() -> None:
    old, current = new_key("old"), new_key("new")
    sealed_old = _cipher(old).seal(KEY, b"\x00" * 8)
    ring = _cipher(current, old)
    assert ring.open(KEY, sealed_old) == b"\x00" * 8
    assert sealed_key_id(ring.seal(KEY, b"\x00" * 8)) == "new"


def test_plaintext_legacy_values_are_read_as_they_are() -> None:
    plain = _template()
    assert sealed_key_id(plain) is None
    assert _cipher().open(KEY, plain) == plain
    assert TemplateCipher(None).open(KEY, plain) == plain


def test_without_a_key_writes_stay_plaintext_unless_a_key_is_required(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert TemplateCipher(None).seal(KEY, b"abcd") == b"abcd"
    assert "UNENCRYPTED" in caplog.text
    with pytest.raises(TemplateKeyError, match="REQUIRE_KEY"):
        TemplateCipher(None, require_key=True)


def test_parse_keys_reads_files_and_inline_lists() -> None:
    one, two = new_key("a"), new_key("b.2")
    text = f"# comment\n\n{one.entry()}\n  {two.entry()}  \n"
    assert parse_keys(text, "file") == [one, two]
    assert parse_keys(f"{one.entry()},{two.entry()}", "inline") == [one, two]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no key"),
        ("k1", "not 'id:base64'"),
        (f"k 1:{ZERO_KEY}", "key id"),
        ("k1:not-base64!", "not valid base64"),
        ("k1:" + base64.b64encode(bytes(16)).decode(), "16 bytes"),
        (f"k1:{ZERO_KEY},k1:{ZERO_KEY}", "twice"),
    ],
)
def test_bad_key_text_is_refused_without_showing_it(text: str, problem: str) -> None:
    with pytest.raises(TemplateKeyError, match=problem) as error:
        parse_keys(text, "src")
    assert ZERO_KEY not in str(error.value)


def test_keys_never_appear_in_repr() -> None:
    key = new_key("k1")
    assert base64.b64encode(key.secret).decode() not in repr(key)
    settings = GallerySecuritySettings(keys=key.entry())  # type: ignore[arg-type]
    assert base64.b64encode(key.secret).decode() not in repr(settings)


def test_key_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "gallery.keys"
    assert ensure_key_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = read_key_file(path)
    assert len(keys) == 1 and len(keys[0].secret) == 32
    assert ensure_key_file(path) is False
    assert read_key_file(path) == keys  # an existing file is never replaced
    # A rewrite (rotation) stays 0600 even under a permissive umask, and leaves no temp file.
    previous = os.umask(0o022)
    try:
        write_key_file(path, [new_key("k2"), *keys])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [k.key_id for k in read_key_file(path)] == ["k2", keys[0].key_id]
    assert [p.name for p in path.parent.iterdir()] == ["gallery.keys"]


def test_a_key_file_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys"
    path.write_text(format_keys([new_key("k1")]))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        read_key_file(path)
    assert "readable by others" in caplog.text
    assert base64.b64encode(read_key_file(path)[0].secret).decode() not in caplog.text


def test_missing_key_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateKeyError, match="does not exist"):
        KeyRing.from_file(tmp_path / "nope")


def test_a_ring_follows_its_file(tmp_path: Path) -> None:
    """A service started before a rotation opens templates sealed with the new key, and seals
    new ones with it, without a restart."""
    path = tmp_path / "keys"
    old = new_key("old")
    write_key_file(path, [old])
    service = TemplateCipher(KeyRing.from_file(path))
    rotated = new_key("new")
    write_key_file(path, [rotated, old])
    sealed_by_rotation = TemplateCipher(KeyRing([rotated])).seal(KEY, b"data")
    assert service.open(KEY, sealed_by_rotation) == b"data"
    assert sealed_key_id(service.seal(KEY, b"data")) == "new"


def test_settings_choose_file_then_inline_then_the_local_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("FACEGATE_GALLERY_KEY_FILE", "FACEGATE_GALLERY_KEYS", "FACEGATE_STACK_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FACEGATE_ENV_FILE", str(tmp_path / "none.env"))
    assert ring_from_settings(GallerySecuritySettings()) is None
    assert default_cipher().encrypts is False
    # The local stack's key file, found without any variable (like its default ports).
    stack_file = tmp_path / ".facegate" / "stack" / "gallery.keys"
    ensure_key_file(stack_file)
    assert default_cipher().current_key_id() == read_key_file(stack_file)[0].key_id
    inline = new_key("inline")
    monkeypatch.setenv("FACEGATE_GALLERY_KEYS", inline.entry())
    assert default_cipher().current_key_id() == "inline"
    file_key = new_key("fromfile")
    write_key_file(tmp_path / "k", [file_key])
    monkeypatch.setenv("FACEGATE_GALLERY_KEY_FILE", str(tmp_path / "k"))
    assert default_cipher().current_key_id() == "fromfile"
    monkeypatch.setenv("FACEGATE_GALLERY_KEY_FILE", "")  # empty means unset (compose, Helm)
    assert default_cipher().current_key_id() == "inline"


def test_stack_endpoints_name_the_key_file(tmp_path: Path) -> None:
    stack = LocalStack(stack_settings_on_free_ports(tmp_path / "stack"))
    endpoints = stack.endpoints()
    assert endpoints["FACEGATE_GALLERY_KEY_FILE"] == str(stack.gallery_key_file())
    assert stack.gallery_key_file().parent == (tmp_path / "stack").resolve()
