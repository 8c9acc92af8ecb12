"""An OpenID provider stand-in for tests: signing keys and a JWKS served over loopback HTTP.

    async with JWKSServer() as server:
        provider = OIDCProvider(issuer=ISSUER, jwks_url=server.url, client_ids=[CLIENT_ID])
        token = rs256(sub="user-1", nonce="n")   # signed by the key the server publishes

Keys are generated once per process (by name) and cached. ``JWKSServer`` answers every
request with ``{"keys": server.keys}``; ``status``, ``body`` and ``delay`` make it
misbehave. ``claims(**overrides)`` is a valid claim set; ``MISSING`` drops a claim.
(``tests/unit/auth/test_oidc.py`` has its own copy of these helpers.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test"
CLIENT_ID = "com.example.app"
MISSING = object()


def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    return _rsa_key(name, bits)  # one cache entry however the caller passes ``bits``


@functools.cache
def _rsa_key(name: str, bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(kid: str, bits: int = 2048, **extra: Any) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(rsa_key(kid, bits).public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig", **extra}


def ec_jwk(kid: str) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(ec_key(kid).public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    found: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "000123.abc",
        "iat": now,
        "exp": now + 600,
        "email": "Alice@Example.COM",
        "email_verified": True,
    }
    found.update(overrides)
    return {name: value for name, value in found.items() if value is not MISSING}


def rs256(kid: str = "rsa-1", key: str | None = None, **overrides: Any) -> str:
    """A token signed with the RSA key ``key`` (default: the one named ``kid``)."""
    return jwt.encode(claims(**overrides), rsa_key(key or kid), "RS256", headers={"kid": kid})


def es256(kid: str = "ec-1", key: str | None = None, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), ec_key(key or kid), "ES256", headers={"kid": kid})


class JWKSServer:
    """Minimal HTTP/1.1 server on 127.0.0.1: every request gets ``{"keys": self.keys}``."""

    def __init__(self) -> None:
        self.keys: list[Any] = [rsa_jwk("rsa-1"), ec_jwk("ec-1")]
        self.fetches = 0
        self.status = 200
        self.body: bytes | None = None
        self.delay = 0.0
        self.url = ""
        self._released = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/keys"

    async def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def __aenter__(self) -> JWKSServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.fetches += 1
            if self.delay:
                try:
                    await asyncio.wait_for(self._released.wait(), self.delay)
                except TimeoutError:
                    pass
            body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            self._handlers.discard(task)
