"""The console on a phone (390 px) and a desktop (1400 px), in a real browser, and the issue-11 fixes.

Every page at both widths: the page never scrolls sideways (tables scroll in their own box or collapse),
the whole nav bar is on screen, and a screenshot is saved under test-artifacts/console/. Then what was
fixed, several checks per page load: dashboard cards lead to filtered lists and fill their rows, charts
drawn at the size they are shown with `created` visible over `delivered`, senders by name, message rows
that are links, the pager at the top, a message held by an open breaker (page and `messages show`), no
handler body or `Retry now` before the first attempt, the send form without a binding and with every
error beside its field, inputs not bold, and cards clear of the tables on Apps and Portal.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from messageservice.store.queues import breakers
from tests.conftest import portal_on_one_engine
from tests.console_helpers import (
    ARTIFACTS,
    Admin,
    DeliveringProvider,
    add_admin,
    chromium_browser,
    screenshot,
)
from tests.portal import AppCredentials, LivePortal
from tests.receiver import Receiver
from tests.test_cli import invoke, portal_env

WAIT_MS = 20_000
PHONE, DESKTOP = 390, 1400
SENDER_NAME = "Demo SMS"  # given as a plain NAME: stored under the `**` language, shown without it


@dataclass
class Scene:
    """What the pages show: an app with a sender that delivers and one whose breaker is open."""

    app: AppCredentials
    app_name: str
    token: str  # a user's access token for the app
    sender: str  # client_id|CODE
    delivered_id: int
    marker: str  # in the text of the messages that fill two pages


# One worker runs the module (one browser, one scene), on one engine.
pytestmark = pytest.mark.xdist_group("console_polish_browser")


@pytest.fixture(scope="module")
def portal(request: pytest.FixtureRequest) -> LivePortal:
    return portal_on_one_engine(request, "sqlite")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def admin(portal: LivePortal) -> Admin:
    return add_admin(portal)


@pytest.fixture(scope="module")
def provider(portal: LivePortal) -> Iterator[DeliveringProvider]:
    running = DeliveringProvider(portal).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def failing() -> Iterator[Receiver]:
    receiver = Receiver(status=500).start()
    yield receiver
    receiver.stop()


def add_sender(portal: LivePortal, app: AppCredentials, handler: str, name: Any) -> str:
    code = "sms" + uuid.uuid4().hex[:8]
    answer = portal.call(
        "messageservice.sender.add",
        {"CODE": code, "TYPE": "SMS", "HANDLER": handler, "NAME": name},
        token=app.access_token,
    ).json()
    assert answer.get("result") is True, answer
    return f"{app.client_id}|{code}"


def send(portal: LivePortal, token: str, sender: str, text: str) -> int:
    answer = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": "+15550102040", "MESSAGE_BODY": text},
        token=token,
    ).json()
    return int(answer["result"]["ID"])


def breaker_open(portal: LivePortal, client_id: str, origin: str) -> bool:
    async def read(core: Any) -> bool:
        rows = await breakers(core.store)
        return any(
            r["client_id"] == client_id and r["origin"] == origin and r["failures"] >= core.settings.breaker_failures
            for r in rows
        )

    return portal.run(read)


@pytest.fixture(scope="module")
def scene(portal: LivePortal, provider: DeliveringProvider, failing: Receiver) -> Scene:
    app_name = f"Polish provider {uuid.uuid4().hex[:6]}"
    app = portal.add_app(name=app_name)
    sender = add_sender(portal, app, provider.url, SENDER_NAME)
    marker = uuid.uuid4().hex[:8]
    before = len(provider.reports)
    token = portal.token(app.client_id, 1)["access_token"]  # a user's token, as a CRM card sends
    ids = [send(portal, token, sender, f"page filler {marker} {i}") for i in range(26)]
    with provider.changed:
        assert provider.changed.wait_for(lambda: len(provider.reports) >= before + 26, timeout=60)
    # A handler that answers 500: five failures open its breaker (for the dashboard's cards and filters).
    failing_sender = add_sender(portal, app, failing.url, {"en": "Failing SMS", "de": "Kaputte SMS"})
    for i in range(portal.settings.breaker_failures):
        send(portal, token, failing_sender, f"breaker {i}")
    failing.wait_for(portal.settings.breaker_failures)
    return Scene(app, app_name, token, sender, ids[-1], marker)


@pytest.fixture(scope="module")
def signed_in(browser: Browser, portal: LivePortal, admin: Admin) -> Any:
    """The admin's signed-in cookies, once for the module (signing in is slow on purpose)."""
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(portal.base_url + "/console/login")
        tab.fill("input[name=login]", admin.login)
        tab.fill("input[name=password]", admin.password)
        tab.click("button[type=submit]")
        expect(tab.locator("header .logout")).to_be_visible()
        return context.storage_state()
    finally:
        context.close()


