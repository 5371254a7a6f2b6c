"""The connection budget: one number bounds every connection a process opens, split here and only here.

A stock PostgreSQL allows 100 connections, and runs best with a few per core. The README's scale-out
topology (an API `serve`, two `worker`s, the CLI) must fit in it with room to spare, so each process
gets a small budget (MESSAGESERVICE_DB_MAX_CONNECTIONS, 10 by default) and its pools wait for a free
connection rather than open another.
"""

from __future__ import annotations

from dataclasses import dataclass

from messageservice.config import SettingsError

VARIABLE = "MESSAGESERVICE_DB_MAX_CONNECTIONS"
MINIMUM = 3  # one for each use below


@dataclass(frozen=True)
class Budget:
    # SQLAlchemy's pool: transactions, console and report reads (no overflow beyond it).
    engine: int
    # The bare driver's pool: hot-path reads (tokens, webhooks) and the single-statement send.
    fast: int
    # The dedicated LISTEN connection: delivery wake-ups and the REST cache's change notices (every process).
    listener: int

    @property
    def total(self) -> int:
        return self.engine + self.fast + self.listener


def split(max_connections: int) -> Budget:
    """Divide a process's connections: one listener, a third of the rest fast, the others the engine's."""
    if max_connections < MINIMUM:
        raise SettingsError(VARIABLE, f"must be at least {MINIMUM} (got {max_connections})")
    rest = max_connections - 1
    fast = max(1, rest // 3)
    return Budget(engine=rest - fast, fast=fast, listener=1)
