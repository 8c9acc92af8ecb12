"""Sign in with Apple / Google: verify an OpenID Connect ID token against its provider.

``IdentityVerifier.verify(provider, id_token, nonce)`` checks, in order: the token's size
and header (``alg`` from the fixed allow-list ``RS256``/``ES256``, never ``none`` or
``HS*``; a ``kid``), the provider's signing key for that ``kid`` (whose type must match the
algorithm), the signature, ``iss`` (the provider's issuer; Google's bare
``accounts.google.com`` too), ``aud`` (one of the app's client ids), ``exp`` (not past),
``iat`` (present, not in the future), ``sub``, and the nonce:

- the caller passes a nonce: the token's ``nonce`` must equal it or its SHA-256 hex digest
  (Apple puts the hash of the raw nonce the app sent into the token);
- the caller passes none (or ``""``): the token must carry none either. A token that
  carries a nonce was bound to a sign-in attempt, so it only counts with that nonce.

Every failed check raises ``Unauthorized`` with a short reason and never the token; an
unconfigured provider raises ``NotFound``; a key set that cannot be fetched raises
``Unavailable``.

Keys: each provider's JWKS is fetched over HTTP(S) with a timeout and a size limit, kept
for ``JWKS_TTL_SECONDS``, and fetched again early when a token names an unknown ``kid``
(key rotation). At most one fetch per provider starts per ``JWKS_MIN_REFRESH_SECONDS``, so
a flood of tokens with made-up ``kid`` values cannot hammer the provider, and concurrent
callers share one fetch. When a refresh of an expired key set fails, the old keys stay in
use for up to ``JWKS_MAX_STALE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import structlog

from roost.errors import NotFound, Unauthorized, Unavailable
from roost.settings import OIDCProvider

JWKS_TIMEOUT_SECONDS = 5.0
"""Longest a whole JWKS fetch (connect, send, receive) may take."""
JWKS_TTL_SECONDS = 3600.0
"""How long a fetched key set is used before it is fetched again."""
JWKS_MIN_REFRESH_SECONDS = 30.0
"""At most one JWKS fetch per provider starts in this interval (success or failure)."""
JWKS_MAX_STALE_SECONDS = 24 * 3600.0
"""How long an expired key set still serves while its provider cannot be reached."""
MAX_JWKS_BYTES = 256 * 1024
MAX_JWKS_KEYS = 64
MAX_ID_TOKEN_LENGTH = 16 * 1024
CLOCK_SKEW_SECONDS = 60
"""Leeway for ``exp`` and ``iat`` between our clock and the provider's."""
MIN_RSA_KEY_BITS = 2048

ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
}
"""The only signature algorithms accepted, each with the key type (and curve) it needs."""

ISSUER_ALIASES: Mapping[str, tuple[str, ...]] = {
    "https://accounts.google.com": ("accounts.google.com",),
}
"""Other ``iss`` values a provider really uses for the same issuer."""

REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]

log = structlog.get_logger("roost.auth")


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who the provider says signed in; ``subject`` is stable per provider and app."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None = None


@dataclass(frozen=True)
class _Key:
    algorithm: str
    jwk: jwt.PyJWK


@dataclass(frozen=True)
class _KeySet:
    keys: Mapping[str, _Key]
    fetched_at: float


@dataclass
class _ProviderKeys:
    """The cached key set of one provider and its fetch bookkeeping."""

    current: _KeySet | None = None
    last_attempt: float | None = None
    inflight: asyncio.Task[_KeySet] | None = field(default=None, repr=False)


