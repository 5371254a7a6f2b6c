"""`messageservice doctor` in this process (Typer's CliRunner): a good installation on both engines, and
broken ones: a bad setting, an unreachable PostgreSQL, a schema behind the code, an expiring certificate,
handler networks that let apps in too far, a public URL that does not answer, a budget PostgreSQL cannot hold."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from messageservice.cli.doctor import OK, PROBLEM, SKIPPED, certificate_finding, check_networks
from messageservice.config import Settings
from messageservice.store.db import alembic_config
from messageservice.tls import ensure_certificate
from tests.databases import BACKENDS, new_database_url
from tests.portal import LivePortal
from tests.postgres import free_port
from tests.test_cli import WIDTH, Ran, invoke

NOW = datetime.datetime.now(datetime.UTC)


def doctor(env: dict[str, str], *args: str, code: int) -> dict[str, Any]:
    """Runs `doctor --json`; answers {check: finding} (the last finding of a check that has several)."""
    result: Ran = invoke(env, "doctor", "--json", *args)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["ok"] is (code == 0)
    return {finding["check"]: finding for finding in report["checks"]}


def environment(database_url: str, data_dir: Path, **more: str) -> dict[str, str]:
    env = {
        "MESSAGESERVICE_DATABASE_URL": database_url,
        "MESSAGESERVICE_DATA_DIR": str(data_dir),
        "MESSAGESERVICE_PUBLIC_URL": "",  # empty is unset
        "COLUMNS": WIDTH,
    }
    env.update({f"MESSAGESERVICE_{k.upper()}": v for k, v in more.items()})
    return env


def portal_environment(portal: LivePortal, data_dir: Path | None = None, **more: str) -> dict[str, str]:
    more.setdefault("secret_key", portal.settings.secret_key or "")
    return environment(portal.settings.database_url, data_dir or portal.settings.data_dir, **more)


def write_certificate(folder: Path, not_after: datetime.datetime) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=400))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path = folder / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of its own (first engine) with no public URL recorded: for checks beside it."""
    return new_database_url(request, BACKENDS[0], tmp_path)


# --- a good installation --------------------------------------------------------------------------


def test_a_good_installation(portal: LivePortal, tmp_path: Path) -> None:
    """The session's real server, reached at its public URL; nothing is wrong, exit 0."""
    env = portal_environment(portal, tmp_path, public_url=portal.base_url)
    found = doctor(env, code=0)
    assert {k: v["status"] for k, v in found.items()} == {
        "settings": OK,
        "database": OK,
        "schema": OK,
        "connections": SKIPPED if portal.backend == "sqlite" else OK,
        "secret key": OK,
        "handler networks": OK,
        "tls": SKIPPED,
        "public url": OK,
    }
    if portal.backend == "postgres":
        assert "max_connections=100" in found["connections"]["detail"]
    # The text form says the same in words.
    text = invoke(env, "doctor")
    assert text.returncode == 0 and "nothing wrong found" in text.stdout, text.stdout


def test_a_good_installation_over_https(https_portal: LivePortal) -> None:
    """serve --tls: its own certificate on disk and the one its URL serves are both read, and trusted."""
    found = invoke(portal_environment(https_portal, public_url=https_portal.base_url), "doctor", "--json")
    assert found.returncode == 0, found.stdout
    checks = json.loads(found.stdout)["checks"]
    tls = [c for c in checks if c["check"] == "tls"]
    assert [c["status"] for c in tls] == [OK, OK]
    assert "cert.pem is valid until" in tls[0]["detail"] and "serves is valid until" in tls[1]["detail"]
    assert [c["status"] for c in checks if c["check"] == "public url"] == [OK]


# --- broken ones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [("retry_schedule", "soon"), ("db_max_connections", "2"), ("stuck_after_seconds", "-5")],
)
def test_a_bad_setting(tmp_path: Path, variable: str, value: str) -> None:
    env = environment(f"postgresql://nobody@127.0.0.1:{free_port()}/none", tmp_path, **{variable: value})
    found = doctor(env, code=1)
    assert list(found) == ["settings"]  # the rest needs settings it can trust
    assert found["settings"]["status"] == PROBLEM
    assert found["settings"]["detail"].startswith(f"MESSAGESERVICE_{variable.upper()}: ")
    assert f"correct MESSAGESERVICE_{variable.upper()}" in found["settings"]["fix"]


