"""Has any process committed to this SQLite database since we last looked? Asked without a query.

In WAL mode every commit rewrites the WAL index's header, kept in the `-shm` file that every connection
to the database maps into memory (https://www.sqlite.org/walformat.html, "The WAL-Index Header"): two
48-byte copies holding a change counter, the last valid frame and the WAL's salts. The writer updates
the second copy, then the first; a reader that finds them equal has a consistent header. So 96 bytes
read from our own read-only mapping tell whether anything was committed since they were last seen,
which costs a fraction of a microsecond where the smallest read transaction costs several.

An answer of None means "unknown": not in WAL mode, no `-shm` file (yet), or a header caught half
written. The caller then reads the database, as it would without this.

The mapping is safe to hold while this process keeps a connection to the database open (SQLite shrinks
the file only when it finds no other connection using it), so the reader that owns the connection
opens and closes it.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

HEADER_COPY = 48
HEADER_BYTES = 2 * HEADER_COPY


class WalMarker:
    def __init__(self, database: Path) -> None:
        self._path = Path(f"{database}-shm")
        self._map: mmap.mmap | None = None
        self._unavailable = False

    def open(self) -> None:
        """Map the header; call once the owner's connection has read (so the file exists and is set up)."""
        if self._map is not None or self._unavailable:
            return
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except OSError:
            return  # not in WAL mode, or not yet: asked again at the owner's next open
        try:
            if os.fstat(fd).st_size < HEADER_BYTES:
                return
            self._map = mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            self._unavailable = True  # a file system without shared mappings: read the database instead
        finally:
            os.close(fd)

    def read(self) -> bytes | None:
        """The header as it stands, or None when unknown."""
        mapped = self._map
        if mapped is None:
            return None
        header = mapped[:HEADER_BYTES]
        if header[:HEADER_COPY] != header[HEADER_COPY:]:
            return None  # a commit is writing it right now
        return header

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
