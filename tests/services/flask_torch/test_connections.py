"""The worker's open connections (services/flask_torch/connections.py): counted while
each connection's handler runs, and no claim to be alone where nothing counts. The real
gevent worker is in test_admission.py's burst test and test_gunicorn_integration.py."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import gevent
import pytest

from services.flask_torch.connections import OpenConnections, _waiting_for, wrap_handler


def test_a_connection_counts_while_its_handler_runs_and_after_a_failure_no_more() -> None:
    open_ = OpenConnections()
    open_.count = 0  # as attach() leaves it, with nothing waiting for the worker:
    open_._waiting = lambda: False
    seen: list[tuple[int | None, bool]] = []

    def handle(listener, client, addr):
        seen.append((open_.count, open_.alone()))
        if client == "second":
            # A second connection while the first is open: neither is alone.
            open_._counted(handle, listener, "third", addr)
        if client == "broken":
            raise OSError("reset by peer")
        return client

    assert open_._counted(handle, None, "first", None) == "first"
    assert seen == [(1, True)]
    seen.clear()
    open_._counted(handle, None, "second", None)
    assert seen == [(1, True), (2, False)]
    with pytest.raises(OSError):
        open_._counted(handle, None, "broken", None)
    assert open_.count == 0


def test_nothing_counted_means_never_alone() -> None:
    class SyncWorker:
        def handle(self, listener, client, addr):
            return client

    open_, worker = OpenConnections(), SyncWorker()
    assert open_.attach(worker) is False and open_.count is None
    assert open_.alone() is False
    assert wrap_handler(worker, lambda handle, *args: "wrapped") is False
    assert worker.handle(None, "client", None) == "client"


def test_one_connection_is_not_alone_while_another_waits_to_be_accepted_or_started() -> None:
    """A connection in the listener's accept queue, or a greenlet queued to run (an
    accepted connection's handler not started yet), waits for the worker too."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        open_ = OpenConnections()
        open_.count = 1  # the calling request's own connection
        open_._waiting = _waiting_for(SimpleNamespace(sockets=[listener]))
        assert open_.alone()
        with socket.create_connection(listener.getsockname()):
            assert not open_.alone()  # in the accept queue
            accepted, _ = listener.accept()
            accepted.close()
            assert open_.alone()
        queued = gevent.spawn(lambda: None)  # started on the loop's next turn
        assert not open_.alone()
        queued.join()
        assert open_.alone()
        open_.count = 2
        assert not open_.alone()
