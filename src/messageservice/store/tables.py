"""The schema. Times are Unix seconds (float) so both engines compare and sort them the same way."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

portal = Table(
    "portal",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("domain", String(255), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("public_url", String(1000)),
    Column("created_at", Float, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("last_name", String(255), nullable=False, default=""),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("time_zone", String(64), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    # The console's sign-in: a login name and a salted scrypt hash (never the password itself).
    Column("login", String(64), unique=True),
    Column("password_hash", String(255)),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # sha256 of the secret path segment; the secret itself is shown once, at creation.
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("scopes", Text, nullable=False),
    Column("title", String(255), nullable=False, default=""),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", Float, nullable=False),
)

apps = Table(
    "apps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(128), nullable=False, unique=True),
    Column("client_secret_hash", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("url", String(1000), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("status", String(1), nullable=False, default="L"),
    Column("installed", Boolean, nullable=False, default=False),
    # Sent in every event and HANDLER call, so it is encrypted rather than hashed.
    Column("application_token_enc", Text),
    Column("language_id", String(8), nullable=False, default="en"),
    Column("created_at", Float, nullable=False),
    Column("installed_at", Float),
    # The admin who installed the app: /oauth/authorize/ issues codes for this user unless told otherwise.
    Column("installed_by", Integer),
    # Standard Webhooks secret (whsec_...), encrypted; set, HANDLER calls carry signature headers.
    Column("signing_secret_enc", Text),
)

auth_codes = Table(
    "auth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", Float, nullable=False),
    # Where the code was sent (RFC 6749 4.1.3): a token request naming another redirect_uri is refused.
    Column("redirect_uri", String(1000)),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", Float, nullable=False),
    # The refresh family it was issued in (NULL: HANDLER calls' tokens); found through app_id's index.
    Column("family", String(32)),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", Float, nullable=False),
    # Every token refreshed from one code or install shares a family; a spent token is kept (used_at set)
    # until it expires, so that presenting it again is seen as a replay and revokes the family.
    Column("family", String(32)),
    Column("used_at", Float),
)

senders = Table(
    "senders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("handler", String(1000), nullable=False),
    # The provider's own retry delays (RETRY_SCHEDULE, our extension); NULL: MESSAGESERVICE_RETRY_SCHEDULE.
    Column("retry_schedule", String(200)),
    # Seconds after which an accepted message without a final status is stuck (core/stuck.py); NULL: the setting.
    Column("stuck_after_seconds", Float),
    Column("author_id", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("app_id", "code", name="uq_senders_app_id_code"),
)

sender_langs = Table(
    "sender_langs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender_id", Integer, ForeignKey("senders.id", ondelete="CASCADE"), nullable=False),
    # A language id such as "en", or "**" for the default Bitrix falls back to.
    Column("language_id", String(8), nullable=False),
    Column("name", String(500), nullable=False),
    Column("description", Text),
    Column("app_name", String(500)),
    UniqueConstraint("sender_id", "language_id", name="uq_sender_langs_sender_id_language_id"),
)

app_events = Table(
    "app_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(64), nullable=False),
    Column("url", String(1000), nullable=False),
    # The exact form-encoded body, built once so that every attempt sends the same bytes; encrypted.
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False, default="pending", index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The 32-hex id the HANDLER receives and status.update names (Bitrix's EXTERNAL_ID); stable across retries.
    Column("message_id", String(32), nullable=False, unique=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    # Kept when the sender is deleted (SET NULL): the message then fails as Bitrix's does.
    Column("sender_id", Integer, ForeignKey("senders.id", ondelete="SET NULL")),
    Column("sender_code", String(128), nullable=False),
    Column("message_from", String(300), nullable=False),
    Column("author_id", Integer, nullable=False),
    Column("module_id", String(16), nullable=False),
    # module_id's own fields (bindings, or workflow and document ids) as JSON, sent first in the body.
    Column("headers", Text, nullable=False),
    Column("message_to", String(255), nullable=False),
    Column("message_body", Text, nullable=False),
    Column("status_id", Integer, nullable=False),
    Column("exec_error", Text),
    # Who asked (app:N or webhook:N) and their key: a retried send with the same key sends nothing new.
    Column("idempotency_scope", String(64)),
    Column("idempotency_key", String(255)),
    Column("created_at", Float, nullable=False, index=True),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_messages_idempotency"),
)

# Messages still "sent" (13, statuses.SENT), by when they got there: what counting stuck messages reads.
Index(
    "ix_messages_sent",
    messages.c.updated_at,
    sqlite_where=messages.c.status_id == 13,
    postgresql_where=messages.c.status_id == 13,
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("message_id", Integer, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    # pending: waiting or leased (next_attempt_at is then the lease's end); done; dead (given up).
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("http_status", Integer),
    Column("error", Text),
    Column("response_head", Text),
)

status_reports = Table(
    "status_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True),
    # The wire value as reported (queued, sent, delivered, ...) or the dispatcher's own event.
    Column("status", String(32), nullable=False),
    Column("status_id", Integer, nullable=False),
    # Whether the report moved the current status (false for late, out-of-order or repeated ones).
    Column("applied", Boolean, nullable=False),
    Column("reporter_user_id", Integer),
    Column("reporter_app_id", Integer),
    Column("reported_at", Float, nullable=False),
)

# Shared delivery state (migration 0006): what every dispatcher process must agree on.

# A circuit breaker per (app, handler origin), written when it opens or closes; every dispatcher
# adopts it within a second, and the console shows it from any process.
delivery_breakers = Table(
    "delivery_breakers",
    metadata,
    Column("app_id", Integer, primary_key=True),  # no foreign key: a breaker may outlive its app briefly
    Column("origin", String(1000), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("open_until", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Live dispatchers (a heartbeat a second): each takes max(1, limit // live) of a handler's concurrency.
dispatchers = Table(
    "dispatchers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

# Shared limits (store/limits.py): Bitrix's leaky bucket per app or webhook, one row per key for the whole
# installation. `level` drains at the configured rate from `updated_at`; processes reserve tokens from it.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("level", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # What the last reservation granted: the upsert's RETURNING reads it (both engines return new values only).
    Column("granted", Float, nullable=False),
)

# The console's sign-in brake: failures per account ("login:<name>") and per client address ("address:<ip>").
signin_brakes = Table(
    "signin_brakes",
    metadata,
    Column("key", String(160), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", Float, nullable=False),
)

# Bitrix's operating-time limit: seconds of method time per caller, method and minute, added up by every process.
operating_seconds = Table(
    "operating_seconds",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("method", String(100), primary_key=True),
    Column("minute", Integer, primary_key=True),
    Column("seconds", Float, nullable=False),
)

# Console sign-ins (migration 0008): the cookie carries a random token, the database only its sha256.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
)

# One row (id 1), moved by every change to what the REST cache holds, on SQLite (migration 0011, cache/changes.py).
cache_generations = Table(
    "cache_generations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", Integer, nullable=False),
)
