"""The HTTP server's own time on each request (gunicorn and gevent), measured in the
worker on the very path it serves, for the attribution of the served latency
(loadtests/framework_floor.py). Three figures, in the reply's Server-Timing header
(digitnet.codec.STAGE_HEADER), one request's path through the worker in order:

    http-read    the kernel's receipt of the request's first bytes to the app's entry:
                 any wait for the worker (still finishing the previous request, or
                 busy with another), its wake-up, the recv, gunicorn's parse and environ
    app-after    the app's reply handed to start_response to the app's return: Flask's
                 request teardown, after the `app` stage has ended
    http-write   the app's return to the reply's last bytes handed to the kernel:
                 gunicorn's status line and headers, and the sendall

http-read is known before the reply leaves and is the reply's own. The other two are only
known once it has left, so a reply carries those of the previous reply on the same path
in the same worker: under a steady load of one kind of request (wrk's runs) their medians
are the path's. What gunicorn does after the last sendall (closing the response, the
access log, post_request) is in no reply's figure: the client already has its answer, and
if that work delays the next request, the next one's http-read holds the delay.

The receipt time is the kernel's own (SO_TIMESTAMPNS: each TCP read reports when the
kernel received the data read), so the wake-up of an idle worker is named too, which no
timer inside the process can see. Why measure here, not subtract the no-op twin's figures:
the twin's HTTP server work is not the predict path's. Measured, flask_torch at one
connection (gunicorn's own request timer, the access log's %(D)s, which starts after the
parse): 0.149 ms around the app on the predict path against the twin's 0.088, and 0.173
ms outside that timer against the twin's 0.115 (the client and the network ~0.07 of
both): the model's work leaves colder caches for gunicorn's, and an estimate from the twin
left ~0.12 ms of a 0.73 ms p50 unnamed.

Its own cost: about 2 us a request in process (recvmsg with its ancillary data against a
plain recv, and the bookkeeping; measured on the 2-core build machine, 5000 loopback
round trips, median 3.8 against 1.9 us), against a served p50 of ~0.7 ms.

Linux and gunicorn's gevent worker only (the Flask stacks' worker class), attached in the
worker by gunicorn.conf.py's post_worker_init; elsewhere (the Flask test client, another
worker class from GUNICORN_CMD_ARGS, TLS) replies carry no HTTP stages.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from digitnet.codec import APP_AFTER_STAGE, HTTP_READ_STAGE, HTTP_WRITE_STAGE
from services.flask_torch.connections import wrap_handler

# <asm-generic/socket.h>; Python's socket module does not name it. The timestamp arrives
# with recvmsg as a struct timespec of CLOCK_REALTIME (two 64-bit fields on 64-bit Linux).
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
# The environ keys where the app's wrapper leaves when it handed its reply over and when
# it returned (perf_counter seconds); post_request reads them.
REPLIED_KEY = "digitnet.replied"
RETURNED_KEY = "digitnet.returned"
# Paths whose last reply a worker keeps; past it the table starts again, so a client
# sending requests to ever new paths (404s) cannot grow it.
MAX_PATHS = 32


class StampedSocket:
    """A connection's socket that keeps the kernel's receipt time of the first bytes of
    the request being read (`received_ns`, CLOCK_REALTIME; None once post_request has
    used it) and when the last sendall returned (`sent`, perf_counter); everything else
    is the wrapped socket's. gunicorn reads with recv and writes with sendall."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.received_ns: int | None = None
        self.sent: float | None = None
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def recv(self, size: int, flags: int = 0) -> bytes:
        data, ancillary, _flags, _address = self._sock.recvmsg(size, _ANCILLARY_BYTES, flags)
        if data and self.received_ns is None:
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    self.received_ns = seconds * 1_000_000_000 + nanoseconds
        return data

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self._sock.sendall(data, flags)
        self.sent = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class HttpTimer:
    """One worker's clock of its HTTP server's share of each request (see the module
    docstring); create_app's wrapper and gunicorn.conf.py's hooks share TIMER."""

    def __init__(self) -> None:
        self._after: dict[str, tuple[float, float]] = {}

    def attach(self, worker: Any) -> bool:
        """Makes a gevent worker hand its connections over as StampedSockets; False, and
        no HTTP stages, for another worker class or off Linux."""
        if not wrap_handler(worker, _stamped):
            return False
        # On the listeners too: an accepted connection inherits the option, and bytes the
        # kernel queued before anyone asked for their receipt time carry none (the first
        # request of a connection, whose bytes often arrive before the worker accepts it).
        # Where no socket on the machine had asked, the kernel turns receipt times on a
        # moment later (a deferred work item): requests that early carry no http-read.
        for listener in worker.sockets:
            try:
                listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass
        return True

    def stages(self, environ: MutableMapping[str, Any]) -> dict[str, float]:
        """Seconds by stage for the reply to `environ`, called at the app's entry: its own
        http-read, and the previous reply's app-after and http-write on its path."""
        got: dict[str, float] = {}
        sock = environ.get("gunicorn.socket")
        received = getattr(sock, "received_ns", None)
        if received is not None:
            got[HTTP_READ_STAGE] = (time.time_ns() - received) / 1e9
        previous = self._after.get(environ.get("PATH_INFO", ""))
        if previous is not None:
            got[APP_AFTER_STAGE], got[HTTP_WRITE_STAGE] = previous
        return got

    def written(self, environ: MutableMapping[str, Any]) -> None:
        """Called once the reply is written (gunicorn's post_request): keeps its app-after
        and http-write for the next reply on its path, and readies the socket for the
        next request's receipt time."""
        sock = environ.get("gunicorn.socket")
        if not isinstance(sock, StampedSocket):
            return
        sock.received_ns = None
        replied, returned, sent = environ.get(REPLIED_KEY), environ.get(RETURNED_KEY), sock.sent
        if replied is None or returned is None or sent is None or sent < returned:
            return
        path = environ.get("PATH_INFO", "")
        if path not in self._after and len(self._after) >= MAX_PATHS:
            self._after.clear()
        self._after[path] = (returned - replied, sent - returned)


def _stamped(handle: Callable[..., Any], listener: Any, client: Any, addr: Any) -> Any:
    if not isinstance(client, ssl.SSLSocket):
        try:
            client = StampedSocket(client)
        except OSError:  # a kernel without the option: served, untimed
            pass
    return handle(listener, client, addr)


# One per worker process: gunicorn forks the workers after importing its config.
TIMER = HttpTimer()
