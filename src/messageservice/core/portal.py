"""The portal: one server is one Bitrix24 portal with a domain, a member_id and users."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select, update

from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.secrets import new_hex
from messageservice.store.tables import portal, users

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Portal:
    domain: str
    member_id: str
    public_url: str

    @property
    def client_endpoint(self) -> str:
        return self.public_url.rstrip("/") + "/rest/"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    last_name: str
    is_admin: bool
    active: bool
    time_zone: str


def portal_from_row(row, override_url: str | None) -> Portal:  # type: ignore[no-untyped-def]
    if row is None:
        raise CoreError("PORTAL_NOT_INITIALIZED", "Run `messageservice init --domain D` first", status=500)
    return Portal(
        domain=row.domain,
        member_id=row.member_id,
        public_url=override_url or row.public_url or DEFAULT_PUBLIC_URL,
    )


async def init_portal(core: Core, domain: str, admin_name: str = "Admin") -> tuple[Portal, bool]:
    """Create the portal and its first admin (user 1). Returns (portal, created); idempotent."""
    domain = domain.strip()
    if not domain or len(domain) > 255:
        raise CoreError("ERROR_ARGUMENT", "domain must have 1 to 255 characters")
    async with core.store.transaction() as conn:
        row = (await conn.execute(select(portal).where(portal.c.id == 1))).first()
        if row is not None:
            return portal_from_row(row, core.settings.public_url), False
        now = core.clock()
        await conn.execute(insert(portal).values(id=1, domain=domain, member_id=new_hex(16), created_at=now))
        await conn.execute(
            insert(users).values(
                id=1, name=admin_name, last_name="", is_admin=True, active=True, time_zone="", created_at=now
            )
        )
        row = (await conn.execute(select(portal).where(portal.c.id == 1))).one()
    await _bump_user_sequence(core)
    return portal_from_row(row, core.settings.public_url), True


async def _bump_user_sequence(core: Core) -> None:
    # An explicit id=1 leaves PostgreSQL's serial at 1; move it so the next user gets 2.
    if core.store.features.sequences:
        from sqlalchemy import text

        async with core.store.transaction() as conn:
            await conn.execute(
                text("SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT MAX(id) FROM users))")
            )


async def get_portal(core: Core) -> Portal:
    async with core.store.connection() as conn:
        row = (await conn.execute(select(portal).where(portal.c.id == 1))).first()
    return portal_from_row(row, core.settings.public_url)


async def set_public_url(core: Core, url: str | None) -> None:
    async with core.store.transaction() as conn:
        await conn.execute(update(portal).where(portal.c.id == 1).values(public_url=url))


async def add_user(core: Core, name: str, *, admin: bool = False, last_name: str = "") -> User:
    if not name.strip() or len(name.strip()) > 255 or len(last_name) > 255:
        raise CoreError("ERROR_ARGUMENT", "names must have 1 to 255 characters")
    async with core.store.transaction() as conn:
        result = await conn.execute(
            insert(users)
            .values(
                name=name.strip(),
                last_name=last_name,
                is_admin=admin,
                active=True,
                time_zone="",
                created_at=core.clock(),
            )
            .returning(users)
        )
        return _user(result.one())


def _user(row) -> User:  # type: ignore[no-untyped-def]
    return User(row.id, row.name, row.last_name, bool(row.is_admin), bool(row.active), row.time_zone)


async def get_user(core: Core, user_id: int) -> User | None:
    async with core.store.connection() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    return _user(row) if row is not None else None


async def list_users(core: Core) -> list[User]:
    async with core.store.connection() as conn:
        rows = (await conn.execute(select(users).order_by(users.c.id))).all()
    return [_user(row) for row in rows]