def test_an_unreachable_postgresql(tmp_path: Path) -> None:
    env = environment(f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none", tmp_path)
    found = doctor(env, code=1)
    assert found["database"]["status"] == PROBLEM and "cannot reach" in found["database"]["detail"]
    assert "secret" not in json.dumps(found)  # the password never shows
    assert "MESSAGESERVICE_DATABASE_URL" in found["database"]["fix"]
    assert found["schema"]["status"] == SKIPPED and found["connections"]["status"] == SKIPPED


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    found = doctor(environment(f"sqlite:///{path}", tmp_path), code=1)
    assert found["database"]["status"] == PROBLEM and "messageservice init" in found["database"]["fix"]
    assert not path.exists()


def test_a_schema_behind_the_code(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
    url = new_database_url(request, backend, tmp_path)
    command.downgrade(alembic_config(url), "0009")
    env = environment(url, tmp_path)
    found = doctor(env, code=1)
    assert found["database"]["status"] == OK
    assert found["schema"]["status"] == PROBLEM
    assert "at 0009, behind" in found["schema"]["detail"] and "messageservice migrate" in found["schema"]["fix"]
    # Doctor changed nothing; the fix it names does fix it.
    assert doctor(env, code=1)["schema"]["status"] == PROBLEM
    assert invoke(env, "migrate").returncode == 0
    assert doctor(env, code=0)["schema"]["status"] == OK


@pytest.mark.parametrize(("days", "said"), [(3, "expires in 2 days"), (-1, "expired on")], ids=["expiring", "expired"])
def test_an_expiring_certificate(database: str, tmp_path: Path, days: int, said: str) -> None:
    """serve --tls's own certificate (in MESSAGESERVICE_DATA_DIR/tls) near or past its end."""
    write_certificate(tmp_path / "tls", NOW + datetime.timedelta(days=days, minutes=-5))
    found = doctor(environment(database, tmp_path), code=1)
    assert found["tls"]["status"] == PROBLEM and said in found["tls"]["detail"]
    assert "serve --tls" in found["tls"]["fix"]
    assert [k for k, v in found.items() if v["status"] == PROBLEM] == ["tls"]


def test_a_certificate_named_with_cert_and_a_fresh_one(database: str, tmp_path: Path) -> None:
    ensure_certificate(tmp_path / "tls")  # serve --tls's: valid for years
    proxy = write_certificate(tmp_path / "proxy", NOW + datetime.timedelta(days=20))
    env = environment(database, tmp_path)
    assert doctor(env, "--cert", str(proxy), code=0)["tls"]["status"] == OK  # 20 days: beyond the 14
    found = invoke(env, "doctor", "--json", "--cert", str(proxy), "--cert-days", "30")
    assert found.returncode == 1
    tls = [c for c in json.loads(found.stdout)["checks"] if c["check"] == "tls"]
    assert [c["status"] for c in tls] == [PROBLEM, OK]
    assert str(proxy) in tls[0]["detail"] and "expires in 19 days" in tls[0]["detail"]


def test_a_public_url_that_does_not_answer(database: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    found = doctor(environment(database, tmp_path, public_url=url), code=1)
    assert found["public url"]["status"] == PROBLEM
    assert found["public url"]["detail"].startswith(f"{url}/health does not answer")
    assert "messageservice serve" in found["public url"]["fix"]
    text = invoke(environment(database, tmp_path, public_url=url), "doctor")
    assert text.returncode == 1
    assert "problem public url" in " ".join(text.stdout.split()) and "fix: start `messageservice serve`" in text.stdout
    assert "1 problem found" in text.stdout


@pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL's max_connections")
def test_a_budget_postgresql_cannot_hold(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = new_database_url(request, "postgres", tmp_path)
    found = doctor(environment(url, tmp_path, db_max_connections="40"), "--processes", "3", code=1)
    assert found["connections"]["status"] == PROBLEM
    assert "3 processes × MESSAGESERVICE_DB_MAX_CONNECTIONS=40 = 120" in found["connections"]["detail"]
    assert "MESSAGESERVICE_DB_MAX_CONNECTIONS to 32 or less" in found["connections"]["fix"]
    assert doctor(environment(url, tmp_path, db_max_connections="30"), "--processes", "3", code=0)


def test_a_secret_key_that_does_not_open_the_database(any_portal: LivePortal, tmp_path: Path) -> None:
    any_portal.add_app()  # an installed app: its application token is stored encrypted

    def secret_key_finding(**more: str) -> dict[str, Any]:
        result = invoke(portal_environment(any_portal, tmp_path, **more), "doctor", "--json")
        return next(c for c in json.loads(result.stdout)["checks"] if c["check"] == "secret key")

    assert secret_key_finding()["status"] == OK
    wrong = secret_key_finding(secret_key=Fernet.generate_key().decode())
    assert wrong["status"] == PROBLEM and "does not open" in wrong["detail"]
    missing = secret_key_finding(secret_key="")
    assert missing["status"] == PROBLEM and "MESSAGESERVICE_SECRET_KEY is unset" in missing["detail"]
    assert not (tmp_path / "secret.key").exists()  # doctor made no key


# --- the pure checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "public_url", "status", "said"),
    [
        ("10.20.0.0/16", None, OK, "public addresses and 10.20.0.0/16"),
        ("0.0.0.0/0", None, PROBLEM, "allows every address"),
        ("::/0", None, PROBLEM, "allows every address"),
        ("10.0.0.0/8,169.254.0.0/16", None, PROBLEM, "cloud metadata"),
        ("127.0.0.0/8", "https://sms.example.com", PROBLEM, "allows loopback on a server reached at sms.example.com"),
        ("127.0.0.0/8", "http://127.0.0.1:18555", OK, "127.0.0.0/8"),
        ("", None, OK, "public addresses only"),
    ],
)
def test_handler_networks(networks: str, public_url: str | None, status: str, said: str) -> None:
    settings = Settings(allowed_handler_networks=networks, _env_file=None)  # type: ignore[call-arg]
    finding = check_networks(settings, public_url)
    assert finding.status == status and said in finding.detail
    assert (finding.fix is not None) == (status == PROBLEM)


def test_certificate_dates() -> None:
    def status(delta: datetime.timedelta) -> str:
        return certificate_finding("c", datetime.datetime.now(datetime.UTC) + delta, 14, "renew").status

    assert status(datetime.timedelta(days=-1)) == PROBLEM
    assert status(datetime.timedelta(days=13, hours=23)) == PROBLEM
    assert status(datetime.timedelta(days=14, hours=1)) == OK
