"""Settings of the proctor console and the feedback consumer (``FACEGATE_CONSOLE_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facegate.paths import home_dir
from facegate.settings import (
    BaseServiceSettings,
    KafkaSettings,
    ObjectStoreSettings,
    RedisSettings,
    load_settings,
)


class ConsoleSettings(BaseServiceSettings):
    """The web console proctors use, and the consumer that turns their decisions into data."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_CONSOLE_")

    host: str = "127.0.0.1"
    port: int = 18080
    # Users and their argon2 hashes (written by `facegate console add-user`); default under
    # FACEGATE_HOME so that no password hash ever lands in the working tree.
    users_file: Path | None = None
    # Brute-force protection: this many wrong passwords for one user name within the window
    # and that name's logins are refused until the window has passed.
    login_max_failures: int = 5
    login_window_s: int = 300
    # A session ends this long after login, whatever the activity: exam mornings are short.
    session_ttl_s: float = 8 * 3600
    # Sent only over HTTPS when true (set it behind a TLS-terminating proxy).
    secure_cookies: bool = False
    # A gate without a verdict for this long is shown as quiet.
    quiet_after_s: float = 120.0
    # Verdicts older than this are not shown when the console starts and reads the topic.
    history_s: float = 4 * 3600
    # Check-ins kept in memory per gate for pages opened later.
    keep_per_gate: int = 200
    # The consumer group of `facegate feedback-consumer`.
    feedback_group_id: str = "facegate-feedback"
    # How long the verdict evidence the console hands to the feedback consumer stays in Redis.
    evidence_ttl_s: int = 14 * 24 * 3600
    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))
    s3: ObjectStoreSettings = Field(default_factory=lambda: load_settings(ObjectStoreSettings))

    def users_path(self) -> Path:
        """The users file, resolved."""
        return self.users_file or home_dir() / "console" / "users.json"
