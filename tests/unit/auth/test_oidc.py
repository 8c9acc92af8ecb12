"""ID token verification against a real JWKS served over loopback HTTP by the test."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from jwks_server import (
    CLIENT_ID,
    ISSUER,
    MISSING,
    JWKSServer,
    claims,
    ec_jwk,
    es256,
    rs256,
    rsa_jwk,
    rsa_key,
)
from roost.auth.oidc import IdentityVerifier, VerifiedIdentity
from roost.errors import NotFound, Unauthorized, Unavailable
from roost.settings import OIDCProvider


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """A token PyJWT refuses to make: HS256 keyed with whatever bytes we like."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[JWKSServer]:
    found = JWKSServer()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def providers(url: str) -> dict[str, OIDCProvider]:
    return {
        "test": OIDCProvider(issuer=ISSUER, jwks_url=url, client_ids=[CLIENT_ID, "web-id"]),
        "google": OIDCProvider(
            issuer="https://accounts.google.com", jwks_url=url, client_ids=[CLIENT_ID]
        ),
    }


@pytest.fixture
async def verifier(server: JWKSServer, clock: Clock) -> AsyncIterator[IdentityVerifier]:
    found = IdentityVerifier(providers(server.url), timeout=1.0, clock=clock)
    yield found
    await found.aclose()


async def refused(
    verifier: IdentityVerifier, token: str, reason: str, nonce: str | None = None
) -> None:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify("test", token, nonce)
    assert reason in caught.value.detail
    assert token not in str(caught.value) and token.split(".")[1] not in caught.value.detail


# --- good tokens -------------------------------------------------------------------------


async def test_rs256_token_gives_the_identity(verifier: IdentityVerifier) -> None:
    identity = await verifier.verify("test", rs256(name="Alice Liddell"), None)
    assert identity == VerifiedIdentity(
        provider="test",
        subject="000123.abc",
        email="alice@example.com",
        email_verified=True,
        name="Alice Liddell",
    )


async def test_es256_token_gives_the_identity(verifier: IdentityVerifier) -> None:
    identity = await verifier.verify("test", es256(email=MISSING, email_verified=MISSING), None)
    assert (identity.subject, identity.email, identity.email_verified) == (
        "000123.abc",
        None,
        False,
    )
    assert identity.name is None


@pytest.mark.parametrize(
    ("sent", "parsed"),
    [("false", False), ("true", True), ("TRUE", True), (False, False), (True, True), (1, False)],
)
async def test_email_verified_accepts_apple_strings(
    verifier: IdentityVerifier, sent: object, parsed: bool
) -> None:
    identity = await verifier.verify("test", rs256(email_verified=sent), None)
    assert identity.email_verified is parsed


async def test_any_configured_client_id_is_an_accepted_audience(
    verifier: IdentityVerifier,
) -> None:
    await verifier.verify("test", rs256(aud="web-id"), None)
    await verifier.verify("test", rs256(aud=["other", CLIENT_ID]), None)


@pytest.mark.parametrize("issuer", ["https://accounts.google.com", "accounts.google.com"])
async def test_google_issuer_with_and_without_scheme(
    verifier: IdentityVerifier, issuer: str
) -> None:
    identity = await verifier.verify("google", rs256(iss=issuer), None)
    assert identity.provider == "google"


async def test_bare_issuer_is_refused_for_other_providers(verifier: IdentityVerifier) -> None:
    await refused(verifier, rs256(iss="issuer.test"), "wrong issuer")


async def test_expiry_within_clock_skew_is_accepted(verifier: IdentityVerifier) -> None:
    await verifier.verify("test", rs256(exp=int(time.time()) - 30), None)


# --- claims ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "com.attacker.app"}, "audience"),
        ({"aud": ["com.attacker.app", "x"]}, "audience"),
        ({"iss": "https://evil.test"}, "wrong issuer"),
        ({"iss": "https://accounts.google.com"}, "wrong issuer"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"iat": int(time.time()) + 3600}, "issued in the future"),
        ({"iat": MISSING}, "missing iat claim"),
        ({"exp": MISSING}, "missing exp claim"),
        ({"sub": MISSING}, "missing sub claim"),
        ({"aud": MISSING}, "missing aud claim"),
        ({"sub": ""}, "bad subject"),
    ],
)
async def test_bad_claims_are_refused(
    verifier: IdentityVerifier, overrides: dict[str, Any], reason: str
) -> None:
    await refused(verifier, rs256(**overrides), reason)


async def test_wrong_issuer_for_the_named_provider(verifier: IdentityVerifier) -> None:
    with pytest.raises(Unauthorized, match="wrong issuer"):
        await verifier.verify("google", rs256(), None)


# --- nonce -------------------------------------------------------------------------------


async def test_raw_nonce_matches(verifier: IdentityVerifier) -> None:
    await verifier.verify("test", rs256(nonce="n-0S6_WzA2Mj"), "n-0S6_WzA2Mj")


async def test_hashed_nonce_matches_the_raw_one(verifier: IdentityVerifier) -> None:
    hashed = hashlib.sha256(b"n-0S6_WzA2Mj").hexdigest()
    await verifier.verify("test", rs256(nonce=hashed), "n-0S6_WzA2Mj")


