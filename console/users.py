"""Console users: names, roles and argon2id password hashes in a JSON file."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from facegate.errors import FacegateError

Role = Literal["proctor", "admin"]
ROLES: tuple[Role, ...] = ("proctor", "admin")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so that a wrong name costs as long as a
# wrong password and does not reveal which names exist.
_DUMMY_HASH = _HASHER.hash("facegate-no-such-user")


@dataclass(frozen=True)
class User:
    """A console user."""

    name: str
    role: Role


class UserStore:
    """Users in a JSON file ``{name: {"role": ..., "hash": ...}}``, readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.is_file():
            return {}
        return cast(dict[str, dict[str, str]], json.loads(self.path.read_text()))

    def add(self, name: str, password: str, role: Role) -> None:
        """Add a user or replace their password and role."""
        if not _NAME.match(name):
            raise FacegateError(f"invalid user name {name!r} (letters, digits, _ . @ -)")
        if role not in ROLES:
            raise FacegateError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise FacegateError("a password needs at least 8 characters")
        users = self._load()
        users[name] = {"role": role, "hash": _HASHER.hash(password)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole then renamed, so a crash never leaves half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-")
        with os.fdopen(fd, "w") as handle:
            json.dump(users, handle, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is theirs, else None."""
        entry = self._load().get(name)
        try:
            _HASHER.verify(entry["hash"] if entry else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if entry is None:
            return None
        return User(name, cast(Role, entry["role"]))

    def names(self) -> list[str]:
        """Every user name."""
        return sorted(self._load())
