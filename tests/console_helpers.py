"""Console test helpers: an admin who can sign in, a requests client that signs in like a browser,
a provider that reports `delivered`, and the Playwright browser (Debian's chromium)."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import requests

from messageservice.core.logins import set_password
from tests.loopback_http import serve_in_background
from tests.portal import AppCredentials, LivePortal

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_browser() -> Iterator[Any]:
    """A headless Chromium for a module's browser tests (playwright imported only by them)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class Admin:
    user_id: int
    login: str
    password: str


def add_admin(portal: LivePortal, *, admin: bool = True) -> Admin:
    """A new user with a console login of its own (tests never share user 1's password)."""
    user_id = portal.add_user("Operator <b>" + uuid.uuid4().hex[:4] + "</b>", admin=admin)
    login, password = f"op{uuid.uuid4().hex[:10]}", "pw-" + uuid.uuid4().hex
    portal.run(lambda core: set_password(core, user_id, password, login=login))
    return Admin(user_id, login, password)


class ConsoleClient:
    """Plain HTTP against the console, as a browser would send it: cookies, Origin, the CSRF token."""

    def __init__(self, portal: LivePortal) -> None:
        self.portal = portal
        self.http = portal.new_session()
        self.http.headers["Origin"] = portal.base_url

    def url(self, path: str) -> str:
        return self.portal.base_url + "/console" + path

    def csrf(self, path: str = "/login") -> str:
        page = self.http.get(self.url(path), timeout=30)
        found = CSRF_FIELD.search(page.text)
        assert found is not None, page.text[:500]
        return found.group(1)

    def login(self, admin: Admin) -> ConsoleClient:
        token = self.csrf("/login")
        answer = self.http.post(
            self.url("/login"),
            data={"csrf": token, "login": admin.login, "password": admin.password, "next": "/console/"},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 303, answer.text[:500]
        return self

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url(path), timeout=30, **kwargs)

    def post(self, path: str, data: dict[str, Any], *, csrf: str | None = None, **kwargs: Any) -> requests.Response:
        token = csrf if csrf is not None else self.csrf("/messages")
        return self.http.post(self.url(path), data={"csrf": token, **data}, timeout=30, **kwargs)


@dataclass
class DeliveringProvider:
    """A provider app on a loopback port: answers each HANDLER call 200, then reports `delivered`
    with messageservice.message.status.update and the token the call carried in auth[access_token]."""

    portal: LivePortal
    calls: list[dict[str, str]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    status: str = "delivered"

    def start(self) -> DeliveringProvider:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                self.wfile.flush()
                with owner.changed:
                    owner.calls.append(form)
                    owner.changed.notify_all()
                threading.Thread(target=owner.report, args=(form,), daemon=True).start()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = serve_in_background(Handler)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/handler"

    def report(self, form: dict[str, str]) -> None:
        fields = {
            "auth": form["auth[access_token]"],
            "CODE": form["code"],
            "MESSAGE_ID": form["message_id"],
            "STATUS": self.status,
        }
        with self.portal.new_session() as http:  # reaches an in-process portal too
            answer = http.post(
                self.portal.rest_url + "messageservice.message.status.update", data=fields, timeout=30
            ).json()
        with self.changed:
            self.reports.append(answer)
            self.changed.notify_all()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def add_sender(portal: LivePortal, app: AppCredentials, handler: str, code: str | None = None) -> str:
    """Register a sender the way a provider app does (REST, with its token); returns MESSAGE_FROM."""
    code = code or "sms" + uuid.uuid4().hex[:8]
    answer = portal.call(
        "messageservice.sender.add",
        {"CODE": code, "TYPE": "SMS", "HANDLER": handler, "NAME": {"en": "Test SMS", "de": "Test-SMS"}},
        token=app.access_token,
    ).json()
    assert answer.get("result") is True, answer
    return f"{app.client_id}|{code}"


def screenshot(page: Any, backend: str, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}-{backend}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path
