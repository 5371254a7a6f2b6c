"""`messageservice doctor`: look over an installation and say what is wrong and how to fix it.

It reads; it changes nothing (no migration, no database file or key created). Each check answers ok,
problem (with a fix) or skipped (does not apply here). Exit code 0 when nothing is wrong, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from rich.text import Text

from messageservice.cli.output import JsonOption, console, print_json
from messageservice.cli.views import safe

if TYPE_CHECKING:
    from messageservice.config import Settings
    from messageservice.store.store import Store

OK, PROBLEM, SKIPPED = "ok", "problem", "skipped"
# The README's topology: an API `serve`, two `worker`s, and the CLI now and then.
DEFAULT_PROCESSES = 4
DEFAULT_CERT_DAYS = 14
TIMEOUT_SECONDS = 5.0
# Addresses no HANDLER should reach on an exposed server: the cloud metadata service lives in link-local.
METADATA = ipaddress.ip_address("169.254.169.254")


@dataclass
class Finding:
    check: str
    status: str  # ok | problem | skipped
    detail: str  # what was seen
    fix: str | None = None  # what to do about a problem


def problem(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, PROBLEM, detail, fix)


# --- settings ------------------------------------------------------------------------------


def check_settings() -> tuple[Finding, Settings | None]:
    from messageservice.cli.runner import load_settings
    from messageservice.config import SettingsError
    from messageservice.store.budget import split

    try:
        settings = load_settings()
        split(settings.db_max_connections)
    except SettingsError as exc:
        fix = f"correct {exc.variable} in the environment or the .env file; the other checks need valid settings"
        return problem("settings", str(exc), fix), None
    return Finding("settings", OK, "every MESSAGESERVICE_* setting is valid"), settings


# --- database, schema, connection budget ---------------------------------------------------


async def check_database(settings: Settings, store: Store) -> list[Finding]:
    from messageservice.readiness import ALIVE, SCHEMA_VERSION, schema_heads
    from messageservice.supervisor import describe

    where = _database_name(settings)
    try:
        await asyncio.wait_for(store.fetch(ALIVE, {}), TIMEOUT_SECONDS)
    except Exception as exc:  # whatever the driver raises, the answer is the same: not reachable
        reason = f"no answer within {TIMEOUT_SECONDS:g} s" if isinstance(exc, TimeoutError) else describe(exc)
        fix = "start the database server, or correct MESSAGESERVICE_DATABASE_URL (host, port, user, password, name)"
        return [
            problem("database", f"cannot reach {where}: {reason}", fix),
            Finding("schema", SKIPPED, "the database is unreachable"),
        ]
    found = [Finding("database", OK, f"{where} answers")]
    try:
        versions = {str(row[0]) for row in await store.fetch(SCHEMA_VERSION, {})}
    except Exception:  # no alembic_version table: never migrated
        versions = set()
    heads = set(schema_heads(settings.database_url))
    if versions == heads:
        found.append(Finding("schema", OK, f"at {', '.join(sorted(heads))}, the newest this version knows"))
    elif not versions:
        found.append(problem("schema", "the database has no schema", "run `messageservice migrate`"))
    elif versions - _known_revisions(settings):
        shown = ", ".join(sorted(versions))
        fix = "upgrade messageservice to the version that migrated it (never run an older one against it)"
        found.append(problem("schema", f"at {shown}, newer than this version of messageservice knows", fix))
    else:
        shown, newest = ", ".join(sorted(versions)), ", ".join(sorted(heads))
        fix = "run `messageservice migrate` (after a backup), then restart serve and the workers"
        found.append(problem("schema", f"at {shown}, behind this version's {newest}", fix))
    return found


def _known_revisions(settings: Settings) -> set[str]:
    from alembic.script import ScriptDirectory

    from messageservice.store.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config(settings.database_url))
    return {revision.revision for revision in script.walk_revisions()}


def _database_name(settings: Settings) -> str:
    from messageservice.cli.errors import shown_url

    return f"the database {shown_url(settings.database_url)}"


async def check_connections(settings: Settings, store: Store, processes: int) -> Finding:
    from sqlalchemy import func, select

    if settings.is_sqlite:
        return Finding("connections", SKIPPED, "SQLite: one file, no server connection limit")
    try:
        rows = await store.fetch(
            select(
                func.current_setting("max_connections").label("max"),
                func.current_setting("superuser_reserved_connections").label("reserved"),
                # PostgreSQL 16's pg_use_reserved_connections share; NULL (missing_ok) before 16.
                func.current_setting("reserved_connections", True).label("roles"),
            ),
            {},
        )
    except Exception as exc:
        return Finding("connections", SKIPPED, f"could not read max_connections: {exc}")
    limit, reserved = int(rows[0][0]), int(rows[0][1]) + int(rows[0][2] or 0)
    available = limit - reserved
    budget = settings.db_max_connections
    needed = budget * processes
    detail = (
        f"{processes} processes × MESSAGESERVICE_DB_MAX_CONNECTIONS={budget} = {needed} of PostgreSQL's "
        f"max_connections={limit} ({reserved} reserved)"
    )
    if needed > available:
        fit = available // processes
        fix = (
            f"lower MESSAGESERVICE_DB_MAX_CONNECTIONS to {fit} or less"
            if fit >= 3
            else "run fewer processes against this server"
        ) + f", or raise max_connections in postgresql.conf to at least {needed + reserved} (restart PostgreSQL)"
        return problem("connections", detail, fix)
    return Finding("connections", OK, detail)


async def check_secret_key(settings: Settings, store: Store) -> Finding:
    """The key that opens the application tokens in the database: set, or in the data folder, and the right one."""
    from cryptography.fernet import Fernet, InvalidToken
    from sqlalchemy import select

    from messageservice.store.tables import apps

    rows = await store.fetch(select(apps.c.application_token_enc).where(apps.c.application_token_enc.is_not(None)), {})
    sample = rows[0][0] if rows else None
    key_file = settings.data_dir / "secret.key"
    if settings.secret_key:
        key, where = settings.secret_key.encode(), "MESSAGESERVICE_SECRET_KEY"
    elif key_file.exists():
        key, where = key_file.read_bytes().strip(), str(key_file)
    elif sample is None:
        return Finding("secret key", OK, f"nothing encrypted yet; {key_file} is made when first needed")
    else:
        fix = f"set MESSAGESERVICE_SECRET_KEY to the key this database was written with, or restore {key_file}"
        return problem("secret key", f"no key: MESSAGESERVICE_SECRET_KEY is unset and there is no {key_file}", fix)
    if sample is not None:
        try:
            Fernet(key).decrypt(sample.encode())
        except (InvalidToken, ValueError):
            fix = "use the key this database was written with (a new key cannot read what the old one wrote)"
            return problem("secret key", f"the key from {where} does not open the application tokens", fix)
    return Finding("secret key", OK, f"the key from {where} opens what the database keeps encrypted")


# --- handler networks ----------------------------------------------------------------------


def check_networks(settings: Settings, public_url: str | None) -> Finding:
    from messageservice.delivery.ssrf import SETTING, parse_networks

    configured = settings.allowed_handler_networks
    if configured is None:
        return Finding(
            "handler networks",
            OK,
            f"{SETTING} unset: HANDLERs may reach loopback while serve listens on loopback only, "
            "public addresses only once it listens beyond it",
        )
    networks = parse_networks(configured)
    if not networks:
        return Finding("handler networks", OK, "HANDLERs may reach public addresses only")
    shown = ", ".join(str(n) for n in networks)
    everything = [n for n in networks if n.prefixlen == 0]
    if everything:
        fix = f"list only the private networks your providers live in, e.g. {SETTING}=10.20.0.0/16"
        return problem("handler networks", f"{SETTING} allows every address ({everything[0]})", fix)
    metadata = [n for n in networks if METADATA in n]
    if metadata:
        fix = f"remove {metadata[0]} from {SETTING}: apps could read the cloud metadata service through a HANDLER"
        return problem("handler networks", f"{SETTING} allows {METADATA} (cloud metadata)", fix)
    host = urlsplit(public_url).hostname if public_url else None
    exposed = host is not None and not _is_loopback_name(host)
    loopback = [n for n in networks if n.is_loopback]
    if exposed and loopback:
        fix = f"remove {loopback[0]} from {SETTING}: apps could reach this host's own services through a HANDLER"
        return problem("handler networks", f"{SETTING} allows loopback on a server reached at {host}", fix)
    return Finding("handler networks", OK, f"HANDLERs may reach public addresses and {shown}")


def _is_loopback_name(host: str) -> bool:
    from messageservice.delivery.ssrf import is_loopback_host

    return is_loopback_host(host)


# --- TLS certificates ----------------------------------------------------------------------


def certificate_finding(label: str, not_after: datetime.datetime, days: int, fix: str) -> Finding:
    now = datetime.datetime.now(datetime.UTC)
    left = not_after - now
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if left.total_seconds() <= 0:
        return problem("tls", f"{label} expired on {when}", fix)
    if left < datetime.timedelta(days=days):
        return problem("tls", f"{label} expires in {left.days} days, on {when}", fix)
    return Finding("tls", OK, f"{label} is valid until {when} ({left.days} days)")


def _file_certificate(path: Path, days: int) -> Finding:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return problem("tls", f"cannot read the certificate {path}: {exc}", "replace it with a PEM certificate")
    fix = f"delete {path} and the key beside it; `messageservice serve --tls` makes new ones (clients must trust it)"
    return certificate_finding(f"the certificate {path}", cert.not_valid_after_utc, days, fix)


async def _served_certificate(url: str, days: int) -> Finding:
    """The certificate the public URL serves (the reverse proxy's, usually), read without trusting it."""
    from cryptography import x509

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to read its dates; the public URL check verifies it
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return Finding("tls", SKIPPED, f"could not read the certificate {url} serves: {exc or type(exc).__name__}")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    cert = x509.load_der_x509_certificate(der)
    fix = "renew the certificate the server (or reverse proxy) at that address serves"
    return certificate_finding(f"the certificate {url} serves", cert.not_valid_after_utc, days, fix)


async def check_tls(settings: Settings, public_url: str | None, cert: Path | None, days: int) -> list[Finding]:
    found = []
    own = settings.data_dir / "tls" / "cert.pem"
    for path in dict.fromkeys(p for p in (cert, own) if p is not None and (p == cert or p.exists())):
        found.append(_file_certificate(path, days))
    if public_url and public_url.startswith("https://"):
        found.append(await _served_certificate(public_url, days))
    if not found:
        return [Finding("tls", SKIPPED, "no TLS here: the public URL is not https and serve has no certificate")]
    return found


# --- the public URL ------------------------------------------------------------------------


async def check_public_url(settings: Settings, public_url: str | None) -> Finding:
    import aiohttp

    if not public_url:
        return Finding(
            "public url",
            SKIPPED,
            "none set: MESSAGESERVICE_PUBLIC_URL is unset and no serve or init has recorded one",
        )
    url = public_url.rstrip("/") + "/health"
    context = ssl.create_default_context()
    own = settings.data_dir / "tls" / "cert.pem"
    if own.exists():
        context.load_verify_locations(cafile=str(own))  # serve --tls: its self-signed certificate
    fix = (
        "start `messageservice serve`, and check that the address, the reverse proxy, DNS and the firewall "
        "let it through; or correct MESSAGESERVICE_PUBLIC_URL"
    )
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, ssl=context) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return problem("public url", f"{url} does not answer: {str(exc) or type(exc).__name__}", fix)
    if status != 200:
        return problem("public url", f"{url} answered HTTP {status}, not this server's 200", fix)
    return Finding("public url", OK, f"{url} answers")


