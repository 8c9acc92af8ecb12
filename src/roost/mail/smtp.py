"""SMTP delivery through aiosmtplib, one connection per mail.

``smtp_url`` forms (user and password percent-encoded, e.g. ``@`` as ``%40``):

    smtp://[user[:password]@]host[:port][?starttls=auto|require|off]   port 587 by default
    smtps://[user[:password]@]host[:port]                              implicit TLS, port 465

``starttls``:

- ``auto`` (default): upgrade with STARTTLS when the server offers it. Credentials never
  travel in clear text: when the server offers no STARTTLS and the URL has credentials,
  the send fails with ``MailError`` rather than expose the password.
- ``require``: fail unless the connection is upgraded.
- ``off``: never upgrade, credentials included; only for a relay on localhost or a
  private network.

Server certificates are verified against the system trust store. Mail is rare (sign-up,
password reset), so a connection per mail is simpler than keeping one alive and costs
nothing that matters. The password is never logged, stored in an error or shown by
``repr``.
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from roost.mail.base import Mail, Mailer, MailError
from roost.settings import Settings

COMMAND_TIMEOUT_SECONDS = 15.0
"""Connecting, and waiting for each reply of the server."""
SEND_TIMEOUT_SECONDS = 60.0
"""The whole conversation for one mail: connect, TLS, login, send, quit."""
DEFAULT_PORTS = {"smtp": 587, "smtps": 465}
StartTLS = Literal["auto", "require", "off"]
STARTTLS_MODES: dict[str, bool | None] = {"auto": None, "require": True, "off": False}


class SMTPMailer(Mailer):
    def __init__(self, settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> None:
        """``tls_context`` replaces the default (system trust store), e.g. a test CA."""
        parts = urlsplit(settings.smtp_url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError("smtp_url must look like smtp://user:password@host:587")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError("smtp_url has an invalid port") from None
        self._host = parts.hostname
        self._port = port
        self._implicit_tls = parts.scheme == "smtps"
        self._starttls = _starttls_mode(parts.query, implicit_tls=self._implicit_tls)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._tls_context = tls_context
        self._sender = settings.mail_from
        address = parseaddr(settings.mail_from)[1]
        if "@" not in address:
            raise ValueError("mail_from must hold an email address")
        self._domain = address.rpartition("@")[2]

    def __repr__(self) -> str:
        user = f"{self._username}@" if self._username else ""
        return f"SMTPMailer({user}{self._host}:{self._port}, starttls={self._starttls})"

    async def send(self, message: Mail) -> None:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=COMMAND_TIMEOUT_SECONDS,
            use_tls=self._implicit_tls,
            start_tls=None if self._implicit_tls else STARTTLS_MODES[self._starttls],
            tls_context=self._tls_context,
            local_hostname=self._domain,  # the default, socket.getfqdn(), blocks the loop
        )
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                await client.connect()
                if self._username is not None:
                    if client.get_transport_info("sslcontext") is None and self._starttls != "off":
                        raise MailError(
                            "the SMTP server offers no STARTTLS: refusing to send credentials"
                            " in clear text (add ?starttls=off to the URL to allow it)"
                        )
                    await client.login(self._username, self._password or "")
                await client.send_message(self._compose(message))
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    pass  # the mail was accepted; a rude goodbye changes nothing
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(refused.code >= 500 for refused in exc.recipients)
            raise MailError(self._describe(exc), permanent=permanent) from None
        except (aiosmtplib.SMTPDataError, aiosmtplib.SMTPRecipientRefused) as exc:
            raise MailError(self._describe(exc), permanent=exc.code >= 500) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailError(self._describe(exc)) from None
        finally:
            client.close()

    async def aclose(self) -> None:
        return None

    def _compose(self, message: Mail) -> EmailMessage:
        composed = EmailMessage()
        composed["From"] = self._sender
        composed["To"] = message.recipient
        composed["Subject"] = message.subject
        composed["Date"] = formatdate(usegmt=True)
        composed["Message-ID"] = make_msgid(domain=self._domain)
        composed.set_content(message.body)
        return composed

    def _describe(self, exc: BaseException) -> str:
        """What went wrong, for logs and ``last_error``: never the password."""
        if isinstance(exc, TimeoutError) and not str(exc):
            text = f"no answer from {self._host}:{self._port} in {SEND_TIMEOUT_SECONDS:g} s"
        else:
            text = f"{type(exc).__name__}: {exc}"
        if self._password:
            text = text.replace(self._password, "***")
        return text


def _starttls_mode(query: str, *, implicit_tls: bool) -> StartTLS:
    options = parse_qs(query, keep_blank_values=True)
    unknown = options.keys() - {"starttls"}
    if unknown:
        raise ValueError(f"smtp_url has unknown options: {', '.join(sorted(unknown))}")
    values = options.get("starttls", ["auto"])
    if len(values) != 1 or values[0] not in STARTTLS_MODES:
        raise ValueError("smtp_url option starttls must be auto, require or off")
    if implicit_tls and "starttls" in options:
        raise ValueError("smtps:// is already encrypted: drop the starttls option")
    mode: StartTLS = values[0]  # type: ignore[assignment]
    return mode