class IdentityVerifier:
    """Verifies ID tokens of the configured providers; one per app, closed with ``aclose``."""

    def __init__(
        self,
        providers: Mapping[str, OIDCProvider],
        client: httpx.AsyncClient | None = None,
        *,
        timeout: float = JWKS_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client`` is used as given and left open; without one, the verifier owns its own.

        ``clock`` (monotonic seconds) times the key cache; token times use the wall clock.
        """
        self._providers = dict(providers)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"Accept": "application/json"}
        )
        self._timeout = timeout
        self._clock = clock
        self._keys = {name: _ProviderKeys() for name in self._providers}

    async def aclose(self) -> None:
        for state in self._keys.values():
            if state.inflight is not None:
                state.inflight.cancel()
                await asyncio.wait([state.inflight])
        if self._owns_client:
            await self._client.aclose()

    async def verify(self, provider: str, id_token: str, nonce: str | None) -> VerifiedIdentity:
        """The identity in ``id_token`` issued by ``provider``, or ``Unauthorized``."""
        config = self._providers.get(provider)
        if config is None:
            raise NotFound("unknown identity provider")
        if not id_token or len(id_token) > MAX_ID_TOKEN_LENGTH:
            raise Unauthorized("invalid ID token: malformed")
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise Unauthorized("invalid ID token: malformed") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise Unauthorized("invalid ID token: signature algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("invalid ID token: no key id")

        key = await self._key(provider, config, kid)
        if key.algorithm != algorithm:
            raise Unauthorized("invalid ID token: algorithm does not match the signing key")
        claims = _decode(id_token, key, config)
        _check_nonce(claims.get("nonce"), nonce or None)

        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("invalid ID token: bad subject")
        email = claims.get("email")
        name = claims.get("name")
        return VerifiedIdentity(
            provider=provider,
            subject=subject,
            email=email.lower() if isinstance(email, str) and email else None,
            email_verified=_truthy(claims.get("email_verified")),
            name=name if isinstance(name, str) and name else None,
        )

    async def _key(self, name: str, provider: OIDCProvider, kid: str) -> _Key:
        """The provider's key ``kid``, fetching the key set when stale or ``kid`` is new."""
        state = self._keys[name]
        refreshed = False
        keys = state.current
        if keys is None or self._age(keys) >= JWKS_TTL_SECONDS:
            if self._may_fetch(state):
                try:
                    keys = await self._refresh(state, provider)
                    refreshed = True
                except Unavailable:
                    if keys is None or self._age(keys) >= JWKS_MAX_STALE_SECONDS:
                        raise
                    log.warning("oidc_jwks_stale", provider=name)
            elif keys is None or self._age(keys) >= JWKS_MAX_STALE_SECONDS:
                raise Unavailable("identity provider keys are unavailable, retry shortly")
        found = keys.keys.get(kid)
        if found is None and not refreshed and self._may_fetch(state):
            keys = await self._refresh(state, provider)
            found = keys.keys.get(kid)
        if found is None:
            raise Unauthorized("invalid ID token: unknown signing key")
        return found

    def _age(self, keys: _KeySet) -> float:
        return self._clock() - keys.fetched_at

    def _may_fetch(self, state: _ProviderKeys) -> bool:
        if state.inflight is not None:
            return True  # joining a running fetch costs the provider nothing
        last = state.last_attempt
        return last is None or self._clock() - last >= JWKS_MIN_REFRESH_SECONDS

    async def _refresh(self, state: _ProviderKeys, provider: OIDCProvider) -> _KeySet:
        """Fetch the key set once for every concurrent caller; a cancelled caller leaves
        the fetch running for the others."""
        task = state.inflight
        if task is None:
            state.last_attempt = self._clock()
            task = asyncio.create_task(self._fetch(provider))
            state.inflight = task

            def done(finished: asyncio.Task[_KeySet]) -> None:
                state.inflight = None
                if finished.cancelled() or finished.exception() is not None:
                    return
                state.current = finished.result()

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _fetch(self, provider: OIDCProvider) -> _KeySet:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._download(provider.jwks_url)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("oidc_jwks_fetch_failed", url=provider.jwks_url, error=type(exc).__name__)
            raise Unavailable("identity provider keys could not be fetched") from None
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        raw_keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw_keys, list):
            log.warning("oidc_jwks_invalid", url=provider.jwks_url)
            raise Unavailable("identity provider returned an invalid key set")
        keys: dict[str, _Key] = {}
        for raw in raw_keys[:MAX_JWKS_KEYS]:
            parsed = _parse_jwk(raw)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        return _KeySet(keys=keys, fetched_at=self._clock())

    async def _download(self, url: str) -> bytes:
        async with self._client.stream("GET", url, timeout=self._timeout) as response:
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    "unexpected status", request=response.request, response=response
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise httpx.DecodingError("key set too large", request=response.request)
            return bytes(body)


def _parse_jwk(raw: object) -> tuple[str, _Key] | None:
    """``(kid, key)`` for a usable signing key of an allowed type, else None (skipped)."""
    if not isinstance(raw, dict):
        return None
    kid, kty, alg, use = raw.get("kid"), raw.get("kty"), raw.get("alg"), raw.get("use")
    if not isinstance(kid, str) or not kid or use not in (None, "sig"):
        return None
    algorithm = next(
        (
            name
            for name, (key_type, curve) in ALGORITHMS.items()
            if kty == key_type and (curve is None or raw.get("crv") == curve)
        ),
        None,
    )
    if algorithm is None or alg not in (None, algorithm):
        return None
    try:
        jwk = jwt.PyJWK(raw, algorithm=algorithm)
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    if kty == "RSA" and getattr(jwk.key, "key_size", 0) < MIN_RSA_KEY_BITS:
        return None
    return kid, _Key(algorithm=algorithm, jwk=jwk)


def _decode(id_token: str, key: _Key, provider: OIDCProvider) -> dict[str, Any]:
    issuers = (provider.issuer, *ISSUER_ALIASES.get(provider.issuer, ()))
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key=key.jwk.key,
            algorithms=[key.algorithm],
            audience=list(provider.client_ids),
            issuer=issuers,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
        )
    except jwt.InvalidSignatureError:
        raise Unauthorized("invalid ID token: bad signature") from None
    except jwt.ExpiredSignatureError:
        raise Unauthorized("invalid ID token: expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("invalid ID token: issued in the future") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("invalid ID token: audience is not this app") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("invalid ID token: wrong issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        claim = exc.claim if exc.claim in REQUIRED_CLAIMS else "a required"
        raise Unauthorized(f"invalid ID token: missing {claim} claim") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid ID token: malformed") from None
    return claims


def _check_nonce(claimed: object, expected: str | None) -> None:
    if expected is None:
        if claimed is not None:
            raise Unauthorized("invalid ID token: nonce required")
        return
    if not isinstance(claimed, str):
        raise Unauthorized("invalid ID token: nonce missing")
    hashed = hashlib.sha256(expected.encode()).hexdigest()
    if not (
        hmac.compare_digest(claimed.encode(), expected.encode())
        or hmac.compare_digest(claimed.encode(), hashed.encode())
    ):
        raise Unauthorized("invalid ID token: nonce mismatch")


def _truthy(value: object) -> bool:
    """``email_verified`` as sent: a JSON boolean (Google) or ``"true"``/``"false"`` (Apple)."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"
