"""SQLite: a change counter every process on the host reads from shared memory, beside the database file.

The REST cache must drop what it holds as soon as any process changes a token, an app, a sender or a
webhook. Reading the database's own counter row for that cost one read transaction per REST request,
as much as the token read the cache saves. This counter lives in a small file (`<database>-changes`)
that every process maps into memory: reading it is a memory load, and moving it a few microseconds
under a file lock. The file is ours alone: SQLite never opens it, so opening and closing it cannot drop
SQLite's POSIX locks on its own files (which any close of a descriptor of those files would). It needs
what SQLite's WAL mode already needs, every process on one host (WAL's `-shm` index is shared memory too).

Writers move it before their transaction begins and again after it commits (cache/changes.py), so a
reader that sees the second move reads the committed state. If a process dies between its COMMIT and
the second move, or a commit is made without it, the counter row in the database is still read at
least once a second (cache/freshness.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import struct
from pathlib import Path

log = logging.getLogger("messageservice.store")

_VALUE = struct.Struct("<Q")
FILE_MODE = 0o600


def signal_path(database: Path) -> Path:
    return Path(f"{database}-changes")


class ChangeSignal:
    """The shared counter: `read()` costs a memory load; `move()` takes the file's lock."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            if os.fstat(self._fd).st_size < _VALUE.size:
                # Growing a file to the size it already has changes nothing, so racing processes agree.
                os.ftruncate(self._fd, _VALUE.size)
            self._map = mmap.mmap(self._fd, _VALUE.size)
        except BaseException:
            os.close(self._fd)
            raise

    @classmethod
    def beside(cls, database: Path) -> ChangeSignal | None:
        """The signal of the database at `database`; None where it cannot be made (the file's folder is
        read-only, say): then every request reads the database's counter row instead."""
        path = signal_path(database)
        try:
            return cls(path)
        except (OSError, ValueError) as exc:
            log.warning("cannot map %s (%s): every REST request reads the change counter from the database", path, exc)
            return None

    def read(self) -> int:
        return int(_VALUE.unpack_from(self._map)[0])

    def move(self) -> None:
        if self._map.closed:
            return  # the store closed under a change still ending (a stop): nothing reads it here any more
        # Locked: two processes moving it at once must not both write the same next value.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _VALUE.pack_into(self._map, 0, (self.read() + 1) % 2**64)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)
