"""Secrets stay out of log lines: webhook secrets in paths, tokens and client secrets in queries."""

from __future__ import annotations

import logging

import pytest

from messageservice.logs import RedactAccessLog, redact


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/rest/1/abcdefgh12345678/user.admin", "/rest/1/***/user.admin"),
        ("/rest//1/abcdefgh12345678/m/", "/rest//1/***/m/"),
        ("/rest/user.admin?auth=TOKEN&x=1", "/rest/user.admin?auth=%2A%2A%2A&x=1"),
        (
            "/oauth/token/?grant_type=refresh_token&client_id=c&client_secret=S&refresh_token=R",
            "/oauth/token/?grant_type=refresh_token&client_id=c&client_secret=%2A%2A%2A&refresh_token=%2A%2A%2A",
        ),
        ("/oauth/authorize/?client_id=c&code=C", "/oauth/authorize/?client_id=c&code=%2A%2A%2A"),
        ("/rest/user.admin", "/rest/user.admin"),
    ],
)
def test_redact(target: str, expected: str) -> None:
    assert redact(target) == expected


def test_access_log_filter_rewrites_the_path() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/rest/1/secretsecret/m?access_token=T", "1.1", 200),
        None,
    )
    assert RedactAccessLog().filter(record)
    line = record.getMessage()
    assert "secretsecret" not in line and "=T" not in line and "/rest/1/***/m" in line
