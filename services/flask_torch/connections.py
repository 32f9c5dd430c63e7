"""The client connections a gunicorn gevent worker holds open, counted by its connection
handler: the admission gate (app.py, AdmissionGate) takes an idle worker's turn at once
when the request's own connection is the only one and nothing else waits for the worker
(no connection in its listeners' accept queue, no greenlet queued to run), for then no
other request can be waiting to be read. Attached in the worker by gunicorn.conf.py's
post_worker_init.

Why the second condition: a connection is counted when its handler starts, and a
greenlet that finds its client's next request already in never yields to the event
loop, so connections not yet accepted, or accepted and not yet started, waited while
one connection was served back to back. Measured before it (flask_tf, wrk at four
connections): the first requests of three connections waited 14-270 ms in the worker
(their http-read stage), and wrk's coordinated-omission correction (loadtests/wrk.py)
turned those three replies into a p99 of up to 200 ms.

`wrap_handler` is also how http_timing.py reaches each connection: gevent's StreamServer
calls the worker's `handle` once per accepted connection, for as long as it stays open.
"""

from __future__ import annotations

import functools
import select
import sys
from collections.abc import Callable
from typing import Any

# handler(worker's handle, listener, client socket, address) -> whatever handle returns.
Wrapper = Callable[[Callable[..., Any], Any, Any, Any], Any]


def wrap_handler(worker: Any, wrapper: Wrapper) -> bool:
    """Routes each connection a gevent worker accepts through `wrapper`; False, and no
    change, for another worker class or off Linux."""
    try:
        from gunicorn.workers.ggevent import GeventWorker
    except ImportError:
        return False
    if sys.platform != "linux" or not isinstance(worker, GeventWorker):
        return False
    # GeventWorker.run looks `handle` up when it starts serving, after post_worker_init.
    worker.handle = functools.partial(wrapper, worker.handle)
    return True


class OpenConnections:
    """How many connections this worker holds open (None: not counted here, e.g. the
    Flask test client or another worker class); one per process, OPEN."""

    def __init__(self) -> None:
        self.count: int | None = None
        # Whether anything else waits for the worker (attach() sets it); until then,
        # something might: the gate keeps its hand-off.
        self._waiting: Callable[[], bool] = lambda: True
        # The event loop's poll count after the worker's last reply (take_turns).
        self._polls_at_reply: int | None = None

    def attach(self, worker: Any) -> bool:
        """Starts counting a gevent worker's connections; False where it cannot."""
        if not wrap_handler(worker, self._counted):
            return False
        self.count = 0
        self._waiting = _waiting_for(worker)
        return True

    def _counted(self, handle: Callable[..., Any], listener: Any, client: Any,
                 addr: Any) -> Any:  # fmt: skip
        self.count = (self.count or 0) + 1
        try:
            return handle(listener, client, addr)
        finally:
            self.count -= 1

    def take_turns(self) -> None:
        """After a reply (gunicorn.conf.py's post_request): unless the connection is
        alone, waits for the event loop to poll once before its next request is read. A
        greenlet whose client's next request is already in never yields otherwise, so
        one keep-alive client sending cheap requests back to back (health checks, 404s,
        bad input: the predict route's gate orders only its own) held the worker while
        other connections' requests went unread. Measured before it (flask_torch, wrk
        flooding GET /healthz on one connection at ~4200 req/s): predicts on another
        connection every 20 ms took p50 22 ms, max 202, against 1.1 ms without the
        flood; with it 1.7 ms, max 3.7. Where the loop has polled since the worker's last
        reply (a predict waiting for its turn lets it), others were read meanwhile: no
        wait, so the predict route under load pays nothing (without that check 2% of
        flask_torch's throughput at 4 and 16 connections)."""
        if self.count is None:
            return
        from gevent import get_hub

        hub = get_hub()
        if hub.loop.iteration == self._polls_at_reply and not self.alone():
            hub.wait(hub.loop.timer(0.0))  # libev fires it after its next poll
        self._polls_at_reply = hub.loop.iteration

    def alone(self) -> bool:
        """Whether the calling request's connection is the worker's only one and nothing
        else waits for the worker; False whenever connections are not counted, so the
        gate keeps its hand-off."""
        return self.count is not None and self.count <= 1 and not self._waiting()


def _waiting_for(worker: Any) -> Callable[[], bool]:
    """Whether a connection waits in one of the worker's listeners' accept queues (a
    zero-timeout poll, with the poll gevent's monkey-patching left aside: ~1 us) or the
    worker's event loop has greenlets queued to run (an accepted connection's handler
    not started yet, a request woken): either would wait behind a turn taken at once.
    Where gevent's queue cannot be read (another gevent), always True."""
    from gevent import get_hub, monkey

    poller = monkey.get_original("select", "poll")()
    for listener in worker.sockets:
        poller.register(listener.fileno(), select.POLLIN)

    def waiting() -> bool:
        # The loop's queue of callbacks (gevent 26's CallbackFIFO, not public API).
        queued = getattr(get_hub().loop, "_callbacks", None)
        return queued is None or bool(queued) or bool(poller.poll(0))

    return waiting


# One per worker process: gunicorn forks the workers after importing its config.
OPEN = OpenConnections()
