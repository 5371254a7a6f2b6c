"""The console's Checks page (in-process): choose an installed app, run check-provider, read the report."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console_helpers import ConsoleClient, add_admin
from tests.portal import LivePortal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "kit_provider"))

from kit_provider import KitProvider


@pytest.fixture
def kit() -> Iterator[KitProvider]:
    provider = KitProvider().start()
    yield provider
    provider.stop()


def test_the_checks_page_runs_the_battery_against_an_installed_app(any_portal: LivePortal, kit: KitProvider) -> None:
    client = ConsoleClient(any_portal).login(add_admin(any_portal))
    app = any_portal.add_app(url=kit.url + "/", name="Kit <i>provider</i>")
    page = client.get("/checks")
    assert page.status_code == 200
    assert f'value="{app.client_id}"' in page.text and "Kit &lt;i&gt;provider&lt;/i&gt;" in page.text
    assert 'href="/console/checks" class="here"' in page.text

    form = {"client_id": app.client_id, "handler_timeout": "1", "report_timeout": "5", "port": "0"}
    answer = client.post("/checks", form, csrf=client.csrf("/checks"))
    assert answer.status_code == 200, answer.text[:500]
    assert 'id="check-report"' in answer.text and "all passed" in answer.text
    assert "<code>robust.expired_token</code>" in answer.text and "0 failed" in answer.text
    assert kit.url + "/" in answer.text


def test_the_checks_page_refuses_bad_input(any_portal: LivePortal) -> None:
    client = ConsoleClient(any_portal).login(add_admin(any_portal))
    token = client.csrf("/checks")
    no_url = client.post("/checks", {"url": "ftp://x/", "client_id": ""}, csrf=token)
    assert no_url.status_code == 400 and "Choose an app" in no_url.text
    slow = client.post("/checks", {"url": "http://127.0.0.1:9/", "report_timeout": "9999"}, csrf=token)
    assert slow.status_code == 400 and "Report timeout" in slow.text
    unknown = client.post("/checks", {"client_id": "local.nope.1"}, csrf=token)
    assert unknown.status_code == 400
