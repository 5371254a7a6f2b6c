"""Settings: every knob in one place, read from MESSAGESERVICE_* environment variables or .env."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESSAGESERVICE_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///var/messageservice.db"
    # Connections per server process (PostgreSQL); size it to the requests you expect in flight.
    db_pool_size: int = 32
    # Where clients reach this server; written into client_endpoint. Unset: `serve` records its own.
    public_url: str | None = None
    # Folder for the SQLite file, the encryption key and the TLS certificate.
    data_dir: Path = Path("var")
    # Fernet key for secrets that must be readable again (application tokens). Unset: var/secret.key.
    secret_key: str | None = None

    # Leaky bucket per app or webhook, for the whole installation (Bitrix: 50 deep, drains 2/s). Ours lets
    # one app use a fair part of a small server, not all of it.
    rate_limit_burst: int = 1_000
    rate_limit_per_second: float = 200.0
    # How often each process settles its share of the buckets with the database (rest/limiter.py).
    rate_limit_settle_seconds: float = 0.25
    # Proxies whose X-Forwarded-For names the client (CIDRs, comma-separated); empty: trust none.
    trusted_proxies: str = ""
    # Seconds of method time per app and method in 10 minutes; 0 switches the limit off (as on the box).
    operating_limit_seconds: float = 0.0

    max_body_bytes: int = 1_048_576
    # Bitrix serves webhooks over https only; local development needs plain http.
    webhook_require_https: bool = False

    # /oauth/authorize/ knows a user only by a console sign-in (admins); otherwise codes go to the admin
    # who installed the app. True lets `user_id=N` pick any user: local development only.
    oauth_trust_user_id: bool = False

    access_token_ttl: int = 3600
    refresh_token_ttl: int = 180 * 24 * 3600
    auth_code_ttl: int = 30

    # ONAPPINSTALL and other app events: delays between attempts, seconds.
    event_retry_schedule: str = "5,30,120,600,3600"
    event_timeout_seconds: float = 10.0
    # While idle the server looks for events queued by other processes (the CLI) this often.
    event_sweep_seconds: float = 10.0

    # Deliveries to HANDLERs. Delays in seconds between attempts; their count + 1 is the attempt limit.
    retry_schedule: str = "1,5,30,120,600,1800,3600"
    retry_max_age_seconds: float = 86_400.0
    # Retry-After beyond this is capped, so one answer cannot park a message for days.
    retry_after_cap_seconds: float = 3600.0
    handler_timeout_seconds: float = 10.0
    # "reliable": at-least-once with retries; "strict": as Bitrix24, one attempt and the answer ignored.
    delivery_profile: str = "reliable"
    dispatch_concurrency: int = 64
    # Whether `serve` also delivers; false when `messageservice worker`s do it, so that the API's event
    # loop serves requests only (PostgreSQL scale-out; on SQLite a worker only finds work on its sweep).
    serve_dispatch: bool = True
    # Per handler origin: calls in flight, and the breaker (consecutive failures to open, cool-down).
    handler_concurrency: int = 16
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    dispatch_batch_size: int = 100
    # While idle the dispatcher looks for messages queued by other processes this often (SQLite).
    dispatch_sweep_seconds: float = 1.0
    # While calls are in flight the dispatcher claims and writes back at most once per tick, so that
    # a steady trickle shares transactions instead of paying one claim and one write per message.
    dispatch_tick_seconds: float = 0.005
    # Finished messages older than this are purged (Bitrix24: 14 days); 0 keeps them forever.
    retention_days: float = 14.0
    # HANDLERs may resolve to these networks although they are not public (CIDRs, comma-separated).
    allowed_handler_networks: str = "127.0.0.0/8,::1/128"

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
