"""A real HTTP handler on a loopback port that records what it receives (an app's URL or HANDLER)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from tests.loopback_http import serve_in_background


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    hold: threading.Event | None = None  # answer only once this is set (a handler that hangs until released)


@dataclass
class Receiver:
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    # Replies for the next requests, in order; after them every request gets `status`.
    script: list[Reply] = field(default_factory=list)

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with owner.arrived:
                    owner.requests.append(Received(self.path, dict(self.headers.items()), body))
                    reply = owner.script.pop(0) if owner.script else Reply(owner.status)
                    owner.arrived.notify_all()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.hold is not None:
                    reply.hold.wait(timeout=60)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = serve_in_background(Handler)
        self.port = self.httpd.server_address[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/app/"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return list(self.requests)

    def wait_for_messages(self, message_ids: set[str], timeout: float = 20.0) -> list[Received]:
        """Until every one of `message_ids` has arrived at least once (a message sent twice, as at-least-once
        delivery may, counts once)."""

        def arrived() -> bool:
            return message_ids <= {r.form.get("message_id") for r in self.requests}

        with self.arrived:
            self.arrived.wait_for(arrived, timeout=timeout)
            return list(self.requests)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
