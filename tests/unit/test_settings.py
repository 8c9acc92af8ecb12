"""Settings: ``ROOST_*`` variables, ``roost.toml``, the derived database URL, the secret key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from roost.settings import MIN_SECRET_LENGTH, SECRET_FILE, Settings, load_or_create_secret

GOOD_SECRET = "s" * MIN_SECRET_LENGTH


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ROOST_* variable of the caller's shell, and no roost.toml unless a test writes one."""
    for name in list(os.environ):
        if name.startswith("ROOST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = Settings()
    assert settings.env == "prod"
    assert settings.data_dir == Path("roost_data")
    assert settings.database_url == "sqlite:///roost_data/roost.db"
    assert settings.secret_key is None
    assert settings.sqlite_synchronous == "FULL"
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8090, 1)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROOST_PORT", "9001")
    monkeypatch.setenv("ROOST_WORKERS", "3")
    monkeypatch.setenv("ROOST_LOG_LEVEL", "debug")
    monkeypatch.setenv("ROOST_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("ROOST_SQLITE_SYNCHRONOUS", "NORMAL")
    monkeypatch.setenv("ROOST_CORS_ORIGINS", '["https://app.example.com"]')
    settings = Settings()
    assert settings.port == 9001
    assert settings.workers == 3
    assert settings.log_level == "debug"
    assert settings.data_dir == tmp_path / "d"
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.cors_origins == ["https://app.example.com"]


def test_keyword_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_PORT", "9001")
    assert Settings(port=9002).port == 9002


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ROOST_PORT", "70000"),
        ("ROOST_PORT", "http"),
        ("ROOST_WORKERS", "0"),
        ("ROOST_LOG_LEVEL", "loud"),
        ("ROOST_ENV", "staging"),
        ("ROOST_SQLITE_SYNCHRONOUS", "OFF"),
        ("ROOST_DATABASE_REPLICA_URLS", '["postgresql://replica/db"]'),  # of a SQLite file
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()


def test_toml_file_named_by_roost_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "conf" / "custom.toml"
    config.parent.mkdir()
    config.write_text('port = 7000\nlog_level = "warning"\ndata_dir = "/srv/roost"\n')
    monkeypatch.setenv("ROOST_CONFIG", str(config))
    settings = Settings()
    assert settings.port == 7000
    assert settings.log_level == "warning"
    assert settings.database_url == "sqlite:////srv/roost/roost.db"
    # the environment beats the file
    monkeypatch.setenv("ROOST_PORT", "7001")
    assert Settings().port == 7001


def test_roost_toml_in_the_working_folder_by_default(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text("workers = 2\n")
    assert Settings().workers == 2


def test_unknown_toml_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("prot = 7000\n")  # a typo fails loudly instead of being ignored
    monkeypatch.setenv("ROOST_CONFIG", str(config))
    with pytest.raises(ValidationError, match="prot"):
        Settings()


def test_database_url_follows_the_data_folder(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).database_url == f"sqlite:///{tmp_path}/roost.db"
    assert Settings(data_dir=Path("rel")).database_url == "sqlite:///rel/roost.db"
    explicit = Settings(data_dir=tmp_path, database_url="sqlite:///:memory:")
    assert explicit.database_url == "sqlite:///:memory:"


def test_secret_key_made_once_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Settings(data_dir=data_dir).with_secret()
    assert first.secret_key is not None
    secret = first.secret_key.get_secret_value()
    assert len(secret) >= MIN_SECRET_LENGTH
    path = data_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == secret
    # a later load (another process, a restart) reads the same key
    again = Settings(data_dir=data_dir).with_secret()
    assert again.secret_key is not None and again.secret_key.get_secret_value() == secret
    assert load_or_create_secret(data_dir) == secret
    assert [p.name for p in data_dir.iterdir()] == [SECRET_FILE]  # no temporary file left
    # another data folder has another key
    other = Settings(data_dir=tmp_path / "other").with_secret()
    assert other.secret_key is not None and other.secret_key.get_secret_value() != secret


def test_a_given_secret_key_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key=GOOD_SECRET).with_secret()
    assert settings.secret_key == SecretStr(GOOD_SECRET)
    assert not (tmp_path / SECRET_FILE).exists()


def test_secret_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_SECRET_KEY", GOOD_SECRET)
    settings = Settings()
    assert GOOD_SECRET not in repr(settings)
    assert GOOD_SECRET not in str(settings.model_dump())


@pytest.mark.parametrize("short", ["", "x", "s" * (MIN_SECRET_LENGTH - 1)])
def test_short_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch, short: str) -> None:
    monkeypatch.setenv("ROOST_SECRET_KEY", short)
    with pytest.raises(ValidationError, match="secret_key"):
        Settings()
    with pytest.raises(ValidationError, match="secret_key"):
        Settings(secret_key=short)
