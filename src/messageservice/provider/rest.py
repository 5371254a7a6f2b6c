"""REST calls to a portal with nothing but what the wire gave: an endpoint and a token.

The endpoint is `auth[client_endpoint]` (`https://portal/rest/`) with `auth[access_token]`, or an incoming
webhook's URL (`https://portal/rest/1/secret/`), which needs no token. Parameters go form-encoded with PHP
brackets, as Bitrix24's own clients send them; the answer is Bitrix's JSON envelope, and its
`error`/`error_description` become a BitrixError.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from messageservice.phpquery import http_build_query
from messageservice.provider.calls import Auth
from messageservice.provider.errors import BitrixError, MissingAuth, PortalUnreachable

DEFAULT_TIMEOUT = 10.0
USER_AGENT = "messageservice-provider-kit"
_METHOD = re.compile(r"^[A-Za-z0-9_.]+$")
_CONTENT_TYPE = "application/x-www-form-urlencoded"


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) REST endpoint: {parts.scheme}://{parts.netloc}")
    return url if url.endswith("/") else url + "/"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _request(endpoint: str, token: str | None, method: str, params: Mapping[str, Any] | None) -> tuple[str, bytes]:
    if not _METHOD.match(method):
        raise ValueError(f"not a REST method name: {method!r}")
    body = dict(params or {})
    if token is not None:
        body["auth"] = token
    return endpoint + method, http_build_query(body).encode("utf-8")


def decode_answer(method: str, http_status: int, raw: bytes) -> Any:
    """The `result` of a REST answer, or BitrixError with the portal's error code and text."""
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        head = raw[:200].decode("utf-8", "replace")
        raise BitrixError("ERROR_UNEXPECTED_ANSWER", f"not JSON: {head}", http_status, method) from None
    if isinstance(answer, dict) and "error" in answer:
        description = answer.get("error_description")
        raise BitrixError(str(answer["error"]), "" if description is None else str(description), http_status, method)
    if not 200 <= http_status < 300 or not isinstance(answer, dict) or "result" not in answer:
        raise BitrixError("ERROR_UNEXPECTED_ANSWER", str(answer)[:200], http_status, method)
    return answer["result"]


class RestClient:
    """Async REST client on aiohttp. Pass a session to share its connection pool; otherwise one is made."""

    def __init__(
        self,
        endpoint: str,
        access_token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = _endpoint(endpoint)
        self._token = access_token
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    @classmethod
    def from_auth(cls, auth: Auth | None, **options: Any) -> RestClient:
        """A client acting with the token a HANDLER call or an event carried, on the portal it came from."""
        if auth is None or not auth.access_token or not auth.client_endpoint:
            raise MissingAuth("the call has no auth[access_token] and auth[client_endpoint] to call the portal with")
        return cls(auth.client_endpoint, auth.access_token, **options)

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        url, body = _request(self.endpoint, self._token, method, params)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": _CONTENT_TYPE, "User-Agent": USER_AGENT},
                timeout=self._timeout,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PortalUnreachable(method, _origin(self.endpoint), exc) from exc
        return decode_answer(method, status, raw)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class SyncRestClient:
    """The same on the standard library, for code without an event loop (workers, scripts, tests)."""

    def __init__(
        self,
        endpoint: str,
        access_token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = _endpoint(endpoint)
        self._token = access_token
        self._timeout = timeout
        self._ssl = ssl_context

    @classmethod
    def from_auth(cls, auth: Auth | None, **options: Any) -> SyncRestClient:
        if auth is None or not auth.access_token or not auth.client_endpoint:
            raise MissingAuth("the call has no auth[access_token] and auth[client_endpoint] to call the portal with")
        return cls(auth.client_endpoint, auth.access_token, **options)

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        url, body = _request(self.endpoint, self._token, method, params)
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": _CONTENT_TYPE, "User-Agent": USER_AGENT}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout, context=self._ssl) as response:
                return decode_answer(method, response.status, response.read())
        except urllib.error.HTTPError as answer:  # 4xx/5xx still carry Bitrix's error envelope
            with answer:
                raw = answer.read()
            return decode_answer(method, answer.code, raw)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise PortalUnreachable(method, _origin(self.endpoint), exc) from exc
