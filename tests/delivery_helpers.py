"""Real handlers on loopback ports for the outbox tests: one that answers per path and notes when each
call arrived, and one that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import select

from messageservice.core.context import Core
from messageservice.store.tables import delivery_breakers
from tests.loopback_http import serve_in_background


@dataclass
class Arrival:
    path: str
    at: float  # time.time() when the request was read
    form: dict[str, str]


@dataclass
class PathServer:
    """Answers each path with its own status (200 unless told), and records every call with its time."""

    statuses: dict[str, int] = field(default_factory=dict)
    headers: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> PathServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
                with owner.arrived:
                    owner.arrivals.append(Arrival(self.path, time.time(), form))
                    owner.arrived.notify_all()
                self.send_response(owner.statuses.get(self.path, 200))
                for name, value in owner.headers.get(self.path, ()):
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = serve_in_background(Handler)
        self.port = self.httpd.server_address[1]
        return self

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Arrival]:
        with self.arrived:
            return [a for a in self.arrivals if a.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Arrival]:
        with self.arrived:
            self.arrived.wait_for(lambda: len([a for a in self.arrivals if a.path == path]) >= count, timeout=timeout)
        return self.on(path)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class HangingServer:
    """Accepts connections and reads nothing, answers nothing: a handler that hangs until the caller gives up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> HangingServer:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


async def breaker_rows(core: Core) -> list[Any]:
    async with core.engine.connect() as conn:
        return list((await conn.execute(select(delivery_breakers))).all())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
