"""Access tokens (short-lived JWTs) and opaque secrets (refresh, reset, verify tokens).

Access tokens are HS256 JWTs signed with a key derived from the server's secret key. The
header's ``kid`` names that key, so after a rotation (``ROOST_SECRET_KEY`` changed, the
old one kept in ``ROOST_PREVIOUS_SECRET_KEYS``) tokens signed with the old key still verify
until they expire. Verification fixes the algorithm, issuer and audience, and requires
``exp``, ``iat`` and ``sub``. Opaque tokens are 256-bit random values; only their SHA-256
is stored, so a lookup by hash compares no secret byte by byte.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from roost.auth.principal import Principal, Role
from roost.errors import Unauthorized

ALGORITHM = "HS256"
ISSUER = "roost"
AUDIENCE = "roost-api"
LEEWAY_SECONDS = 5
MAX_TOKEN_LENGTH = 4096
VERIFIED_CACHE_SIZE = 10_000
"""Tokens kept verified per process. A client sends one token on every request for its
lifetime; checking its signature and claims again each time took half of a cached read."""


def new_secret() -> str:
    """A new opaque token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What is stored in place of an opaque token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _signing_key(secret: str) -> tuple[str, bytes]:
    key = hashlib.sha256(b"roost access token\0" + secret.encode()).digest()
    return hashlib.sha256(key).hexdigest()[:16], key


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    session_id: str
    role: str
    verified: bool
    anonymous: bool
    expires: int

    def principal(self) -> Principal:
        role: Role = "admin" if self.role == "admin" else "user"
        return Principal(
            id=self.user_id,
            role=role,
            verified=self.verified,
            session_id=self.session_id,
            anonymous=self.anonymous,
        )


class AccessTokens:
    def __init__(self, secret: str, previous: list[str], ttl_seconds: int) -> None:
        self.ttl_seconds = ttl_seconds
        self._kid, self._key = _signing_key(secret)
        self._keys = dict(_signing_key(old) for old in previous)
        self._keys[self._kid] = self._key
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()

    def issue(
        self, user_id: str, session_id: str, role: str, verified: bool, anonymous: bool
    ) -> tuple[str, int]:
        """A signed token and its lifetime in seconds."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "sid": session_id,
            "role": role,
            "verified": verified,
            "anonymous": anonymous,
            "iat": now,
            "exp": now + self.ttl_seconds,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})
        return token, self.ttl_seconds

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; Unauthorized for anything else, saying little.

        A token that verified is remembered (least recently used first out) until it
        expires: only the expiry is checked again. Only verified tokens enter, so a forged
        one never matches; the keys cannot change while the process runs.
        """
        known = self._verified.get(token)
        if known is not None:
            if time.time() > known.expires + LEEWAY_SECONDS:
                del self._verified[token]
                raise Unauthorized("the access token has expired; refresh it")
            self._verified.move_to_end(token)
            return known
        claims = self._check(token)
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def _check(self, token: str) -> AccessClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("the access token is invalid")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthorized("the access token is invalid")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired; refresh it") from None
        except jwt.PyJWTError:
            raise Unauthorized("the access token is invalid") from None
        try:
            return AccessClaims(
                user_id=str(claims["sub"]),
                session_id=str(claims["sid"]),
                role=str(claims.get("role", "user")),
                verified=bool(claims.get("verified", False)),
                anonymous=bool(claims.get("anonymous", False)),
                expires=int(claims["exp"]),
            )
        except (TypeError, ValueError):
            raise Unauthorized("the access token is invalid") from None
