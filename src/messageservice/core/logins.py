"""Console sign-in: login names and password hashes on users, checks, and a brake on guessing."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import delete, select, update

from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.passwords import check_new_password, hash_password, new_password, password_matches
from messageservice.store.errors import StoreConflict
from messageservice.store.tables import console_sessions, users

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


def password_stamp(password_hash: str) -> str:
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
        # A new password ends every console session of the user, on every process (core/sessions.py).
        await conn.execute(delete(console_sessions).where(console_sessions.c.user_id == user_id))


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
    return Operator(row.id, row.name, row.login, password_stamp(row.password_hash))


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
    if row is None or not row.password_hash or password_stamp(row.password_hash) != stamp:
        return None
    return Operator(row.id, row.name, row.login, stamp)


@dataclass(frozen=True)
class BrakeRule:
    """Free failures, then a wait that doubles with each further failure, up to a cap."""

    free: int
    first_delay: float
    max_delay: float

    def delay(self, failures: int) -> float:
        if failures <= self.free:
            return 0.0
        return min(self.max_delay, self.first_delay * 2 ** min(failures - self.free - 1, 30))


# Per account and client address: one address guessing one admin's password gets slow fast. Per account over
# all addresses: guessing it from many addresses gets slow too, but each address adds at most
# ACCOUNT_RULE.free + 1 failures to that count, so one attacker's address cannot hold the admin up elsewhere.
# Per client address: one address trying many logins. None of them locks anyone out: each wait ends, and a
# browser that signed in to an account before is not held by that account's brakes (see console/auth.py).
ACCOUNT_RULE = BrakeRule(free=3, first_delay=2.0, max_delay=60.0)
SPREAD_RULE = BrakeRule(free=10, first_delay=2.0, max_delay=60.0)
ADDRESS_RULE = BrakeRule(free=20, first_delay=2.0, max_delay=300.0)
# Failures are forgotten after this long without a new one.
FORGET_SECONDS = 3600.0


class BrakeStore(Protocol):
    """Failure counts for the whole installation: `store.limits.DatabaseBrakeStore`."""

    async def failures(self, keys: Sequence[str]) -> dict[str, tuple[int, float]]: ...

    async def add_failure(self, keys: Sequence[str], now: float, forget_before: float) -> None: ...

    async def clear(self, keys: Sequence[str]) -> None: ...


@dataclass
class MemoryBrakeStore:
    """A `BrakeStore` in memory, for unit tests."""

    rows: dict[str, tuple[int, float]] = field(default_factory=dict)

    async def failures(self, keys: Sequence[str]) -> dict[str, tuple[int, float]]:
        return {key: self.rows[key] for key in keys if key in self.rows}

    async def add_failure(self, keys: Sequence[str], now: float, forget_before: float) -> None:
        self.rows = {key: row for key, row in self.rows.items() if row[1] >= forget_before}
        for key in keys:
            self.rows[key] = (self.rows.get(key, (0, now))[0] + 1, now)

    async def clear(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.rows.pop(key, None)


def address_key(address: str) -> str:
    """An IPv6 client is braked by its /64, which one subscriber usually holds whole."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "address:" + address[:120]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "address:" + str(ip.ipv4_mapped)
        return "address:" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return "address:" + str(ip)


def account_key(login: str) -> str:
    return "login:" + login.strip().lower()[:64]


def pair_key(address: str, login: str) -> str:
    """An account as guessed from one client address (at most 160 characters, the column's width)."""
    return "pair:" + login.strip().lower()[:64] + "|" + address_key(address).removeprefix("address:")[:80]


@dataclass
class LoginBrake:
    """Growing waits after failed sign-ins, per account and address, per account and per client address,
    shared by every process through `store` (a sign-in is rare: a database round trip per attempt is fine)."""

    store: BrakeStore
    clock: Callable[[], float] = time.time
    account: BrakeRule = ACCOUNT_RULE
    address: BrakeRule = ADDRESS_RULE
    spread: BrakeRule = SPREAD_RULE

    def _keys(self, address: str, login: str, trusted_device: bool) -> dict[str, BrakeRule]:
        keys = {address_key(address): self.address}
        if not trusted_device:
            keys[pair_key(address, login)] = self.account
            keys[account_key(login)] = self.spread
        return keys

    async def wait_seconds(self, address: str, login: str, *, trusted_device: bool = False) -> int:
        """0 when an attempt may go ahead; else whole seconds to wait."""
        keys = self._keys(address, login, trusted_device)
        rows = await self.store.failures(list(keys))
        now = self.clock()  # after the read: a failure stamped by a request that got there first is not ahead
        waits = [0.0]
        for key, (failures, last) in rows.items():
            delay = keys[key].delay(failures)
            if delay > 0 and now - last < FORGET_SECONDS:
                waits.append(delay - max(0.0, now - last))
        return math.ceil(max(waits))

    async def failed(self, address: str, login: str) -> None:
        now = self.clock()
        pair = pair_key(address, login)
        failures, last = (await self.store.failures([pair])).get(pair, (0, now))
        keys = [address_key(address), pair]
        # One address's failures count for the whole account only up to where its own brake starts.
        if failures <= self.account.free or now - last >= FORGET_SECONDS:
            keys.append(account_key(login))
        await self.store.add_failure(keys, now, now - FORGET_SECONDS)

    async def succeeded(self, address: str, login: str = "") -> None:
        # The address (and the account from it) starts again; the account's count over all addresses is left
        # to fade: a sign-in must not hand whoever guesses it from elsewhere new free tries.
        keys = [address_key(address)] + ([pair_key(address, login)] if login else [])
        await self.store.clear(keys)


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
