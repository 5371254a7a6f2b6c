"""`serve --workers N`: N API processes answering on one port, for more than one core (PostgreSQL only).

The parent binds the socket once and hands it to N children (uvicorn's process supervisor): the
kernel spreads the connections over them, each child accepting one at a time (`SINGLE_ACCEPT`). It
restarts a child that dies and forwards SIGTERM/SIGINT to every child, each of which stops as a single
`serve` does (requests under way finish, delivery under way finishes within
MESSAGESERVICE_SHUTDOWN_GRACE_SECONDS); the parent exits once all have.

What the processes share lives in the database: the rate limits (store/limits.py), the outbox (claims
with SKIP LOCKED), breakers and each handler's concurrency. SQLite has a single writer for all of them:
more processes would queue behind it, so they are refused.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, Any

from messageservice.cli.errors import InputError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from messageservice.config import Settings

SINGLE_ACCEPT = "UV_TCP_SINGLE_ACCEPT"


def check_workers(settings: Settings, workers: int) -> None:
    """One line (exit 2) for a count that cannot work, before anything starts."""
    if workers < 1:
        raise InputError(f"--workers {workers}: at least 1")
    if workers > 1 and not settings.database_url.startswith("postgresql"):
        raise InputError(
            f"--workers {workers} needs PostgreSQL: SQLite has one writer, so more API processes would only "
            "wait for each other. Run one `serve` (or set MESSAGESERVICE_DATABASE_URL to a PostgreSQL database)."
        )


def child_app(settings: Settings, host: str, own_level: str) -> Starlette:
    """The app of one child process (a spawned interpreter: logging is set up again)."""
    from messageservice.app import create_app
    from messageservice.observability.jsonlog import configure_logging

    configure_logging(settings.log_format, own_level, access_level=own_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return create_app(settings, listening=[host])


def run_processes(settings: Settings, host: str, port: int, workers: int, own_level: str, **options: Any) -> None:
    """Bind once, run `workers` children until a signal stops them all."""
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    config = Config(
        functools.partial(child_app, settings, host, own_level),
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # A child that does not answer the parent's ping in this time is killed and started again: a
        # child starting on a busy machine (imports, the first connections) must not look hung.
        timeout_worker_healthcheck=60,
        **options,
    )
    sock = config.bind_socket()
    # Listening from now on: connections wait in the backlog while a child starts (or restarts) rather
    # than being refused.
    sock.listen(config.backlog)
    # The children share one listening socket, and libuv (uvloop) accepts every waiting connection in
    # one go: clients that connect at once (a pool opening, a proxy's first connections) all went to
    # the child that woke first. With this, libuv yields after each accept, so the other children take
    # their share. Spawned children inherit it; an operator's own value is kept.
    os.environ.setdefault(SINGLE_ACCEPT, "1")
    Multiprocess(config, sockets=[sock]).run()
