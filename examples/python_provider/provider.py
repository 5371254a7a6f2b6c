"""An SMS provider app in Python on the provider kit (messageservice.provider) and the standard library.

    python examples/python_provider/provider.py --port 9400

Give the portal http://127.0.0.1:9400/ as the app's URL. Then:
  - ONAPPINSTALL / ONAPPUPDATE (POST /): register the sender with the event's access token, and keep the
    application_token;
  - HANDLER call (POST /handler): check application_token, answer 200 at once, "send" the SMS, then report
    `sent` and `delivered` with messageservice.message.status.update;
  - ONAPPUNINSTALL (POST /): forget the installation;
  - GET /: the state, for people and tests.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import OrderedDict
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from messageservice.provider import (
    ONAPPINSTALL,
    ONAPPUNINSTALL,
    ONAPPUPDATE,
    DeliveryStatus,
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

MAX_BODY = 1_048_576
REMEMBERED = 10_000  # message_ids kept to drop repeated deliveries (messageservice retries)


def say(text: str) -> None:
    print(f"{datetime.now():%H:%M:%S} [python-provider] {text}", flush=True)


class Provider:
    """The installation's state, shared by the request threads."""

    def __init__(self, sender: SenderSpec) -> None:
        self.sender = sender
        self.application_token: str | None = None
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()

    def on_event(self, body: bytes) -> tuple[int, str]:
        event = parse_app_event(body)  # MalformedCall -> 400
        if event.event in (ONAPPINSTALL, ONAPPUPDATE):
            # Registering with the event's token also proves the event genuine: only the portal mints
            # tokens it accepts. Only then is its application_token trusted.
            try:
                registration = register_sender_sync(event.auth, self.sender)
            except ProviderError as exc:
                say(f"{event.event}: could not register the sender: {exc}")
                return 502, f"sender registration failed: {exc}"
            with self.lock:
                self.application_token = event.auth.application_token
            say(f"{event.event}: sender {self.sender.code!r} {registration.value}, HANDLER {self.sender.handler}")
            return 200, "OK"
        if event.event == ONAPPUNINSTALL:
            verify_application_token(event, self.application_token)  # ForeignCall -> 403
            with self.lock:
                self.application_token = None
            say("ONAPPUNINSTALL: uninstalled; HANDLER calls are refused from now on")
            return 200, "OK"
        return 400, "unknown event"

    def on_message(self, body: bytes) -> tuple[int, str, HandlerCall | None]:
        call = parse_handler_call(body)
        verify_application_token(call, self.application_token)
        with self.lock:
            if call.message_id in self.seen:
                say(f"message {call.message_id} again (a retried delivery): already sent")
                return 200, "OK", None
            self.seen[call.message_id] = None
            if len(self.seen) > REMEMBERED:
                self.seen.popitem(last=False)
        say(f"message {call.message_id} to {call.message_to}: {call.message_body!r}")
        return 200, "OK", call

    def report(self, call: HandlerCall) -> None:
        """After the answer: a real provider hands the SMS to its carrier and reports `delivered` when it is."""
        for status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED):
            try:
                # CODE and the 32-hex MESSAGE_ID come from the call, with its auth[access_token].
                report_status_sync(call, status)
            except ProviderError as exc:
                say(f"message {call.message_id}: the portal refused {status.value}: {exc}")
                return
            say(f"message {call.message_id}: reported {status.value}")


def make_handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state = {"installed": provider.application_token is not None, "sender": provider.sender.code}
            self._answer(200, json.dumps(state), "application/json")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, "body too large")
                return
            body = self.rfile.read(length)
            path = self.path.split("?")[0]
            after: HandlerCall | None = None
            try:
                if path == "/":
                    status, text = provider.on_event(body)
                elif path == "/handler":
                    status, text, after = provider.on_message(body)
                else:
                    status, text = 404, "not found"
            except MalformedCall as exc:
                status, text = 400, f"malformed: {exc}"
            except ForeignCall:
                say("refused a call with an unknown application_token")
                status, text = 403, "unknown application_token"
            self._answer(status, text)
            if after is not None:
                provider.report(after)

        def _answer(self, status: int, text: str, kind: str = "text/plain") -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass  # say() tells what matters

    return Handler


class HandlerServer(ThreadingHTTPServer):
    # The portal opens many connections at once under load; the default backlog of 5 makes the
    # kernel drop the extra handshakes, and each dropped call then waits a second for its retry.
    request_queue_size = 128


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--public-url", help="where the portal reaches this app (default http://HOST:PORT)")
    parser.add_argument("--code", default="python_sms", help="the sender CODE it registers")
    args = parser.parse_args(argv)
    public_url = (args.public_url or f"http://{args.host}:{args.port}").rstrip("/")
    sender = SenderSpec(
        code=args.code,
        handler=public_url + "/handler",
        name={"en": "Python SMS"},
        description={"en": "An example provider on the messageservice provider kit."},
    )
    server = HandlerServer((args.host, args.port), make_handler(Provider(sender)))
    say(f"listening on {public_url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
