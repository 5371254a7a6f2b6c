"""Settings are validated at start: a bad value is one line naming its variable, and serve/worker exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from messageservice.config import DeliveryProfile, Settings, SettingsError, get_settings
from messageservice.core.schedules import parse_schedule
from messageservice.delivery.ssrf import listening_nowhere, parse_networks
from tests.conftest import new_database_url

MESSAGESERVICE = str(Path(sys.executable).parent / "messageservice")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MESSAGESERVICE_* from the caller's shell, and no .env in the working folder."""
    for name in list(os.environ):
        if name.startswith("MESSAGESERVICE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_defaults_are_valid() -> None:
    settings = get_settings()
    assert settings.delivery_profile is DeliveryProfile.RELIABLE
    assert settings.allowed_handler_networks is None  # follows where the server listens (test_security_wire)


BAD_VALUES = [
    # (variable, value, what the line must say)
    ("MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS", "127.0.0.0/8, localhost", "'localhost' is not a network"),
    ("MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS", "10.0.0.0/33", "'10.0.0.0/33' is not a network"),
    ("MESSAGESERVICE_RETRY_SCHEDULE", "1,5,soon", "'1,5,soon' is not a retry schedule"),
    ("MESSAGESERVICE_RETRY_SCHEDULE", "1,-5", "is not a retry schedule"),
    ("MESSAGESERVICE_RETRY_SCHEDULE", "1,5,", "'1,5,' is not a retry schedule"),
    ("MESSAGESERVICE_RETRY_SCHEDULE", "1,nan", "is not a retry schedule"),
    ("MESSAGESERVICE_EVENT_RETRY_SCHEDULE", "5,100000", "each from 0 to 86400"),
    ("MESSAGESERVICE_DELIVERY_PROFILE", "fast", "'reliable' or 'strict' (got 'fast')"),
    ("MESSAGESERVICE_DB_MAX_CONNECTIONS", "0", "greater than 0 (got '0')"),
    ("MESSAGESERVICE_DB_MAX_CONNECTIONS", "many", "valid integer"),
    ("MESSAGESERVICE_DISPATCH_CONCURRENCY", "-1", "greater than 0"),
    ("MESSAGESERVICE_HANDLER_CONCURRENCY", "0", "greater than 0"),
    ("MESSAGESERVICE_BREAKER_FAILURES", "0", "greater than 0"),
    ("MESSAGESERVICE_DISPATCH_BATCH_SIZE", "0", "greater than 0"),
    ("MESSAGESERVICE_HANDLER_TIMEOUT_SECONDS", "0", "greater than 0"),
    ("MESSAGESERVICE_HANDLER_TIMEOUT_SECONDS", "nan", "finite number"),
    ("MESSAGESERVICE_DISPATCH_SWEEP_SECONDS", "inf", "finite number"),
    ("MESSAGESERVICE_EVENT_SWEEP_SECONDS", "0", "greater than 0"),
    ("MESSAGESERVICE_RATE_LIMIT_PER_SECOND", "0", "greater than 0"),
    ("MESSAGESERVICE_RETENTION_DAYS", "-1", "greater than or equal to 0"),
    ("MESSAGESERVICE_BREAKER_COOLDOWN_SECONDS", "-0.5", "greater than or equal to 0"),
    ("MESSAGESERVICE_ACCESS_TOKEN_TTL", "0", "greater than 0"),
    ("MESSAGESERVICE_MAX_BODY_BYTES", "1MB", "valid integer"),
    ("MESSAGESERVICE_WEBHOOK_REQUIRE_HTTPS", "maybe", "valid boolean"),
    ("MESSAGESERVICE_DATABASE_URL", "mysql://app@db/ms", "unknown scheme 'mysql'"),
    ("MESSAGESERVICE_DATABASE_URL", "postgresql+psycopg2://app@db/ms", "unknown scheme 'postgresql+psycopg2'"),
    ("MESSAGESERVICE_DATABASE_URL", "var/messageservice.db", "not a URL like sqlite:///"),
    ("MESSAGESERVICE_SECRET_KEY", "not-a-key", "not a Fernet key"),
    ("MESSAGESERVICE_PUBLIC_URL", "sms.example.com", "must start with http:// or https://"),
]


@pytest.mark.parametrize(("variable", "value", "problem"), BAD_VALUES, ids=[f"{v}={x!r}" for v, x, _ in BAD_VALUES])
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_env(monkeypatch, **{variable: value})
    assert caught.value.variable == variable
    assert problem in caught.value.problem
    line = str(caught.value)
    assert line.startswith(f"{variable}: ") and "\n" not in line


def test_get_settings_raises_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS", "127.0.0.0/8, localhost")
    with pytest.raises(SettingsError, match=r"^MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS: 'localhost' is not a network"):
        get_settings()


def test_keyword_arguments_are_checked_too() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(dispatch_concurrency=0, _env_file=None)  # type: ignore[call-arg]
    assert caught.value.variable == "MESSAGESERVICE_DISPATCH_CONCURRENCY"


def test_a_bad_value_in_dot_env_is_named_like_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MESSAGESERVICE_DELIVERY_PROFILE=strictest\n")
    with pytest.raises(SettingsError, match=r"^MESSAGESERVICE_DELIVERY_PROFILE: "):
        Settings()


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_env(monkeypatch, MESSAGESERVICE_DATABASE_URL="mysql://app:hunter2@db/ms")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        settings_from_env(monkeypatch, MESSAGESERVICE_DATABASE_URL="sqlite:///x.db", MESSAGESERVICE_SECRET_KEY="s3cr3t")
    assert "s3cr3t" not in str(caught.value)


GOOD_VALUES = [
    ("MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS", "10.0.0.0/8, fd00::/8,192.168.1.7"),
    ("MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS", ""),
    ("MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS", "10.1.2.3/8"),  # host bits set: read as 10.0.0.0/8
    ("MESSAGESERVICE_RETRY_SCHEDULE", "0, 1.5, 86400"),
    ("MESSAGESERVICE_EVENT_RETRY_SCHEDULE", "5"),
    ("MESSAGESERVICE_EVENT_RETRY_SCHEDULE", ""),  # no retries
    ("MESSAGESERVICE_RETRY_SCHEDULE", ",".join(["1"] * 32)),  # the steps a sender may ask for (20) do not cap it
    ("MESSAGESERVICE_DELIVERY_PROFILE", "strict"),
    ("MESSAGESERVICE_DATABASE_URL", "postgres://app:pw@db:5432/ms"),
    ("MESSAGESERVICE_DATABASE_URL", "postgresql+asyncpg://app@db/ms"),
    ("MESSAGESERVICE_DATABASE_URL", "sqlite:///var/x.db"),
    # A Fernet key, fixed: test ids must be the same in every xdist worker.
    ("MESSAGESERVICE_SECRET_KEY", "QIOlVW_8OiIHARFtTMI2uLKeidRaXqzC3nLPrAJrNa8="),
    ("MESSAGESERVICE_SECRET_KEY", ""),  # empty: unset, the key file is used
    ("MESSAGESERVICE_RETENTION_DAYS", "0"),
    ("MESSAGESERVICE_OPERATING_LIMIT_SECONDS", "0"),
    ("MESSAGESERVICE_PUBLIC_URL", "https://sms.example.com"),
]


@pytest.mark.parametrize(("variable", "value"), GOOD_VALUES, ids=[f"{v}={x!r}" for v, x in GOOD_VALUES])
def test_good_values_are_accepted(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    settings = settings_from_env(monkeypatch, **{variable: value})
    # What config accepts, the code that uses it accepts too.
    assert parse_networks(listening_nowhere(settings.allowed_handler_networks)) is not None
    for schedule, delays in (
        (settings.retry_schedule, settings.retry_delays),
        (settings.event_retry_schedule, settings.event_retry_delays),
    ):
        parts = schedule.split(",") if schedule.strip() else []
        assert [parse_schedule(part) for part in parts] == [[delay] for delay in delays]


def test_the_profile_compares_as_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(monkeypatch, MESSAGESERVICE_DELIVERY_PROFILE="strict")
    assert settings.delivery_profile == "strict" and str(settings.delivery_profile) == "strict"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS", "127.0.0.0/8, localhost", "'localhost' is not a network"),
        ("MESSAGESERVICE_DELIVERY_PROFILE", "fast", "'reliable' or 'strict'"),
    ],
)
def test_a_bad_setting_stops_serve_and_worker(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path: Path,
    command: list[str],
    variable: str,
    value: str,
    problem: str,
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")},
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, backend, tmp_path),
        "MESSAGESERVICE_DATA_DIR": str(tmp_path),
        variable: value,
    }
    done = subprocess.run([MESSAGESERVICE, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {variable}: ") and problem in line
    assert "running" not in done.stdout and "portal at" not in done.stdout
