"""``roost export`` / ``roost import``: a database seeded through the HTTP API moves
SQLite → PostgreSQL → SQLite through the real command and comes out the same: collections,
indexes, rules, records (ids, versions, data), passwords, provider links and idempotency
keys; the new change log holds one ``create`` per record. An import into a database that
holds data, or of a bad file, is refused and writes nothing."""

from __future__ import annotations

import asyncio
import os
import pty
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, insert_admin, make_settings, serving
from jwks_server import CLIENT_ID, ISSUER, JWKSServer, rs256
from roost.cli import transfer
from roost.cli.main import main
from roost.components import Components
from roost.ids import new_id
from roost.settings import OIDCProvider

ANN = {"email": "ann@example.com", "password": "ann-long-password-1"}
NOTES = {
    "name": "notes",
    "fields": {
        "title": {"type": "string", "required": True, "max_length": 200},
        "slug": {"type": "string"},
        "meta": {"type": "object"},
    },
    "indexes": [{"fields": ["slug"], "unique": True}, {"fields": ["meta.rank", "title"]}],
    "rules": {
        "list": "owner = @auth.id",
        "view": "owner = @auth.id",
        "create": "@auth.id != null",
        "update": "owner = @auth.id",
        "delete": "owner = @auth.id",
    },
}
TAGS = {
    "name": "tags",
    "fields": {"label": {"type": "string", "required": True}},
    "rules": {"list": "", "view": ""},
    "options": {"strict": True},
}
FIRST_NOTE = {
    "title": "Grüße aus Köln 🌍",
    "slug": "gruesse",
    "meta": {
        "rank": 1,
        "tags": ["ü", "日本語", "emoji 🐦"],
        "nested": {"a": [1, 2.5, -0.1, {"b": None, "c": True}], "empty": {}, "list": []},
    },
}
RETRY_KEY = "note-1-retry"

pytestmark = pytest.mark.slow


