"""Console sign-in over plain HTTP: who may sign in, the brake on guessing, sessions, CSRF and Origin."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import requests

from messageservice.core.logins import LoginBrake
from messageservice.core.passwords import hash_password, password_matches
from tests.console_helpers import CSRF_FIELD, ConsoleClient, add_admin
from tests.portal import AppCredentials, LivePortal


def test_password_hash_is_salted_scrypt() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$") and first != second
    assert "correct horse" not in first
    assert password_matches("correct horse", first)
    assert not password_matches("correct hors", first)
    assert not password_matches("x", "garbage") and not password_matches("x", None)


def test_pages_need_a_session(portal: LivePortal) -> None:
    client = ConsoleClient(portal)
    for path in ("/", "/messages", "/send", "/apps", "/providers", "/portal", "/messages/1"):
        answer = client.get(path, allow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/console/login?next=")
    assert client.get("/stats.json").status_code == 401


def test_admin_signs_in_and_out(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    cookie = next(c for c in client.http.cookies if c.name == "messageservice_console")
    assert cookie.path == "/"
    assert cookie.has_nonstandard_attr("HttpOnly") or "httponly" in str(cookie._rest).lower()
    page = client.get("/messages")
    assert page.status_code == 200 and admin.login in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    client.post("/logout", {})
    assert client.get("/messages", allow_redirects=False).status_code == 303


def test_wrong_password_non_admin_and_inactive_are_refused(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal)
    token = client.csrf()
    started = time.monotonic()
    wrong = client.http.post(
        client.url("/login"), data={"csrf": token, "login": admin.login, "password": "nope"}, timeout=30
    )
    assert wrong.status_code == 401 and "Wrong login or password" in wrong.text
    assert time.monotonic() - started >= 0.4  # failures are slowed down
    clerk = add_admin(portal, admin=False)
    answer = client.http.post(
        client.url("/login"), data={"csrf": token, "login": clerk.login, "password": clerk.password}, timeout=30
    )
    assert answer.status_code == 401


def test_repeated_failures_are_braked(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal)
    token = client.csrf()
    for _ in range(5):
        client.http.post(client.url("/login"), data={"csrf": token, "login": admin.login, "password": "x"}, timeout=30)
    # Even the right password is refused while the brake holds.
    answer = client.http.post(
        client.url("/login"), data={"csrf": token, "login": admin.login, "password": admin.password}, timeout=30
    )
    assert answer.status_code == 429 and "Too many failed sign-ins" in answer.text


def test_brake_forgets_after_its_window() -> None:
    brake = LoginBrake(allowed=2, window=10)
    brake.failed("a", "x", now=0)
    brake.failed("a", "x", now=1)
    assert brake.wait_seconds("a", "x", now=2) > 0
    assert brake.wait_seconds("b", "x", now=2) == 0
    assert brake.wait_seconds("a", "x", now=11) == 0


def test_brake_stops_one_address_trying_many_logins() -> None:
    brake = LoginBrake(allowed=5, allowed_per_address=3, window=10)
    for i in range(3):
        brake.failed("a", f"login{i}", now=i)
    assert brake.wait_seconds("a", "another", now=3) > 0
    assert brake.wait_seconds("b", "another", now=3) == 0


def test_post_without_csrf_or_from_another_site_is_refused(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    no_token = client.post("/logout", {}, csrf="forged")
    assert no_token.status_code == 403 and "CSRF check failed" in no_token.text
    other = client.http.post(
        client.url("/logout"),
        data={"csrf": client.csrf("/messages")},
        headers={"Origin": "http://evil.example"},
        timeout=30,
    )
    assert other.status_code == 403 and "Origin check failed" in other.text
    assert client.get("/messages").status_code == 200  # still signed in: neither POST did anything


def test_a_new_password_ends_older_sessions(portal: LivePortal) -> None:
    from messageservice.core.logins import set_password

    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    portal.run(lambda core: set_password(core, admin.user_id, "another-password-1"))
    assert client.get("/messages", allow_redirects=False).status_code == 303


def test_login_page_escapes_and_never_redirects_off_site(portal: LivePortal) -> None:
    client = ConsoleClient(portal)
    page = client.get("/login?next=https://evil.example/")
    assert 'value="/console/"' in page.text
    token = CSRF_FIELD.search(page.text)
    assert token is not None
    answer = client.http.post(
        client.url("/login"),
        data={"csrf": token.group(1), "login": "<script>alert(1)</script>", "password": "x"},
        timeout=30,
    )
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;" in answer.text


def _authorize(http: requests.Session, portal: LivePortal, client_id: str, **extra: str) -> requests.Response:
    params = {"client_id": client_id, **extra}
    return http.get(portal.base_url + "/oauth/authorize/", params=params, allow_redirects=False, timeout=30)


def _token_user(portal: LivePortal, app: AppCredentials, answer: requests.Response) -> int:
    assert answer.status_code == 302, answer.text
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    token = portal.session.get(
        portal.base_url + "/oauth/token/",
        params={
            "grant_type": "authorization_code",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "code": code,
        },
        timeout=30,
    ).json()
    return int(token["user_id"])


def test_oauth_authorize_issues_codes_for_the_signed_in_admin(portal: LivePortal) -> None:
    app = portal.add_app()  # installed by user 1
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    assert _token_user(portal, app, _authorize(client.http, portal, app.client_id)) == admin.user_id
    assert _token_user(portal, app, _authorize(client.http, portal, app.client_id, user_id=str(admin.user_id))) == (
        admin.user_id
    )
    # Someone else's id is still refused; without a session the installer gets the code, as before.
    other = _authorize(client.http, portal, app.client_id, user_id=str(portal.add_user("Bystander")))
    assert other.status_code == 403 and other.json()["error"] == "access_denied"
    assert _token_user(portal, app, _authorize(requests.Session(), portal, app.client_id)) == 1
    # A forged or tampered cookie is no session.
    forged = requests.Session()
    forged.cookies.set("messageservice_console", "eyJ1c2VyX2lkIjogMn0=.forged.sig")
    assert _token_user(portal, app, _authorize(forged, portal, app.client_id)) == 1
    # Signed out: no more.
    client.post("/logout", {})
    assert _token_user(portal, app, _authorize(client.http, portal, app.client_id)) == 1
