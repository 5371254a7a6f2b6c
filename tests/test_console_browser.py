"""The console in a real browser: Playwright driving Debian's chromium against a live server.

Every page and action once, as an operator uses it: signing in, sending from the CRM card form and the
automation form and watching the message reach `delivered` through a provider on a loopback port,
searching, retry and replay, the dashboard's live charts, apps, providers, and the portal.
Screenshots of the main pages go to test-artifacts/console/.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import portal_on_one_engine
from tests.console_helpers import (
    Admin,
    DeliveringProvider,
    add_admin,
    add_sender,
    chromium_browser,
    screenshot,
)
from tests.portal import AppCredentials, LivePortal
from tests.postgres import free_port
from tests.receiver import Receiver, Reply
from tests.test_demo_provider import example_env, wait_answer

WAIT_MS = 20_000


# One worker runs the module (one browser, one scene), on one engine.
pytestmark = pytest.mark.xdist_group("console_browser")


@pytest.fixture(scope="module")
def portal(request: pytest.FixtureRequest) -> LivePortal:
    return portal_on_one_engine(request, "postgres")


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
def provider_app(portal: LivePortal) -> AppCredentials:
    return portal.add_app(name=f"Provider {uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def sender(portal: LivePortal, provider_app: AppCredentials, provider: DeliveringProvider) -> str:
    return add_sender(portal, provider_app, provider.url)


def sign_in(page: Page, portal: LivePortal, admin: Admin) -> None:
    page.goto(portal.base_url + "/console/login")
    page.fill("input[name=login]", admin.login)
    page.fill("input[name=password]", admin.password)
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text(admin.login)


@pytest.fixture
def page(browser: Browser, portal: LivePortal, admin: Admin) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(tab, portal, admin)
    yield tab
    context.close()
    assert errors == [], errors  # no script error on any page


def open_console(page: Page, portal: LivePortal, path: str) -> None:
    page.goto(portal.base_url + "/console" + path)


def no_trace(page: Page) -> None:
    assert "Traceback" not in page.content()


def test_sign_in_page(browser: Browser, portal: LivePortal, admin: Admin) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(portal.base_url + "/console/messages")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    screenshot(page, portal.backend, "login")
    page.fill("input[name=login]", admin.login)
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("Wrong login or password")
    page.fill("input[name=password]", admin.password)
    page.click("button[type=submit]")
    # Back where the operator was going.
    expect(page).to_have_url(re.compile(r"/console/messages$"))
    page.click("header .logout button")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    page.goto(portal.base_url + "/console/")
    expect(page).to_have_url(re.compile(r"/console/login"))
    context.close()


@pytest.fixture(scope="module")
def demo_provider(portal: LivePortal) -> Iterator[str]:
    """The bundled demo provider (examples/demo_provider) as its own process, serving this portal."""
    port = free_port()
    args = ["--port", str(port), "--portal", portal.base_url, "--delays", "0.2,0.3,0.3", "--code", "demo_sms"]
    process = subprocess.Popen(
        [sys.executable, "-m", "demo_provider", *args],
        env=example_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answer(url + "/health")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def test_send_from_the_crm_card_reaches_delivered_through_the_demo_provider(
    page: Page, portal: LivePortal, demo_provider: str
) -> None:
    # Install the demo provider from the Apps page; on ONAPPINSTALL it registers its sender `demo_sms`.
    open_console(page, portal, "/apps")
    page.fill("#add-app input[name=name]", f"Demo SMS provider {uuid.uuid4().hex[:4]}")
    page.fill("#add-app input[name=url]", demo_provider + "/")
    page.fill("#add-app input[name=scopes]", "messageservice")
    page.click("#add-app button[type=submit]")
    client_id = page.locator("#new-client-id").inner_text()
    page.click("#created a")
    page.click("#install")
    expect(page.locator(".flash")).to_contain_text("Installed")
    sender = f"{client_id}|demo_sms"
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        open_console(page, portal, "/send")
        if page.locator(f"select[name=sender] option[value='{sender}']").count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)

    text = f"Your order {uuid.uuid4().hex[:6]} is ready"
    page.select_option("select[name=sender]", sender)
    page.fill("input[name=recipient]", "+1 (555) 010-2030")
    page.fill("textarea[name=text]", text)
    page.select_option("select[name=owner_type]", "2")
    page.fill("input[name=owner_id]", "42")
    screenshot(page, portal.backend, "send-crm")
    page.click("#send-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/messages/\d+$"))
    # The page follows the message by itself: the demo reports queued, sent and delivered in turn.
    expect(page.locator("#status")).to_have_text("delivered", timeout=WAIT_MS)
    expect(page.locator("#attempts")).to_contain_text("200")
    timeline = page.locator("#timeline li")
    expect(timeline.filter(has_text="by app Demo SMS provider")).to_have_count(3)
    expect(page.locator("#timeline")).to_contain_text("queued")
    expect(page.locator("#handler-body")).to_contain_text("bindings[0][OWNER_TYPE_ID]")
    expect(page.locator("#handler-body")).to_contain_text(text)
    screenshot(page, portal.backend, "message-delivered")


def test_send_from_the_crm_card_reaches_a_provider_of_the_test(
    page: Page, portal: LivePortal, sender: str, provider: DeliveringProvider
) -> None:
    """The same card, and what the provider received field by field."""
    text = f"Your order {uuid.uuid4().hex[:6]} is ready"
    open_console(page, portal, "/send")
    page.select_option("select[name=sender]", sender)
    page.fill("input[name=recipient]", "+1 (555) 010-2030")
    page.fill("textarea[name=text]", text)
    page.select_option("select[name=owner_type]", "2")
    page.fill("input[name=owner_id]", "42")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("delivered", timeout=WAIT_MS)
    expect(page.locator("#timeline")).to_contain_text("by app Provider")
    call = next(c for c in provider.calls if c["message_body"] == text)
    assert call["bindings[0][OWNER_TYPE_ID]"] == "2" and call["bindings[0][OWNER_ID]"] == "42"
    assert call["message_to"] == "+15550102030"


def test_send_as_an_automation_rule_reaches_delivered(
    page: Page, portal: LivePortal, sender: str, provider: DeliveringProvider
) -> None:
    text = f"Automation {uuid.uuid4().hex[:6]}"
    open_console(page, portal, "/send?mode=bizproc")
    page.select_option("select[name=sender]", sender)
    page.fill("input[name=recipient]", "+15550102031")
    page.fill("textarea[name=text]", text)
    page.fill("input[name=workflow_id]", "6571f2a8b0e1c4.12345678")
    for i, value in enumerate(("crm", "CCrmDocumentDeal", "DEAL_42")):
        page.fill(f"input[name=document_id_{i}]", value)
    for i, value in enumerate(("crm", "CCrmDocumentDeal", "DEAL")):
        page.fill(f"input[name=document_type_{i}]", value)
    screenshot(page, portal.backend, "send-automation")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("delivered", timeout=WAIT_MS)
    call = next(c for c in provider.calls if c["message_body"] == text)
    assert call["module_id"] == "bizproc" and call["workflow_id"] == "6571f2a8b0e1c4.12345678"
    assert call["document_id[2]"] == "DEAL_42" and call["document_type[1]"] == "CCrmDocumentDeal"


def test_send_form_bad_input_is_explained_and_sends_nothing(
    page: Page, portal: LivePortal, sender: str, provider: DeliveringProvider
) -> None:
    before = len(provider.calls)
    open_console(page, portal, "/send")
    page.select_option("select[name=sender]", sender)
    page.fill("input[name=recipient]", "")
    page.fill("textarea[name=text]", "<script>window.__xss = 1</script>")
    page.fill("input[name=owner_id]", "forty-two")
    page.click("#send-form button[type=submit]")
    # Every wrong field at once, each beside its field.
    expect(page.locator("#error-recipient")).to_have_text("Recipient is required.")
    expect(page.locator("#error-owner_id")).to_have_text("Entity id must be a whole number.")
    expect(page.locator("#form-error")).to_have_text("Please correct the marked fields: Recipient, Entity id.")
    # What was typed comes back as text in the form, not as markup.
    expect(page.locator("textarea[name=text]")).to_have_value("<script>window.__xss = 1</script>")
    page.fill("input[name=recipient]", "+15550102032")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#error-owner_id")).to_have_text("Entity id must be a whole number.")
    expect(page.locator("#error-recipient")).to_have_count(0)
    assert page.evaluate("window.__xss") is None
    no_trace(page)
    assert len(provider.calls) == before


def test_script_in_a_message_is_shown_as_text(
    page: Page, portal: LivePortal, sender: str, provider: DeliveringProvider
) -> None:
    marker = uuid.uuid4().hex[:8]
    text = f'<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> {marker}'
    answer = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": "+15550102033", "MESSAGE_BODY": text},
        token=portal.token(sender.split("|")[0], 1)["access_token"],
    ).json()
    message_id = answer["result"]["ID"]
    open_console(page, portal, f"/messages?text={marker}")
    expect(page.locator("#message-table tbody tr")).to_have_count(1)
    expect(page.locator("#message-table")).to_contain_text("<script>window.__xss = 1</script>")
    open_console(page, portal, f"/messages/{message_id}")
    expect(page.locator("#handler-body")).to_contain_text('onerror="window.__xss = 2"')
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0


def test_messages_search_filters_and_pages(
    page: Page, portal: LivePortal, sender: str, provider_app: AppCredentials
) -> None:
    marker = uuid.uuid4().hex[:8]
    token = portal.token(provider_app.client_id, 1)["access_token"]
    for i in range(27):
        portal.call(
            "messageservice.message.send",
            {"MESSAGE_FROM": sender, "MESSAGE_TO": f"+1555099{i:04d}", "MESSAGE_BODY": f"bulk {marker} {i}"},
            token=token,
        )
    open_console(page, portal, "/messages")
    page.fill("input[name=text]", marker)
    page.select_option("select[name=sender]", sender)
    page.click("#filters button[type=submit]")
    expect(page.locator("#total")).to_contain_text("27 messages, page 1 of 2")
    expect(page.locator("#message-table tbody tr")).to_have_count(25)
    screenshot(page, portal.backend, "messages")
    page.click("#pager-bottom a[rel=next]")
    expect(page.locator("#message-table tbody tr")).to_have_count(2)
    expect(page.locator("#message-table")).to_contain_text(f"bulk {marker} 0")
    page.fill("input[name=recipient]", "+15550990013")
    page.click("#filters button[type=submit]")
    expect(page.locator("#message-table tbody tr")).to_have_count(1)
    expect(page.locator("#message-table")).to_contain_text(f"bulk {marker} 13")
    # A date that is not one is explained, not a crash.
    open_console(page, portal, f"/messages?text={marker}&since=yesterday")
    expect(page.locator("#form-error")).to_contain_text("From must be a date and time")
    open_console(page, portal, f"/messages?text={marker}&status=delivered&since=2000-01-01T00:00")
    expect(page.locator("#total")).to_be_visible()
    no_trace(page)


@pytest.fixture
def failing_handler() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def send_via_rest(portal: LivePortal, app: AppCredentials, sender: str, text: str) -> int:
    answer = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": "+15550102040", "MESSAGE_BODY": text},
        token=portal.token(app.client_id, 1)["access_token"],
    ).json()
    return int(answer["result"]["ID"])


def test_dead_letter_replay_button(
    page: Page, portal: LivePortal, provider_app: AppCredentials, failing_handler: Receiver
) -> None:
    failing_handler.status = 400  # a 4xx is not retried: the message is a dead letter at once
    sender = add_sender(portal, provider_app, failing_handler.url)
    message_id = send_via_rest(portal, provider_app, sender, "will die")
    failing_handler.wait_for(1)
    open_console(page, portal, f"/messages/{message_id}")
    expect(page.locator("#delivery-state")).to_contain_text("dead", timeout=WAIT_MS)
    failing_handler.status = 200
    page.click("#replay")
    expect(page.locator(".flash")).to_contain_text("Replayed")
    expect(page.locator("#timeline")).to_contain_text("replayed")
    expect(page.locator("#delivery-state")).to_contain_text("done", timeout=WAIT_MS)
    assert len(failing_handler.wait_for(2)) >= 2
    expect(page.locator("#attempts tr.attempt")).to_have_count(2)
    expect(page.locator("#attempts tr.round-title")).to_have_text(
        ["First delivery", re.compile(r"^Replay 1, replayed at ")]
    )
    expect(page.locator("#delivery-state")).to_contain_text("done after 1 attempt in replay 1 (2 in all)")
    screenshot(page, portal.backend, "message-replayed")


def test_retry_now_button(
    page: Page, portal: LivePortal, provider_app: AppCredentials, failing_handler: Receiver
) -> None:
    # The provider asks for an hour's pause; the operator says now.
    failing_handler.script = [Reply(503, (("Retry-After", "3600"),))]
    sender = add_sender(portal, provider_app, failing_handler.url)
    message_id = send_via_rest(portal, provider_app, sender, "retry me")
    failing_handler.wait_for(1)
    # The 503 written back, not only received: until then the attempt is under way and "Retry now"
    # rightly has nothing to bring forward.
    token = portal.token(provider_app.client_id, 1)["access_token"]
    deadline = time.monotonic() + WAIT_MS / 1000
    while not portal.call("messageservice.message.get", {"ID": message_id}, token=token).json()["result"]["ATTEMPTS"]:
        assert time.monotonic() < deadline, "the first attempt was never recorded"
        time.sleep(0.05)
    open_console(page, portal, f"/messages/{message_id}")
    expect(page.locator("#retry")).to_be_visible(timeout=WAIT_MS)
    page.click("#retry")
    expect(page.locator(".flash")).to_contain_text("The next attempt starts now")
    expect(page.locator("#delivery-state")).to_contain_text("done", timeout=WAIT_MS)
    assert len(failing_handler.wait_for(2)) == 2


def deliver_one(portal: LivePortal, app: AppCredentials, sender: str, provider: DeliveringProvider) -> None:
    """A message through the delivering provider, its report in, so the window has something to show."""
    before = len(provider.reports)
    send_via_rest(portal, app, sender, "for the charts")
    with provider.changed:
        assert provider.changed.wait_for(lambda: len(provider.reports) > before, timeout=WAIT_MS / 1000)


def test_dashboard_draws_and_refreshes(
    page: Page, portal: LivePortal, provider_app: AppCredentials, sender: str, provider: DeliveringProvider
) -> None:
    deliver_one(portal, provider_app, sender, provider)
    open_console(page, portal, "/")
    dashboard = page.locator("#dashboard")
    expect(dashboard).to_have_attribute("data-refreshes", re.compile(r"^[1-9]"))
    expect(page.locator("#chart-per-minute path[data-series=created]")).to_have_count(1)
    expect(page.locator("#chart-status rect[data-key=delivered]")).to_have_count(1)
    first = page.locator("#refreshed").inner_text()
    expect(dashboard).to_have_attribute("data-refreshes", re.compile(r"^([2-9]|\d\d+)"), timeout=WAIT_MS)
    assert page.locator("#refreshed").inner_text() != first
    expect(page.locator("#handler-rows")).to_contain_text("Test SMS")  # the sender's name
    expect(page.locator(f"#handler-rows td[title='{sender}']")).to_have_count(1)
    expect(page.locator("#handler-rows")).to_contain_text("closed")
    screenshot(page, portal.backend, "dashboard")


def test_providers_page(
    page: Page, portal: LivePortal, provider_app: AppCredentials, sender: str, provider: DeliveringProvider
) -> None:
    deliver_one(portal, provider_app, sender, provider)
    open_console(page, portal, "/providers")
    code = sender.split("|")[1]
    row = page.locator("tr", has=page.locator(f"td:text-is('{code}')"))
    expect(row).to_contain_text("Test-SMS")  # the German name beside the English one
    expect(row).to_contain_text("Test SMS")
    expect(row).to_contain_text(provider.url)
    expect(row).to_contain_text("100%")
    expect(row).to_contain_text("closed")
    screenshot(page, portal.backend, "providers")


def test_apps_page_actions(page: Page, portal: LivePortal, admin: Admin) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    name = f"Console app {uuid.uuid4().hex[:6]}"
    open_console(page, portal, "/apps")
    page.fill("#add-app input[name=name]", name)
    page.fill("#add-app input[name=url]", "http://127.0.0.1:9/app/")
    page.fill("#add-app input[name=scopes]", "messageservice,user")
    page.click("#add-app button[type=submit]")
    client_id = page.locator("#new-client-id").inner_text()
    secret = page.locator("#new-client-secret").inner_text()
    assert len(secret) == 50
    screenshot(page, portal.backend, "apps")
    page.click("#created a")
    page.click("#install")
    expect(page.locator(".flash")).to_contain_text("Installed")
    page.select_option("#mint-token select[name=user_id]", str(admin.user_id))
    page.click("#mint-token button[type=submit]")
    token = page.locator("#revealed-access-token").inner_text()
    profile = portal.call("profile", token=token).json()
    assert profile["result"]["ID"] == admin.user_id
    page.click("#signing-show")
    signing = page.locator("#revealed-signing-secret").inner_text()
    assert signing.startswith("whsec_")
    page.click("#signing-show")
    expect(page.locator("#revealed-signing-secret")).to_have_text(signing)
    page.click("#signing-rotate")
    expect(page.locator("#revealed-signing-secret")).not_to_have_text(signing)
    page.click("#signing-disable")
    expect(page.locator(".flash")).to_contain_text("Signing turned off")
    page.click("#reset-secret")
    new_secret = page.locator("#revealed-client-secret").inner_text()
    assert new_secret != secret and len(new_secret) == 50
    page.fill("#update-app input[name=name]", name + " v2")
    page.fill("#update-app input[name=version]", "2")
    page.click("#update-app button[type=submit]")
    expect(page.locator("h1")).to_contain_text(name + " v2")
    expect(page.locator(".facts")).to_contain_text("2")
    screenshot(page, portal.backend, "app")
    page.fill("#update-app input[name=version]", "1")
    page.click("#update-app button[type=submit]")
    expect(page.locator("#form-error")).to_contain_text("version must be greater than 2")
    page.click("#uninstall")
    expect(page.locator(".flash")).to_contain_text("Uninstalled")
    expect(page.locator("h1")).to_contain_text("not installed")
    assert portal.call("profile", token=token).status_code == 401
    assert client_id in page.locator("#client-id").inner_text()


def test_portal_page_actions(page: Page, portal: LivePortal) -> None:
    name = f"Dana {uuid.uuid4().hex[:4]}"
    open_console(page, portal, "/portal")
    page.fill("#add-user input[name=name]", name)
    page.check("#add-user input[name=admin]")
    page.click("#add-user button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("added")
    user_row = page.locator("#user-table tr", has_text=name)
    user_id = user_row.locator("td").first.inner_text()
    login = f"dana{uuid.uuid4().hex[:6]}"
    page.select_option("#set-password select[name=user_id]", user_id)
    page.fill("#set-password input[name=login]", login)
    page.fill("#set-password input[name=password]", "short")
    page.click("#set-password button[type=submit]")
    expect(page.locator("#form-error")).to_contain_text("at least 8 characters")
    page.select_option("#set-password select[name=user_id]", user_id)
    page.fill("#set-password input[name=login]", login)
    page.fill("#set-password input[name=password]", "a-long-password")
    page.click("#set-password button[type=submit]")
    expect(page.locator("#user-table tr", has_text=name)).to_contain_text(login)
    page.select_option("#add-webhook select[name=user_id]", user_id)
    page.fill("#add-webhook input[name=title]", "CRM robot")
    page.click("#add-webhook button[type=submit]")
    url = page.locator("#revealed-webhook-url").inner_text()
    assert portal.session.get(url + "profile.json", timeout=30).json()["result"]["ID"] == int(user_id)
    row = page.locator("#webhook-table tr", has_text="CRM robot")
    row.locator("button", has_text="Disable").click()
    expect(page.locator("#webhook-table tr", has_text="CRM robot")).to_contain_text("no")
    assert portal.session.get(url + "profile.json", timeout=30).status_code == 401
    page.fill("#public-url input[name=public_url]", "javascript:alert(1)")
    page.click("#public-url button[type=submit]")
    expect(page.locator("#form-error")).to_contain_text("Public URL must be an http(s) URL")
    page.fill("#public-url input[name=public_url]", portal.base_url)
    page.click("#public-url button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("Public URL saved")
    expect(page.locator("#settings-table")).to_contain_text("MESSAGESERVICE_RETRY_SCHEDULE")
    screenshot(page, portal.backend, "portal")
    # The new admin signs in with what was set here; once deactivated here, no more.
    assert sign_in_works(page, portal, login, "a-long-password")
    flags = page.locator("#user-table tr", has_text=name).locator("form")
    flags.locator("input[name=active]").uncheck()
    flags.locator("button").click()
    expect(page.locator(".flash")).to_contain_text(f"User {user_id} updated")
    expect(page.locator("#user-table tr", has_text=name).locator("input[name=active]")).not_to_be_checked()
    assert not sign_in_works(page, portal, login, "a-long-password")


def sign_in_works(page: Page, portal: LivePortal, login: str, password: str) -> bool:
    """Whether a separate browser session can sign in (the operator's own session is left alone)."""
    assert page.context.browser is not None
    other = page.context.browser.new_context()
    try:
        tab = other.new_page()
        tab.goto(portal.base_url + "/console/login")
        tab.fill("input[name=login]", login)
        tab.fill("input[name=password]", password)
        tab.click("button[type=submit]")
        tab.wait_for_load_state()
        return tab.locator("header .who").count() == 1
    finally:
        other.close()


def test_open_breaker_is_shown(
    page: Page, portal: LivePortal, provider_app: AppCredentials, failing_handler: Receiver
) -> None:
    # Five failures in a row open the handler's breaker in the serving process (MESSAGESERVICE_BREAKER_FAILURES).
    failing_handler.status = 500
    sender = add_sender(portal, provider_app, failing_handler.url)
    for i in range(portal.settings.breaker_failures):
        send_via_rest(portal, provider_app, sender, f"breaker {i}")
    failing_handler.wait_for(portal.settings.breaker_failures)
    code = sender.split("|")[1]
    row = page.locator("tr", has=page.locator(f"td:text-is('{code}')"))
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:  # the page is a snapshot: look again until the fifth answer has been counted
        open_console(page, portal, "/providers")
        if row.locator("td.breaker-open").count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    expect(row.locator("td.breaker-open")).to_have_text("open")
    expect(row).to_contain_text("HTTP 500")
    open_console(page, portal, "/")
    expect(page.locator("[data-stat=open_breakers]")).not_to_have_text("0")
    # Other tests' apps on this session's portal may have open breakers too: this sender's row is one of them.
    expect(page.locator("#handler-rows tr.breaker-open", has_text=code)).to_have_count(1)
    screenshot(page, portal.backend, "dashboard-breaker-open")
