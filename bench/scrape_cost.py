"""What one /metrics scrape costs as the messages table grows: the installation-state read, timed.

    .venv/bin/python bench/scrape_cost.py [--sizes 10000,100000,1000000] [--rounds 5] [--postgres]

Fills a fresh database with the given number of finished messages (5 senders; 100 stuck and 100
dead letters at every size), then times what a scrape does (`render`: the state read from the database and the page),
median over rounds. A scrape runs once per `scrape_interval` (15 s) in every process, so its time over
15 s is the share of a core that observing the installation's state takes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text

from messageservice.config import Settings
from messageservice.core.context import Core
from messageservice.observability.exposition import render
from messageservice.store.db import migrate

# Generated rows: one app, five senders, every message delivered (status 14) but the first 100, which are
# stuck (still sent, 13) and the next 100, dead letters: what a healthy installation keeps.
_FILL = """
WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i < {end})
INSERT INTO messages (message_id, app_id, sender_id, sender_code, message_from, author_id, module_id,
    headers, message_to, message_body, status_id, created_at, updated_at)
SELECT 'm' || i, 1, NULL, 'sms', 'bench|sms' || (i % 5), 1, 'crm', '{{}}', '+15550000000',
    'a message body of a typical length, about sixty characters..', CASE WHEN i <= 100 THEN 13 ELSE 14 END,
    {now} - 7200, {now} - 7200
FROM n
"""
_DELIVERIES = """
INSERT INTO deliveries (message_id, state, attempts, next_attempt_at, last_error, created_at)
SELECT id, CASE WHEN id BETWEEN 101 AND 200 THEN 'dead' ELSE 'done' END, 1, {now}, NULL, {now} FROM messages
WHERE id > {after}
"""
_APP = """
INSERT INTO apps (id, client_id, client_secret_hash, name, url, scopes, version, status, installed, language_id,
    created_at)
VALUES (1, 'bench', 'x', 'bench', 'http://127.0.0.1:9/', 'messageservice', 1, 'L', {true}, 'en', 0)
"""


async def fill(core: Core, start: int, end: int, now: float) -> None:
    async with core.store.transaction() as conn:
        after = (await conn.execute(text("SELECT coalesce(max(id), 0) FROM messages"))).scalar_one()
        step = 100_000
        for low in range(start, end + 1, step):
            high = min(end, low + step - 1)
            await conn.execute(text(_FILL.format(start=low, end=high, now=now)))
        await conn.execute(text(_DELIVERIES.format(now=now, after=after)))


async def measure(settings: Settings, sizes: list[int], rounds: int) -> None:
    migrate(settings.database_url)
    core = Core.open(settings)
    now = time.time()
    try:
        async with core.store.transaction() as conn:
            true = "true" if settings.database_url.startswith("postgresql") else "1"
            await conn.execute(text(_APP.format(true=true)))
        have = 0
        for size in sizes:
            await fill(core, have + 1, size, now)
            have = size
            if not settings.is_sqlite:
                async with core.store.connection() as conn:
                    await conn.execute(text("COMMIT"))
                    await conn.execute(text("VACUUM ANALYZE messages, deliveries"))
            await render(core)  # warm the page cache as a running server's would be
            timings = []
            for _ in range(rounds):
                started = time.perf_counter()
                await render(core)
                timings.append(time.perf_counter() - started)
            scrape_ms = statistics.median(timings) * 1000
            print(
                f"{size:>9,} messages: one scrape {scrape_ms:8.1f} ms (rounds "
                f"{', '.join(f'{t * 1000:.1f}' for t in timings)}); "
                f"{scrape_ms / 15_000 * 100:.2f}% of a core per process at one scrape per 15 s",
                flush=True,
            )
    finally:
        await core.close()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="on a PostgreSQL of its own (default: a SQLite file)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = f"sqlite:///{Path(tmp) / 'scrape.db'}"
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.postgres import TempPostgres

            server = TempPostgres(durable=True).start()
            stack.callback(server.stop)
            url = server.url()
        print(f"scrape cost on {'PostgreSQL' if args.postgres else 'SQLite'}, median of {args.rounds} rounds:")
        asyncio.run(measure(Settings(database_url=url, data_dir=tmp), sizes, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
