"""Bad input never produces a 500 or a stack trace (property-based, hypothesis).

Random method paths, query strings, form bodies, JSON, wrong content types, broken encodings, oversized
bodies and batch commands are thrown at /rest/ of a live portal; every answer must be a well-formed
Bitrix success or error envelope. Requests go over a raw socket so that the exact bytes are sent
(requests and http.client would re-quote broken percent-escapes) and so that an oversized upload can
stop as soon as the server has answered.

The server bugs this module found are pinned by the regression tests at its end, each with the exact
request that once broke it.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import string
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from messageservice.core import senders as sender_service
from messageservice.core.apps import get_app
from messageservice.core.context import Core
from tests.portal import AppCredentials, LivePortal

# ---------------------------------------------------------------------------------------------------------
# What a well-formed answer is
# ---------------------------------------------------------------------------------------------------------

ALLOWED_STATUSES = {200, 400, 401, 403, 404, 413, 429, 503}
# Errors whose status is fixed by Bitrix (or by our README for 413).
STATUS_OF_ERROR = {
    "ERROR_REQUEST_TOO_LARGE": 413,
    "WRONG_ENCODING": 400,
    "QUERY_LIMIT_EXCEEDED": 503,
    "OPERATION_TIME_LIMIT": 429,
    "ERROR_METHOD_NOT_FOUND": 404,
}
TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish"}
BATCH_KEYS = {"result", "result_error", "result_total", "result_next", "result_time"}
TRACE_MARKERS = ("Traceback", 'File "')
# Bitrix's own check for sender codes; PHP's '$' also matches before one final newline, Python's too.
CODE_RE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)

# Every method the registry has; the first four write to the database.
METHODS = [
    "messageservice.sender.add",
    "messageservice.sender.update",
    "messageservice.sender.delete",
    "messageservice.sender.list",
    "batch",
    "app.info",
    "scope",
    "methods",
    "method.get",
    "server.time",
    "profile",
    "user.admin",
]
VERBS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
HANDLER = "http://fuzz.example:9/handler"  # a dotted host, as Bitrix demands; adding a sender never calls it


@dataclass(repr=False)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    request: bytes = b""  # the head (and a body prefix) we sent, for failure messages

    def __repr__(self) -> str:  # what an assertion message shows: the exact request and the answer
        sent = self.request[:600]
        return f"request {sent!r}\n-> {self.status} {self.headers.get('content-type')!r} {self.body[:600]!r}"


def _strings(value: Any) -> Iterator[str]:
    """Every key and string value in a decoded JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _no_trace(answer: Answer, texts: Iterable[str] = ()) -> None:
    raw = answer.body.decode("utf-8", "replace")
    for text in (raw, *texts):
        for marker in TRACE_MARKERS:
            assert marker not in text, f"stack trace leaked\n{answer}"


def _reject_constant(name: str) -> NoReturn:
    raise AssertionError(f"non-standard JSON constant {name} in a response")


def _check_time(block: Any, answer: Answer) -> None:
    assert isinstance(block, dict), answer
    assert set(block) >= TIME_KEYS, f"time block lacks {TIME_KEYS - set(block)}\n{answer}"
    for key in ("start", "finish", "duration", "processing"):
        assert isinstance(block[key], int | float) and not isinstance(block[key], bool), answer
    assert block["finish"] >= block["start"], answer
    for key in ("date_start", "date_finish"):
        datetime.fromisoformat(block[key])


def check_answer(answer: Answer, verb: str = "GET", *, xml: bool = False) -> Any:
    """The contract for every answer of /rest/; returns the decoded body (None for OPTIONS/HEAD)."""
    assert answer.status in ALLOWED_STATUSES, f"unexpected status\n{answer}"
    _no_trace(answer)
    if verb == "OPTIONS" and answer.status == 200:  # CORS preflight on a routed path: empty 200
        assert answer.body == b"", answer
        return None
    if verb == "HEAD":
        assert answer.body == b"", answer
        return None
    content_type = answer.headers.get("content-type", "")
    if xml:
        assert content_type.split(";")[0].strip() == "text/xml", answer
        try:
            root = ET.fromstring(answer.body)
        except ET.ParseError as exc:
            raise AssertionError(f"malformed XML ({exc})\n{answer}") from None
        assert root.tag == "response", answer
        assert (root.find("error") is None) == (answer.status == 200), answer
        return root
    assert content_type.split(";")[0].strip() == "application/json", answer
    # PHP's json_encode output: pure ASCII, standard JSON (no NaN/Infinity).
    assert answer.body.isascii(), answer
    data = json.loads(answer.body, parse_constant=_reject_constant)
    _no_trace(answer, _strings(data))
    assert isinstance(data, dict), answer
    if answer.status == 200:
        assert "result" in data and "time" in data, answer
        assert set(data) <= {"result", "next", "total", "time"}, answer
        assert "error" not in data, answer
        _check_time(data["time"], answer)
    else:
        assert set(data) == {"error", "error_description"}, f"malformed error envelope\n{answer}"
        assert isinstance(data["error"], str) and data["error"], answer
        assert isinstance(data["error_description"], str), answer
        expected = STATUS_OF_ERROR.get(data["error"])
        assert expected is None or expected == answer.status, answer
        if answer.status == 503:  # only the limiter may answer 503
            assert data["error"] == "QUERY_LIMIT_EXCEEDED", answer
    return data


def fuzzed(answer: Answer, verb: str = "GET", *, xml: bool = False) -> Any:
    """check_answer inside a property, recording the outcome (see --hypothesis-show-statistics)."""
    data = check_answer(answer, verb, xml=xml)
    error = data.get("error") if isinstance(data, dict) else None
    event(f"{answer.status} {error or 'ok'}")
    return data


def check_batch(data: Any, answer: Answer) -> None:
    """A 200 batch answer carries its five sections; each error entry is an error envelope."""
    result = data["result"]
    assert isinstance(result, dict) and set(result) == BATCH_KEYS, answer
    errors = result["result_error"]
    assert isinstance(errors, dict | list), answer
    for entry in errors.values() if isinstance(errors, dict) else errors:
        assert set(entry) == {"error", "error_description"}, answer
        assert isinstance(entry["error"], str) and isinstance(entry["error_description"], str), answer
    times = result["result_time"]
    for block in times.values() if isinstance(times, dict) else times:
        _check_time(block, answer)