def roost(
    tmp_path: Path, *args: str, database_url: str | None = None, stdin: bytes = b""
) -> tuple[int, str, str]:
    """``python -m roost ARGS`` as an operator runs it: a real process, its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env["ROOST_CONFIG"] = str(tmp_path / "absent.toml")
    if database_url is not None:
        env["ROOST_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, "-m", "roost", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def aroost(tmp_path: Path, *args: str, database_url: str | None = None) -> str:
    """``roost`` from an async test (the JWKS server keeps serving meanwhile): its standard
    output, after checking that it succeeded."""
    code, out, err = await asyncio.to_thread(roost, tmp_path, *args, database_url=database_url)
    assert code == 0, err
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(answer: httpx.Response, status: int = 200) -> Any:
    """The JSON body of ``answer``, after checking its status."""
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content else None


async def login(http: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    body = {"email": email, "password": password}
    signed_in: dict[str, Any] = ok(await http.post("/api/auth/login", json=body))
    return signed_in


async def seed(http: httpx.AsyncClient, components: Components) -> dict[str, str]:
    """Collections, a changed built-in ``users``, users by password and by OIDC, records
    written, updated and deleted; returns the ids the checks need."""
    admin = bearer(await insert_admin(components))
    for definition in (NOTES, TAGS):
        ok(await http.post("/api/collections", headers=admin, json=definition), 201)
    users_patch = {
        "fields": {"nickname": {"type": "string", "max_length": 40}},
        "indexes": [{"fields": ["nickname"]}],
    }
    ok(await http.patch("/api/collections/users", headers=admin, json=users_patch))

    ann_signed_up = ok(await http.post("/api/auth/signup", json=ANN), 201)
    ann = bearer(ann_signed_up["access_token"])
    notes = "/api/collections/notes/records"
    retry = {**ann, "Idempotency-Key": RETRY_KEY}
    first = ok(await http.post(notes, headers=retry, json=FIRST_NOTE), 201)
    second_id = new_id()
    second = {"id": second_id, "title": "second", "slug": "second", "meta": {"rank": 2}}
    ok(await http.post(notes, headers=ann, json=second), 201)
    edit = {"title": "second, edited", "meta": {"rank": 3, "why": "typo"}}
    ok(await http.patch(f"{notes}/{second_id}", headers=ann, json=edit))
    gone = ok(await http.post(notes, headers=ann, json={"title": "x", "slug": "x"}), 201)
    ok(await http.delete(f"{notes}/{gone['id']}", headers=ann), 204)
    for label in ("naïve", "plain"):
        tag = {"label": label}
        ok(await http.post("/api/collections/tags/records", headers=admin, json=tag), 201)

    token = {"id_token": rs256(sub="apple-77", email="olga@example.com")}
    olga = ok(await http.post("/api/auth/oidc/test", json=token))
    return {"ann": ann_signed_up["user"]["id"], "first": first["id"], "olga": olga["user"]["id"]}


async def holdings(http: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Every collection definition and every record, as an admin reads them."""
    listed = ok(await http.get("/api/collections", headers=admin))["items"]
    found: dict[str, Any] = {"collections": listed}
    for definition in listed:
        name = definition["name"]
        url = f"/api/collections/{name}/records"
        page = ok(await http.get(url, headers=admin, params={"limit": "500"}))
        assert page["next_cursor"] is None
        found[name] = page["items"]
    return found


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_round_trip_sqlite_postgres_sqlite(tmp_path: Path, postgres_url: str) -> None:
    async with JWKSServer() as jwks:
        provider = OIDCProvider(issuer=ISSUER, jwks_url=jwks.url, client_ids=[CLIENT_ID])
        source = make_settings(tmp_path / "source", oidc_providers={"test": provider})
        async with serving(source) as (http, components):
            ids = await seed(http, components)
            admin = bearer((await login(http, ADMIN_EMAIL, ADMIN_PASSWORD))["access_token"])
            before = await holdings(http, admin)

        exported = tmp_path / "sqlite.jsonl"
        exported.write_text("stale")
        exported.chmod(0o644)
        out = ("--output", str(exported))
        summary = await aroost(tmp_path, "export", "--data-dir", str(tmp_path / "source"), *out)
        assert summary == ""  # the counts go to stderr
        assert stat.S_IMODE(exported.stat().st_mode) == 0o600
        assert ANN["password"].encode() not in exported.read_bytes()
        from_sqlite = lines(exported)
        header, end = from_sqlite[0], from_sqlite[-1]
        assert header["type"] == "header" and header["format"] == "roost-export"
        assert header["version"] == 1 and header["exported_at"].endswith("Z")
        credentials = [line for line in from_sqlite if line["type"] == "credential"]
        assert {c["user_id"] for c in credentials} == {ids["ann"], before["users"][0]["id"]}
        assert all(c["password_hash"].startswith("$argon2id$") for c in credentials)
        assert end == {
            "type": "end",
            "counts": {
                "collection": 3,
                "record": 7,  # 3 users, 2 notes, 2 tags
                "credential": 2,
                "identity": 1,
                "idempotency": 1,
            },
        }

        target = ("--data-dir", str(tmp_path / "pg"))
        imported = await aroost(
            tmp_path, "import", *target, "--input", str(exported), database_url=postgres_url
        )
        assert imported.startswith("imported collection 3, record 7, credential 2")

        # back out of PostgreSQL (to standard output), into a new SQLite, and out again
        dumped = await aroost(tmp_path, "export", *target, database_url=postgres_url)
        from_postgres = tmp_path / "postgres.jsonl"
        from_postgres.write_text(dumped)
        assert lines(from_postgres)[1:] == from_sqlite[1:]  # JSONB may reorder keys
        again = ("--data-dir", str(tmp_path / "again"))
        await aroost(tmp_path, "import", *again, "--input", str(from_postgres))
        await aroost(tmp_path, "export", *again, "--output", str(tmp_path / "again.jsonl"))
        assert (tmp_path / "again.jsonl").read_bytes().splitlines()[1:] == (
            from_postgres.read_bytes().splitlines()[1:]
        )

        on_postgres = make_settings(
            tmp_path / "pg", database_url=postgres_url, oidc_providers={"test": provider}
        )
        async with serving(on_postgres) as (http, components):
            changes = await components.storage.changes_since(0, None, 1000)
            expected = [
                (name, record["id"], "create", record["version"])
                for name in ("notes", "tags", "users")
                for record in sorted(before[name], key=lambda r: str(r["id"]))
            ]
            assert [(c.collection, c.record_id, c.op, c.version) for c in changes] == expected

            admin = bearer((await login(http, ADMIN_EMAIL, ADMIN_PASSWORD))["access_token"])
            assert await holdings(http, admin) == before

            wrong = {"email": ANN["email"], "password": "not-her-password"}
            assert (await http.post("/api/auth/login", json=wrong)).status_code == 401
            signed_in = await login(http, ANN["email"], ANN["password"])
            assert signed_in["user"]["id"] == ids["ann"]
            ann = bearer(signed_in["access_token"])
            notes = "/api/collections/notes/records"
            retried = await http.post(
                notes, headers={**ann, "Idempotency-Key": RETRY_KEY}, json=FIRST_NOTE
            )
            assert (retried.status_code, retried.json()["id"]) == (201, ids["first"])
            duplicate = {"title": "same slug", "slug": FIRST_NOTE["slug"]}
            assert (await http.post(notes, headers=ann, json=duplicate)).status_code == 409
            mine = ok(await http.get(notes, headers=ann))
            assert len(mine["items"]) == 2

            bob_body = {**ANN, "email": "bob@example.com"}
            bob_signed_up = ok(await http.post("/api/auth/signup", json=bob_body), 201)
            bob = bearer(bob_signed_up["access_token"])
            assert ok(await http.get(notes, headers=bob))["items"] == []
            hidden = await http.get(f"{notes}/{ids['first']}", headers=bob)
            assert hidden.status_code == 404
            tags = ok(await http.get("/api/collections/tags/records", headers=bob))
            assert len(tags["items"]) == 2

            token = {"id_token": rs256(sub="apple-77", email="olga@example.com")}
            olga = ok(await http.post("/api/auth/oidc/test", json=token))
            assert olga["user"]["id"] == ids["olga"]


