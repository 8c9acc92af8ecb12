"""A real SMTP server for tests: aiosmtpd on a free loopback port, in the test's event loop.

    async with SMTPTestServer(username="mailer", password="s3cret") as server:
        mailer = SMTPMailer(make_settings(tmp_path, smtp_url=server.url()))
        await mailer.send(Mail("ann@example.com", "Hi", "Hello"))
        [message] = await server.wait_for(1)

Served by the running loop rather than aiosmtpd's threaded ``Controller``: no cross-thread
state, and it can be stopped and started again on the same port to simulate an outage
(``stop()`` also drops the connections in progress). ``refuse_with`` makes it answer every
message with that reply instead (``"451 4.3.0 try later"``, ``"550 5.1.1 no such user"``).
``tls="starttls"`` or ``"implicit"`` serves a self-signed certificate for 127.0.0.1;
``client_tls_context()`` trusts it.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import tempfile
import warnings
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Received:
    """One accepted message: the parsed mail and its SMTP envelope."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]
    authenticated: bool
    tls: bool

    @property
    def body(self) -> str:
        """The plain-text body with ``\n`` line ends."""
        part = self.message.get_body(("plain",))
        assert part is not None
        content: str = part.get_content()
        return content.replace("\r\n", "\n")  # as written, not as sent on the wire


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roost test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class _Handler:
    def __init__(self, server: SMTPTestServer) -> None:
        self._server = server

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._server.refuse_with is not None:
            return self._server.refuse_with
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self._server.received.append(
            Received(
                message=message,
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                authenticated=bool(session.authenticated),
                tls=session.ssl is not None or self._server.tls == "implicit",
            )
        )
        self._server.arrived.set()
        return "250 Message accepted for delivery"


class SMTPTestServer:
    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: Literal["none", "starttls", "implicit"] = "none",
    ) -> None:
        self.port = _free_port()
        self.username = username
        self.password = password
        self.tls = tls
        self.refuse_with: str | None = None
        self.received: list[Received] = []
        self.arrived = asyncio.Event()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._live: list[SMTP] = []
        self._cert_pem, self._key_pem = _self_signed() if tls != "none" else (b"", b"")
        self._server_context = self._make_server_context() if tls != "none" else None

    def url(self, scheme: str = "smtp", **query: str) -> str:
        """This server's ``smtp_url``, with its credentials and the given query options."""
        user = ""
        if self.username is not None:
            user = f"{quote(self.username, safe='')}:{quote(self.password or '', safe='')}@"
        options = "&".join(f"{key}={value}" for key, value in query.items())
        return f"{scheme}://{user}{HOST}:{self.port}" + (f"?{options}" if options else "")

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's self-signed certificate."""
        return ssl.create_default_context(cadata=self._cert_pem.decode())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            HOST,
            self.port,
            ssl=self._server_context if self.tls == "implicit" else None,
            reuse_address=True,
        )

    async def stop(self) -> None:
        """Stop listening and drop every connection: the server is down until ``start()``."""
        if self._server is None:
            return
        self._server.close()
        for protocol in self._live:
            if protocol.transport is not None:
                protocol.transport.close()
        self._live.clear()
        await self._server.wait_closed()
        self._server = None
        await asyncio.sleep(0)  # let the dropped connections finish their callbacks

    async def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[Received]:
        """Wait until at least ``count`` messages arrived; return all of them."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return list(self.received)

    async def __aenter__(self) -> SMTPTestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _protocol(self) -> SMTP:
        self.connections += 1
        options: dict[str, Any] = {
            "hostname": "localhost",
            "enable_SMTPUTF8": True,
            "loop": asyncio.get_running_loop(),
            "tls_context": self._server_context if self.tls == "starttls" else None,
        }
        if self.username is not None:
            options |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS socket is one too
                "auth_require_tls": self.tls == "starttls",
            }
        with warnings.catch_warnings():  # AUTH without TLS is deliberate here (loopback)
            warnings.simplefilter("ignore")
            protocol = SMTP(_Handler(self), **options)
        self._live.append(protocol)
        return protocol

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.username is not None and self.password is not None
        ok = isinstance(data, LoginPassword) and data == LoginPassword(
            self.username.encode(), self.password.encode()
        )
        return AuthResult(success=ok, handled=False)  # handled=False: the server replies 535

    def _make_server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert.write_bytes(self._cert_pem)
            key.write_bytes(self._key_pem)
            context.load_cert_chain(cert, key)
        return context
