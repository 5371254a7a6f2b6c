"""The console's Checks page in a real browser (Playwright, Debian's chromium) against a live server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from messageservice.checks import NAMES
from tests.console_helpers import CHROMIUM, CHROMIUM_ARGS, add_admin
from tests.databases import BACKENDS
from tests.portal import LivePortal

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "kit_provider"))

from kit_provider import KitProvider  # noqa: E402


@pytest.fixture
def kit() -> Iterator[KitProvider]:
    provider = KitProvider().start()
    yield provider
    provider.stop()


def test_an_operator_runs_the_checks_from_the_console(portal: LivePortal, backend: str, kit: KitProvider) -> None:
    if backend != BACKENDS[0]:
        pytest.skip("the page does not depend on the engine")
    admin = add_admin(portal)
    app = portal.add_app(url=kit.url + "/", name="Kit provider for the browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(portal.base_url + "/console/login")
            page.fill("input[name=login]", admin.login)
            page.fill("input[name=password]", admin.password)
            page.click("button[type=submit]")
            page.click("nav >> text=Checks")
            expect(page.locator("h1")).to_have_text("Check a provider app")
            page.select_option("select[name=client_id]", app.client_id)
            page.fill("input[name=handler_timeout]", "1")
            page.fill("input[name=report_timeout]", "5")
            page.click("#checks-form button[type=submit]")
            report = page.locator("#check-report")
            expect(report).to_contain_text("all passed")
            expect(report.locator("tbody tr")).to_have_count(len(NAMES))
            expect(report.locator("tr.check-fail")).to_have_count(0)
            assert errors == []
        finally:
            browser.close()
