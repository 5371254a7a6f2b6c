"""Console sign-in: login names and password hashes on users, checks, and a brake on guessing."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from sqlalchemy import select, update

from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.passwords import check_new_password, hash_password, new_password, password_matches
from messageservice.store.errors import StoreConflict
from messageservice.store.tables import users

LOGIN_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
# A hash to check against when the login is unknown, so that timing does not tell which logins exist.
_DUMMY_HASH = hash_password("not a real password")


@dataclass(frozen=True)
class Operator:
    """A signed-in console user; `stamp` changes whenever the password does, ending older sessions."""

    id: int
    name: str
    login: str
    stamp: str


def _stamp(password_hash: str) -> str:
    return password_hash[-16:]


def check_login(login: str) -> str:
    login = login.strip()
    if not LOGIN_PATTERN.match(login):
        raise CoreError("ERROR_ARGUMENT", "A login has 1 to 64 letters, digits, dots, dashes, underscores or @.")
    return login


async def set_password(core: Core, user_id: int, password: str, login: str | None = None) -> None:
    """Give a user a password (and a login, if given or not yet set: `user<id>`)."""
    problem = check_new_password(password)
    if problem is not None:
        raise CoreError("ERROR_ARGUMENT", problem)
    values: dict[str, str] = {"password_hash": await asyncio.to_thread(hash_password, password)}
    async with core.store.transaction() as conn:
        row = (await conn.execute(select(users.c.login).where(users.c.id == user_id))).first()
        if row is None:
            raise CoreError("ERROR_ARGUMENT", f"user {user_id} does not exist")
        if login is not None:
            values["login"] = check_login(login)
        elif row.login is None:
            values["login"] = f"user{user_id}"
        try:
            await conn.execute(update(users).where(users.c.id == user_id).values(**values))
        except StoreConflict:
            raise CoreError("ERROR_ARGUMENT", f"the login {values.get('login')!r} is taken") from None


async def authenticate(core: Core, login: str, password: str) -> Operator | None:
    """The operator for a login and password, if they match an active admin; else None."""
    async with core.store.connection() as conn:
        row = (
            await conn.execute(
                select(
                    users.c.id, users.c.name, users.c.login, users.c.password_hash, users.c.is_admin, users.c.active
                ).where(users.c.login == login.strip())
            )
        ).first()
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
    matches = await asyncio.to_thread(password_matches, password, stored)
    if row is None or not row.password_hash or not matches or not row.is_admin or not row.active:
        return None
    return Operator(row.id, row.name, row.login, _stamp(row.password_hash))


async def current_operator(core: Core, user_id: int, stamp: str) -> Operator | None:
    """Re-checked on every console request: a demoted, deactivated or re-passworded admin is out at once."""
    async with core.store.connection() as conn:
        row = (
            await conn.execute(
                select(users.c.id, users.c.name, users.c.login, users.c.password_hash).where(
                    users.c.id == user_id, users.c.is_admin, users.c.active
                )
            )
        ).first()
    if row is None or not row.password_hash or _stamp(row.password_hash) != stamp:
        return None
    return Operator(row.id, row.name, row.login, stamp)


@dataclass
class LoginBrake:
    """Failed sign-ins per client address and login: after `allowed` failures in `window` seconds,
    further attempts are refused until the window has passed; one address trying many logins is
    stopped after `allowed_per_address`. In memory, per process."""

    allowed: int = 5
    allowed_per_address: int = 50
    window: float = 300.0
    failures: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        kept = [t for t in self.failures.get(key, []) if now - t < self.window]
        if kept:
            self.failures[key] = kept
        else:
            self.failures.pop(key, None)
        return kept

    def wait_seconds(self, address: str, login: str, now: float | None = None) -> int:
        """0 when an attempt may go ahead; else how long to wait."""
        now = time.time() if now is None else now
        waits = [0]
        for key, allowed in (((address, login.lower()), self.allowed), ((address, ""), self.allowed_per_address)):
            recent = self._recent(key, now)
            if len(recent) >= allowed:
                waits.append(max(1, int(recent[len(recent) - allowed] + self.window - now) + 1))
        return max(waits)

    def failed(self, address: str, login: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if len(self.failures) > 10_000:
            self.failures.clear()  # a flood of made-up logins must not grow memory without bound
        self.failures.setdefault((address, login.lower()), []).append(now)
        self.failures.setdefault((address, ""), []).append(now)

    def succeeded(self, address: str, login: str) -> None:
        self.failures.pop((address, login.lower()), None)


async def ensure_admin_login(core: Core, password: str | None = None) -> str | None:
    """Give admin user 1 the login `admin` and a password, once: returns the password set, or None if
    user 1 already had one (a second `init` changes nothing)."""
    async with core.store.connection() as conn:
        row = (await conn.execute(select(users.c.password_hash).where(users.c.id == 1))).first()
    if row is None or row.password_hash:
        return None
    chosen = password or new_password()
    await set_password(core, 1, chosen, login="admin")
    return chosen