async def test_wrong_nonce_is_refused(verifier: IdentityVerifier) -> None:
    await refused(verifier, rs256(nonce="expected"), "nonce mismatch", nonce="other")
    hashed_other = hashlib.sha256(b"other").hexdigest()
    await refused(verifier, rs256(nonce=hashed_other), "nonce mismatch", nonce="expected")


async def test_token_with_nonce_needs_the_caller_nonce(verifier: IdentityVerifier) -> None:
    await refused(verifier, rs256(nonce="bound"), "nonce required")
    await refused(verifier, rs256(nonce="bound"), "nonce required", nonce="")


async def test_caller_nonce_needs_a_token_nonce(verifier: IdentityVerifier) -> None:
    await refused(verifier, rs256(), "nonce missing", nonce="expected")


# --- signatures and algorithms -------------------------------------------------------------


async def test_alg_none_is_refused(verifier: IdentityVerifier) -> None:
    token = jwt.encode(claims(), "", "none", headers={"kid": "rsa-1"})
    await refused(verifier, token, "algorithm not allowed")
    await refused(verifier, token + "c2ln", "algorithm not allowed")


async def test_hs256_keyed_with_the_public_key_is_refused(verifier: IdentityVerifier) -> None:
    pem = (
        rsa_key("rsa-1")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for alg in ("HS256", "HS512"):
        token = hand_signed({"alg": alg, "typ": "JWT", "kid": "rsa-1"}, claims(), pem)
        await refused(verifier, token, "algorithm not allowed")


async def test_algorithm_must_match_the_key_type(verifier: IdentityVerifier) -> None:
    # An ES256 signature presented under the RSA key's kid, and vice versa.
    await refused(verifier, es256(kid="rsa-1", key="ec-1"), "does not match the signing key")
    await refused(verifier, rs256(kid="ec-1", key="rsa-1"), "does not match the signing key")


async def test_signature_by_another_key_is_refused(verifier: IdentityVerifier) -> None:
    await refused(verifier, rs256(kid="rsa-1", key="intruder"), "bad signature")


async def test_tampered_payload_is_refused(verifier: IdentityVerifier) -> None:
    header, _, signature = rs256().split(".")
    forged = b64(json.dumps(claims(sub="someone-else")).encode())
    await refused(verifier, f"{header}.{forged}.{signature}", "bad signature")


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "a.b", "x" * 20_000, hand_signed({"alg": "RS256"}, {}, b"k")]
)
async def test_malformed_tokens_are_refused(verifier: IdentityVerifier, token: str) -> None:
    with pytest.raises(Unauthorized):
        await verifier.verify("test", token, None)


async def test_token_without_kid_is_refused(verifier: IdentityVerifier) -> None:
    token = jwt.encode(claims(), rsa_key("rsa-1"), "RS256")
    await refused(verifier, token, "no key id")


async def test_unusable_keys_in_the_set_are_skipped(
    verifier: IdentityVerifier, server: JWKSServer
) -> None:
    server.keys = [
        rsa_jwk("weak", bits=1024),
        rsa_jwk("enc", use="enc"),
        {**rsa_jwk("labelled"), "alg": "RS512"},
        {"kty": "oct", "kid": "hmac", "k": b64(b"secret")},
        "not a key",
        ec_jwk("ec-1"),
    ]
    for kid in ("weak", "enc", "labelled"):
        await refused(verifier, rs256(kid=kid), "unknown signing key")
    token = hand_signed({"alg": "HS256", "kid": "hmac"}, claims(), b"secret")
    await refused(verifier, token, "algorithm not allowed")
    await verifier.verify("test", es256(), None)
    assert server.fetches == 1


# --- providers ---------------------------------------------------------------------------


async def test_unknown_provider_is_not_found(
    verifier: IdentityVerifier, server: JWKSServer
) -> None:
    with pytest.raises(NotFound):
        await verifier.verify("facebook", rs256(), None)
    assert server.fetches == 0


async def test_provider_without_client_ids_accepts_no_audience(server: JWKSServer) -> None:
    lonely = {"test": OIDCProvider(issuer=ISSUER, jwks_url=server.url, client_ids=[])}
    verifier = IdentityVerifier(lonely)
    try:
        await refused(verifier, rs256(), "audience")
    finally:
        await verifier.aclose()


# --- the key cache -----------------------------------------------------------------------


async def test_keys_are_fetched_once_and_cached(
    verifier: IdentityVerifier, server: JWKSServer, clock: Clock
) -> None:
    for _ in range(3):
        await verifier.verify("test", rs256(), None)
        await verifier.verify("test", es256(), None)
    clock.now += 3599
    await verifier.verify("test", rs256(), None)
    assert server.fetches == 1
    clock.now += 2
    await verifier.verify("test", rs256(), None)
    assert server.fetches == 2


