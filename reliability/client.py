"""A small HTTP client that sends exact bytes and names what went wrong.

`requests` folds a refused connection, a reset and a server that closed without answering
into one ConnectionError; fault runs need them apart (a refused connection is a clean
"no", a reset after the request was sent is a lost request), so this module speaks
http.client directly. It only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from digitnet.clients import RestClient
from digitnet.codec import JSON_CONTENT_TYPE
from services.process import LOOPBACK

# Outcome kinds of one request, in the order reports list them.
OK = "ok"
WRONG_ANSWER = "wrong_answer"
REFUSED = "refused"  # nothing listens: the connection was refused, nothing was sent
RESET = "reset"  # connected, then closed or reset before a complete answer
TIMEOUT = "timeout"
OTHER = "error"


def http_kind(status: int) -> str:
    return f"http_{status}"


@dataclass(frozen=True)
class Endpoint:
    """Where one stack's predict route is, and the headers it needs (TorchServe's token)."""

    host: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, client: RestClient) -> Endpoint:
        url = urlsplit(client.url)
        if url.hostname != LOOPBACK or url.port is None:
            raise ValueError(f"{client.url}: only {LOOPBACK} with an explicit port is a target")
        return cls(url.hostname, url.port, url.path, dict(client.headers))


@dataclass(frozen=True)
class Reply:
    kind: str  # OK-to-be-checked ("http_200") or one of the failure kinds above
    status: int | None
    body: bytes
    content_type: str | None
    error: str = ""


class Connection:
    """One HTTP/1.1 connection, kept alive across requests unless `fresh` is set; after a
    failure the next request opens a new one."""

    def __init__(self, endpoint: Endpoint, timeout_s: float, fresh: bool = False) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.fresh = fresh
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(self, body: bytes, content_type: str | None = JSON_CONTENT_TYPE) -> Reply:
        """POSTs `body` to the endpoint's path; never raises for network trouble."""
        headers = dict(self.endpoint.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.fresh:
            headers["Connection"] = "close"
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                self.endpoint.host, self.endpoint.port, timeout=self.timeout_s
            )
            try:
                self._conn.connect()
            except ConnectionRefusedError as err:
                self.close()
                return Reply(REFUSED, None, b"", None, str(err))
            except (ConnectionResetError, ConnectionAbortedError) as err:
                # The server reset the connection while it was being set up (a listener
                # closing under load does): as visible a failure as a reset after it.
                self.close()
                return Reply(RESET, None, b"", None, f"connect: {err!r}")
            except (TimeoutError, OSError) as err:
                self.close()
                kind = TIMEOUT if isinstance(err, TimeoutError) else OTHER
                return Reply(kind, None, b"", None, f"connect: {err!r}")
        try:
            self._send(body, headers)
            response = self._conn.getresponse()
            data = response.read()
        except TimeoutError as err:
            self.close()
            return Reply(TIMEOUT, None, b"", None, repr(err))
        except (ConnectionError, http.client.HTTPException, OSError) as err:
            # RemoteDisconnected, ConnectionResetError, BrokenPipeError, IncompleteRead.
            self.close()
            return Reply(RESET, None, b"", None, repr(err))
        if self.fresh or response.will_close:
            self.close()
        return Reply(http_kind(response.status), response.status, data,
                     response.getheader("Content-Type"))

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        """Sends the request; a server that answers early (413 to an oversized body) and
        closes may break the pipe mid-body, so a failed body send still reads the answer."""
        conn = self._conn
        conn.putrequest("POST", self.endpoint.path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            conn.sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # getresponse() below reads the early answer, or raises if there is none


class TricklingPost(threading.Thread):
    """A POST whose body is sent `chunk` bytes every `interval_s` (a slow client), on its
    own connection. It answers `status` (None until an answer came), `error`, and
    `finished_sending` (False when stopped mid-body)."""

    def __init__(self, endpoint: Endpoint, body: bytes, chunk: int, interval_s: float,
                 timeout_s: float, stop: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.body, self.chunk = endpoint, body, max(1, chunk)
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.stop = stop or threading.Event()
        self.connected = threading.Event()
        self.status: int | None = None
        self.error = ""
        self.finished_sending = False

    def _head(self) -> bytes:
        lines = [f"POST {self.endpoint.path} HTTP/1.1", f"Host: {self.endpoint.host}",
                 f"Content-Type: {JSON_CONTENT_TYPE}", f"Content-Length: {len(self.body)}",
                 "Connection: close", *(f"{k}: {v}" for k, v in self.endpoint.headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def run(self) -> None:
        try:
            with socket.create_connection((self.endpoint.host, self.endpoint.port),
                                          timeout=self.timeout_s) as sock:
                sock.sendall(self._head())
                self.connected.set()
                for start in range(0, len(self.body), self.chunk):
                    if self.stop.wait(self.interval_s):
                        return
                    sock.sendall(self.body[start : start + self.chunk])
                self.finished_sending = True
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            status_line = answer.split(b"\r\n", 1)[0].split()
            if len(status_line) > 1 and status_line[1].isdigit():
                self.status = int(status_line[1])
            else:
                self.error = "connection closed without an answer"
        except OSError as err:
            self.error = repr(err)
        finally:
            self.connected.set()


def endpoint_of(running) -> Endpoint:
    """The REST predict endpoint of a harness.lifecycle.RunningStack.

    Raises:
        ValueError: if the stack offers no REST client.
    """
    if running.rest is None:
        raise ValueError(f"{running.name} offers no REST client")
    return Endpoint.of(running.rest)
