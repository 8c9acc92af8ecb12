"""SMTPMailer: the URL, TLS per the URL, credentials, timeouts, and how failures are told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import roost.mail.smtp
from conftest import make_settings
from roost.mail.base import Mail, MailError
from roost.mail.smtp import SMTPMailer
from smtp_server import HOST, SMTPTestServer

MAIL = Mail("ann@example.com", "Hello", "Hi Ann\n")
PASSWORD = "hunter2-Secret"


def mailer(tmp_path: Path, url: str, server: SMTPTestServer | None = None) -> SMTPMailer:
    context = server.client_tls_context() if server is not None and server.tls != "none" else None
    return SMTPMailer(make_settings(tmp_path, smtp_url=url), tls_context=context)


@pytest.mark.parametrize(
    "url",
    [
        "smtp://",
        "http://mail.example",
        "smtp://mail.example:notaport",
        "smtp://mail.example?starttls=maybe",
        "smtp://mail.example?starttls=off&starttls=require",
        "smtp://mail.example?tls=1",
        "smtps://mail.example?starttls=off",
    ],
)
def test_a_bad_url_is_refused_at_start(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError):
        mailer(tmp_path, url)


def test_defaults_and_repr_without_the_password(tmp_path: Path) -> None:
    plain = mailer(tmp_path, f"smtp://me%40x.org:{PASSWORD}@mail.example")
    assert repr(plain) == "SMTPMailer(me@x.org@mail.example:587, starttls=auto)"
    implicit = mailer(tmp_path, "smtps://mail.example")
    assert repr(implicit) == "SMTPMailer(mail.example:465, starttls=auto)"


@pytest.fixture
async def plain_auth() -> AsyncIterator[SMTPTestServer]:
    async with SMTPTestServer(username="mailer", password=PASSWORD) as server:
        yield server


async def test_credentials_never_go_in_clear_text_unless_allowed(
    tmp_path: Path, plain_auth: SMTPTestServer
) -> None:
    with pytest.raises(MailError, match="clear text") as caught:
        await mailer(tmp_path, plain_auth.url()).send(MAIL)
    assert not caught.value.permanent
    assert plain_auth.received == []

    await mailer(tmp_path, plain_auth.url(starttls="off")).send(MAIL)
    [received] = await plain_auth.wait_for(1)
    assert received.authenticated and not received.tls
    assert received.mail_from == "no-reply@localhost"
    assert received.rcpt_tos == ["ann@example.com"]
    assert received.message["From"] == "Roost <no-reply@localhost>"
    assert received.message["Message-ID"].endswith("@localhost>")


async def test_a_wrong_password_is_a_temporary_failure_that_never_shows_it(
    tmp_path: Path, plain_auth: SMTPTestServer
) -> None:
    wrong = mailer(tmp_path, plain_auth.url(starttls="off"))
    plain_auth.password = "another-one"  # the server now expects another password
    with pytest.raises(MailError) as caught:
        await wrong.send(MAIL)
    assert not caught.value.permanent
    assert PASSWORD not in str(caught.value) and "another-one" not in str(caught.value)


async def test_starttls_require_fails_on_a_server_without_it(tmp_path: Path) -> None:
    async with SMTPTestServer() as server:
        with pytest.raises(MailError, match="STARTTLS"):
            await mailer(tmp_path, server.url(starttls="require")).send(MAIL)
        assert server.received == []


@pytest.mark.parametrize("mode", ["auto", "require"])
async def test_starttls_upgrades_when_offered(tmp_path: Path, mode: str) -> None:
    async with SMTPTestServer(tls="starttls") as server:
        await mailer(tmp_path, server.url(starttls=mode), server).send(MAIL)
        [received] = await server.wait_for(1)
        assert received.tls


async def test_starttls_off_stays_plain_even_when_offered(tmp_path: Path) -> None:
    async with SMTPTestServer(tls="starttls") as server:
        await mailer(tmp_path, server.url(starttls="off"), server).send(MAIL)
        [received] = await server.wait_for(1)
        assert not received.tls


async def test_an_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    async with SMTPTestServer(tls="implicit") as server:
        with pytest.raises(MailError) as caught:
            await mailer(tmp_path, server.url("smtps")).send(MAIL)  # system trust store
        assert not caught.value.permanent
        assert server.received == []


async def test_a_server_that_is_down_is_a_temporary_failure(tmp_path: Path) -> None:
    server = SMTPTestServer()  # never started: connection refused
    with pytest.raises(MailError) as caught:
        await mailer(tmp_path, server.url()).send(MAIL)
    assert not caught.value.permanent


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("451 4.3.0 Try again later", False), ("554 5.7.1 Message rejected", True)],
)
async def test_a_refused_message_says_whether_to_retry(
    tmp_path: Path, reply: str, permanent: bool
) -> None:
    async with SMTPTestServer() as server:
        server.refuse_with = reply
        with pytest.raises(MailError) as caught:
            await mailer(tmp_path, server.url()).send(MAIL)
        assert caught.value.permanent is permanent
        assert reply.split()[0] in str(caught.value)


async def test_a_silent_server_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roost.mail.smtp, "COMMAND_TIMEOUT_SECONDS", 0.2)
    held: list[asyncio.StreamWriter] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(say_nothing, HOST, 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MailError) as caught:
            await mailer(tmp_path, f"smtp://{HOST}:{port}").send(MAIL)
        assert not caught.value.permanent
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
