"""The ``roost`` command: version, admin create, and what ``serve`` prints."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from roost import __version__
from roost.cli import serve
from roost.cli.main import main
from roost.http.app import create_app
from roost.records.collections import USERS
from roost.settings import SECRET_FILE, Settings
from roost.storage.base import open_storage, table_name

PASSWORD = "a-long-enough-password"
EMAIL = "owner@example.com"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ROOST_* variable of the caller's shell (the CLI writes some), no stray roost.toml."""
    for name in list(os.environ):
        if name.startswith("ROOST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ROOST_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("ROOST_DATA_DIR", str(tmp_path / "unused"))  # restored after the test


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """``roost ARGS`` in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env["ROOST_CONFIG"] = str(tmp_path / "absent.toml")
    env.update(extra)
    return env


def roost(
    tmp_path: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m roost ARGS`` as a user runs it: a real process with a real exit code."""
    return subprocess.run(
        [sys.executable, "-m", "roost", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path, **env),
        cwd=tmp_path,
        timeout=60,
    )


async def _admin_emails(data_dir: Path) -> list[str]:
    """The emails of the users with role admin; checks that only a hash is stored."""
    storage = open_storage(Settings(data_dir=data_dir, env="dev"))
    await storage.open()
    try:
        async with storage.read() as conn:
            email = storage.dialect.field_sql("email")
            role = storage.dialect.field_sql("role")
            rows = await conn.fetch_all(
                f"SELECT {email} AS email, c.password_hash FROM {table_name(USERS)} u"
                f" JOIN _credentials c ON c.user_id = u.id WHERE {role} = 'admin'"
            )
    finally:
        await storage.aclose()
    for row in rows:
        assert row["password_hash"].startswith("$argon2id$"), "only a hash is stored"
    return [row["email"] for row in rows]


async def _login(data_dir: Path, email: str, password: str) -> httpx.Response:
    """``POST /api/auth/login`` against an app on ``data_dir`` (the CLI's secret key)."""
    app = create_app(Settings(data_dir=data_dir, env="dev"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost") as http:
            body = {"email": email, "password": password}
            response = await http.post("/api/auth/login", json=body)
            if response.status_code == 200:  # the token is an admin's
                token = response.json()["access_token"]
                auth = {"Authorization": f"Bearer {token}"}
                listed = await http.get("/api/collections", headers=auth)
                assert listed.status_code == 200, listed.text
            return response


def test_version(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run_cli(monkeypatch, "version")
    assert (code, out) == (0, f"{__version__}\n")


def test_version_as_a_process(tmp_path: Path) -> None:
    done = roost(tmp_path, "version")
    assert (done.returncode, done.stdout.strip()) == (0, __version__)


def test_admin_create_makes_an_admin_who_can_sign_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = str(tmp_path / "data")
    code, out, err = run_cli(
        monkeypatch, "admin", "create", EMAIL, "--data-dir", data, stdin=PASSWORD + "\n"
    )
    assert code == 0, err
    assert f"admin {EMAIL} created" in out and "POST /api/auth/login" in out
    assert PASSWORD not in out + err
    assert asyncio.run(_admin_emails(tmp_path / "data")) == [EMAIL]
    assert PASSWORD.encode() not in (tmp_path / "data" / "roost.db").read_bytes()

    response = asyncio.run(_login(tmp_path / "data", EMAIL.upper(), PASSWORD))
    assert response.status_code == 200, response.text
    signed_in = response.json()
    assert signed_in["token_type"] == "Bearer"
    assert signed_in["user"]["email"] == EMAIL
    assert signed_in["user"]["role"] == "admin"
    assert signed_in["user"]["verified"] is True
    wrong = asyncio.run(_login(tmp_path / "data", EMAIL, PASSWORD + "x"))
    assert wrong.status_code == 401


def test_admin_create_twice_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    args = ("admin", "create", EMAIL, "--data-dir", data)
    assert run_cli(monkeypatch, *args, stdin=PASSWORD + "\n")[0] == 0
    code, _, err = run_cli(monkeypatch, *args, stdin=PASSWORD + "\n")
    assert code == 1
    assert f"an account with email {EMAIL!r} exists" in err
    assert asyncio.run(_admin_emails(tmp_path / "data")) == [EMAIL]


@pytest.mark.parametrize("password", ["", "short", "x" * 9, "y" * 257])
def test_admin_create_refuses_a_weak_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, password: str
) -> None:
    data = tmp_path / "data"
    code, out, err = run_cli(
        monkeypatch, "admin", "create", EMAIL, "--data-dir", str(data), stdin=password + "\n"
    )
    assert code == 2
    assert "password must be" in err
    assert out == ""
    assert not data.exists() or asyncio.run(_admin_emails(data)) == []


def test_admin_create_refuses_an_invalid_email(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    code, out, err = run_cli(
        monkeypatch, "admin", "create", "not-an-email", "--data-dir", str(data), stdin=PASSWORD
    )
    assert code == 1
    assert out == ""
    assert "email must be an email address" in err
    assert asyncio.run(_admin_emails(data)) == []


def test_admin_token_is_gone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Admin API tokens gave way to admin users who sign in (``POST /api/auth/login``)."""
    with pytest.raises(SystemExit) as exited:
        run_cli(monkeypatch, "admin", "token", EMAIL, "--data-dir", str(tmp_path / "d"))
    assert exited.value.code == 2


def test_exit_codes_of_the_process(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert (
        roost(tmp_path, "admin", "create", EMAIL, "--data-dir", data, stdin="short\n").returncode
        == 2
    )
    created = roost(tmp_path, "admin", "create", EMAIL, "--data-dir", data, stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    again = roost(tmp_path, "admin", "create", EMAIL, "--data-dir", data, stdin=PASSWORD + "\n")
    assert again.returncode == 1
    assert roost(tmp_path, "admin", "token", EMAIL, "--data-dir", data).returncode == 2  # gone
    assert roost(tmp_path, "no-such-command").returncode == 2  # argparse


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_without_an_admin_explains_how_and_never_prints_the_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = _free_port()
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "roost", "serve", "--port", str(port), "--data-dir", str(data)],
            stdout=out,
            stderr=err,
            env=subprocess_env(tmp_path, ROOST_LOG_LEVEL="debug"),
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, err_path.read_text()
            try:
                if httpx.get(f"{url}/api/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "roost serve did not become ready"
            time.sleep(0.1)
        # requests that log: a 404, a 401, a bad body, a listing with a signed cursor
        httpx.get(f"{url}/nowhere")
        httpx.get(f"{url}/api/collections", headers={"Authorization": "Bearer nope"})
        httpx.post(f"{url}/api/collections", content=b"{", headers={"Content-Type": "x"})
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    secret = (data / SECRET_FILE).read_text().strip()
    assert len(secret) >= 32
    printed = out_path.read_text() + err_path.read_text()
    assert secret not in printed
    stderr = err_path.read_text()
    assert "No admin yet" in stderr
    assert f"roost admin create you@example.com --data-dir {data}" in stderr
    assert "roost admin token" not in stderr


def test_the_admin_hint_only_while_there_is_no_admin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", env="dev")
    asyncio.run(serve._admin_hint(settings))
    assert "No admin yet" in capsys.readouterr().err
    data = str(tmp_path / "data")
    assert (
        run_cli(monkeypatch, "admin", "create", EMAIL, "--data-dir", data, stdin=PASSWORD)[0] == 0
    )
    capsys.readouterr()
    asyncio.run(serve._admin_hint(settings))
    assert capsys.readouterr() == ("", "")


def test_serve_refuses_a_short_secret_without_printing_it(tmp_path: Path) -> None:
    secret = "short-secret-value-1234"
    done = roost(tmp_path, "serve", "--data-dir", str(tmp_path / "d"), ROOST_SECRET_KEY=secret)
    assert done.returncode == 2
    assert "secret_key" in done.stderr
    assert "at least 32 characters" in done.stderr
    assert secret not in done.stdout + done.stderr


def test_invalid_settings_are_listed_without_their_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROOST_SECRET_KEY", "another-short-secret")
    monkeypatch.setenv("ROOST_PORT", "99999")
    code, out, err = run_cli(
        monkeypatch, "admin", "create", EMAIL, "--data-dir", str(tmp_path), stdin=PASSWORD
    )
    assert code == 2
    assert "secret_key: secret_key must be at least 32 characters" in err
    assert "port:" in err
    assert "another-short-secret" not in out + err


def test_a_broken_config_file_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "roost.toml"
    config.write_text("port = \n")
    monkeypatch.setenv("ROOST_CONFIG", str(config))
    code, _, err = run_cli(
        monkeypatch, "admin", "create", EMAIL, "--data-dir", str(tmp_path), stdin=PASSWORD
    )
    assert code == 2
    assert "not valid TOML" in err


def test_a_list_setting_that_is_not_json_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROOST_DATABASE_REPLICA_URLS", "postgresql://user:hunter2@replica/db")
    code, out, err = run_cli(
        monkeypatch, "admin", "create", EMAIL, "--data-dir", str(tmp_path), stdin=PASSWORD
    )
    assert code == 2
    assert "database_replica_urls" in err and "JSON" in err
    assert "hunter2" not in out + err
