"""The mailer contract: every backend passes this suite unchanged.

Each backend comes with a way to read back what it delivered: the log for the console
mailer, a real in-process SMTP server (plain, STARTTLS with AUTH, implicit TLS) for SMTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog.testing

from conftest import make_settings
from roost.mail.base import Mail, Mailer, open_mailer
from roost.mail.console import NOT_SENT, ConsoleMailer
from roost.mail.smtp import SMTPMailer
from smtp_server import SMTPTestServer

Delivered = tuple[str, str, str]  # recipient, subject, body


@dataclass
class Backend:
    mailer: Mailer
    delivered: Callable[[int], Awaitable[list[Delivered]]]


@pytest.fixture(params=["console", "smtp", "smtp-starttls-auth", "smtps-auth"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "console":
        with structlog.testing.capture_logs() as logs:
            mailer = open_mailer(make_settings(tmp_path))
            assert isinstance(mailer, ConsoleMailer)

            async def logged(count: int) -> list[Delivered]:
                return [
                    (entry["recipient"], entry["subject"], entry["body"])
                    for entry in logs
                    if entry["event"] == NOT_SENT
                ]

            yield Backend(mailer, logged)
            await mailer.aclose()
        return
    tls = {"smtp": "none", "smtp-starttls-auth": "starttls", "smtps-auth": "implicit"}
    auth = {"username": "mailer", "password": "p@ss:w/rd%"} if "auth" in request.param else {}
    async with SMTPTestServer(tls=tls[request.param], **auth) as server:  # type: ignore[arg-type]
        scheme = "smtps" if request.param == "smtps-auth" else "smtp"
        settings = make_settings(tmp_path, smtp_url=server.url(scheme))
        assert isinstance(open_mailer(settings), SMTPMailer)
        context = server.client_tls_context() if server.tls != "none" else None
        smtp = SMTPMailer(settings, tls_context=context)

        async def received(count: int) -> list[Delivered]:
            found = await server.wait_for(count)
            if server.username is not None:
                assert all(item.authenticated and item.tls for item in found)
            return [(item.rcpt_tos[0], str(item.message["Subject"]), item.body) for item in found]

        yield Backend(smtp, received)
        await smtp.aclose()


async def test_a_sent_mail_is_delivered_as_written(backend: Backend) -> None:
    body = "Confirm your address: https://roost.example/verify?token=abc123\n"
    await backend.mailer.send(Mail("ann@example.com", "Confirm your address", body))
    [(recipient, subject, received)] = await backend.delivered(1)
    assert (recipient, subject) == ("ann@example.com", "Confirm your address")
    assert received == body


async def test_non_ascii_subject_and_body_survive(backend: Backend) -> None:
    await backend.mailer.send(Mail("zoë@example.com", "Grüße — ✓", "Ünïcödé 🐦\n"))
    [(recipient, subject, body)] = await backend.delivered(1)
    assert (recipient, subject, body.strip()) == ("zoë@example.com", "Grüße — ✓", "Ünïcödé 🐦")


async def test_several_mails_arrive_in_order(backend: Backend) -> None:
    for number in range(3):
        await backend.mailer.send(Mail(f"u{number}@example.com", f"mail {number}", "x\n"))
    delivered = await backend.delivered(3)
    assert [subject for _, subject, _ in delivered] == ["mail 0", "mail 1", "mail 2"]


@pytest.mark.parametrize(
    ("recipient", "subject"),
    [
        ("ann@example.com\r\nBcc: eve@example.com", "hi"),
        ("ann@example.com", "hi\nBcc: eve@example.com"),
        ("not-an-address", "hi"),
        ("a" * 250 + "@example.com", "hi"),
    ],
)
def test_a_mail_that_could_inject_headers_is_refused(recipient: str, subject: str) -> None:
    with pytest.raises(ValueError):
        Mail(recipient, subject, "body")


def test_an_unknown_scheme_is_refused_without_echoing_the_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        open_mailer(make_settings(tmp_path, smtp_url="smtpx://me:hunter22@mail.example"))
    assert "hunter22" not in str(caught.value)
    with pytest.raises(ValueError) as caught:
        open_mailer(make_settings(tmp_path, smtp_url="me:hunter22@mail.example"))
    assert "hunter22" not in str(caught.value)
