"""Settings: every knob in one place, read from MESSAGESERVICE_* environment variables or .env.

Every value is checked when Settings is built: a bad one raises `SettingsError` naming its variable,
so that `serve` and `worker` stop at start with one line instead of a loop dying later.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MESSAGESERVICE_"
# The async drivers we ship, after normalize_database_url.
KNOWN_DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
# Never echoed in an error line.
SECRET_FIELDS = frozenset({"database_url", "secret_key", "metrics_token"})
# A bearer token for /metrics shorter than this is refused at start: it would be guessable.
METRICS_TOKEN_MIN_LENGTH = 16

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
# The longest a provider may take to report a final status before its message counts as stuck.
MAX_STUCK_AFTER_SECONDS = 366 * 86400.0


def normalize_database_url(url: str) -> str:
    """Accept the URLs people type and pick the async driver we ship."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


class SettingsError(ValueError):
    """A setting has a value the server cannot run with; `str()` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class MetricsAccess(StrEnum):
    OFF = "off"  # no /metrics (404), nothing counted
    LOOPBACK = "loopback"  # open to clients on this machine only
    TOKEN = "token"  # from anywhere, with `Authorization: Bearer <MESSAGESERVICE_METRICS_TOKEN>`


class LogFormat(StrEnum):
    TEXT = "text"  # for people at a terminal
    JSON = "json"  # one object per line, for a log shipper


class DeliveryProfile(StrEnum):
    RELIABLE = "reliable"  # at-least-once, with retries
    STRICT = "strict"  # as Bitrix24: one attempt, the answer ignored


def check_networks(text: str) -> None:
    """The rule of delivery/ssrf.py parse_networks: comma-separated CIDRs or bare addresses."""
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(f"{part!r} is not a network like 10.0.0.0/8 or fd00::/8") from None


def check_schedule(text: str) -> None:
    """Each delay follows the rule of a sender's own schedule (core/schedules.py parse_schedule).

    Its cap on the number of steps, meant for what apps send, does not bind the operator, and an
    empty schedule is allowed: one attempt, no retries.
    """
    # Imported late: config is imported before everything else.
    from messageservice.core.schedules import MAX_SCHEDULE_DELAY, parse_schedule

    if text.strip() and any(parse_schedule(part) is None for part in text.split(",")):
        rule = f"comma-separated delays in seconds, each from 0 to {MAX_SCHEDULE_DELAY:g}"
        raise ValueError(f"{text!r} is not a retry schedule: {rule}")


def check_database_url(url: str) -> None:
    normalized = normalize_database_url(url)
    scheme, found, _ = normalized.partition("://")
    if not found:
        raise ValueError("not a URL like sqlite:///var/messageservice.db or postgresql://user@host/db")
    if scheme not in KNOWN_DATABASE_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; use sqlite:///path or postgresql://user@host/db")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(normalized)
    except (ArgumentError, ValueError):
        raise ValueError("not a valid database URL") from None


def settings_error(exc: ValidationError) -> SettingsError:
    """The first problem pydantic found, as one line naming the environment variable."""
    error = exc.errors(include_url=False)[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    problem = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] != "value_error" and field not in SECRET_FIELDS:
        problem += f" (got {error['input']!r})"
    problem = problem[:1].lower() + problem[1:]
    return SettingsError(ENV_PREFIX + field.upper(), " ".join(problem.split()))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", allow_inf_nan=False)

    database_url: str = "sqlite:///var/messageservice.db"
    # Every database connection one process may open, all pools and the LISTEN connection together
    # (store/budget.py splits it). A stock PostgreSQL allows 100 for all processes.
    db_max_connections: PositiveInt = 10
    # Where clients reach this server; written into client_endpoint. Unset: `serve` records its own.
    public_url: str | None = None
    # Folder for the SQLite file, the encryption key and the TLS certificate.
    data_dir: Path = Path("var")
    # Fernet key for secrets that must be readable again (application tokens). Unset: var/secret.key.
    secret_key: str | None = None

    # Leaky bucket per app or webhook, for the whole installation (Bitrix: 50 deep, drains 2/s). Ours lets
    # one app use a fair part of a small server, not all of it.
    rate_limit_burst: PositiveInt = 1_000
    rate_limit_per_second: PositiveFloat = 200.0
    # How often each process settles its share of the buckets with the database (rest/limiter.py).
    rate_limit_settle_seconds: PositiveFloat = 0.25
    # Proxies whose X-Forwarded-For names the client (CIDRs, comma-separated); empty: trust none.
    trusted_proxies: str = ""
    # Seconds of method time per app and method in 10 minutes; 0 switches the limit off (as on the box).
    operating_limit_seconds: NonNegativeFloat = 0.0

    max_body_bytes: PositiveInt = 1_048_576
    # A request's whole body must arrive within this many seconds of its start, else 408 and the
    # connection is closed (uvicorn's keep-alive timeout does not cover a half-sent body).
    body_timeout_seconds: PositiveFloat = 30.0
    # Bitrix serves webhooks over https only; local development needs plain http.
    webhook_require_https: bool = False

    # /oauth/authorize/ knows a user only by a console sign-in (admins); otherwise codes go to the admin
    # who installed the app. True lets `user_id=N` pick any user: local development only.
    oauth_trust_user_id: bool = False

    # Console sign-ins end after this long without a request, and this long after signing in whatever happens.
    console_session_idle_seconds: PositiveInt = 1800
    console_session_max_seconds: PositiveInt = 8 * 3600

    access_token_ttl: PositiveInt = 3600
    refresh_token_ttl: PositiveInt = 180 * 24 * 3600
    auth_code_ttl: PositiveInt = 30

    # ONAPPINSTALL and other app events: delays between attempts, seconds.
    event_retry_schedule: str = "5,30,120,600,3600"
    event_timeout_seconds: PositiveFloat = 10.0
    # While idle the server looks for events queued by other processes (the CLI) this often.
    event_sweep_seconds: PositiveFloat = 10.0

    # Deliveries to HANDLERs. Delays in seconds between attempts; their count + 1 is the attempt limit.
    retry_schedule: str = "1,5,30,120,600,1800,3600"
    retry_max_age_seconds: PositiveFloat = 86_400.0
    # Retry-After beyond this is capped, so one answer cannot park a message for days.
    retry_after_cap_seconds: NonNegativeFloat = 3600.0
    handler_timeout_seconds: PositiveFloat = 10.0
    # A claim's lease is twice the timeout (a wait for a slot, then the call) plus this margin for the
    # write-back; what a killed process held is claimed again after it. Tests shorten it to wait less.
    lease_margin_seconds: PositiveFloat = 10.0
    # "reliable": at-least-once with retries; "strict": as Bitrix24, one attempt and the answer ignored.
    delivery_profile: DeliveryProfile = DeliveryProfile.RELIABLE
    dispatch_concurrency: PositiveInt = 64
    # Whether `serve` also delivers; false when `messageservice worker`s do it, so that the API's event
    # loop serves requests only (PostgreSQL scale-out; on SQLite a worker only finds work on its sweep).
    serve_dispatch: bool = True
    # Per app and handler origin: calls in flight for the whole installation (live dispatchers split it,
    # delivery/shared.py), and the breaker (consecutive failures to open, cool-down).
    handler_concurrency: PositiveInt = 32
    breaker_failures: PositiveInt = 5
    breaker_cooldown_seconds: NonNegativeFloat = 30.0
    dispatch_batch_size: PositiveInt = 100
    # While idle the dispatcher looks for messages queued by other processes this often (SQLite).
    dispatch_sweep_seconds: PositiveFloat = 1.0
    # While calls are in flight the dispatcher claims and writes back at most once per tick, so that
    # a steady trickle shares transactions instead of paying one claim and one write per message.
    dispatch_tick_seconds: NonNegativeFloat = 0.005
    # On SIGTERM (a restart): how long `serve` and `worker` let the REST requests and HANDLER calls under
    # way finish before they stop. What was claimed but not started is handed back at once; a call still
    # running after this is cut off and retried when its lease runs out (at least once). 0: stop at once.
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 15.0
    # Finished messages older than this are purged (Bitrix24: 14 days); 0 keeps them forever.
    retention_days: NonNegativeFloat = 14.0
    # HANDLERs may resolve to these networks although they are not public (CIDRs, comma-separated; empty:
    # none). Unset: loopback while the server listens on loopback only, none once it listens beyond it.
    allowed_handler_networks: str | None = None
    # A message whose HANDLER accepted it but whose provider reported no final status (delivered, undelivered,
    # failed) this many seconds later is stuck (core/stuck.py); a sender may set its own. 0: never stuck.
    stuck_after_seconds: NonNegativeFloat = 3600.0

    # Prometheus metrics at /metrics (serve) and on `worker --metrics-port`: off, loopback clients only, or
    # anyone presenting the bearer token below.
    metrics: MetricsAccess = MetricsAccess.LOOPBACK
    metrics_token: str | None = None
    # Log lines as plain text or as JSON objects (one per line, with request and message ids).
    log_format: LogFormat = LogFormat.TEXT

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise settings_error(exc) from None
        if self.metrics == MetricsAccess.TOKEN and len(self.metrics_token or "") < METRICS_TOKEN_MIN_LENGTH:
            raise SettingsError(
                ENV_PREFIX + "METRICS_TOKEN",
                f"MESSAGESERVICE_METRICS=token needs a token of at least {METRICS_TOKEN_MIN_LENGTH} characters",
            )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        check_database_url(value)
        return value

    @field_validator("public_url", "secret_key", "metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None:
            from cryptography.fernet import Fernet

            try:
                Fernet(value)
            except ValueError:
                raise ValueError("not a Fernet key (32 url-safe base64-encoded bytes)") from None
        return value

    @field_validator("retry_schedule", "event_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        check_schedule(value)
        return value

    @field_validator("allowed_handler_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        if value is not None:
            check_networks(value)
        return value

    @field_validator("console_session_idle_seconds", "console_session_max_seconds")
    @classmethod
    def _session_seconds(cls, value: int) -> int:
        if value > 366 * 86400:
            raise ValueError("must be at most a year (31622400 seconds)")
        return value

    @field_validator("stuck_after_seconds")
    @classmethod
    def _stuck_after(cls, value: float) -> float:
        if value > MAX_STUCK_AFTER_SECONDS:
            raise ValueError(f"must be at most {MAX_STUCK_AFTER_SECONDS:g} seconds (a year); 0 switches it off")
        return value

    @property
    def retry_delays(self) -> list[float]:
        return [float(part) for part in self.retry_schedule.split(",") if part.strip()]

    @property
    def async_database_url(self) -> str:
        return normalize_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")

    @property
    def event_retry_delays(self) -> list[float]:
        return [float(part) for part in self.event_retry_schedule.split(",") if part.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