def new_context(browser: Browser, width: int, state: Any = None) -> BrowserContext:
    context = browser.new_context(viewport={"width": width, "height": 900}, storage_state=state)
    context.set_default_timeout(WAIT_MS)
    return context


@pytest.fixture(params=[PHONE, DESKTOP], ids=["phone", "desktop"])
def width(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def tab(browser: Browser, signed_in: Any, width: int) -> Iterator[Page]:
    context = new_context(browser, width, signed_in)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], errors


def go(page: Page, portal: LivePortal, path: str) -> None:
    page.goto(portal.base_url + "/console" + path)


# In one round trip: how far the page reaches past the window's right edge, the innermost elements that do
# (what to fix), and the nav links not wholly on screen.
LAYOUT = """() => {
  const right = (e) => e.getBoundingClientRect().right;
  const wide = (e) => right(e) > window.innerWidth + 0.5;
  const culprits = [...document.querySelectorAll('body *')].filter(e => wide(e) && ![...e.children].some(wide));
  const offscreen = [...document.querySelectorAll('header nav a')].filter(a => {
    const box = a.getBoundingClientRect();
    return box.left < 0 || box.right > window.innerWidth || box.width === 0;
  });
  return {
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    culprits: culprits.slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(right(e))),
    offscreen: offscreen.map(a => a.textContent),
    links: document.querySelectorAll('header nav a').length,
  };
}"""


def fits(page: Page, width: int) -> None:
    """Nothing makes the page itself scroll sideways, and every nav link is on screen."""
    layout = page.evaluate(LAYOUT)
    assert layout["overflow"] <= 0, f"{page.url} is {layout['overflow']} px too wide at {width} px: {layout}"
    assert layout["offscreen"] == [], f"{page.url}: nav links off screen at {width} px: {layout}"


def shot(page: Page, portal: LivePortal, name: str, width: int) -> None:
    path = screenshot(page, portal.backend, f"{name}-{width}")
    print(f"screenshot: {path}")


def pages(scene: Scene) -> list[tuple[str, str]]:
    return [
        ("dashboard", "/"),
        ("messages", f"/messages?text={scene.marker}"),
        ("message", f"/messages/{scene.delivered_id}"),
        ("send-crm", "/send"),
        ("send-automation", "/send?mode=bizproc"),
        ("apps", "/apps"),
        ("app", f"/apps/{scene.app.client_id}"),
        ("providers", "/providers"),
        ("checks", "/checks"),
        ("portal", "/portal"),
        ("error", "/messages/999999999"),
    ]


def test_every_page_fits_the_screen(browser: Browser, tab: Page, portal: LivePortal, scene: Scene, width: int) -> None:
    print(f"\nscreenshots under {ARTIFACTS}")
    for name, path in pages(scene):
        go(tab, portal, path)
        if name == "dashboard":
            expect(tab.locator("#dashboard")).to_have_attribute("data-refreshes", re.compile(r"^[1-9]"))
        fits(tab, width)
        shot(tab, portal, name, width)
    # The sign-in page, signed out.
    context = new_context(browser, width)
    try:
        login = context.new_page()
        go(login, portal, "/login")
        fits(login, width)
        shot(login, portal, "login", width)
    finally:
        context.close()


def tile_rows(page: Page) -> list[int]:
    """How many dashboard cards each row holds, top to bottom."""
    tops: dict[int, int] = {}
    for box in [tile.bounding_box() for tile in page.locator("#tiles .tile").all()]:
        assert box is not None
        top = round(box["y"])
        tops[top] = tops.get(top, 0) + 1
    return [tops[top] for top in sorted(tops)]


