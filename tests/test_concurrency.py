"""Many clients at once: token refreshes, code exchanges and sender updates never fail with a 500."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from tests.console_helpers import ConsoleClient, add_admin
from tests.portal import LivePortal

PARALLEL = 40


def _refresh(portal: LivePortal, client_id: str, secret: str, refresh_token: str) -> requests.Response:
    return requests.post(
        portal.base_url + "/oauth/token/",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": secret,
            "refresh_token": refresh_token,
        },
        timeout=60,
    )


def test_parallel_refreshes_all_succeed(portal: LivePortal) -> None:
    app = portal.add_app()
    tokens = [portal.token(app.client_id, 1)["refresh_token"] for _ in range(PARALLEL)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = list(pool.map(lambda t: _refresh(portal, app.client_id, app.client_secret, t), tokens))
    assert [a.status_code for a in answers] == [200] * PARALLEL, {a.status_code for a in answers}
    assert len({a.json()["access_token"] for a in answers}) == PARALLEL


def test_one_refresh_token_is_redeemed_once(portal: LivePortal) -> None:
    app = portal.add_app()
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: _refresh(portal, app.client_id, app.client_secret, app.refresh_token), range(8))
        )
    assert sorted(a.status_code for a in answers) == [200] + [400] * 7
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)


def test_one_code_is_exchanged_once(portal: LivePortal) -> None:
    app = portal.add_app()
    browser = ConsoleClient(portal).login(add_admin(portal)).http  # codes go only to a signed-in user
    location = browser.get(
        portal.base_url + "/oauth/authorize/", params={"client_id": app.client_id}, allow_redirects=False, timeout=30
    ).headers["location"]
    code = location.split("code=", 1)[1].split("&", 1)[0]

    def exchange(_: int) -> int:
        return requests.get(
            portal.base_url + "/oauth/token/",
            params={
                "grant_type": "authorization_code",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "code": code,
            },
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(exchange, range(8))) == [200] + [400] * 7


def test_parallel_updates_adding_one_language(portal: LivePortal) -> None:
    app = portal.add_app()
    code = "cc" + uuid.uuid4().hex[:8]
    params: dict[str, Any] = {"CODE": code, "TYPE": "SMS", "HANDLER": "http://127.0.0.1:9/h", "NAME": "N"}
    assert portal.call("messageservice.sender.add", params, token=app.access_token).status_code == 200

    def update(i: int) -> requests.Response:
        body = {"CODE": code, "NAME": {"fr": f"Nom {i}"}, "auth": app.access_token}
        return requests.post(portal.rest_url + "messageservice.sender.update", json=body, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(update, range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    from messageservice.core.senders import list_senders

    stored = next(s for s in portal.run(list_senders) if s.code == code)
    assert stored.names["fr"].startswith("Nom ")