# --- refusals -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of a small database: an admin, a collection and two records."""
    folder = tmp_path_factory.mktemp("small")

    async def fill() -> None:
        async with serving(make_settings(folder / "data")) as (http, components):
            admin = bearer(await insert_admin(components))
            ok(await http.post("/api/collections", headers=admin, json=TAGS), 201)
            for label in ("a", "b"):
                body = {"label": label}
                ok(await http.post("/api/collections/tags/records", headers=admin, json=body), 201)

    asyncio.run(fill())
    path = folder / "small.jsonl"
    code, _, err = roost(
        folder, "export", "--data-dir", str(folder / "data"), "--output", str(path)
    )
    assert code == 0, err
    return path


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    """``roost ARGS`` in this process (quicker than a process for the many refusal cases);
    ``database_url=`` sets ``ROOST_DATABASE_URL``. Returns (exit code, stdout, stderr)."""
    for name in list(os.environ):
        if name.startswith("ROOST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ROOST_CONFIG", str(tmp_path / "absent.toml"))

    def run(*args: str, database_url: str | None = None) -> tuple[int, str, str]:
        if database_url is None:
            monkeypatch.delenv("ROOST_DATABASE_URL", raising=False)
        else:
            monkeypatch.setenv("ROOST_DATABASE_URL", database_url)
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def only_builtin(cli: Cli, data_dir: Path, database_url: str | None = None) -> None:
    """The target holds nothing but the empty built-in ``users`` collection."""
    path = data_dir.parent / "check.jsonl"
    args = ("export", "--data-dir", str(data_dir), "--output", str(path))
    code, _, err = cli(*args, database_url=database_url)
    assert code == 0, err
    found = lines(path)
    assert [line["type"] for line in found] == ["header", "collection", "end"]
    assert found[1]["definition"]["name"] == "users"