# ---------------------------------------------------------------------------------------------------------
# A raw HTTP/1.1 client
# ---------------------------------------------------------------------------------------------------------

SLICE = 64 * 1024


def _send_until_answered(sock: socket.socket, pieces: Iterable[bytes]) -> None:
    """Send the request; stop early once the server has answered (e.g. 413 before the body is read)."""
    for piece in pieces:
        for offset in range(0, len(piece), SLICE):
            if select.select([sock], [], [], 0)[0]:
                return
            try:
                sock.sendall(piece[offset : offset + SLICE])
            except (BrokenPipeError, ConnectionResetError):
                return


def _read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(SLICE)
        except ConnectionResetError:
            break  # the server closed on an unread request body; what arrived before counts
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _dechunk(raw: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[:size]
        raw = raw[size + 2 :]


def exchange(
    portal: LivePortal,
    verb: str,
    target: str | bytes,
    *,
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes | None = None,
    chunks: Iterable[bytes] | None = None,
    declared_length: int | None = None,
    timeout: float = 30.0,
) -> Answer:
    """One request on a fresh connection, exactly these bytes; `chunks` sends Transfer-Encoding: chunked."""
    target_bytes = target.encode("ascii") if isinstance(target, str) else target
    lines = [verb.encode() + b" " + target_bytes + b" HTTP/1.1", f"Host: 127.0.0.1:{portal.server.port}".encode()]
    lines.append(b"Connection: close")
    for name, value in headers:
        lines.append(name.encode() + b": " + (value.encode("latin-1") if isinstance(value, str) else value))
    pieces: Iterable[bytes]
    if chunks is not None:
        lines.append(b"Transfer-Encoding: chunked")
        pieces = (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
        pieces = _chain(pieces, [b"0\r\n\r\n"])
    elif body is not None or declared_length is not None:
        payload = body or b""
        lines.append(b"Content-Length: %d" % (len(payload) if declared_length is None else declared_length))
        pieces = [payload]
    else:
        pieces = []
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    shown = head + (body[:200] if body else b"")
    with socket.create_connection(("127.0.0.1", portal.server.port), timeout=timeout) as sock:
        try:
            _send_until_answered(sock, _chain([head], pieces))
            raw = _read_all(sock)
        except TimeoutError:
            raise AssertionError(f"no answer within {timeout} s (server hang)\nrequest {shown[:600]!r}") from None
    status_head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"incomplete response {raw[:300]!r}\nrequest {shown[:600]!r}"
    status_line, *header_lines = status_head.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    if verb == "HEAD":
        content = b""
    elif "chunked" in answer_headers.get("transfer-encoding", ""):
        content = _dechunk(rest)
    elif "content-length" in answer_headers:
        length = int(answer_headers["content-length"])
        assert len(rest) >= length, f"truncated response {raw[:300]!r}\nrequest {shown[:600]!r}"
        content = rest[:length]
    else:
        content = rest
    return Answer(int(status_line.split(" ")[1]), answer_headers, content, shown)


def _chain(*parts: Iterable[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield from part


# ---------------------------------------------------------------------------------------------------------
# Fixtures: the callers the fuzzer speaks as
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Callers:
    admin: AppCredentials  # an app token of admin user 1: may add senders
    plain: AppCredentials  # an app token of a non-admin user: ACCESS_DENIED on sender methods
    expired: str  # an access token past its expiry
    webhook_user: str
    webhook_secret: str


@pytest.fixture(scope="module")
def callers(portal: LivePortal) -> Callers:
    admin = portal.add_app(name="Fuzz")
    plain = portal.add_app(name="Fuzz plain", user_id=portal.add_user("Plain"))
    stale = portal.add_app(name="Fuzz stale")
    portal.expire_access_token(stale.access_token)
    hook = portal.add_webhook(1, "messageservice").rstrip("/").split("/")
    return Callers(admin, plain, stale.access_token, hook[-2], hook[-1])


AUTH_KINDS = ["none", "query", "bearer", "body", "plain", "expired", "garbage", "webhook", "bad-webhook"]
auth_kinds = st.sampled_from(AUTH_KINDS)


@dataclass
class Auth:
    prefix: str = "/rest/"  # where the method name goes
    query: str = ""  # appended to the query string
    headers: list[tuple[str, str]] = field(default_factory=list)
    token: str | None = None  # to put into a body


def make_auth(kind: str, callers: Callers) -> Auth:
    token = {"plain": callers.plain.access_token, "expired": callers.expired, "garbage": "0" * 40}.get(
        kind, callers.admin.access_token
    )
    if kind == "none":
        return Auth()
    if kind == "bearer":
        return Auth(headers=[("Authorization", f"Bearer {token}")])
    if kind == "body":
        return Auth(token=token)
    if kind == "webhook":
        return Auth(prefix=f"/rest/{callers.webhook_user}/{callers.webhook_secret}/")
    if kind == "bad-webhook":
        return Auth(prefix=f"/rest/{callers.webhook_user}/{callers.webhook_secret[::-1]}/")
    return Auth(query=f"auth={token}")


def with_query(path: str, *queries: str) -> str:
    joined = "&".join(q for q in queries if q)
    return f"{path}?{joined}" if joined else path


# ---------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------

# Left alone in paths and query strings; '%', '&', '=', '+', '[', ']' come from the other pieces.
URL_SAFE = string.ascii_letters + string.digits + "-._~!$'()*,;:@"
# NUL included: every engine must refuse it alike (test_bug_nul_in_stored_text_postgres).
TEXT = st.characters(blacklist_categories=("Cs",))
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


def _pct(raw: bytes) -> str:
    return "".join(f"%{b:02X}" for b in raw)


# Invalid UTF-8: stray continuation bytes, truncated and overlong sequences, encoded surrogates, > U+10FFFF.
BAD_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
]
bad_utf8 = st.one_of(
    st.sampled_from(BAD_UTF8),
    st.binary(min_size=1, max_size=6)
    .map(lambda b: b.replace(b"\x00", b"\x01"))
    .map(lambda b: b if not _is_utf8(b) else b + b"\xff"),
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


url_piece = st.one_of(
    st.text(URL_SAFE, min_size=1, max_size=8),
    st.text(TEXT, min_size=1, max_size=6).map(lambda s: quote(s, safe="")),  # valid UTF-8, escaped
    st.binary(min_size=1, max_size=4).map(lambda b: _pct(b.replace(b"\x00", b"\x01"))),  # often invalid UTF-8
    st.sampled_from(["%", "%G", "%zz", "%4", "%%", "+", "%2", "%20", "%2F", "%5B", "%5D", "%26", "%3D"]),
)
url_text = st.lists(url_piece, max_size=5).map("".join)


# The endpoint's routes as regexes: {path:anypath} crosses newlines (test_newline_in_path_stays_in_the_rest_route).
REST_ROUTES = [re.compile(r"^/rest/(?P<path>[\s\S]*)$"), re.compile(r"^/rest$")]


def _route_segments(path: str) -> list[str] | None:
    """What the endpoint routes on: the segments of the decoded {path}; None if the route does not match."""
    decoded = unquote(path)  # as uvicorn decodes scope["path"]
    for route in REST_ROUTES:
        match = route.match(decoded)
        if match:
            return [s for s in match.groupdict().get("path", "").split("/") if s]
    return None


def expects_xml(path: str) -> bool:
    """The endpoint's URL forms: one or three segments, the last ending in .xml (any case)."""
    segments = _route_segments(path)
    return segments is not None and len(segments) in (1, 3) and segments[-1].lower().endswith(".xml")


method_names = st.one_of(
    st.sampled_from(METHODS),
    st.sampled_from(METHODS).map(str.upper),
    st.sampled_from(METHODS).map(lambda m: m.replace(".", "%2E")),
    url_text,
)
suffixes = st.sampled_from(["", "/", ".json", ".JSON", ".json/", ".xml", ".Xml", ".xml/", ".php", ".json.xml", "."])


@st.composite
def rest_paths(draw: st.DrawFn) -> str:
    """/rest/m, /rest//m, /rest/{uid}/{secret}/m (real or garbage), /rest, and too many segments."""
    name = draw(method_names) + draw(suffixes)
    form = draw(st.sampled_from(["plain", "double", "webhook", "garbage-webhook", "bare", "deep"]))
    if form == "double":
        return "/rest//" + name
    if form == "webhook":
        return "/rest/<UID>/<SECRET>/" + name
    if form == "garbage-webhook":
        uid = draw(st.one_of(st.from_regex(r"\A[0-9]{1,25}\Z"), url_text))
        return f"/rest/{uid}/{draw(url_text)}/{name}"
    if form == "bare":
        return draw(st.sampled_from(["/rest", "/rest/", "/rest//", "/rest/./"]))
    if form == "deep":
        return "/rest/" + "/".join(draw(st.lists(url_text, min_size=2, max_size=6))) + "/" + name
    return "/rest/" + name


PARAM_NAMES = ["auth", "access_token", "CODE", "NAME", "TYPE", "HANDLER", "DESCRIPTION", "cmd", "halt", "start"]
PARAM_NAMES += ["full", "scope", "name", "FULL", "a.b", "a b", " x", "0", "-1"]


@st.composite
def php_keys(draw: st.DrawFn) -> str:
    """A parameter name with PHP brackets: a[b][], unmatched '[' or ']', empty base, deep nesting."""
    base = draw(st.one_of(st.sampled_from(PARAM_NAMES).map(lambda s: quote(s, safe="")), url_text))
    # Past int()'s 4300-digit limit too (test_bug_long_bracket_index).
    inside = st.one_of(st.just(""), st.from_regex(r"\A-?[0-9]{1,30}\Z"), st.just("9" * 4301), url_text)
    shape = draw(st.sampled_from(["flat", "brackets", "brackets", "unmatched", "deep", "stray"]))
    if shape == "brackets":
        return base + "".join(f"[{draw(inside)}]" for _ in range(draw(st.integers(1, 4))))
    if shape == "unmatched":
        return base + "[" + draw(url_text) + draw(st.sampled_from(["", "[", "[]", "][", "]["]))
    if shape == "deep":  # past PHP's max_input_nesting_level of 64
        return base + draw(st.sampled_from(["[]", "[a]", "[0]"])) * draw(st.integers(60, 200))
    if shape == "stray":
        return draw(st.sampled_from(["[", "]", "[]", "[a]", "=", ""])) + base
    return base


@st.composite
def php_queries(draw: st.DrawFn) -> str:
    """A query string or form body as clients (and attackers) write them."""
    pairs = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(php_keys())
        form = draw(st.sampled_from(["pair", "pair", "pair", "bare", "empty"]))
        if form == "pair":
            pairs.append(f"{key}={draw(url_text)}")
        elif form == "bare":
            pairs.append(key)
        else:
            pairs.append("")
    return draw(st.sampled_from(["&", "&&", ";", "&amp;"])).join(pairs)


# JSON written as text, so that NaN, 1e999, 5000-digit numbers and escaped lone surrogates go out verbatim.
json_strings = st.lists(st.one_of(st.text(TEXT, max_size=8), st.sampled_from(LONE_SURROGATES)), max_size=3).map("".join)
json_scalars = st.one_of(
    st.sampled_from(["null", "true", "false", "0", "-0", "1E+2", "0.1e-400"]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]),
    st.sampled_from([400, 4300, 4301, 5000]).map(lambda n: "9" * n),  # past int()'s 4300-digit limit
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(json.dumps),
    json_strings.map(json.dumps),
)


def _json_array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _json_object(items: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items) + "}"


json_keys = st.one_of(st.sampled_from(PARAM_NAMES), json_strings)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(_json_array),
        st.lists(st.tuples(json_keys, inner), max_size=4).map(_json_object),
    ),
    max_leaves=12,
)


@st.composite
def json_documents(draw: st.DrawFn) -> str:
    """Objects (with or without <TOKEN>), arrays, scalars, deep nesting and truncated text."""
    kind = draw(st.sampled_from(["object", "object", "value", "deep", "truncated", "garbage"]))
    if kind == "object":
        items = draw(st.lists(st.tuples(json_keys, json_values), max_size=5))
        if draw(st.booleans()):
            items.insert(draw(st.integers(0, len(items))), ("auth", '"<TOKEN>"'))
        return _json_object(items)
    if kind == "value":
        return draw(json_values)
    if kind == "deep":  # past the server's nesting guard and Python's recursion limit
        depth = draw(st.sampled_from([63, 64, 65, 66, 100, 999, 1001, 5000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = draw(st.sampled_from(["1", '"\\ud800"', '"x"']))
        return '{"auth":"<TOKEN>","x":' + opener * depth + inner + closer * depth + "}"
    if kind == "truncated":
        text = draw(json_values)
        return text[: draw(st.integers(0, len(text)))]
    return draw(st.text(TEXT, max_size=20))


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin1",
    "multipart/form-data",
    "multipart/form-data; boundary=B",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=B; charset=latin-1",
    "multipart/form-data; boundary=B; charset=no-such-codec",
    "text/plain",
    "text/xml",
    "application/xml",
    "application/octet-stream",
    "application/json-patch+json",
    "*/*",
    "",
    ";",
    "garbage",
    "application/json; boundary=B",
]
# utf-7 smuggles lone surrogates into multipart fields (test_bug_multipart_utf7_charset).
CONTENT_TYPES.append("multipart/form-data; boundary=B; charset=utf-7")
content_types = st.one_of(st.sampled_from(CONTENT_TYPES), st.text(URL_SAFE + " ;=/", max_size=30))


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    """Multipart with boundary B: fields, files, missing headers, truncation, bad bytes."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(PARAM_NAMES), php_keys()))
        value = draw(st.one_of(st.text(TEXT, max_size=10).map(str.encode), bad_utf8, st.just(b"<TOKEN>")))
        disposition = draw(
            st.sampled_from(
                [
                    f'form-data; name="{name}"',
                    f'form-data; name="{name}"; filename="f.txt"',
                    "form-data",
                    f"form-data; name={name}",
                    "",
                ]
            )
        )
        parts.append(b"--B\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + value + b"\r\n")
    body = b"".join(parts) + draw(st.sampled_from([b"--B--\r\n", b"--B--", b"", b"--B\r\n", b"--C--\r\n"]))
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return body


# Sender parameters: mostly plausible, sometimes wrong in one way, occasionally junk.
codes = st.one_of(
    st.from_regex(r"\Afz[a-z0-9._-]{0,12}\Z"),
    st.from_regex(r"\Afz[a-z0-9]{0,6}\n\Z"),  # PHP's '$' accepts one final newline
    st.text(TEXT, max_size=10),
    st.sampled_from(["", "0", "fz bad", "fz/bad", "fz\n\n", "ФЗ", "a" * 129, "fz" + "x" * 126]),
    st.integers(-5, 10**20),
    st.booleans(),
    st.lists(st.just("fz"), max_size=2),
)
handlers = st.one_of(
    st.just(HANDLER),
    st.sampled_from(
        [
            "https://a.example/h",
            "HTTP://a.example/",
            "ftp://a.example/",
            "http://localhost/",
            "http://.example/",
            "http://[::1/",
            "//a.example/",
            "http://a.example/" + "x" * 1000,
            "",
        ]
    ),
    st.text(TEXT, max_size=20),
)
names = st.one_of(
    st.text(TEXT, min_size=1, max_size=10),
    st.dictionaries(st.sampled_from(["en", "ru", "EN", "de", "toolonglang", "", "**"]), st.text(TEXT, max_size=8)),
    st.lists(st.text(TEXT, max_size=5), max_size=3),
    st.sampled_from(["", "0", "n" * 501]),
)
sender_values = {
    "CODE": codes,
    "HANDLER": handlers,
    "NAME": names,
    "TYPE": st.sampled_from(["SMS", "SMS", "sms", "", "EMAIL", "SMS "]),
    "DESCRIPTION": st.one_of(st.text(TEXT, max_size=20), names),
    "bx24_request_id": st.text(TEXT, max_size=5),
}


@st.composite
def sender_params(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(list(sender_values)), unique=True, max_size=6))
    if draw(st.integers(0, 3)) > 0:  # mostly a complete, plausible add
        keys = list(dict.fromkeys(["CODE", "HANDLER", "NAME", "TYPE", *keys]))
    params = {key: draw(sender_values[key]) for key in keys}
    if draw(st.booleans()):  # Bitrix takes keys in any case
        params = {(k.lower() if draw(st.booleans()) else k): v for k, v in params.items()}
    return params


def php_encode(params: dict[str, Any]) -> str:
    """http_build_query: nested arrays as a[b][c]=..., booleans as 1/0, None dropped."""
    pairs: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}[{key}]", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        elif value is not None:
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            pairs.append(f"{quote(prefix, safe='[]')}={quote(text, safe='')}")

    for key, value in params.items():
        walk(str(key), value)
    return "&".join(pairs)


# Batch commands: real methods with real or random queries, references, junk, non-strings, nested batch.
batch_queries = st.one_of(st.just(""), php_queries(), sender_params().map(php_encode))
batch_commands = st.one_of(
    st.tuples(st.sampled_from(METHODS), batch_queries).map(lambda mq: f"{mq[0]}?{mq[1]}" if mq[1] else mq[0]),
    st.sampled_from(
        [
            "scope",
            "batch?cmd[x]=scope",
            "method.get?name=$result[a]",
            "method.get?name=$result[a][0]",
            "methods?scope=$result[0][0]",
            "method.get?name=$result_error[b][error]",
            "method.get?name=$result[a][0]$result[",
            "/rest/scope.json?x=1",
            "http://evil.example/rest/scope",
            "scope.xml",
            "?",
            "",
            "download",
        ]
    ),
    url_text,
    st.integers().map(str),
    st.sampled_from([None, 1, True, ["scope"], {"x": "scope"}]),
)
# Keys of the cmd map go into JSON answers, and into tag names for .xml (test_bug_xml_tags_from_input).
batch_keys = st.one_of(st.sampled_from(["a", "b", "0", "1", "$result", "[x]"]), st.text(TEXT, max_size=6))


@st.composite
def batch_cmds(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(st.lists(batch_commands, max_size=6))
    cmd = draw(st.dictionaries(batch_keys, batch_commands, max_size=6))
    if draw(st.integers(0, 9)) == 0:  # over Bitrix's 50
        cmd.update({f"k{i}": "server.time" for i in range(draw(st.integers(45, 60)))})
    return cmd


# MESSAGESERVICE_FUZZ_SCALE=10 runs ten times the examples (a deeper local run). Each property runs on both
# engines, so a run of the suite throws twice these numbers of random inputs at it.
SCALE = float(os.environ.get("MESSAGESERVICE_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


FUZZ = settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fill(text: str, callers: Callers) -> str:
    return (
        text.replace("<TOKEN>", callers.admin.access_token)
        .replace("<UID>", callers.webhook_user)
        .replace("<SECRET>", callers.webhook_secret)
    )


# ---------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------


@FUZZ
@given(path=rest_paths(), verb=st.sampled_from(VERBS), auth=auth_kinds)
@example(path="/rest/%C3%A9%FF.xml", verb="GET", auth="query")
@example(path="/rest/<UID>/<SECRET>/messageservice.sender.list.XML", verb="POST", auth="webhook")
@example(path="/rest/1/2/3/4/5/scope", verb="DELETE", auth="none")
def test_random_paths(portal: LivePortal, callers: Callers, path: str, verb: str, auth: str) -> None:
    """Any path under /rest/, any verb the route takes: JSON (or XML for .xml) envelopes, never a 500."""
    how = make_auth(auth, callers)  # the path itself decides between app and webhook routes
    path = fill(path, callers)
    body = b"" if verb in ("POST", "PUT", "PATCH") else None
    answer = exchange(portal, verb, with_query(path, how.query), headers=how.headers, body=body)
    fuzzed(answer, verb, xml=expects_xml(path))


@FUZZ
@given(method=method_names, query=php_queries(), auth=auth_kinds)
@example(method="scope", query="a[b][]=1&a[b][]=2&a[=3&a]=4&[x]=5&=6&a[" + "[" * 80, auth="query")
@example(method="methods", query="full[" + "[a]" * 100 + "]=1&scope=%ZZ%", auth="bearer")
@example(method="method.get", query="name=%FF", auth="none")
def test_random_query_strings(portal: LivePortal, callers: Callers, method: str, query: str, auth: str) -> None:
    """PHP bracket syntax, unmatched brackets, deep nesting and broken escapes in the query string."""
    how = make_auth(auth, callers)
    answer = exchange(portal, "GET", with_query(how.prefix + method, query, how.query), headers=how.headers)
    fuzzed(answer)


@FUZZ
@given(
    method=method_names,
    form=php_queries(),
    raw=st.one_of(st.none(), bad_utf8),
    ctype=st.sampled_from([*CONTENT_TYPES[3:5], "", None]),
    auth=auth_kinds,
)
@example(method="messageservice.sender.add", form="CODE[]=a&NAME[en][x]=1", raw=None, ctype=None, auth="query")
def test_random_form_bodies(
    portal: LivePortal, callers: Callers, method: str, form: str, raw: bytes | None, ctype: str | None, auth: str
) -> None:
    """Form bodies (also raw, unescaped bytes in them) with and without a form content type."""
    how = make_auth(auth, callers)
    body = form.encode() + (b"&x=" + raw if raw else b"")
    if how.token:
        body += b"&auth=" + how.token.encode()
    headers = [*how.headers, *([("Content-Type", ctype)] if ctype is not None else [])]
    answer = exchange(portal, "POST", with_query(how.prefix + method, how.query), headers=headers, body=body)
    fuzzed(answer, "POST")


@FUZZ
@given(method=method_names, document=json_documents(), auth=auth_kinds)
@example(method="scope", document='{"auth":"<TOKEN>","x":"\\ud800"}', auth="none")
@example(method="scope", document='{"auth":"<TOKEN>","x":1e999,"y":NaN,"z":' + "9" * 5000 + "}", auth="none")
@example(method="batch", document='{"auth":"<TOKEN>","cmd":{"a":"scope"},"halt":Infinity}', auth="none")
@example(method="messageservice.sender.add", document='[1,"x",null]', auth="query")
def test_random_json_bodies(portal: LivePortal, callers: Callers, method: str, document: str, auth: str) -> None:
    """JSON of any shape: huge numbers, NaN/Infinity, lone surrogates, deep nesting, truncated text."""
    how = make_auth(auth, callers)
    text = fill(document, callers) if auth in ("none", "body") else document
    headers = [*how.headers, ("Content-Type", "application/json")]
    body = text.encode("utf-8", "surrogatepass")
    answer = exchange(portal, "POST", with_query(how.prefix + method, how.query), headers=headers, body=body)
    fuzzed(answer, "POST")


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    ctype=content_types,
    body=st.one_of(multipart_bodies(), php_queries().map(str.encode), json_documents().map(str.encode), st.binary()),
    auth=auth_kinds,
)
@example(method="scope", ctype="multipart/form-data; boundary=B", body=b"--B\r\n\r\n", auth="query")
def test_wrong_content_types(
    portal: LivePortal, callers: Callers, method: str, ctype: str, body: bytes, auth: str
) -> None:
    """Bodies that do not match their content type, multipart of every shape, unknown types."""
    how = make_auth(auth, callers)
    body = body.replace(b"<TOKEN>", callers.admin.access_token.encode())
    headers = [*how.headers, ("Content-Type", ctype)]
    answer = exchange(portal, "POST", with_query(how.prefix + method, how.query), headers=headers, body=body)
    fuzzed(answer, "POST")


# Header values as bytes: visible ASCII, space, tab and obs-text (0x80-0xff); control bytes are refused by
# uvicorn itself (see test_malformed_http_is_refused_by_the_server).
header_values = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).strip())


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    scheme=st.sampled_from([b"Bearer ", b"bearer ", b"BEARER\t", b"Basic ", b"Bearer", b"", b"Bearer  "]),
    credential=st.one_of(header_values, st.just(b"<TOKEN>")),
    ctype=st.one_of(header_values, st.sampled_from(CONTENT_TYPES).map(str.encode)),
    body=st.one_of(st.none(), php_queries().map(str.encode), json_documents().map(str.encode)),
)
def test_random_headers(
    portal: LivePortal,
    callers: Callers,
    method: str,
    scheme: bytes,
    credential: bytes,
    ctype: bytes,
    body: bytes | None,
) -> None:
    """Authorization and Content-Type of any shape, obs-text bytes included."""
    token = callers.admin.access_token.encode()
    headers: list[tuple[str, str | bytes]] = [("Authorization", scheme + credential.replace(b"<TOKEN>", token))]
    headers.append(("Content-Type", ctype))
    payload = body.replace(b"<TOKEN>", token) if body is not None else None
    fuzzed(exchange(portal, "POST", "/rest/" + method, headers=headers, body=payload), "POST")


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    where=st.sampled_from(["query-key", "query-value", "form-key", "form-value", "form-raw", "json-bytes"]),
    bad=bad_utf8,
    auth=auth_kinds,
)
def test_invalid_utf8_is_wrong_encoding(
    portal: LivePortal, callers: Callers, method: str, where: str, bad: bytes, auth: str
) -> None:
    """Bytes that are not UTF-8 in a parameter name or value: 400 WRONG_ENCODING, before auth is looked at."""
    how = make_auth(auth, callers)
    query, body, ctype = how.query, None, "application/x-www-form-urlencoded"
    if where == "query-key":
        query = with_query("", f"k{_pct(bad)}=1", how.query)[1:]
    elif where == "query-value":
        query = with_query("", f"v={_pct(bad)}", how.query)[1:]
    elif where == "form-key":
        body = f"k{_pct(bad)}[x]=1".encode()
    elif where == "form-value":
        body = f"v[]={_pct(bad)}".encode()
    elif where == "form-raw":
        # Unescaped: drop the bytes that would split the pair or complete a %-escape; \xff keeps it invalid.
        body = b"v=" + bytes(c for c in bad if c not in b"&=%+") + b"\xff"
    else:  # UTF-8-encoded surrogates are the only bad bytes a JSON body is refused for
        body, ctype = b'{"v":["' + b"\xed\xa0\x80" + b'"]}', "application/json"
    headers = [*how.headers, ("Content-Type", ctype)]
    answer = exchange(portal, "POST", with_query(how.prefix + method, query), headers=headers, body=body)
    data = fuzzed(answer, "POST")
    assert answer.status == 400 and data["error"] == "WRONG_ENCODING", answer


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    surrogate=st.sampled_from(LONE_SURROGATES),
    where=st.sampled_from(["key", "value", "nested"]),
    auth=auth_kinds,
)
def test_lone_surrogates_in_json_are_wrong_encoding(
    portal: LivePortal, callers: Callers, method: str, surrogate: str, where: str, auth: str
) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); it is not text and cannot be stored: WRONG_ENCODING."""
    how = make_auth(auth, callers)
    escaped = json.dumps(surrogate)
    document = {
        "key": "{" + escaped + ":1}",
        "value": '{"NAME":' + escaped + "}",
        "nested": '{"cmd":{"a":["x",{"b":' + escaped + "}]}}",
    }[where]
    headers = [*how.headers, ("Content-Type", "application/json")]
    answer = exchange(
        portal, "POST", with_query(how.prefix + method, how.query), headers=headers, body=document.encode()
    )
    data = fuzzed(answer, "POST")
    assert answer.status == 400 and data["error"] == "WRONG_ENCODING", answer


@settings(FUZZ, max_examples=examples(12))
@given(
    method=st.sampled_from(METHODS),
    extra=st.integers(1, 2 * 1024 * 1024),
    mode=st.sampled_from(["length", "chunked", "declared-only"]),
    chunk=st.integers(1024, 256 * 1024),
    fill_byte=st.sampled_from([b"x", b"a=1&", b'{"a":', b"\xff", b"["]),
    ctype=st.sampled_from(["application/x-www-form-urlencoded", "application/json", "multipart/form-data; boundary=B"]),
    auth=auth_kinds,
)
def test_oversized_bodies_are_413(
    portal: LivePortal,
    callers: Callers,
    method: str,
    extra: int,
    mode: str,
    chunk: int,
    fill_byte: bytes,
    ctype: str,
    auth: str,
) -> None:
    """Above max_body_bytes (1 MiB): 413 ERROR_REQUEST_TOO_LARGE, with Content-Length or chunked, before auth."""
    limit = portal.settings.max_body_bytes
    size = limit + extra
    how = make_auth(auth, callers)
    target = with_query(how.prefix + method, how.query)
    headers = [*how.headers, ("Content-Type", ctype)]
    payload = (fill_byte * (size // len(fill_byte) + 1))[:size]
    if mode == "chunked":
        pieces = (payload[i : i + chunk] for i in range(0, size, chunk))
        answer = exchange(portal, "POST", target, headers=headers, chunks=pieces)
    elif mode == "length":
        answer = exchange(portal, "POST", target, headers=headers, body=payload)
    else:  # the declared length alone is enough: no need to wait for a body
        answer = exchange(portal, "POST", target, headers=headers, declared_length=size, timeout=10)
    data = fuzzed(answer, "POST")
    assert answer.status == 413 and data["error"] == "ERROR_REQUEST_TOO_LARGE", answer


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_body_at_the_limit_is_read(portal: LivePortal, callers: Callers, mode: str) -> None:
    """Exactly max_body_bytes is still a request: the limit is 'larger than', as the error says."""
    limit = portal.settings.max_body_bytes
    payload = b"pad=" + b"x" * (limit - 4)
    target = f"/rest/scope?auth={callers.admin.access_token}"
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if mode == "chunked":
        answer = exchange(portal, "POST", target, headers=headers, chunks=[payload[:1000], payload[1000:]])
    else:
        answer = exchange(portal, "POST", target, headers=headers, body=payload)
    assert check_answer(answer, "POST")["result"] == ["messageservice"], answer


@FUZZ
@given(
    cmd=batch_cmds(),
    halt=st.sampled_from([None, 0, 1, "Y", "N", "", [1]]),
    encoding=st.sampled_from(["json", "form", "query"]),
    auth=auth_kinds,
)
@example(cmd={"a": "scope", "b": "method.get?name=$result[a][0]"}, halt=None, encoding="json", auth="body")
@example(cmd=["batch?cmd[0]=scope", "nosuch", 5, None], halt=1, encoding="form", auth="query")
def test_random_batches(portal: LivePortal, callers: Callers, cmd: Any, halt: Any, encoding: str, auth: str) -> None:
    """batch with random cmd entries, JSON or form encoded, as each caller: an envelope with five sections."""
    how = make_auth(auth, callers)
    params: dict[str, Any] = {"cmd": cmd, **({"halt": halt} if halt is not None else {})}
    if how.token:
        params["auth"] = how.token
    headers, body, query = list(how.headers), None, how.query
    if encoding == "json":
        headers.append(("Content-Type", "application/json"))
        body = json.dumps(params).encode()
    elif encoding == "form":
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        body = php_encode(params).encode()
    else:
        query = with_query("", php_encode(params), how.query)[1:]
    answer = exchange(portal, "POST", with_query(how.prefix + "batch", query), headers=headers, body=body)
    data = fuzzed(answer, "POST")
    if answer.status == 200:
        check_batch(data, answer)


@settings(FUZZ, max_examples=examples(75))
@given(
    method=st.sampled_from(METHODS[:4]),
    params=sender_params(),
    encoding=st.sampled_from(["json", "form", "query"]),
    auth=st.sampled_from(["query", "query", "query", "bearer", "body", "plain", "webhook"]),
)
@example(
    method="messageservice.sender.add",
    params={"CODE": "fz-1\n", "HANDLER": HANDLER, "NAME": "N", "TYPE": "SMS"},
    encoding="form",
    auth="query",
)
def test_sender_methods_with_fuzzed_params(
    portal: LivePortal, callers: Callers, method: str, params: dict[str, Any], encoding: str, auth: str
) -> None:
    """The methods that write: plausible and broken sender fields, as admin, non-admin and webhook."""
    how = make_auth(auth, callers)
    headers, body, query = list(how.headers), None, how.query
    if how.token:
        params = {**params, "auth": how.token}
    if encoding == "json":
        headers.append(("Content-Type", "application/json"))
        body = json.dumps(params).encode()
    elif encoding == "form":
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        body = php_encode(params).encode()
    else:
        query = with_query("", php_encode(params), how.query)[1:]
    answer = exchange(portal, "POST", with_query(how.prefix + method, query), headers=headers, body=body)
    data = fuzzed(answer, "POST")
    if auth in ("plain", "webhook") and data.get("error") != "WRONG_ENCODING":
        # Application context and admin come first; only unreadable text (NUL) is refused earlier.
        assert answer.status == 403 and data["error"] == "ACCESS_DENIED", answer
    if answer.status == 200 and method.endswith(".add"):
        assert data["result"] is True, answer
        code = {k.upper(): v for k, v in params.items()}["CODE"]
        text = code if isinstance(code, str) else ("1" if code is True else str(code))  # PHP's string cast
        assert CODE_RE.match(text), f"sender.add accepted the code {code!r}\n{answer}"


def test_portal_still_works_after_fuzzing(portal: LivePortal, callers: Callers) -> None:
    """No corrupted state: the fuzzed app lists its senders, every code is valid, a fresh add/delete works."""
    token = callers.admin.access_token
    answer = exchange(portal, "GET", f"/rest/messageservice.sender.list?auth={token}")
    listed = check_answer(answer)["result"]
    assert answer.status == 200 and isinstance(listed, list), answer
    for code in listed:
        assert isinstance(code, str) and CODE_RE.match(code), f"stored sender code {code!r}"

    async def stored(core: Core) -> list[str]:
        app = await get_app(core, callers.admin.client_id)
        return [s.code for s in await sender_service.list_senders(core, app.id)]

    in_db = portal.run(stored)
    assert in_db == listed
    for code in in_db:
        assert 0 < len(code) <= 128 and CODE_RE.match(code), f"stored sender code {code!r}"

    add = {"CODE": "fz-after", "HANDLER": HANDLER, "NAME": "After", "TYPE": "SMS", "auth": token}
    for method, params in [("add", add), ("delete", {"CODE": "fz-after", "auth": token})]:
        answer = exchange(
            portal,
            "POST",
            f"/rest/messageservice.sender.{method}",
            headers=[("Content-Type", "application/json")],
            body=json.dumps(params).encode(),
        )
        assert answer.status == 200 and check_answer(answer, "POST")["result"] is True, answer
    hook = exchange(portal, "GET", f"/rest/{callers.webhook_user}/{callers.webhook_secret}/profile")
    assert hook.status == 200 and check_answer(hook)["result"]["ID"] == 1, hook


# ---------------------------------------------------------------------------------------------------------
# Regressions: server bugs this module found, each with the exact request that used to break it.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["%C2%B2", "9" * 5000], ids=["superscript-two", "5000-digits"])
def test_bug_webhook_user_id_not_int(portal: LivePortal, uid: str) -> None:
    answer = exchange(portal, "GET", f"/rest/{uid}/abc/profile")
    data = check_answer(answer)
    assert answer.status == 401 and data["error"] == "INVALID_CREDENTIALS", answer


@pytest.mark.parametrize("where", ["query", "form", "batch"])
def test_bug_long_bracket_index(portal: LivePortal, callers: Callers, where: str) -> None:
    pairs = f"a[{'9' * 4301}]=1&a[]=2"
    if where == "query":
        answer = exchange(portal, "GET", f"/rest/scope?{pairs}")
    elif where == "form":
        answer = exchange(portal, "POST", "/rest/scope", body=pairs.encode())
    else:  # inside one batch command: the whole batch answers 500
        cmd = quote("scope?" + pairs, safe="")
        answer = exchange(portal, "GET", f"/rest/batch?auth={callers.admin.access_token}&cmd[a]={cmd}")
    check_answer(answer, "POST" if where == "form" else "GET")


@pytest.mark.parametrize("index", ["²", "9" * 4301], ids=["superscript-two", "4301-digits"])
def test_bug_batch_reference_index_not_int(portal: LivePortal, callers: Callers, index: str) -> None:
    params = {"auth": callers.admin.access_token, "cmd": {"a": "scope", "b": f"method.get?name=$result[a][{index}]"}}
    answer = exchange(
        portal, "POST", "/rest/batch", headers=[("Content-Type", "application/json")], body=json.dumps(params).encode()
    )
    check_batch(check_answer(answer, "POST"), answer)


def test_bug_multipart_utf7_charset(portal: LivePortal) -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="NAME"\r\n\r\n+2AA-\r\n--B--\r\n'
    headers = [("Content-Type", "multipart/form-data; boundary=B; charset=utf-7")]
    answer = exchange(portal, "POST", "/rest/scope", headers=headers, body=body)
    data = check_answer(answer, "POST")
    assert answer.status == 400 and data["error"] == "WRONG_ENCODING", answer


NUL_CASES = {
    "add-name": ("messageservice.sender.add", {"CODE": "fznul1", "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "x\x00"}),
    "add-handler": (
        "messageservice.sender.add",
        {"CODE": "fznul2", "TYPE": "SMS", "HANDLER": HANDLER + "\x00", "NAME": "x"},
    ),
    "add-description": (
        "messageservice.sender.add",
        {"CODE": "fznul3", "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "x", "DESCRIPTION": "\x00"},
    ),
    "add-language": (
        "messageservice.sender.add",
        {"CODE": "fznul4", "TYPE": "SMS", "HANDLER": HANDLER, "NAME": {"e\x00": "x"}},
    ),
    "update-code": ("messageservice.sender.update", {"CODE": "a\x00", "NAME": "x"}),
    "batch": ("batch", {"cmd": {"a": "messageservice.sender.update?CODE=%00&NAME=x"}}),
}


@pytest.mark.parametrize("case", list(NUL_CASES))
def test_bug_nul_in_stored_text_postgres(portal: LivePortal, callers: Callers, case: str) -> None:
    """PostgreSQL cannot store U+0000 (it once answered 500 'SQL query error!'): refused on every engine alike."""
    method, params = NUL_CASES[case]
    body = json.dumps({**params, "auth": callers.admin.access_token}).encode()
    answer = exchange(portal, "POST", f"/rest/{method}", headers=[("Content-Type", "application/json")], body=body)
    data = check_answer(answer, "POST")
    if method == "batch":
        data = data["result"]["result_error"]["a"]
    else:
        assert answer.status == 400, answer
    assert data["error"] == "WRONG_ENCODING", data


@pytest.mark.parametrize("key", ["a b", "q<", "a&b", "a\x01", "a/b"])
def test_bug_xml_tags_from_input(portal: LivePortal, callers: Callers, key: str) -> None:
    query = f"auth={callers.admin.access_token}&cmd[{quote(key, safe='')}]=scope"
    check_answer(exchange(portal, "GET", f"/rest/batch.xml?{query}"), xml=True)


@pytest.mark.alone  # a time bound: `make test` runs it after the parallel tests, with the machine to itself
def test_bug_quadratic_bracket_append(portal: LivePortal) -> None:
    body = "&".join(["a[]=1"] * 5000).encode()
    timings = []
    # The best of three: a quadratic parser is slow every time, a busy machine only now and then.
    for _ in range(3):
        started = time.monotonic()
        answer = exchange(portal, "POST", "/rest/scope", body=body)
        timings.append(time.monotonic() - started)
        assert check_answer(answer, "POST")["error"] == "NO_AUTH_FOUND", answer
        if timings[-1] < 1.0:
            break
    assert min(timings) < 1.0, f"5000 'a[]=' pairs took {min(timings):.2f} s at best"


@pytest.mark.parametrize(
    "target",
    [
        "/oauth/authorize/?client_id=<CLIENT>&user_id=%C2%B2",
        "/oauth/authorize/?client_id=<CLIENT>&user_id=" + "9" * 30,
        "/oauth/authorize/?client_id=<CLIENT>&user_id=" + "9" * 5000,
        f"/oauth/token/?a[{'9' * 4301}]=1&a[]=2",
    ],
    ids=["authorize-superscript", "authorize-30-digits", "authorize-5000-digits", "token-long-index"],
)
def test_bug_oauth_bad_numbers(portal: LivePortal, callers: Callers, target: str) -> None:
    answer = exchange(portal, "GET", target.replace("<CLIENT>", callers.admin.client_id))
    assert answer.status < 500, answer
    assert answer.headers.get("content-type", "").startswith("application/json"), answer


@pytest.mark.parametrize(
    ("path", "error"),
    [("/rest/a%0Ab/scope", "ERROR_METHOD_NOT_FOUND"), ("/rest/scope%0A", "ERROR_METHOD_NOT_FOUND")],
)
def test_newline_in_path_stays_in_the_rest_route(portal: LivePortal, path: str, error: str) -> None:
    # Starlette's {path:path} stopped at a newline, so such paths once missed the REST route (404 NOT_FOUND).
    data = check_answer(exchange(portal, "GET", path))
    assert data["error"] == error, data


def test_newline_as_webhook_user_is_bad_credentials(portal: LivePortal) -> None:
    answer = exchange(portal, "GET", "/rest/%0A/x/scope")
    assert answer.status == 401 and check_answer(answer)["error"] == "INVALID_CREDENTIALS", answer


# ---------------------------------------------------------------------------------------------------------
# Outside the app: what uvicorn and Starlette answer before the REST endpoint runs (never a 5xx)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /rest/scope?\xff=1 HTTP/1.1\r\n",  # raw, unescaped non-ASCII in the request target
        b"GET /rest/\xc3\xa9/profile HTTP/1.1\r\n",
        b"POST /rest/scope HTTP/1.1\r\nContent-Length: abc\r\n",
        b"POST /rest/scope HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"FOO /rest/scope HTTP/1.1\r\n",
    ],
)
def test_malformed_http_is_refused_by_the_server(portal: LivePortal, request_bytes: bytes) -> None:
    """Not HTTP at all: uvicorn answers 400 text/plain itself (no JSON possible there), never a 5xx."""
    with socket.create_connection(("127.0.0.1", portal.server.port), timeout=10) as sock:
        sock.sendall(request_bytes + b"Host: x\r\nConnection: close\r\n\r\n")
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:300]
    assert b"Traceback" not in raw, raw


@pytest.mark.parametrize("verb", ["TRACE", "PROPFIND", "CONNECT"])
def test_other_verbs_are_answered_like_get(portal: LivePortal, verb: str) -> None:
    """The REST endpoint takes every verb, as Bitrix's PHP does: no router 405, a Bitrix answer."""
    answer = exchange(portal, verb, "/rest/scope")
    assert answer.status == 401 and check_answer(answer)["error"] == "NO_AUTH_FOUND", answer
