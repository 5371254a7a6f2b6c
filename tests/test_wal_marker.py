"""store/wal_marker.py: the WAL index header moves on every commit of any connection, and only then."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from messageservice.store.wal_marker import WalMarker


def database(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("SELECT count(*) FROM t").fetchall()
    return path, conn


def test_the_marker_moves_on_a_commit_and_not_on_reads_or_rollbacks(tmp_path: Path) -> None:
    path, conn = database(tmp_path)
    marker = WalMarker(path)
    marker.open()
    first = marker.read()
    assert first is not None
    conn.execute("SELECT * FROM t").fetchall()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("ROLLBACK")
    assert marker.read() == first
    conn.execute("INSERT INTO t VALUES (2)")
    second = marker.read()
    assert second is not None and second != first
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next commit starts the WAL over
    conn.execute("INSERT INTO t VALUES (3)")
    third = marker.read()
    assert third is not None and third not in (first, second)
    marker.close()
    conn.close()


def test_a_commit_by_another_process_moves_it(tmp_path: Path) -> None:
    path, conn = database(tmp_path)
    marker = WalMarker(path)
    marker.open()
    before = marker.read()
    code = f"import sqlite3; sqlite3.connect({str(path)!r}, isolation_level=None).execute('INSERT INTO t VALUES (9)')"
    subprocess.run([sys.executable, "-c", code], check=True)
    after = marker.read()
    assert before is not None and after is not None and after != before
    marker.close()
    conn.close()


def test_without_wal_it_answers_unknown(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    marker = WalMarker(path)
    marker.open()
    assert marker.read() is None
    conn.close()
