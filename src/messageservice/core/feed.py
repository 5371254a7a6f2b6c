"""The message stream as it happens: new messages and status changes, for `messages follow` (and a live view).

Polled, not pushed: a reader asks for what is new since its last look. New messages and status
history rows are found by id. On PostgreSQL ids are taken when a row is inserted but become visible
when its transaction commits, so a lower id can appear after a higher one; each look therefore goes
back OVERLAP ids and skips what it has already seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, func, select

from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.core.phones import normalize_phone
from messageservice.store.tables import messages, status_reports

OVERLAP = 1_000
# The history row every send writes for itself; the stream reports it as the "created" event instead.
CREATION = statuses.PENDING.name
PREVIEW = 200


@dataclass(frozen=True)
class FeedEvent:
    kind: str  # "created" or "status"
    at: float
    id: int  # the message's internal id
    message_id: str  # the 32-hex id the HANDLER gets
    message_from: str
    message_to: str
    status: str  # created: pending, as every message starts; status: the reported or dispatcher status
    applied: bool = True  # status: whether it moved the current status (false: late or repeated)
    reporter_user_id: int | None = None
    reporter_app_id: int | None = None
    text: str = ""  # created: the start of the body

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "EVENT": self.kind,
            "DATE": self.at,
            "ID": self.id,
            "MESSAGE_ID": self.message_id,
            "MESSAGE_FROM": self.message_from,
            "MESSAGE_TO": self.message_to,
            "STATUS": self.status,
        }
        if self.kind == "created":
            data["MESSAGE_BODY_START"] = self.text
        else:
            data.update(APPLIED=self.applied, USER_ID=self.reporter_user_id, APP_ID=self.reporter_app_id)
        return data


@dataclass
class MessageFeed:
    """A reader's position in the stream, optionally narrowed to one sender or recipient."""

    core: Core
    sender: str | None = None  # client_id|CODE or CODE
    recipient: str | None = None
    _messages_after: int = 0
    _reports_after: int = 0
    _seen_messages: set[int] = field(default_factory=set)
    _seen_reports: set[int] = field(default_factory=set)

    async def start(self) -> None:
        """Begin at the present: only what happens from now on is reported."""

        def newest(conn: Connection) -> None:
            # The recent ids count as seen, or the first poll's look back would report them as new.
            for table, seen in ((messages, self._seen_messages), (status_reports, self._seen_reports)):
                top = int(conn.execute(select(func.max(table.c.id))).scalar() or 0)
                seen.update(conn.execute(select(table.c.id).where(table.c.id > top - OVERLAP)).scalars())
                if table is messages:
                    self._messages_after = top
                else:
                    self._reports_after = top

        await self.core.store.read(newest)

    async def poll(self, limit: int = 500) -> list[FeedEvent]:
        """What happened since the last poll, oldest first (up to about `limit` of each kind at a time)."""
        return await self.core.store.read(lambda conn: self._poll(conn, limit))

    def _narrowed(self, query: Any) -> Any:
        if self.sender:
            column = messages.c.message_from if "|" in self.sender else messages.c.sender_code
            query = query.where(column == self.sender)
        if self.recipient:
            query = query.where(messages.c.message_to == normalize_phone(self.recipient.strip()))
        return query

    def _unseen(
        self, conn: Connection, table: Table, query: Any, after: int, seen: set[int], limit: int
    ) -> tuple[list[Any], int]:
        """Rows of `query` (ordered by `table`'s id) not yet seen, and the new high-water mark.

        The mark moves to the table's newest id even when the narrowing matched nothing, so that a
        reader following one quiet sender does not scan everyone's rows again on every look.
        """
        newest = int(conn.execute(select(func.max(table.c.id))).scalar() or 0)
        rows = conn.execute(query.where(table.c.id > max(0, after - OVERLAP)).limit(limit + OVERLAP)).all()
        fresh = [row for row in rows if row.id not in seen]
        seen.update(row.id for row in fresh)
        # A full page may have stopped short of the newest rows: the next look carries on from its end.
        mark = rows[-1].id if len(rows) == limit + OVERLAP else max(after, newest)
        for old in [i for i in seen if i <= mark - OVERLAP]:
            seen.discard(old)
        return fresh, mark

    def _poll(self, conn: Connection, limit: int) -> list[FeedEvent]:
        events: list[FeedEvent] = []
        created_query = self._narrowed(
            select(
                messages.c.id,
                messages.c.message_id,
                messages.c.message_from,
                messages.c.message_to,
                messages.c.created_at,
                func.substr(messages.c.message_body, 1, PREVIEW).label("text"),
            ).order_by(messages.c.id)
        )
        created, self._messages_after = self._unseen(
            conn, messages, created_query, self._messages_after, self._seen_messages, limit
        )
        for row in created:
            events.append(
                FeedEvent(
                    "created", row.created_at, row.id, row.message_id, row.message_from, row.message_to, CREATION,
                    text=row.text or "",
                )
            )  # fmt: skip
        reports_query = self._narrowed(
            select(
                status_reports,
                messages.c.message_id.label("external_id"),
                messages.c.message_from,
                messages.c.message_to,
            )
            .join(messages, messages.c.id == status_reports.c.message_id)
            .order_by(status_reports.c.id)
        )
        reports, self._reports_after = self._unseen(
            conn, status_reports, reports_query, self._reports_after, self._seen_reports, limit
        )
        for row in reports:
            if row.status == CREATION:
                continue
            events.append(
                FeedEvent(
                    "status", row.reported_at, row.message_id, row.external_id, row.message_from, row.message_to,
                    row.status, bool(row.applied), row.reporter_user_id, row.reporter_app_id,
                )
            )  # fmt: skip
        # A message's creation comes before its first status change even when their times tie.
        events.sort(key=lambda e: (e.at, e.kind != "created", e.id))
        return events
