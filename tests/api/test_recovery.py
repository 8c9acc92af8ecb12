"""Password reset and email verification end to end: the API queues a mail, the outbox
delivers it to a real SMTP server, and the link in it does what it says, once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from api.scenario import Api, Scenario, check
from conftest import make_settings
from roost.settings import Settings
from smtp_server import Received, SMTPTestServer

EMAIL = "alice@example.com"
PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "a-brand-new-passphrase"
FORGOT_BODY = {"status": "if the address has an account, a link is on its way"}
LINK = re.compile(r"(http://\S+/auth/(reset-password|verify-email)\?token=([A-Za-z0-9_-]+))")


@pytest.fixture
async def smtp() -> AsyncIterator[SMTPTestServer]:
    async with SMTPTestServer() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, database_url: str, smtp: SMTPTestServer) -> Settings:
    return make_settings(
        tmp_path, database_url=database_url, smtp_url=smtp.url(), public_url="http://roost.test/"
    )


async def post(api: Api, path: str, body: Any, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await api.client.post(path, json=body, headers=headers)


async def signup(api: Api, email: str = EMAIL) -> dict[str, Any]:
    response = await post(api, "/api/auth/signup", {"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(api: Api, password: str, email: str = EMAIL) -> httpx.Response:
    return await post(api, "/api/auth/login", {"email": email, "password": password})


def link_in(mail: Received, page: str) -> tuple[str, str]:
    """The link of ``page`` in ``mail`` and its token."""
    found = LINK.search(mail.body)
    assert found is not None, mail.body
    assert found.group(2) == page, mail.body
    return found.group(1), found.group(3)


async def mailed_token(smtp: SMTPTestServer, count: int, page: str) -> str:
    """The token in the ``count``-th mail, once it arrived."""
    mail = (await smtp.wait_for(count))[count - 1]
    assert mail.rcpt_tos == [EMAIL]
    return link_in(mail, page)[1]


async def outbox(api: Api) -> list[dict[str, Any]]:
    async with api.components.storage.write() as conn:
        rows = await conn.fetch_all(
            "SELECT recipient, attempts, sent, last_error FROM _outbox ORDER BY id"
        )
    return [dict(row) for row in rows]


async def run(api: Api, row: Scenario) -> httpx.Response:
    response = await api.run(row)
    assert "token_hash" not in response.text
    return response


def request(case: str, path: str, status: int, code: str | None = None, **body: Any) -> Scenario:
    return Scenario(case, "POST", path, status, code, body=body, auth="anonymous")


RESET = "/api/auth/password/reset"
CONFIRM = "/api/auth/verify/confirm"


# --- forgot ---------------------------------------------------------------------------------


async def test_forgot_mails_a_link_to_known_addresses_only(api: Api, smtp: SMTPTestServer) -> None:
    await signup(api)

    unknown = await post(api, "/api/auth/password/forgot", {"email": "nobody@example.com"})
    known = await post(api, "/api/auth/password/forgot", {"email": "  Alice@Example.com "})

    assert (unknown.status_code, unknown.json()) == (202, FORGOT_BODY)
    assert (known.status_code, known.json()) == (202, FORGOT_BODY)
    [mail] = await smtp.wait_for(1)
    assert mail.rcpt_tos == [EMAIL] and mail.message["To"] == EMAIL
    assert "reset" in mail.message["Subject"].lower()
    link, token = link_in(mail, "reset-password")
    assert link == f"http://roost.test/auth/reset-password?token={token}"
    assert len(token) >= 40
    assert [row["recipient"] for row in await outbox(api)] == [EMAIL]  # nothing for nobody@
    async with api.components.storage.write() as conn:
        stored = await conn.fetch_all("SELECT token_hash FROM _one_time_tokens")
    assert [row["token_hash"] for row in stored] != [token]  # only the hash is kept


@pytest.mark.parametrize("email", [None, 7, "", "x" * 300, ["alice@example.com"]])
async def test_forgot_with_a_strange_email_says_the_same(api: Api, email: object) -> None:
    response = await post(api, "/api/auth/password/forgot", {"email": email})
    assert (response.status_code, response.json()) == (202, FORGOT_BODY)
    assert await outbox(api) == []


# --- reset ----------------------------------------------------------------------------------


async def test_reset_sets_the_password_ends_every_session_and_verifies(
    api: Api, smtp: SMTPTestServer
) -> None:
    first = await signup(api)
    second = (await login(api, PASSWORD)).json()
    assert first["user"]["verified"] is False
    await post(api, "/api/auth/password/forgot", {"email": EMAIL})
    token = await mailed_token(smtp, 1, "reset-password")

    reset = await post(api, RESET, {"token": token, "password": NEW_PASSWORD})

    assert reset.status_code == 204, reset.text
    assert (await login(api, PASSWORD)).status_code == 401
    fresh = await login(api, NEW_PASSWORD)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["user"]["verified"] is True
    for old in (first, second):
        refreshed = await post(api, "/api/auth/refresh", {"refresh_token": old["refresh_token"]})
        assert refreshed.status_code == 401, refreshed.text
    await run(api, request("reuse", RESET, 401, "unauthorized", token=token, password=PASSWORD))
    assert (await login(api, NEW_PASSWORD)).status_code == 200


async def test_a_reset_spends_every_other_reset_link_of_the_account(
    api: Api, smtp: SMTPTestServer
) -> None:
    await signup(api)
    await post(api, "/api/auth/password/forgot", {"email": EMAIL})
    older = await mailed_token(smtp, 1, "reset-password")
    await post(api, "/api/auth/password/forgot", {"email": EMAIL})
    newer = await mailed_token(smtp, 2, "reset-password")

    await run(api, request("newer", RESET, 204, token=newer, password=NEW_PASSWORD))

    await run(api, request("older", RESET, 401, "unauthorized", token=older, password=PASSWORD))
    assert (await login(api, NEW_PASSWORD)).status_code == 200


async def test_a_password_the_policy_refuses_does_not_spend_the_token(
    api: Api, smtp: SMTPTestServer
) -> None:
    await signup(api)
    await post(api, "/api/auth/password/forgot", {"email": EMAIL})
    token = await mailed_token(smtp, 1, "reset-password")

    await run(api, request("short", RESET, 400, "validation_failed", token=token, password="x"))
    await run(api, request("again", RESET, 204, token=token, password=NEW_PASSWORD))


async def test_an_expired_reset_token_is_refused(api: Api, smtp: SMTPTestServer) -> None:
    await signup(api)
    await post(api, "/api/auth/password/forgot", {"email": EMAIL})
    token = await mailed_token(smtp, 1, "reset-password")
    async with api.components.storage.write() as conn:
        await conn.execute("UPDATE _one_time_tokens SET expires = '2001-01-01T00:00:00.000Z'")

    await run(
        api, request("expired", RESET, 401, "unauthorized", token=token, password=NEW_PASSWORD)
    )
    assert (await login(api, PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    "token", ["", "made-up", "x" * 1000, None, 42], ids=["empty", "unknown", "huge", "null", "int"]
)
async def test_made_up_reset_tokens_are_refused(api: Api, token: object) -> None:
    row = request("bogus", RESET, 401, "unauthorized", token=token, password=NEW_PASSWORD)
    await run(api, row)


async def test_tokens_only_serve_their_own_purpose(api: Api, smtp: SMTPTestServer) -> None:
    account = await signup(api)
    await post(api, "/api/auth/verify/request", {}, token=account["access_token"])
    verify_token = await mailed_token(smtp, 1, "verify-email")
    await post(api, "/api/auth/password/forgot", {"email": EMAIL})
    reset_token = await mailed_token(smtp, 2, "reset-password")

    await run(
        api,
        request(
            "verify-as-reset", RESET, 401, "unauthorized", token=verify_token, password="x" * 12
        ),
    )
    await run(api, request("reset-as-verify", CONFIRM, 401, "unauthorized", token=reset_token))
    assert (await login(api, PASSWORD)).status_code == 200
    # neither was spent by the misuse
    await run(api, request("verify", CONFIRM, 200, token=verify_token))
    await run(api, request("reset", RESET, 204, token=reset_token, password=NEW_PASSWORD))


async def test_links_sent_to_an_address_the_account_no_longer_has_are_refused(
    api: Api, smtp: SMTPTestServer
) -> None:
    account = await signup(api)
    await post(api, "/api/auth/verify/request", {}, token=account["access_token"])
    verify_token = await mailed_token(smtp, 1, "verify-email")
    await post(api, "/api/auth/password/forgot", {"email": EMAIL})
    reset_token = await mailed_token(smtp, 2, "reset-password")
    moved = await api.request(
        "PATCH",
        f"/api/collections/users/records/{account['user']['id']}",
        body={"email": "alice@new.example"},
    )
    assert moved.status_code == 200, moved.text

    await run(api, request("verify", CONFIRM, 401, "unauthorized", token=verify_token))
    await run(
        api, request("reset", RESET, 401, "unauthorized", token=reset_token, password=NEW_PASSWORD)
    )
    assert (await login(api, PASSWORD, email="alice@new.example")).json()["user"][
        "verified"
    ] is False


# --- verification ---------------------------------------------------------------------------


async def test_verification_request_mail_and_confirm(api: Api, smtp: SMTPTestServer) -> None:
    account = await signup(api)
    access = account["access_token"]

    asked = await post(api, "/api/auth/verify/request", {}, token=access)

    assert asked.status_code == 202, asked.text
    mail = (await smtp.wait_for(1))[0]
    assert mail.rcpt_tos == [EMAIL]
    link, token = link_in(mail, "verify-email")
    assert link.startswith("http://roost.test/auth/verify-email?token=")
    confirmed = await run(api, request("confirm", CONFIRM, 200, token=token))
    assert confirmed.json()["id"] == account["user"]["id"]
    assert confirmed.json()["verified"] is True
    me = await api.client.get("/api/auth/me", headers={"Authorization": f"Bearer {access}"})
    assert me.json()["verified"] is True
    await run(api, request("reuse", CONFIRM, 401, "unauthorized", token=token))
    again = await post(api, "/api/auth/verify/request", {}, token=access)
    check(again, Scenario("already-verified", "POST", "", 409, "conflict"))
    assert len(await outbox(api)) == 1


async def test_verification_needs_a_signed_in_account_with_an_address(api: Api) -> None:
    nobody = await post(api, "/api/auth/verify/request", {})
    check(nobody, Scenario("anonymous", "POST", "", 401, "unauthorized"))
    guest = (await post(api, "/api/auth/anonymous", {})).json()
    no_address = await post(api, "/api/auth/verify/request", {}, token=guest["access_token"])
    assert no_address.status_code == 400, no_address.text
    assert await outbox(api) == []


async def test_an_expired_verification_token_is_refused(api: Api, smtp: SMTPTestServer) -> None:
    account = await signup(api)
    await post(api, "/api/auth/verify/request", {}, token=account["access_token"])
    token = await mailed_token(smtp, 1, "verify-email")
    async with api.components.storage.write() as conn:
        await conn.execute("UPDATE _one_time_tokens SET expires = '2001-01-01T00:00:00.000Z'")

    await run(api, request("expired", CONFIRM, 401, "unauthorized", token=token))


# --- the mail server is down ----------------------------------------------------------------


async def test_mail_queued_while_smtp_is_down_arrives_once_it_is_back(
    api: Api, smtp: SMTPTestServer
) -> None:
    await signup(api)
    await smtp.stop()

    response = await post(api, "/api/auth/password/forgot", {"email": EMAIL})

    assert (response.status_code, response.json()) == (202, FORGOT_BODY)
    async with asyncio.timeout(10):  # the worker tries at once, fails, and schedules a retry
        while not (rows := await outbox(api)) or rows[0]["last_error"] is None:
            await asyncio.sleep(0.02)
    assert rows[0]["sent"] is None and rows[0]["attempts"] == 1
    assert smtp.received == []

    await smtp.start()
    async with api.components.storage.write() as conn:  # the retry's time has come
        await conn.execute("UPDATE _outbox SET next_attempt = '2001-01-01T00:00:00.000Z'")
    api.components.outbox.notify()

    token = await mailed_token(smtp, 1, "reset-password")
    async with asyncio.timeout(10):  # recorded as sent just after the server accepted it
        while (await outbox(api))[0]["sent"] is None:
            await asyncio.sleep(0.02)
    await run(api, request("reset", RESET, 204, token=token, password=NEW_PASSWORD))
    assert len(smtp.received) == 1


# --- the pages the links open ---------------------------------------------------------------

INJECTION = '"><script>alert(1)</script>'


@pytest.mark.parametrize("page", ["/auth/reset-password", "/auth/verify-email"])
async def test_pages_are_html_with_security_headers_and_never_echo_the_token(
    api: Api, page: str
) -> None:
    response = await api.client.get(f"{page}?token={quote(INJECTION)}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    text = response.text
    assert "alert(1)" not in text and "<script>alert" not in text
    assert quote(INJECTION) not in text
    assert text.count("<script>") == 1  # the page's own, which reads the token itself
    assert 'get("token")' in text
