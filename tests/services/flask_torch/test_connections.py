"""The worker's open connections (services/flask_torch/connections.py): counted while
each connection's handler runs, and no claim to be alone where nothing counts. The real
gevent worker is in test_admission.py's burst test and test_gunicorn_integration.py."""

from __future__ import annotations

import pytest

from services.flask_torch.connections import OpenConnections, wrap_handler


def test_a_connection_counts_while_its_handler_runs_and_after_a_failure_no_more() -> None:
    open_ = OpenConnections()
    open_.count = 0  # as attach() leaves it
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