def test_dashboard_cards_lead_to_filtered_lists_and_charts_read_well(
    tab: Page, portal: LivePortal, scene: Scene, width: int
) -> None:
    go(tab, portal, "/")
    expect(tab.locator("#chart-per-minute path[data-series=created]")).to_have_count(1)
    rows = tile_rows(tab)
    assert len(set(rows)) == 1 and rows[0] > 1, rows  # full rows only: no card alone on the last one
    # `created` is drawn last, dashed, over a light area: it shows even where `delivered` runs on top of it.
    series = tab.locator("#chart-per-minute path[data-series]").evaluate_all(
        "paths => paths.map(p => [p.dataset.series, p.getAttribute('stroke-dasharray')])"
    )
    assert series[-1][0] == "created" and series[-1][1], series
    expect(tab.locator("#chart-per-minute path[data-area=created]")).to_have_count(1)
    # Drawn at the size shown: one SVG unit a CSS pixel, so 11 px labels stay 11 px on a phone.
    for chart in ("#chart-per-minute", "#chart-status"):
        shown = tab.locator(chart).bounding_box()
        assert shown is not None
        drawn = float(tab.locator(chart).get_attribute("viewBox").split()[2])  # type: ignore[union-attr]
        assert abs(drawn - max(240, round(shown["width"]))) <= 1, (chart, drawn, shown)
    # The handlers table names the sender and keeps its id for hover.
    expect(tab.locator(f"#handler-rows td[title='{scene.sender}']")).to_contain_text(SENDER_NAME)
    tab.click("#tile-dead")
    expect(tab).to_have_url(re.compile(r"/console/messages\?delivery=dead$"))
    expect(tab.locator("select[name=delivery]")).to_have_value("dead")
    go(tab, portal, "/")
    tab.click("#tile-open_breakers")
    expect(tab).to_have_url(re.compile(r"/console/providers\?show=open$"))
    expect(tab.locator("#provider-filter a.here")).to_have_text("Only open breakers")
    # Only breakers not closed: the failing sender's (open, or half-open between cool-downs), not the delivering one's.
    expect(tab.locator("body")).to_contain_text("Failing SMS")
    expect(tab.locator("td.breaker-closed")).to_have_count(0)
    expect(tab.locator("body")).not_to_contain_text(SENDER_NAME)
    go(tab, portal, "/")
    tab.click("#tile-failing_handlers")
    expect(tab).to_have_url(re.compile(r"/console/providers\?show=failing$"))
    expect(tab.locator("body")).to_contain_text("Failing SMS")
    expect(tab.locator("body")).not_to_contain_text(SENDER_NAME)


def test_messages_by_sender_name_rows_that_are_links_and_a_pager_on_top(
    tab: Page, portal: LivePortal, scene: Scene, width: int
) -> None:
    go(tab, portal, f"/messages?text={scene.marker}")
    table = tab.locator("#message-table")
    expect(table.locator("tbody tr")).to_have_count(25)
    expect(tab.locator("#pager-top a[rel=next]")).to_be_visible()
    expect(tab.locator("#pager-bottom a[rel=next]")).to_be_visible()
    code = scene.sender.split("|")[1]
    first = table.locator("tbody tr").first
    expect(first.locator("td.sender")).to_contain_text(SENDER_NAME)
    expect(first.locator("td.sender .sub")).to_contain_text(code)
    assert scene.sender not in table.inner_text()  # never the raw client_id|CODE
    if width == PHONE:
        expect(table.locator("thead")).to_be_hidden()  # one card per message
    else:
        # One line per row: the sender no longer wraps the row.
        heights = {round(box["height"]) for box in [r.bounding_box() for r in table.locator("tbody tr").all()] if box}
        assert max(heights) < 60, heights
    tab.click("#pager-top a[rel=next]")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(tab.locator("#pager-top a[rel=prev]")).to_be_visible()
    # The whole row is the link: a click on its text opens the message (the link lies over the row, so the
    # click goes to the point on screen, as a finger's would, not to the cell).
    table.locator("tbody tr td.text").first.click(force=True)
    expect(tab).to_have_url(re.compile(r"/console/messages/\d+$"))
    expect(tab.locator("#sender")).to_contain_text(SENDER_NAME)
    expect(tab.locator("#sender .sub")).to_contain_text(f"{code} · {scene.app_name}")


