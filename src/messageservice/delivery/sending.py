"""The one way an outbox job leaves the server: a POST through the SSRF-guarded connector.

Every exception, whatever raises it (an SSRF refusal, a malformed URL, IDNA, a reset connection,
a bug while building the request), becomes an Outcome: an attempt to record, never an escape that
would leave the job to be re-claimed forever without a trace.
"""

from __future__ import annotations

import datetime
import logging

import aiohttp
import standardwebhooks

from messageservice.config import Settings
from messageservice.delivery.jobs import Job
from messageservice.delivery.retry import Outcome, Verdict, judge
from messageservice.delivery.ssrf import guarded_connector, listening_nowhere, parse_networks, refused_reason

log = logging.getLogger("messageservice.dispatcher")

USER_AGENT = "Bitrix24 Webhook Engine"
RESPONSE_HEAD_BYTES = 512


def signature_headers(secret: str, message_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers beside the unchanged Bitrix body; webhook-id is the stable message_id."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(message_id, now, body),
    }


def failure(exc: BaseException) -> Outcome:
    """What an exception during an attempt means: refused by the guard (for good) or worth a retry."""
    refused = refused_reason(exc)
    if refused is not None:
        return Outcome(Verdict.FAIL, None, refused, None)
    text = str(exc) or type(exc).__name__
    return Outcome(Verdict.RETRY, None, f"{type(exc).__name__}: {text}"[:500], None)


class Poster:
    """An aiohttp session on the guarded connector; `async with Poster(settings, limit) as poster`."""

    def __init__(self, settings: Settings, limit: int, timeout: float) -> None:
        self._settings = settings
        self._limit = limit
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Poster:
        connector = guarded_connector(
            parse_networks(listening_nowhere(self._settings.allowed_handler_networks)), limit=self._limit
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, job: Job) -> Outcome:
        assert self._session is not None and job.url is not None
        try:
            headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT}
            if job.signing_secret is not None:
                headers.update(signature_headers(job.signing_secret, job.external_id, job.body))
            async with self._session.post(
                job.url,
                data=job.body.encode(),
                headers=headers,
                # A redirect could point anywhere, past the address check: a 3xx is a failed attempt.
                allow_redirects=False,
            ) as response:
                head = (await response.content.read(RESPONSE_HEAD_BYTES)).decode("utf-8", "replace")
                cap = self._settings.retry_after_cap_seconds
                return judge(response.status, head, response.headers.get("Retry-After"), cap)
        except Exception as exc:
            if not isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
                # Not a network failure: worth a trace in the log, and an attempt like any other.
                log.warning("%s to %s raised %s", job.label or "a job", job.url, type(exc).__name__, exc_info=True)
            return failure(exc)
