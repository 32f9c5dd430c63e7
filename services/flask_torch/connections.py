"""The client connections a gunicorn gevent worker holds open, counted by its connection
handler: the admission gate (app.py, AdmissionGate) takes an idle worker's turn at once
when the request's own connection is the only one, for then no other request can be
waiting to be read. Attached in the worker by gunicorn.conf.py's post_worker_init.

`wrap_handler` is also how http_timing.py reaches each connection: gevent's StreamServer
calls the worker's `handle` once per accepted connection, for as long as it stays open.
"""

from __future__ import annotations

import functools
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

    def attach(self, worker: Any) -> bool:
        """Starts counting a gevent worker's connections; False where it cannot."""
        if not wrap_handler(worker, self._counted):
            return False
        self.count = 0
        return True

    def _counted(self, handle: Callable[..., Any], listener: Any, client: Any,
                 addr: Any) -> Any:  # fmt: skip
        self.count = (self.count or 0) + 1
        try:
            return handle(listener, client, addr)
        finally:
            self.count -= 1

    def alone(self) -> bool:
        """Whether the calling request's connection is the worker's only one; False
        whenever connections are not counted, so the gate keeps its hand-off."""
        return self.count is not None and self.count <= 1


# One per worker process: gunicorn forks the workers after importing its config.
OPEN = OpenConnections()
