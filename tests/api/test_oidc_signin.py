"""``POST /api/auth/oidc/{provider}``: ID tokens signed by keys the test made, whose JWKS is
served over loopback HTTP, sign users in; bad tokens never do."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from api.scenario import Api, Scenario, ids
from conftest import free_port, make_settings
from jwks_server import CLIENT_ID, ISSUER, MISSING, JWKSServer, es256, rs256
from roost.settings import OIDCProvider, Settings

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def jwks() -> AsyncIterator[JWKSServer]:
    async with JWKSServer() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, database_url: str, jwks: JWKSServer) -> Settings:
    nobody_listens = f"http://127.0.0.1:{free_port()}/keys"
    return make_settings(
        tmp_path,
        database_url=database_url,
        oidc_providers={
            "test": OIDCProvider(issuer=ISSUER, jwks_url=jwks.url, client_ids=[CLIENT_ID]),
            "down": OIDCProvider(issuer=ISSUER, jwks_url=nobody_listens, client_ids=[CLIENT_ID]),
        },
    )


async def sign_in(api: Api, token: str, **extra: Any) -> dict[str, Any]:
    response = await api.request(
        "POST", "/api/auth/oidc/test", auth="anonymous", body={"id_token": token, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def me(api: Api, access_token: str) -> dict[str, Any]:
    response = await api.client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {access_token}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored_email(api: Api, user_id: str) -> tuple[str | None, bool]:
    """What the database holds for the user, whatever the API shows."""
    async with api.components.storage.write() as conn:
        user = await api.components.accounts.user(conn, user_id)
    return user.get("email"), bool(user.get("verified"))


async def users_with_email(api: Api, address: str) -> int:
    async with api.components.storage.write() as conn:
        found = await api.components.accounts.user_by_email(conn, address)
    return 0 if found is None else 1


# --- signing in ---------------------------------------------------------------------------


async def test_a_good_token_makes_a_new_verified_user_whose_tokens_work(api: Api) -> None:
    signed_in = await sign_in(api, rs256(sub="apple-1", email="New@Example.com"), device="phone")

    assert signed_in["token_type"] == "Bearer"
    user = signed_in["user"]
    assert user["verified"] is True and user["anonymous"] is False
    assert await stored_email(api, user["id"]) == ("new@example.com", True)
    assert (await me(api, signed_in["access_token"]))["id"] == user["id"]

    refreshed = await api.client.post(
        "/api/auth/refresh", json={"refresh_token": signed_in["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    assert (await me(api, refreshed.json()["access_token"]))["id"] == user["id"]


async def test_the_same_subject_signs_in_as_the_same_user(api: Api) -> None:
    first = await sign_in(api, rs256(sub="apple-1"))
    # the provider may omit the email later (Apple sends it only the first time)
    again = await sign_in(api, es256(sub="apple-1", email=MISSING, email_verified=MISSING))

    assert again["user"]["id"] == first["user"]["id"]
    assert again["refresh_token"] != first["refresh_token"]
    assert (await me(api, again["access_token"]))["id"] == first["user"]["id"]


async def test_a_verified_email_links_to_the_existing_password_account(api: Api) -> None:
    signup = await api.client.post(
        "/api/auth/signup", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert signup.status_code == 201, signup.text
    account = signup.json()["user"]
    assert account["verified"] is False

    linked = await sign_in(api, rs256(sub="google-7", email="ALICE@example.com"))

    assert linked["user"]["id"] == account["id"]
    assert await stored_email(api, account["id"]) == ("alice@example.com", True)
    password_login = await api.client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert password_login.json()["user"]["id"] == account["id"]
    # the link is by subject from now on
    again = await sign_in(api, rs256(sub="google-7", email="other@example.com"))
    assert again["user"]["id"] == account["id"]


@pytest.mark.parametrize("unverified", [False, "false"], ids=["json-false", "apple-string"])
async def test_an_unverified_email_is_not_linked(api: Api, unverified: object) -> None:
    signup = await api.client.post(
        "/api/auth/signup", json={"email": "alice@example.com", "password": PASSWORD}
    )
    account = signup.json()["user"]

    other = await sign_in(
        api, rs256(sub="mallory", email="alice@example.com", email_verified=unverified)
    )

    assert other["user"]["id"] != account["id"]
    assert other["user"]["verified"] is False
    assert await stored_email(api, other["user"]["id"]) == (None, False)
    assert await users_with_email(api, "alice@example.com") == 1
    assert (await me(api, other["access_token"]))["id"] == other["user"]["id"]


async def test_a_raw_nonce_matches_the_hashed_one_in_the_token(api: Api) -> None:
    hashed = hashlib.sha256(b"raw-nonce").hexdigest()
    signed_in = await sign_in(api, rs256(sub="apple-2", nonce=hashed), nonce="raw-nonce")
    assert signed_in["user"]["verified"] is True


# --- refusals -----------------------------------------------------------------------------

Token = Callable[[], str]
OIDC = "/api/auth/oidc/test"


def refused(
    case: str, status: int, code: str, body: dict[str, Any], *fragments: str, path: str = OIDC
) -> Scenario:
    return Scenario(
        case, "POST", path, status, code, body=body, auth="anonymous", fragments=fragments
    )


REFUSED: list[tuple[Scenario, Token]] = [
    (
        refused("wrong-audience", 401, "unauthorized", {"id_token": "{token}"}, "audience"),
        lambda: rs256(aud="com.attacker.app"),
    ),
    (
        refused("expired", 401, "unauthorized", {"id_token": "{token}"}, "expired"),
        lambda: rs256(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    ),
    (
        refused("wrong-issuer", 401, "unauthorized", {"id_token": "{token}"}, "issuer"),
        lambda: rs256(iss="https://evil.test"),
    ),
    (
        refused(
            "bad-nonce", 401, "unauthorized", {"id_token": "{token}", "nonce": "sent"}, "nonce"
        ),
        lambda: rs256(nonce="another-attempt"),
    ),
    (
        refused("token-nonce-but-none-sent", 401, "unauthorized", {"id_token": "{token}"}),
        lambda: rs256(nonce="bound-to-an-attempt"),
    ),
    (
        refused("unpublished-key", 401, "unauthorized", {"id_token": "{token}"}, "signature"),
        lambda: rs256(kid="rsa-1", key="attacker"),
    ),
    (
        refused("garbage", 401, "unauthorized", {"id_token": "not.a.jwt"}),
        lambda: "",
    ),
    (
        refused("unknown-provider", 404, "not_found", {"id_token": "{token}"},
                path="/api/auth/oidc/nobody"),
        rs256,
    ),
    (
        refused("jwks-down", 503, "unavailable", {"id_token": "{token}"},
                path="/api/auth/oidc/down"),
        rs256,
    ),
    (
        refused("id-token-missing", 400, "validation_failed", {"nonce": "n"}),
        lambda: "",
    ),
    (
        refused("nonce-not-a-string", 400, "validation_failed",
                {"id_token": "{token}", "nonce": 7}),
        rs256,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("row", "token"), REFUSED, ids=ids([row for row, _ in REFUSED]))
async def test_refused_tokens_sign_nobody_in(api: Api, row: Scenario, token: Token) -> None:
    api.values["token"] = made = token()
    response = await api.run(row)

    if made:
        assert made not in response.text  # never echoed back
        assert made.split(".")[1] not in response.text
    async with api.components.storage.write() as conn:
        linked = await conn.fetch_one("SELECT count(*) AS n FROM _identities")
    assert linked is not None and linked["n"] == 0


async def test_a_user_deleted_by_an_admin_can_sign_in_again_as_a_new_user(api: Api) -> None:
    first = await sign_in(api, rs256(sub="apple-9", email="gone@example.com"))
    deleted = await api.request(
        "DELETE", f"/api/collections/users/records/{first['user']['id']}", auth="admin"
    )
    assert deleted.status_code == 204, deleted.text

    again = await sign_in(api, rs256(sub="apple-9", email="gone@example.com"))

    assert again["user"]["id"] != first["user"]["id"]
    assert (await me(api, again["access_token"]))["id"] == again["user"]["id"]