# --- the command ---------------------------------------------------------------------------


async def examine(settings: Settings, processes: int, cert: Path | None, cert_days: int) -> list[Finding]:
    from sqlalchemy import select

    from messageservice.store.sqlite import sqlite_file
    from messageservice.store.store import Store
    from messageservice.store.tables import portal

    found: list[Finding] = []
    public_url = settings.public_url
    path = sqlite_file(settings.async_database_url)
    if path is not None and not path.exists():
        fix = "run `messageservice init --domain …` to create it, or correct MESSAGESERVICE_DATABASE_URL"
        found.append(problem("database", f"no database file at {path}", fix))
        found.append(Finding("schema", SKIPPED, "no database"))
        found.append(Finding("connections", SKIPPED, "SQLite: one file, no server connection limit"))
    else:
        store = Store(settings.database_url, settings.db_max_connections)
        try:
            database, schema = await check_database(settings, store)
            found += [database, schema]
            if database.status == OK:
                found.append(await check_connections(settings, store, processes))
                if schema.status == OK:
                    found.append(await check_secret_key(settings, store))
                if public_url is None and schema.status == OK:
                    try:
                        rows = await store.fetch(select(portal.c.public_url).where(portal.c.id == 1), {})
                        public_url = rows[0][0] if rows else None
                    except Exception:
                        public_url = None
            else:
                found.append(Finding("connections", SKIPPED, "the database is unreachable"))
        finally:
            await store.close()
    found.append(check_networks(settings, public_url))
    found += await check_tls(settings, public_url, cert, cert_days)
    found.append(await check_public_url(settings, public_url))
    return found


