"""What one /metrics scrape costs as the messages table grows: the installation-state read, timed.

    .venv/bin/python bench/scrape_cost.py [--sizes 10000,100000,1000000] [--rounds 5] [--postgres]

Fills a fresh database with the given number of finished messages (bench/prefill.py; 100 stuck and 100
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

from prefill import prefill
from sqlalchemy import text

from messageservice.config import Settings
from messageservice.core.context import Core
from messageservice.observability.exposition import render
from messageservice.store.db import migrate

APP = """
INSERT INTO apps (id, client_id, client_secret_hash, name, url, scopes, version, status, installed, language_id,
    created_at)
VALUES (1, 'bench', 'x', 'bench', 'http://127.0.0.1:9/', 'messageservice', 1, 'L', {true}, 'en', 0)
"""


async def measure(settings: Settings, sizes: list[int], rounds: int) -> None:
    migrate(settings.database_url)
    core = Core.open(settings)
    now = time.time()
    try:
        async with core.store.transaction() as conn:
            true = "true" if settings.database_url.startswith("postgresql") else "1"
            await conn.execute(text(APP.format(true=true)))
        have = 0
        for size in sizes:
            # 100 stuck messages and 100 dead letters at every size: what a healthy installation keeps.
            await prefill(
                core, size - have, app_id=1, message_from="bench|sms", created_at=now - 7200, stuck=100, dead=100
            )
            have = size
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
