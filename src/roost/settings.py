"""One typed settings object, built by the CLI or a test and passed in; never a global.

Sources, strongest first: keyword arguments, ``ROOST_*`` environment variables, an optional
``roost.toml`` (path in ``ROOST_CONFIG``, default ``./roost.toml``), defaults.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SECRET_FILE = "secret_key"
MIN_SECRET_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOST_", extra="forbid", frozen=True)

    env: Literal["dev", "prod"] = "prod"
    data_dir: Path = Path("roost_data")
    database_url: str = ""
    """``sqlite:///path/to.db`` (default: ``roost.db`` in the data folder) or ``sqlite://:memory:``."""
    cache_url: str = "memory://"
    broker_url: str = "memory://"
    secret_key: SecretStr | None = None
    """Signs cursors (and tokens later). Generated into the data folder when not given."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cors_origins: list[str] = []

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=2, le=256)
    max_json_keys: int = Field(default=1000, ge=1)
    """Most keys in one JSON object of a request body."""
    max_string_length: int = Field(default=100_000, ge=1)
    gzip_min_bytes: int = Field(default=1400, ge=0)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """FULL survives power loss; NORMAL (WAL) survives a killed process only."""
    sqlite_readers: int = Field(default=4, ge=1, le=64)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret_key must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'roost.db'}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("ROOST_CONFIG", "roost.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    def with_secret(self) -> Settings:
        """These settings with a secret key: the given one, or the data folder's (made once)."""
        if self.secret_key is not None:
            return self
        return self.model_copy(
            update={"secret_key": SecretStr(load_or_create_secret(self.data_dir))}
        )


def load_or_create_secret(data_dir: Path) -> str:
    """Read ``data_dir/secret_key``, creating it (mode 0600, atomically) on first use."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return path.read_text().strip()