def test_a_message_held_by_an_open_breaker_and_not_yet_tried(
    browser: Browser, signed_in: Any, portal: LivePortal, scene: Scene
) -> None:
    # A handler of its own: its breaker opens now, well inside the cool-down while the pages are looked at.
    failing = Receiver(status=500).start()
    try:
        sender = add_sender(portal, scene.app, failing.url, "Broken SMS")
        for i in range(portal.settings.breaker_failures):
            send(portal, scene.token, sender, f"opens the breaker {i}")
        failing.wait_for(portal.settings.breaker_failures)
        origin = f"http://127.0.0.1:{failing.port}"
        deadline = time.monotonic() + WAIT_MS / 1000
        while not breaker_open(portal, scene.app.client_id, origin):
            assert time.monotonic() < deadline, "the breaker did not open"
            time.sleep(0.05)
        held_id = send(portal, scene.token, sender, "held back")
        line = re.compile(rf"held: breaker open for {re.escape(origin)} until \d\d:\d\d:\d\d")
        # In a thread of its own: the CLI runs its own event loop, and Playwright's sits on this thread.
        env = {**portal_env(portal), "COLUMNS": "300"}
        with ThreadPoolExecutor(1) as pool:
            shown = pool.submit(invoke, env, "messages", "show", str(held_id)).result()
        assert shown.returncode == 0, shown.stderr
        assert line.search(shown.stdout), shown.stdout
        for width in (PHONE, DESKTOP):
            context = new_context(browser, width, signed_in)
            try:
                tab = context.new_page()
                go(tab, portal, f"/messages/{held_id}")
                expect(tab.locator("#held")).to_have_text(re.compile(rf"^{line.pattern} UTC$"))
                expect(tab.locator("#delivery-state")).to_contain_text("pending, no attempt yet")
                # Nothing was sent yet: no handler body, no `Retry now`.
                expect(tab.locator("#handler-body")).to_have_count(0)
                expect(tab.locator("text=What the handler received")).to_have_count(0)
                expect(tab.locator("#retry")).to_have_count(0)
                expect(tab.locator("#attempts")).to_contain_text("No attempt yet.")
                fits(tab, width)
                shot(tab, portal, "message-held", width)
            finally:
                context.close()
    finally:
        failing.stop()


def test_forms_and_cards(tab: Page, portal: LivePortal, scene: Scene, width: int) -> None:
    go(tab, portal, "/send")
    # Typed values are not bold; required fields are marked; the binding is optional.
    assert tab.locator("input[name=recipient]").evaluate("e => getComputedStyle(e).fontWeight") == "400"
    assert tab.locator("select[name=sender]").evaluate("e => getComputedStyle(e).fontWeight") == "400"
    expect(tab.locator("#send-form label abbr.required")).to_have_count(3)
    expect(tab.locator("select[name=owner_type]")).to_have_value("")
    tab.select_option("select[name=sender]", scene.sender)
    tab.fill("input[name=recipient]", "not a phone")
    tab.fill("textarea[name=text]", "  ")
    tab.fill("input[name=owner_id]", "5")
    tab.click("#send-form button[type=submit]")
    # Every problem at once, each beside its field.
    expect(tab.locator("#error-recipient")).to_contain_text("not a phone number")
    expect(tab.locator("#error-text")).to_have_text("Text is required.")
    expect(tab.locator("#error-owner_type")).to_contain_text("choose what the entity is")
    expect(tab.locator(".field-error")).to_have_count(3)
    fits(tab, width)
    shot(tab, portal, "send-errors", width)
    tab.fill("input[name=recipient]", "+15550102050")
    tab.fill("textarea[name=text]", f"no binding {uuid.uuid4().hex[:6]}")
    tab.fill("input[name=owner_id]", "")
    tab.click("#send-form button[type=submit]")
    expect(tab).to_have_url(re.compile(r"/console/messages/\d+$"))
    expect(tab.locator("#status")).to_have_text("delivered")

    # Cards keep their distance from the tables above them.
    for path, table, card in (
        ("/apps", "#app-table", "#add-app"),
        ("/portal", "#user-table", "#add-user"),
    ):
        go(tab, portal, path)
        above = tab.locator(table).bounding_box()
        below = tab.locator(card).bounding_box()
        assert above is not None and below is not None
        gap = below["y"] - (above["y"] + above["height"])
        assert gap >= 8, (path, gap)

    go(tab, portal, f"/apps/{scene.app.client_id}")
    expect(tab.locator("label", has=tab.locator("#clean"))).to_have_text(
        "Also ask the app to delete its data for this portal"
    )
    expect(tab.locator("#clean-hint")).to_contain_text("CLEAN=1")
    go(tab, portal, "/providers")
    assert "**" not in tab.locator("main").inner_text()
    code = scene.sender.split("|")[1]
    row = tab.locator("tr", has=tab.locator(f"td:text-is('{code}')"))
    expect(row).to_contain_text(SENDER_NAME)
