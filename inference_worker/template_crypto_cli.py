"""``facegate gallery rotate-key``: a new gallery key, every template re-sealed under it.

The face images sealed with the same key go with them: enrolment portraits and decision
evidence (Redis), enrolment photos and feedback face images (the object store,
``FACEGATE_S3_*``; see sealed_objects.py).

Exported for the lead to register (``gallery.add_command(rotate_key_command)``).  The key file
is the one the services read (``FACEGATE_GALLERY_KEY_FILE``, else the local stack's); keys
given inline (``FACEGATE_GALLERY_KEYS``, a container secret) cannot be edited from here, so
with them the command re-encrypts under the first (current) key and says which ids the secret
may then lose.  See template_crypto_rotation.py for why each step is safe to repeat.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import click

from facegate.errors import FacegateError
from facegate.object_store import make_object_store
from facegate.redis_client import make_redis
from facegate.settings import ObjectStoreSettings, RedisSettings, load_settings
from inference_worker.rotation_guard import rotation_lock
from inference_worker.template_crypto import (
    GallerySecuritySettings,
    KeyRing,
    TemplateCipher,
    local_stack_key_file,
    new_key,
    parse_keys,
)
from inference_worker.template_crypto_rotation import (
    RotationReport,
    add_current_key,
    drop_old_keys,
    reencrypt_all,
)

# Failures listed one per line before the command gives up; the rest are counted.
MAX_FAILURES_SHOWN = 10


@click.command("rotate-key")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The key file to rotate (default: FACEGATE_GALLERY_KEY_FILE, else the local stack's; "
    "created when missing).",
)
@click.option(
    "--new-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Take the new key from this file (one 'id:base64' entry) instead of generating one.",
)
@click.option("--key-id", default=None, help="Id of the generated key (default k<UTC time>-<hex>).")
@click.option(
    "--reencrypt-only",
    is_flag=True,
    help="No new key: re-seal what is not yet under the current key (after an interrupted "
    "rotation, or with inline FACEGATE_GALLERY_KEYS whose first key is the new one).",
)
@click.option(
    "--drop-old",
    is_flag=True,
    help="Afterwards remove every key but the current one, once a second pass finds no "
    "template under an old key.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def rotate_key_command(
    key_file: Path | None,
    new_key_file: Path | None,
    key_id: str | None,
    reencrypt_only: bool,
    drop_old: bool,
    progress: bool,
) -> None:
    """Make a new gallery key current and re-encrypt every face template with it.

    The face images sealed with the same key are re-encrypted too: enrolment portraits and
    decision evidence in Redis, enrolment photos and feedback face images in the object store.

    Old keys stay in the key file (templates not yet re-sealed still open) until --drop-old.
    Safe to re-run after an interruption: run it again with --reencrypt-only.
    """
    settings = load_settings(GallerySecuritySettings)
    inline = key_file is None and settings.key_file is None and settings.keys is not None
    if inline and not reencrypt_only:
        raise FacegateError(
            "the gallery keys are given inline (FACEGATE_GALLERY_KEYS): put the new key "
            "first there, restart the services, then run rotate-key --reencrypt-only"
        )
    client = make_redis(load_settings(RedisSettings))
    # One rotation at a time, from before the key file changes until its last write.
    with closing(client), rotation_lock(client):
        if inline:
            assert settings.keys is not None
            ring = KeyRing(parse_keys(settings.keys.get_secret_value(), "FACEGATE_GALLERY_KEYS"))
            click.echo(
                f"keys: FACEGATE_GALLERY_KEYS ({', '.join(ring.ids())}), current {_id(ring)}"
            )
        else:
            path = key_file or settings.key_file or local_stack_key_file()
            if reencrypt_only:
                ring = KeyRing.from_file(path)
            else:
                if new_key_file is not None:
                    given = parse_keys(new_key_file.read_text(encoding="utf-8"), str(new_key_file))
                    if len(given) != 1:
                        raise FacegateError(f"{new_key_file} must hold exactly one key")
                    key = given[0]
                else:
                    key = new_key(key_id)
                ring = add_current_key(path, key)
            click.echo(f"key file: {path} ({', '.join(ring.ids())}); current key {_id(ring)}")
        cipher = TemplateCipher(ring)
        s3 = load_settings(ObjectStoreSettings)
        store = (make_object_store(s3), s3)
        report = reencrypt_all(client, cipher, progress, store)
        _echo(report)
        old = ring.ids()[1:]
        if not report.complete:
            raise FacegateError(
                f"{len(report.failed)} template(s) or image(s) could not be re-encrypted "
                f"(listed above); old keys kept: {', '.join(old) or 'none'}"
            )
        if not drop_old:
            if old:
                click.echo(f"old keys kept: {', '.join(old)} (remove them with --drop-old)")
            return
        check = reencrypt_all(client, cipher, progress=False, store=store)
        if not check.complete:
            _echo(check)
            raise FacegateError("templates or images failed on the second pass: old keys kept")
        if inline:
            click.echo(
                f"every template and face image is under {_id(ring)}: "
                f"remove {', '.join(old) or 'nothing'} from FACEGATE_GALLERY_KEYS"
            )
        else:
            dropped = drop_old_keys(path)
            click.echo(f"old keys dropped: {', '.join(dropped) or 'none'}")


def _id(ring: KeyRing) -> str:
    return ring.current.key_id


def _echo(report: RotationReport) -> None:
    for line in report.lines():
        click.echo(line)
    for number, (key, reason) in enumerate(sorted(report.failed.items())):
        if number == MAX_FAILURES_SHOWN:
            click.echo(f"  ... and {len(report.failed) - number} more")
            break
        click.echo(f"  failed {key}: {reason}")
