"""The raw client's outcome kinds, against throwaway loopback sockets (no stack)."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest

from digitnet.clients import flask_rest
from digitnet.spec import ModelSpec
from reliability.client import REFUSED, RESET, Connection, Endpoint
from services.process import LOOPBACK, free_port


def test_only_loopback_endpoints_are_targets() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        Endpoint.of(flask_rest("http://10.0.0.1:8000", ModelSpec()))
    port = free_port()
    endpoint = Endpoint.of(flask_rest(f"http://{LOOPBACK}:{port}", ModelSpec()))
    assert (endpoint.host, endpoint.port, endpoint.path) == (
        LOOPBACK, port, "/v1/models/digitnet:predict")


def test_nothing_listening_is_refused() -> None:
    endpoint = Endpoint(LOOPBACK, free_port(), "/")
    assert Connection(endpoint, 2.0).post(b"{}").kind == REFUSED


def _serve_once(answer: bytes | None) -> int:
    """A one-shot server: reads the request, then sends `answer` (None: closes silently)."""
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.recv(65536)
            if answer is not None:
                conn.sendall(answer)

    threading.Thread(target=run, daemon=True).start()
    return port


def test_closed_without_answer_is_a_reset() -> None:
    endpoint = Endpoint(LOOPBACK, _serve_once(None), "/")
    assert Connection(endpoint, 5.0).post(b"{}").kind == RESET


def test_an_answer_is_returned_with_status_and_body() -> None:
    answer = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
              b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    reply = Connection(Endpoint(LOOPBACK, _serve_once(answer), "/"), 5.0).post(b"{}")
    assert (reply.kind, reply.status, reply.body) == ("http_413", 413, b"{}")
    assert reply.content_type == "application/json"


def test_a_reset_while_connecting_is_a_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener closing under load can reset a connection it was setting up: a visible
    failure like any reset, not an unknown error (seen once in CI: Ray Serve's SIGTERM)."""
    def reset(self: http.client.HTTPConnection) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(http.client.HTTPConnection, "connect", reset)
    reply = Connection(Endpoint(LOOPBACK, free_port(), "/"), 2.0).post(b"{}")
    assert reply.kind == RESET and reply.error.startswith("connect: ConnectionResetError")