def test_import_into_a_database_that_holds_data_is_refused(
    tmp_path: Path, small_export: Path
) -> None:
    data = tmp_path / "target"
    args = ("admin", "create", "first@example.com", "--data-dir", str(data))
    code, _, err = roost(tmp_path, *args, stdin=b"a-long-enough-password\n")
    assert code == 0, err
    before = tmp_path / "before.jsonl"
    assert roost(tmp_path, "export", "--data-dir", str(data), "--output", str(before))[0] == 0

    code, out, err = roost(
        tmp_path, "import", "--data-dir", str(data), "--input", str(small_export)
    )
    assert code == 1 and out == ""
    assert "nothing was imported: the target database is not empty" in err
    assert "collection 'users' holds records" in err
    after = tmp_path / "after.jsonl"
    assert roost(tmp_path, "export", "--data-dir", str(data), "--output", str(after))[0] == 0
    assert lines(after)[1:] == lines(before)[1:]


def test_a_collection_of_the_target_is_refused_too(
    tmp_path: Path, small_export: Path, cli: Cli
) -> None:
    data = tmp_path / "target"
    args = ("import", "--data-dir", str(data), "--input", str(small_export))
    assert cli(*args)[0] == 0
    code, _, err = cli(*args)
    assert code == 1
    assert "the target database is not empty: it has collections ['tags']" in err


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_many_rows_move_in_pages_and_batches(
    tmp_path: Path,
    small_export: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    """Tiny pages and batches, so that keyset paging (one- and two-column keys) and batched
    inserts cross many boundaries; what goes in comes out."""
    monkeypatch.setattr(transfer, "PAGE_ROWS", 2)
    monkeypatch.setattr(transfer, "BATCH_ROWS", 3)
    header, tags, users, _, _, admin, credential, _ = small_export.read_bytes().splitlines()
    user_id = orjson.loads(admin)["id"]
    at = "2026-01-02T03:04:05.678Z"
    records = [
        {"type": "record", "collection": "tags", "id": new_id(), "owner": None}
        | {"created": at, "updated": at, "version": n + 1, "data": {"label": f"t{n}", "n": n}}
        for n in range(7)
    ]
    identities = [
        {"type": "identity", "provider": provider, "subject": subject}
        | {"user_id": user_id, "created": at}
        for provider in ("apple", "google", "test")
        for subject in ("s1", "s2")
    ]
    kept = [
        {"type": "idempotency", "scope": f"user:{user_id}", "key": f"k{n}", "request_hash": "h"}
        | {"status": 201, "headers": "{}", "body": "eyJvayI6dHJ1ZX0=", "created": at}
        for n in range(3)
    ]
    counts = {"collection": 2, "record": 8, "credential": 1, "identity": 6, "idempotency": 3}
    body = [orjson.loads(line) for line in (tags, users)] + records + [orjson.loads(admin)]
    body += [orjson.loads(credential), *identities, *kept, {"type": "end", "counts": counts}]
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in [orjson.loads(header), *body]))

    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    data = tmp_path / "target"
    code, out, err = cli("import", "--data-dir", str(data), "--input", str(path), database_url=url)
    assert code == 0, err
    assert out == "imported collection 2, record 8, credential 1, identity 6, idempotency 3\n"
    again = tmp_path / "again.jsonl"
    code, _, err = cli("export", "--data-dir", str(data), "--output", str(again), database_url=url)
    assert code == 0, err
    assert lines(again)[1:] == body


def mutated(source: Path, change: Callable[[list[bytes]], list[bytes]], to: Path) -> Path:
    to.write_bytes(b"".join(line + b"\n" for line in change(source.read_bytes().splitlines())))
    return to


def _set(line: bytes, **fields: Any) -> bytes:
    return orjson.dumps({**orjson.loads(line), **fields})


