"""The HTTP server's own stages (services/flask_torch/http_timing.py): the kernel's receipt
time read off a real loopback TCP socket, the previous reply's figures kept per path. The
whole path through a real gunicorn worker is in test_gunicorn_integration.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from digitnet.codec import APP_AFTER_STAGE, HTTP_READ_STAGE, HTTP_WRITE_STAGE
from services.flask_torch.http_timing import (
    MAX_PATHS,
    REPLIED_KEY,
    RETURNED_KEY,
    SO_TIMESTAMPNS,
    HttpTimer,
    StampedSocket,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback connection whose served end already gets receipt times: when no socket
    on the machine had asked for them, the kernel turns them on a moment after the first
    one asks (a deferred work item), and bytes received before that carry none."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        served, _ = listener.accept()
        with client, served:
            served.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            for _ in range(1000):
                client.sendall(b".")
                _, ancillary, _, _ = served.recvmsg(1, socket.CMSG_SPACE(16))
                if ancillary:
                    break
                time.sleep(0.001)
            else:
                pytest.fail("the kernel never reported a receipt time")
            yield client, served


def test_a_read_keeps_the_kernels_receipt_of_the_requests_first_bytes(pair) -> None:
    client, served = pair
    stamped = StampedSocket(served)
    sent_ns = time.time_ns()
    client.sendall(b"GET / HTTP/1.1\r\n")
    time.sleep(0.05)  # the bytes wait in the kernel: the stamp is their receipt, not the read
    read_ns = time.time_ns()
    assert stamped.recv(1024) == b"GET / HTTP/1.1\r\n"
    assert sent_ns <= stamped.received_ns < read_ns
    # Later reads of the same request keep the first receipt.
    first = stamped.received_ns
    client.sendall(b"Host: x\r\n\r\n")
    assert stamped.recv(1024) == b"Host: x\r\n\r\n"
    assert stamped.received_ns == first
    # Writes are stamped when the kernel has the bytes; the rest is the socket's own.
    before = time.perf_counter()
    stamped.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert before <= stamped.sent <= time.perf_counter()
    assert client.recv(1024) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert stamped.getsockname() == served.getsockname()


def environ_of(sock: object, path: str = "/v1/models/digitnet:predict") -> dict:
    return {"gunicorn.socket": sock, "PATH_INFO": path}


def test_each_reply_carries_its_read_and_the_previous_replys_teardown_and_write(pair) -> None:
    client, served = pair
    timer, stamped = HttpTimer(), StampedSocket(served)
    client.sendall(b"request one")
    stamped.recv(1024)
    first = environ_of(stamped)
    got = timer.stages(first)
    assert set(got) == {HTTP_READ_STAGE} and got[HTTP_READ_STAGE] >= 0.0
    # The app hands its reply over, returns, and gunicorn writes it.
    first[REPLIED_KEY] = time.perf_counter()
    first[RETURNED_KEY] = time.perf_counter()
    stamped.sendall(b"reply one")
    timer.written(first)
    assert stamped.received_ns is None  # ready for the next request's receipt
    client.sendall(b"request two")
    stamped.recv(1024)
    got = timer.stages(environ_of(stamped))
    assert got[APP_AFTER_STAGE] == first[RETURNED_KEY] - first[REPLIED_KEY]
    assert got[HTTP_WRITE_STAGE] == stamped.sent - first[RETURNED_KEY]
    # Another path has no previous reply of its own.
    assert set(timer.stages(environ_of(stamped, "/healthz"))) == {HTTP_READ_STAGE}


def test_a_reply_that_was_not_written_after_the_app_returned_is_not_kept(pair) -> None:
    _, served = pair
    timer, stamped = HttpTimer(), StampedSocket(served)
    stamped.sendall(b"an earlier reply")
    environ = environ_of(stamped)
    environ[REPLIED_KEY] = environ[RETURNED_KEY] = time.perf_counter()
    timer.written(environ)  # nothing sent since the app returned
    assert timer.stages(environ_of(stamped)) == {}
    # Nor one the app's wrapper never saw, nor a socket that stamps nothing.
    timer.written(environ_of(stamped))
    timer.written({"gunicorn.socket": served, REPLIED_KEY: 0.0, RETURNED_KEY: 0.0})
    assert timer.stages(environ_of(served)) == {}


def test_requests_to_ever_new_paths_cannot_grow_the_table(pair) -> None:
    _, served = pair
    timer, stamped = HttpTimer(), StampedSocket(served)
    for index in range(3 * MAX_PATHS):
        environ = environ_of(stamped, f"/missing/{index}")
        environ[REPLIED_KEY] = environ[RETURNED_KEY] = time.perf_counter()
        stamped.sendall(b"404")
        timer.written(environ)
        assert len(timer._after) <= MAX_PATHS
    assert HTTP_WRITE_STAGE in timer.stages(environ_of(stamped, f"/missing/{3 * MAX_PATHS - 1}"))


def test_only_a_gevent_worker_is_attached() -> None:
    class SyncLikeWorker:
        def handle(self, listener, client, addr):
            return client

    worker = SyncLikeWorker()
    assert HttpTimer().attach(worker) is False
    assert worker.handle(None, "client", None) == "client"
