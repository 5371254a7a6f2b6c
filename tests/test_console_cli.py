"""The console's command-line side: `init` gives the admin a console login, `user password` sets one."""

from __future__ import annotations

import json
import uuid

from tests.console_helpers import Admin, ConsoleClient
from tests.portal import LivePortal
from tests.test_cli import invoke, ms, ms_json, portal_env


def test_init_prints_the_admin_password_once(fresh_portal: LivePortal) -> None:
    first = ms_json(fresh_portal, "init", "--domain", "portal.test")
    assert first["console_login"] == "admin" and len(first["console_password"]) >= 16
    ConsoleClient(fresh_portal).login(Admin(1, "admin", first["console_password"]))
    again = ms_json(fresh_portal, "init", "--domain", "portal.test")
    assert "console_password" not in again


def test_init_takes_the_admin_password_from_the_environment(fresh_portal: LivePortal) -> None:
    env = {**portal_env(fresh_portal), "MESSAGESERVICE_ADMIN_PASSWORD": "from-the-environment"}
    result = invoke(env, "init", "--domain", "portal.test", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["console_password"] == "from-the-environment"
    ConsoleClient(fresh_portal).login(Admin(1, "admin", "from-the-environment"))


def test_user_password_command(portal: LivePortal) -> None:
    user_id = portal.add_user("Cli admin", admin=True)
    login = f"cli{uuid.uuid4().hex[:6]}"
    ms(portal, "user", "password", str(user_id), "--login", login, "--password", "a-cli-password")
    ConsoleClient(portal).login(Admin(user_id, login, "a-cli-password"))
    short = ms(portal, "user", "password", str(user_id), "--password", "short", check=False)
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    missing = ms(portal, "user", "password", "999999", "--password", "long-enough", check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