BAD_FILES: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str]] = {
    "not JSON": (lambda ls: [*ls[:3], b'{"type": "record",', *ls[3:]], "line 4: Invalid JSON"),
    "unknown type": (
        lambda ls: [*ls[:3], b'{"type": "session"}', *ls[3:]],
        "line 4: Input tag 'session' found using 'type' does not match",
    ),
    "bad record id": (
        lambda ls: [*ls[:4], _set(ls[4], id="not-an-id"), *ls[5:]],
        "line 5: record.id: a record id is a lowercase UUIDv7",
    ),
    "a system field in data": (
        lambda ls: [*ls[:4], _set(ls[4], data={"version": 9}), *ls[5:]],
        "line 5: record.data: version: version is set by the server",
    ),
    "a record before its collection": (
        lambda ls: [ls[0], ls[4], *ls[1:4], *ls[5:]],
        "line 2: a record of 'tags' before that collection's line",
    ),
    "a bad rule": (
        lambda ls: (
            [ls[0], _set(ls[1], definition={"name": "tags", "rules": {"list": "a ="}})] + ls[2:]
        ),
        "line 2: collection.definition.rules.list: position",
    ),
    "a repeated record": (
        lambda ls: [*ls[:5], ls[4], *ls[5:]],
        "a record repeats an id or breaks a unique index of 'tags'",
    ),
    "cut short": (lambda ls: ls[:-1], "the file stops after line"),
    "wrong counts": (
        lambda ls: [*ls[:-1], _set(ls[-1], counts={"record": 1})],
        "the end line counts {'record': 1} but the file holds",
    ),
    "two headers": (lambda ls: [*ls[:3], ls[0], *ls[3:]], "line 4: a second header line"),
    "a line after the end": (lambda ls: [*ls, ls[4]], "line 9: nothing may follow the end line"),
    "no header": (lambda ls: ls[1:], "line 1: not a Roost export (it starts with a header line)"),
    "a newer format": (
        lambda ls: [_set(ls[0], version=2), *ls[1:]],
        "reads export format 1, not 2",
    ),
    "a blank line": (lambda ls: [*ls[:2], b"", *ls[2:]], "line 3: Invalid JSON"),
    "empty": (lambda ls: [], "the file is empty"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_is_refused_naming_the_line_and_writes_nothing(
    tmp_path: Path, small_export: Path, cli: Cli, case: str
) -> None:
    """The small export's lines: 1 header, 2 tags, 3 users, 4-5 tag records, 6 admin user,
    7 credential, 8 end."""
    change, message = BAD_FILES[case]
    assert [orjson.loads(line)["type"] for line in small_export.read_bytes().splitlines()] == [
        "header",
        "collection",
        "collection",
        "record",
        "record",
        "record",
        "credential",
        "end",
    ]
    bad = mutated(small_export, change, tmp_path / "bad.jsonl")
    data = tmp_path / "target"
    code, out, err = cli("import", "--data-dir", str(data), "--input", str(bad))
    assert (code, out) == (1, ""), err
    assert err.startswith("roost: nothing was imported: ")
    assert message in err
    only_builtin(cli, data)


def test_a_refused_line_rolls_back_on_postgres(
    tmp_path: Path, small_export: Path, cli: Cli, postgres_url: str
) -> None:
    """Collections (tables, indexes) and records written before the bad line go too."""
    change, message = BAD_FILES["a repeated record"]
    bad = mutated(small_export, change, tmp_path / "bad.jsonl")
    data = tmp_path / "unused"
    code, _, err = cli(
        "import", "--data-dir", str(data), "--input", str(bad), database_url=postgres_url
    )
    assert code == 1 and message in err
    only_builtin(cli, data, postgres_url)
    good = ("import", "--data-dir", str(data), "--input", str(small_export))
    assert cli(*good, database_url=postgres_url)[0] == 0  # still new enough to take it


def test_the_export_is_never_written_to_a_terminal(tmp_path: Path, small_export: Path) -> None:
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "roost",
                "export",
                "--data-dir",
                str(small_export.parent / "data"),
            ],
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 2
    assert b"holds password hashes" in done.stderr


def test_export_of_a_missing_database_is_refused(tmp_path: Path) -> None:
    code, out, err = roost(tmp_path, "export", "--data-dir", str(tmp_path / "nowhere"))
    assert (code, out) == (1, "")
    assert "there is no database at" in err
    assert not (tmp_path / "nowhere").exists()