STYLE = {OK: "green", PROBLEM: "red", SKIPPED: "dim"}


def doctor(
    processes: Annotated[
        int,
        typer.Option(
            min=1, max=10_000, help="How many processes share the database (serve, workers, CLI): for the budget."
        ),
    ] = DEFAULT_PROCESSES,
    cert: Annotated[
        Path | None,
        typer.Option(help="Also check this PEM certificate's expiry (a reverse proxy's, say).", dir_okay=False),
    ] = None,
    cert_days: Annotated[
        int, typer.Option(min=0, max=3650, help="A certificate expiring within this many days is a problem.")
    ] = DEFAULT_CERT_DAYS,
    as_json: JsonOption = False,
) -> None:
    """Check this installation: settings, database and schema, connections, secret key, networks, TLS, public URL."""
    first, settings = check_settings()
    found = [first]
    if settings is not None:
        found += asyncio.run(examine(settings, processes, cert, cert_days))
    wrong = [f for f in found if f.status == PROBLEM]
    if as_json:
        print_json({"ok": not wrong, "checks": [asdict(f) for f in found]})
    else:
        for finding in found:
            line = Text(f"{finding.status:<8}", style=STYLE[finding.status])
            line.append(f"{finding.check:<17}", style="bold")
            line.append(safe(finding.detail, one_line=True))
            console.print(line, highlight=False)
            if finding.fix:
                console.print(Text(f"{'':<25}fix: {safe(finding.fix, one_line=True)}"), highlight=False)
        summary = f"{len(wrong)} problem{'' if len(wrong) == 1 else 's'} found" if wrong else "nothing wrong found"
        console.print(Text(summary, style="red" if wrong else "green"), highlight=False)
    if wrong:
        raise typer.Exit(1)
