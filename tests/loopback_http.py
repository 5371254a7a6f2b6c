"""The threading HTTP server every test handler runs on.

`ThreadingHTTPServer` listens with a backlog of 5. The dispatcher opens up to `dispatch_concurrency`
connections at once, and when the accept queue is full Linux drops the handshake and the client tries
again one second later: a healthy handler then looked a second slow (CI saw a fairness p99 of 1.03 s,
and the kernel's ListenOverflows counter rose by the same count of calls). Real servers listen deeper.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def serve_in_background(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> LoopbackServer:
    """A server on a free port of `host`, serving from a daemon thread until shutdown()."""
    httpd = LoopbackServer((host, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd
