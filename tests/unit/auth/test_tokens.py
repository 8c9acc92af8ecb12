"""Access tokens: a token remembered as verified still expires, and the memory is bounded."""

from __future__ import annotations

import pytest

from roost.auth import tokens
from roost.auth.tokens import LEEWAY_SECONDS, AccessTokens
from roost.errors import Unauthorized

SECRET = "test-secret-key-that-is-long-enough-0123456789"


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    access = AccessTokens(SECRET, [], ttl_seconds=60)
    token, _ = access.issue("u1", "s1", "user", True, False)
    claims = access.verify(token)
    assert access.verify(token) is claims  # remembered

    later = claims.expires + LEEWAY_SECONDS + 1
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    with pytest.raises(Unauthorized, match="expired"):
        access.verify(token)
    assert token not in access._verified  # from now on checked in full (PyJWT's clock)


def test_the_memory_of_verified_tokens_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 3)
    access = AccessTokens(SECRET, [], ttl_seconds=60)
    issued = [access.issue(f"u{n}", f"s{n}", "user", True, False)[0] for n in range(5)]
    for token in issued:
        access.verify(token)
    assert list(access._verified) == issued[2:]


def test_a_token_of_another_server_is_refused_even_after_ours_verified() -> None:
    ours = AccessTokens(SECRET, [], ttl_seconds=60)
    theirs = AccessTokens("another-secret-key-that-is-long-enough-0123", [], ttl_seconds=60)
    token, _ = ours.issue("u1", "s1", "user", True, False)
    ours.verify(token)
    foreign, _ = theirs.issue("u1", "s1", "user", True, False)
    with pytest.raises(Unauthorized, match="invalid"):
        ours.verify(foreign)
