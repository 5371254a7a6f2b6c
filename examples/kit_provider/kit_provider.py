"""A small SMS provider on the provider kit's sync functions and the standard library's HTTP server.

It does what a provider must (and what `messageservice check-provider` checks): registers its sender on
ONAPPINSTALL and ONAPPUPDATE with the event's token, keeps the application_token and refuses calls
without it, answers each HANDLER call at once, drops a repeated message_id, and reports queued and then
delivered with the call's own token, retrying a report the portal answers 503.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from messageservice.provider import (
    ONAPPINSTALL,
    ONAPPUNINSTALL,
    ONAPPUPDATE,
    BitrixError,
    ForeignCall,
    HandlerCall,
    MalformedCall,
    ProviderError,
    SenderSpec,
    parse_app_event,
    parse_handler_call,
    register_sender_sync,
    report_status_sync,
    verify_application_token,
)

CODE = "kit_sms"
ATTEMPTS = 3


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the portal opens many connections at once; 5 (the default) drops some


class KitProvider:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.application_token: str | None = None
        self.seen: set[str] = set()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, after = owner.handle(self.path, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if after is not None:
                    threading.Thread(target=after, daemon=True).start()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = _Server((host, port), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"

    def start(self) -> KitProvider:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, path: str, body: bytes) -> tuple[int, object]:
        try:
            if path == "/":
                return self.on_event(body), None
            call = parse_handler_call(body)
            verify_application_token(call, self.application_token)
        except MalformedCall:
            return 400, None
        except ForeignCall:
            return 403, None
        with self._lock:
            if call.message_id in self.seen:
                return 200, None  # a repeat: already on its way
            self.seen.add(call.message_id)
        return 200, lambda: self.deliver(call)

    def on_event(self, body: bytes) -> int:
        event = parse_app_event(body)
        if event.event in (ONAPPINSTALL, ONAPPUPDATE):
            try:
                register_sender_sync(event.auth, SenderSpec(CODE, self.url + "/handler", {"en": "Kit SMS"}))
            except ProviderError:
                return 502
            self.application_token = event.auth.application_token
        elif event.event == ONAPPUNINSTALL:
            try:
                verify_application_token(event, self.application_token)
            except ForeignCall:
                return 403
            self.application_token = None
        return 200

    def deliver(self, call: HandlerCall) -> None:
        for status in ("queued", "delivered"):  # a real provider reports as its carrier answers
            if not self.report(call, status):
                return

    def report(self, call: HandlerCall, status: str) -> bool:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                report_status_sync(call, status)
                return True
            except BitrixError as exc:
                if exc.http_status != 503 or attempt == ATTEMPTS:
                    return False
                time.sleep(attempt)  # the portal is busy: later
            except ProviderError:
                return False
        return False
