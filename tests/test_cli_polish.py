"""The command line's rough edges, fixed (issue 11): run in this process through Typer's CliRunner."""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import typer.main
from typer.testing import CliRunner

from messageservice.cli import cli
from tests.portal import LivePortal


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


def env_of(portal: LivePortal) -> dict[str, str]:
    return {
        "MESSAGESERVICE_DATABASE_URL": portal.settings.database_url,
        "MESSAGESERVICE_DATA_DIR": str(portal.settings.data_dir),
        "MESSAGESERVICE_SECRET_KEY": portal.settings.secret_key or "",
        "COLUMNS": "120",
    }


@functools.cache
def _tree() -> Any:
    return typer.main.get_command(cli)


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None) -> Ran:
    """One command in this process; an unmapped exception fails the test where it happens."""
    with (
        contextlib.chdir(cwd or Path(env.get("MESSAGESERVICE_DATA_DIR", "."))),
        mock.patch("typer.testing._get_command", lambda _app: _tree()),
    ):
        result = CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def run_json(env: dict[str, str], *args: str) -> Any:
    ran = run_cli(env, *args, "--json")
    assert ran.code == 0, ran.stderr
    return json.loads(ran.stdout)
