"""One typed settings object, built by the CLI or a test and passed in; never a global.

Sources, strongest first: keyword arguments, ``ROOST_*`` environment variables, an optional
``roost.toml`` (path in ``ROOST_CONFIG``, default ``./roost.toml``), defaults.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

import limits
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SECRET_FILE = "secret_key"
MIN_SECRET_LENGTH = 32


class OIDCProvider(BaseModel):
    """An OpenID Connect identity provider whose ID tokens sign users in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    jwks_url: str
    client_ids: list[str]
    """Accepted audiences: the app's client ids (bundle id / services id for Apple)."""


APPLE = OIDCProvider(
    issuer="https://appleid.apple.com",
    jwks_url="https://appleid.apple.com/auth/keys",
    client_ids=[],
)
GOOGLE = OIDCProvider(
    issuer="https://accounts.google.com",
    jwks_url="https://www.googleapis.com/oauth2/v3/certs",
    client_ids=[],
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOST_", extra="forbid", frozen=True)

    env: Literal["dev", "prod"] = "prod"
    data_dir: Path = Path("roost_data")
    database_url: str = ""
    """``sqlite:///path/to.db`` (default: ``roost.db`` in the data folder), ``sqlite://:memory:``
    or ``postgresql://user:password@host:5432/database``."""
    cache_url: str = ""
    """``memory://`` (this process; used only with one worker), ``redis://host:6379/0``,
    ``rediss://``, ``redis+cluster://host:port,host:port``, or ``none`` (no cache). Empty:
    ``memory://`` on the embedded SQLite with one worker, else ``none`` (instances on one
    PostgreSQL must share a cache, or each would miss the others' writes)."""
    cache_ttl_seconds: float = Field(default=300.0, gt=0, le=24 * 3600)
    """How long a cached record or list page lives at most; writes replace it sooner."""
    broker_url: str = "memory://"
    secret_key: SecretStr | None = None
    """Signs access tokens and cursors. Generated into the data folder when not given."""
    previous_secret_keys: list[SecretStr] = []
    """Former secret keys: access tokens they signed verify until they expire."""
    metrics_token: SecretStr | None = Field(default=None, min_length=16)
    """What Prometheus sends as ``Authorization: Bearer <token>`` to read ``/metrics``;
    without one, only admins may read them."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    otel_exporter_otlp_endpoint: str = Field(
        default="",
        pattern=r"^(https?://\S+)?$",
        validation_alias=AliasChoices(
            "roost_otel_exporter_otlp_endpoint", "otel_exporter_otlp_endpoint"
        ),
    )
    """An OpenTelemetry collector's OTLP/HTTP base URL (``http://collector:4318``): each HTTP
    request is then a span sent to ``<url>/v1/traces``. Also read from the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT``. Empty: no tracing, and OpenTelemetry is not imported."""
    otel_service_name: str = Field(
        default="roost",
        min_length=1,
        validation_alias=AliasChoices("roost_otel_service_name", "otel_service_name"),
    )
    """The ``service.name`` of the spans; also read from the standard ``OTEL_SERVICE_NAME``."""
    cors_origins: list[str] = []
    role: Literal["all", "api", "realtime", "worker"] = "all"
    """What this instance does: ``api`` serves the HTTP API, ``realtime`` the WebSocket and
    SSE gateways, ``worker`` the background jobs (mail outbox, pruning, clean-up); ``all``
    does everything. Every role answers ``/api/health``, ``/api/ready`` and ``/metrics``."""
    drain_seconds: float = Field(default=5.0, ge=0, le=300)
    """On SIGTERM, how long the instance keeps serving while ``/api/ready`` answers 503,
    so load balancers stop sending it work; longer than their health check's interval
    times its failures (HAProxy ``inter 1s fall 2``: 2 s). WebSockets close at its start."""
    shutdown_timeout_seconds: int = Field(default=10, ge=1, le=3600)
    """After draining, how long requests in flight may take before the workers are killed."""
    startup_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """How long start-up waits for the database (and its migrations) before giving up."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=2, le=256)
    max_json_keys: int = Field(default=1000, ge=1)
    """Most keys in one JSON object of a request body."""
    max_string_length: int = Field(default=100_000, ge=1)
    gzip_min_bytes: int = Field(default=1400, ge=0)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """FULL survives power loss; NORMAL (WAL) survives a killed process only."""
    sqlite_readers: int = Field(default=4, ge=1, le=64)
    """Reader threads, for reads that outlast their 1 ms on the event loop, or meet a lock."""
    postgres_pool_min: int = Field(default=1, ge=0, le=1000)
    """Connections each instance keeps open to PostgreSQL."""
    postgres_pool_max: int = Field(default=10, ge=1, le=1000)
    """Most connections each instance opens to PostgreSQL (mind ``max_connections``)."""
    postgres_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Client side: connecting, waiting for a pooled connection, and any one command."""
    postgres_statement_timeout_ms: int = Field(default=20_000, ge=0)
    """Server side ``statement_timeout`` (0: none); below the client timeout, so the server
    cancels a slow statement first and the connection stays usable."""
    database_replica_urls: list[str] = []
    """PostgreSQL read replicas (``postgresql://...``, JSON list in the environment): record
    and collection reads go to one that has replayed the client's own writes."""
    database_replica_max_lag_seconds: float = Field(default=5.0, gt=0, le=3600)
    """A replica further behind the primary than this is skipped."""
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    change_retention_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    """How long the change log keeps changes: a client offline for longer gets
    ``resync_required`` and syncs again from scratch."""
    realtime_poll_seconds: float = Field(default=0.1, gt=0, le=60)
    """How often each instance reads the change log when no shared broker wakes it (several
    worker processes on the embedded default) or the broker is down; 1 s with Redis up."""
    realtime_ping_seconds: float = Field(default=25.0, gt=0, le=3600)
    """A realtime connection gets a ping after this long without any message."""
    realtime_idle_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)
    """A realtime connection is closed when its client sent nothing for this long."""
    realtime_max_subscriptions: int = Field(default=100, ge=1, le=10_000)
    """Subscriptions on one realtime connection."""
    realtime_max_connections_per_user: int = Field(default=20, ge=1, le=100_000)
    """Realtime connections one user (or one anonymous client address) holds on an instance."""
    realtime_max_message_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest message a realtime client may send."""
    realtime_send_queue: int = Field(default=1000, ge=10, le=1_000_000)
    """Messages waiting for one slow client before it is disconnected (to resume later)."""

    public_url: str = ""
    """Base URL of this server in links sent by mail (default ``http://host:port``)."""
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=30, le=24 * 3600)
    """Also the longest time a revoked session's access token keeps working."""
    refresh_token_ttl_seconds: int = Field(default=60 * 24 * 3600, ge=3600)
    password_time_cost: int = Field(default=3, ge=1, le=20)
    """argon2id iterations; with ``password_memory_kib``, the cost of a login."""
    password_memory_kib: int = Field(default=65536, ge=64, le=4 * 1024 * 1024)
    password_parallelism: int = Field(default=4, ge=1, le=64)
    """argon2id lanes; OWASP's minimum is m=19 MiB, t=2, p=1 (RFC 9106: 64 MiB, 3, 4)."""
    trusted_proxies: list[str] = []
    """Addresses or networks (CIDR) whose ``X-Forwarded-For`` names the client."""
    ratelimit_url: str = "memory://"
    auth_rate_limit_ip: str = "60/minute"
    """Sign-in attempts (signup, login, refresh, forgot, OIDC) per client address."""
    auth_rate_limit_account: str = "10/minute"
    """Sign-in attempts per email address or account."""
    smtp_url: str = ""
    """``smtp://user:password@host:587`` (STARTTLS) or ``smtps://...:465``; empty: log mails."""
    mail_from: str = "Roost <no-reply@localhost>"
    reset_password_url: str = ""
    """Link in password-reset mails, ``{token}`` replaced (default: the server's own page)."""
    verify_email_url: str = ""
    """Link in verification mails, ``{token}`` replaced (default: the server's own page)."""
    oidc_apple_client_ids: list[str] = []
    oidc_google_client_ids: list[str] = []
    oidc_providers: dict[str, OIDCProvider] = {}
    """More providers by name (the built-in ``apple`` and ``google`` need only client ids)."""

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret_key must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("auth_rate_limit_ip", "auth_rate_limit_account")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parsed = limits.parse_many(value)
        except ValueError:
            parsed = []
        if len(parsed) != 1 or parsed[0].amount < 1:
            raise ValueError("a rate limit looks like '10/minute' or '100 per hour'")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'roost.db'}")
        if not self.cache_url:
            alone = self.database_url.startswith("sqlite:") and self.workers == 1
            object.__setattr__(self, "cache_url", "memory://" if alone else "none")
        postgres = ("postgresql://", "postgres://")
        if self.database_replica_urls and not (
            self.database_url.startswith(postgres)
            and all(url.startswith(postgres) for url in self.database_replica_urls)
        ):
            raise ValueError("database_replica_urls are PostgreSQL replicas of database_url")
        return self

    def identity_providers(self) -> dict[str, OIDCProvider]:
        """Every provider that has at least one client id, by name."""
        providers = {
            "apple": APPLE.model_copy(update={"client_ids": self.oidc_apple_client_ids}),
            "google": GOOGLE.model_copy(update={"client_ids": self.oidc_google_client_ids}),
            **self.oidc_providers,
        }
        return {name: p for name, p in providers.items() if p.client_ids}

    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("ROOST_CONFIG", "roost.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    def with_secret(self) -> Settings:
        """These settings with a secret key: the given one, or the data folder's (made once)."""
        if self.secret_key is not None:
            return self
        return self.model_copy(
            update={"secret_key": SecretStr(load_or_create_secret(self.data_dir))}
        )


def load_or_create_secret(data_dir: Path) -> str:
    """Read ``data_dir/secret_key``, creating it (mode 0600, atomically) on first use."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return path.read_text().strip()