async def test_unknown_kid_refreshes_once_after_rotation(
    verifier: IdentityVerifier, server: JWKSServer, clock: Clock
) -> None:
    await verifier.verify("test", rs256(), None)
    clock.now += 31
    server.keys = [rsa_jwk("rsa-2")]
    identity = await verifier.verify("test", rs256(kid="rsa-2"), None)
    assert identity.subject == "000123.abc"
    assert server.fetches == 2
    await refused(verifier, rs256(kid="rsa-1"), "unknown signing key")  # rotated out
    assert server.fetches == 2  # the last fetch was under 30 s ago


async def test_unknown_kid_after_refresh_is_unauthorized_and_rate_limited(
    verifier: IdentityVerifier, server: JWKSServer, clock: Clock
) -> None:
    await verifier.verify("test", rs256(), None)
    clock.now += 31
    await refused(verifier, rs256(kid="bogus-1", key="intruder"), "unknown signing key")
    assert server.fetches == 2
    for n in range(20):
        await refused(verifier, rs256(kid=f"bogus-{n}", key="intruder"), "unknown signing key")
    assert server.fetches == 2
    clock.now += 31
    await refused(verifier, rs256(kid="bogus-x", key="intruder"), "unknown signing key")
    assert server.fetches == 3


async def test_first_fetch_serves_unknown_kid_without_a_second_fetch(
    verifier: IdentityVerifier, server: JWKSServer
) -> None:
    await refused(verifier, rs256(kid="bogus", key="intruder"), "unknown signing key")
    assert server.fetches == 1


async def test_concurrent_refreshes_share_one_fetch(
    verifier: IdentityVerifier, server: JWKSServer, clock: Clock
) -> None:
    await verifier.verify("test", rs256(), None)
    clock.now += 31
    server.keys = [rsa_jwk("rsa-2")]
    server.delay = 0.1
    results = await asyncio.gather(
        *(verifier.verify("test", rs256(kid="rsa-2"), None) for _ in range(25))
    )
    assert {identity.subject for identity in results} == {"000123.abc"}
    assert server.fetches == 2


async def test_concurrent_first_fetch_is_shared_and_survives_a_cancelled_caller(
    verifier: IdentityVerifier, server: JWKSServer
) -> None:
    server.delay = 0.1
    first = asyncio.create_task(verifier.verify("test", rs256(), None))
    others = [asyncio.create_task(verifier.verify("test", es256(), None)) for _ in range(5)]
    await asyncio.sleep(0.02)
    first.cancel()
    identities = await asyncio.gather(*others)
    assert len(identities) == 5
    assert server.fetches == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_stale_keys_serve_while_the_provider_is_down(
    verifier: IdentityVerifier, server: JWKSServer, clock: Clock
) -> None:
    await verifier.verify("test", rs256(), None)
    server.status = 500
    clock.now += 3601
    await verifier.verify("test", rs256(), None)
    assert server.fetches == 2
    await verifier.verify("test", rs256(), None)  # no new attempt within 30 s
    assert server.fetches == 2
    clock.now += 24 * 3600
    with pytest.raises(Unavailable):
        await verifier.verify("test", rs256(), None)


# --- fetch failures ----------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/keys"


async def test_jwks_server_down_is_unavailable(clock: Clock) -> None:
    verifier = IdentityVerifier(providers(closed_port_url()), clock=clock)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await verifier.verify("test", rs256(), None)
        assert time.monotonic() - started < 2
        assert caught.value.status == 503
    finally:
        await verifier.aclose()


async def test_hanging_jwks_server_is_unavailable_within_the_timeout(
    server: JWKSServer, clock: Clock
) -> None:
    server.delay = 30
    verifier = IdentityVerifier(providers(server.url), timeout=0.3, clock=clock)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await verifier.verify("test", rs256(), None)
        assert time.monotonic() - started < 2
        # Failures are rate-limited too: the next attempt within 30 s fails at once.
        with pytest.raises(Unavailable):
            await verifier.verify("test", rs256(), None)
        assert server.fetches == 1
    finally:
        await verifier.aclose()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (404, None),
        (200, b"<html>not json</html>"),
        (200, b'{"keys": "nope"}'),
        (200, b"[]"),
        (200, b'{"keys": []' + b" " * 300_000 + b"}"),
    ],
)
async def test_bad_key_set_responses_are_unavailable(
    verifier: IdentityVerifier, server: JWKSServer, status: int, body: bytes | None
) -> None:
    server.status, server.body = status, body
    with pytest.raises(Unavailable):
        await verifier.verify("test", rs256(), None)


async def test_injected_client_is_used_and_left_open(server: JWKSServer) -> None:
    async with httpx.AsyncClient() as client:
        verifier = IdentityVerifier(providers(server.url), client)
        await verifier.verify("test", rs256(), None)
        await verifier.aclose()
        assert not client.is_closed
    assert server.fetches == 1


async def test_aclose_stops_a_fetch_in_flight(server: JWKSServer) -> None:
    server.delay = 30
    verifier = IdentityVerifier(providers(server.url))
    waiting = asyncio.create_task(verifier.verify("test", rs256(), None))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await verifier.aclose()
    assert time.monotonic() - started < 1
    with pytest.raises(asyncio.CancelledError):
        await waiting
