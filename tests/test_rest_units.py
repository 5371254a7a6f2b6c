"""The REST layer's pure parts, with no server: route parsing and the envelope's shape (spec 3.1, 3.4)."""

from __future__ import annotations

import re
import time

import pytest

from messageservice.rest.endpoint import Route, parse_route
from messageservice.rest.envelope import Timing, error_body, iso_date, success_body


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/user.admin", Route("user.admin", "json", None)),
        ("/user.admin.json", Route("user.admin", "json", None)),
        ("/user.admin/", Route("user.admin", "json", None)),
        ("//user.admin", Route("user.admin", "json", None)),
        ("/User.Admin.JSON", Route("user.admin", "json", None)),
        ("/scope.xml", Route("scope", "xml", None)),
        ("/1/secret/user.admin.json/", Route("user.admin", "json", ("1", "secret"))),
        ("/", None),
        ("", None),
        ("/a/b", None),
        ("/a/b/c/d", None),
    ],
)
def test_parse_route(path: str, expected: Route | None) -> None:
    assert parse_route(path) == expected


def test_timing_block_has_bitrix_keys_in_order() -> None:
    block = Timing(start=1000.0, finish=1000.25, processing=0.2).block(operating=0.5, operating_reset_at=1600)
    assert list(block) == [
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    ]
    assert block["duration"] == 0.25 and block["operating"] == 0.5
    assert "operating" not in Timing(1.0, 2.0, 0.5).block()


def test_iso_date_is_phps_date_c() -> None:
    text = iso_date(time.time())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", text), text


def test_envelopes() -> None:
    body = success_body([1], {"start": 1}, next_offset=50, total=53)
    assert list(body) == ["result", "next", "total", "time"]
    assert list(success_body(True, {})) == ["result", "time"]
    assert error_body("E", "d") == {"error": "E", "error_description": "d"}


def _router_path(path: str, root_path: str = "") -> str | None:
    """What Starlette's routes for the REST endpoint give for `path` (None: neither matches)."""
    from starlette.routing import Match
    from starlette.routing import Route as StarletteRoute

    async def endpoint(*_: object) -> None:
        pass

    scope = {"type": "http", "path": path, "root_path": root_path, "method": "GET"}
    for route in (StarletteRoute("/rest/{path:anypath}", endpoint), StarletteRoute("/rest", endpoint)):
        match, child = route.matches(scope)
        if match is Match.FULL:
            return child["path_params"].get("path", "")
    return None


@pytest.mark.parametrize(
    ("path", "root_path"),
    [
        ("/rest/user.admin", ""),
        ("/rest/user.admin.json/", ""),
        ("/rest//user.admin", ""),
        ("/rest/1/secret/user.admin", ""),
        ("/rest/a\nb/m", ""),
        ("/rest/", ""),
        ("/rest", ""),
        ("/restx", ""),
        ("/rest.json", ""),
        ("/", ""),
        ("/console/rest/x", ""),
        ("/ms/rest/user.admin", "/ms"),
        ("/ms/rest", "/ms"),
        ("/msx/rest/user.admin", "/ms"),
    ],
)
def test_rest_calls_skip_the_router_exactly_where_its_rest_routes_match(path: str, root_path: str) -> None:
    from messageservice.rest.mount import rest_path

    assert rest_path({"path": path, "root_path": root_path}) == _router_path(path, root_path)
