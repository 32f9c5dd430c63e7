"""A test's own small HTTP server: a BaseHTTPRequestHandler class served on 127.0.0.1, a
free port, from a daemon thread, and shut down after the block. For the tests whose
server only has to answer the way one case needs (a recorder, a counter, a wrong answer)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = "127.0.0.1"


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """`handler` served inside the block; its base URL is base_url(server)."""
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def base_url(server: ThreadingHTTPServer) -> str:
    """http://127.0.0.1:<port> of a server from `serving`."""
    return f"http://{LOOPBACK}:{server.server_port}"
