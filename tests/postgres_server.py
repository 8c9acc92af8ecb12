"""Throwaway PostgreSQL servers for tests: ``initdb`` into a temporary folder, ``pg_ctl``
on a free port of 127.0.0.1 (unix socket in that folder), all deleted afterwards.

Load as a plugin from the root ``conftest.py`` (``pytest_plugins = [..., "postgres_server"]``).

Fixtures:

- ``postgres_server`` (session): one server for the whole run (``initdb`` is slow), started
  with ``fsync=off`` and friends, with an empty database ``roost``. Do not stop it.
- ``postgres_url`` (function): a FRESH database on that server for this test alone
  (``CREATE DATABASE ... TEMPLATE template0``, dropped afterwards), as
  ``postgresql://postgres@127.0.0.1:PORT/NAME``.
- ``replicated_postgres`` (function): a private primary and a streaming replica of it
  (``pg_basebackup -R``), as ``(primary, replica)``; the replica's ``roost`` database
  follows the primary's.
- ``postgres_server_factory`` (function): start private servers a test may ``stop()``,
  ``start()``, ``crash()``, ``pause()``/``resume()`` (fault tests); ``durable=True`` keeps
  ``fsync`` on. Stopped and deleted after the test.

Every database is ``ENCODING UTF8``, ``LC_COLLATE C``, ``LC_CTYPE C.UTF-8``. Authentication
is ``trust`` for the ``postgres`` role. A missing PostgreSQL fails the test with what to
install; it never skips. Run as root, the server runs as the ``postgres`` OS user
(``initdb``/``postgres`` refuse root).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH nor in"
    " /usr/lib/postgresql/*/bin; the PostgreSQL tests need them (they never skip). Install"
    " them: `apt-get install postgresql` (Debian/Ubuntu), `dnf install postgresql-server`"
    " (Fedora), `brew install postgresql@15` (macOS); or point ROOST_TEST_PG_BIN at the"
    " folder holding initdb and pg_ctl. The client `psql` is needed too (postgresql-client)."
)
OS_USER = "postgres"
"""The OS user that runs the server when the tests run as root."""
START_TIMEOUT = 30
START_ATTEMPTS = 3
"""Fresh ports tried when another process takes the free port before PostgreSQL binds it."""
DATABASE = "roost"
FAST_OPTIONS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
"""Options that make a test server quicker; its data does not survive a crash of the OS."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_bindir() -> Path:
    """The folder with ``initdb`` and ``pg_ctl``; fails the test (never skips) without one."""
    candidates: list[str] = []
    if configured := os.environ.get("ROOST_TEST_PG_BIN"):
        candidates.append(configured)
    if found := shutil.which("pg_ctl"):
        candidates.append(str(Path(found).resolve().parent))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in candidates:
        folder = Path(candidate)
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    pytest.fail(INSTALL_HINT, pytrace=False)


def _psql() -> str:
    binary = shutil.which("psql")
    if binary is None:
        local = find_bindir() / "psql"
        if not local.is_file():
            pytest.fail(INSTALL_HINT, pytrace=False)
        binary = str(local)
    return binary


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    return env


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in ``directory``; ``stop()`` then ``start()`` keeps its port
    and its data. ``url`` names the ``roost`` database; ``url_for(name)`` any other."""

    directory: Path
    port: int = field(default_factory=_free_port)
    durable: bool = False
    """False: ``fsync``, ``synchronous_commit`` and ``full_page_writes`` off (quicker)."""
    bindir: Path = field(default_factory=find_bindir)
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    # -- processes --------------------------------------------------------------------

    def _as_server_user(self, args: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return args
        return ["runuser", "-u", OS_USER, "--", *args]

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self._as_server_user(args),
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=timeout,
            check=False,
        )
        return done

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(OS_USER)
            except KeyError:
                pytest.fail(
                    f"running as root, the PostgreSQL tests need an OS user {OS_USER!r} to run"
                    " the server (`apt-get install postgresql` creates it)",
                    pytrace=False,
                )
            os.chown(self.directory, user.pw_uid, user.pw_gid)

    def initdb(self) -> None:
        """Create the cluster (once; ``start()`` calls it when there is none)."""
        self._prepare_directory()
        done = self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--lc-collate=C",
                "--lc-ctype=C.UTF-8",
                "--lc-messages=C",
                "--no-sync",
            ]
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def _server_options(self) -> str:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            "-c max_connections=200",
            "-c log_min_messages=warning",
        ]
        if not self.durable:
            options += [f"-c {option}" for option in FAST_OPTIONS]
        return " ".join(options)

    def start(self) -> None:
        """Start the server (creating the cluster the first time) and wait until it takes
        connections; raises ``RuntimeError`` with the log when it does not."""
        if not (self.data_dir / "PG_VERSION").exists():
            self.initdb()
        done = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_path),
                "--options",
                self._server_options(),
                "--wait",
                f"--timeout={START_TIMEOUT}",
                "start",
            ],
            timeout=START_TIMEOUT + 10,
        )
        if done.returncode != 0:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log}")

    def _pg_ctl_stop(self, mode: str) -> None:
        if not self.running:
            return
        done = self._run(
            [str(self.bindir / "pg_ctl"), "--pgdata", str(self.data_dir), "-m", mode, "-w", "stop"]
        )
        if done.returncode != 0 and self.running:
            raise RuntimeError(f"pg_ctl stop failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        """A clean shutdown (``pg_ctl -m fast``: open connections are cut); a no-op when
        stopped. ``start()`` brings it back with its data."""
        self.resume()
        self._pg_ctl_stop("fast")

    def crash(self) -> None:
        """Stop like a crash (``pg_ctl -m immediate``: no checkpoint, the next ``start()``
        replays the WAL)."""
        self.resume()
        self._pg_ctl_stop("immediate")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, None when stopped."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _processes(self) -> list[int]:
        """The postmaster then its children (each backend is its own process group, so
        ``killpg`` would miss them); read from ``/proc`` (Linux)."""
        if (pid := self.pid) is None:
            return []
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                text = Path(stat).read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            if int(fields[1]) == pid:
                children.append(int(Path(stat).parent.name))
        return [pid, *children]

    def _signal_all(self, sig: int) -> None:
        """The postmaster first, then its children listed after it got the signal: one it
        forks for a new connection while stopping is not missed."""
        if (pid := self.pid) is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for child in self._processes()[1:]:
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        """Freeze the postmaster and every backend (SIGSTOP): connections and the port stay
        open but nothing answers; ``resume()`` undoes it (``stop()``/``crash()`` resume first)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    # -- databases --------------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` (autocommit, stops at the first error); returns stdout."""
        done = subprocess.run(
            [
                _psql(),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({sql!r}):\n{done.stderr}")
        return done.stdout

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (UTF8, collation C, ctype C.UTF-8); returns its name."""
        if name is None:
            name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(
            f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0 ENCODING 'UTF8'"
            " LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'"
        )
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def destroy(self) -> None:
        """Stop (like a crash: nothing to keep) and delete the folder."""
        try:
            self.crash()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


PREFIX = "roost-pg-"
OWNER_FILE = "owner.pid"
"""The test process that started the server in a folder; its servers outlive it if it is
killed (``pg_ctl`` detaches them), so the next ``start_server`` removes them."""


def sweep_orphans(bindir: Path) -> None:
    """Crash-stop and delete servers whose test process no longer exists."""
    for folder in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
            os.kill(owner, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # being created, or not ours
        PostgresServer(directory=folder, port=0, bindir=bindir).destroy()


def start_server(durable: bool = False) -> PostgresServer:
    """A started server with an empty ``roost`` database, in its own temporary folder
    (mode 0o755 under the system temp dir, so the ``postgres`` user can reach it)."""
    bindir = find_bindir()
    sweep_orphans(bindir)
    for attempt in range(START_ATTEMPTS):
        directory = Path(tempfile.mkdtemp(prefix=PREFIX))
        (directory / OWNER_FILE).write_text(str(os.getpid()))
        server = PostgresServer(directory=directory, durable=durable, bindir=bindir)
        try:
            server.start()
            server.create_database(DATABASE)
        except RuntimeError as error:
            server.destroy()
            if attempt == START_ATTEMPTS - 1 or "in use" not in str(error):
                raise
        else:
            return server
    raise AssertionError("unreachable")


def start_replica(primary: PostgresServer) -> PostgresServer:
    """A streaming replica of ``primary`` (``pg_basebackup -R``: a copy of its data and a
    ``standby.signal``), started on its own port in its own temporary folder."""
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    (directory / OWNER_FILE).write_text(str(os.getpid()))
    replica = PostgresServer(directory=directory, durable=primary.durable, bindir=primary.bindir)
    replica._prepare_directory()
    done = replica._run(
        [
            str(primary.bindir / "pg_basebackup"),
            f"--dbname=host=127.0.0.1 port={primary.port} user=postgres",
            "--pgdata",
            str(replica.data_dir),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
        ]
    )
    if done.returncode != 0:
        replica.destroy()
        raise RuntimeError(f"pg_basebackup failed:\n{done.stdout}\n{done.stderr}")
    try:
        replica.start()
    except RuntimeError:
        replica.destroy()
        raise
    return replica


@pytest.fixture
def replicated_postgres() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A private primary and its streaming replica (both destroyed after the test)."""
    primary = start_server()
    try:
        replica = start_replica(primary)
        try:
            yield primary, replica
        finally:
            replica.destroy()
    finally:
        primary.destroy()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (not durable; do not stop it: use
    ``postgres_server_factory`` for fault tests)."""
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database for this test alone, on the session server, as a URL
    ``postgresql://postgres@127.0.0.1:PORT/NAME``; dropped after the test."""
    if not postgres_server.running:  # a test stopped it: bring it back for the next ones
        postgres_server.start()
    name = postgres_server.create_database()
    try:
        yield postgres_server.url_for(name)
    finally:
        if postgres_server.running:
            postgres_server.drop_database(name)


@pytest.fixture
def postgres_server_factory() -> Iterator[Callable[..., PostgresServer]]:
    """Start private servers (``factory(durable=False)``) that a test may stop, crash,
    pause and start again; all are destroyed after it."""
    servers: list[PostgresServer] = []

    def start(durable: bool = False) -> PostgresServer:
        server = start_server(durable=durable)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.destroy()
