"""A null server: nginx answering every request with one fixed reply.

It measures the load generator's own floor. nginx answers a request in microseconds, so
what a client measures against it is the client's own cost: its per-request latency and
its ceiling in req/s. To keep that floor honest, the reply is the exact body, status and
headers of the stack under test (capture them with `capture_reply`), so the generator
parses the same bytes it parses in the real run.

The reply is built into nginx.conf, not served from a file: `return` answers any method
on any path (a static file answers POST with 405) and adds no ETag, Last-Modified or
Accept-Ranges headers. The body is split into `geo` variables (their values are never
interpolated, so `$` needs no escaping, and each stays under nginx's 4 KB limit on one
config token) that `return` concatenates; any byte, NUL included, comes back unchanged.

Everything nginx writes (config, pid, error log, temp folders) lives in the run folder;
nginx runs in the foreground (`daemon off`) as a child we stop, bound to 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import requests

from loadtests.tools import probe
from services.process import (
    LOOPBACK,
    ServerProcess,
    free_port,
    start_process,
    stop_process_tree,
    wait_until,
)

INSTALL_HINT = "run scripts/install_tools.sh (Debian package nginx-light)"
# nginx writes these itself; a copy from the captured reply would appear twice.
NGINX_OWNED_HEADERS = frozenset(
    {"server", "date", "content-length", "connection", "keep-alive", "transfer-encoding"}
)
# Raw body bytes per geo variable: escaping at most doubles a byte (\\ and \'), which
# keeps each config token well under nginx's 4096-byte buffer for one token.
CHUNK_BYTES = 1500
# Keep connections open for the whole run and never close them after N requests (nginx
# closes after 1000 by default): a reconnect would be counted in the generator's floor.
KEEPALIVE_TIMEOUT_S = 3600
KEEPALIVE_REQUESTS = 1_000_000_000
# More than any concurrency a profile or an overload test opens from one client.
WORKER_CONNECTIONS = 4096
READY_TIMEOUT_S = 10.0
# Temp folders nginx creates at start for the modules it was built with; pointed into the
# run folder so an unprivileged user can run it. Skipped where the module is left out.
_TEMP_PATHS = {
    "client_body_temp_path": None,
    "proxy_temp_path": "--without-http_proxy_module",
    "fastcgi_temp_path": "--without-http_fastcgi_module",
    "uwsgi_temp_path": "--without-http_uwsgi_module",
    "scgi_temp_path": "--without-http_scgi_module",
}
# `return` with these codes takes a URL, not a body; 1xx/204/304 carry no body at all.
_NO_BODY_STATUSES = {204, 301, 302, 303, 304, 307, 308}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class FixedReply:
    """What the null server answers: status, headers (Content-Type among them) and body."""

    body: bytes
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599 or self.status in _NO_BODY_STATUSES:
            raise ValueError(f"status {self.status} cannot carry a fixed body")
        for name, value in self.headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} holds a line break or NUL")

    @property
    def content_type(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "content-type"), None)

    def extra_headers(self) -> dict[str, str]:
        """Headers besides Content-Type that nginx must add (its own ones left out)."""
        return {
            k: v
            for k, v in self.headers.items()
            if k.lower() != "content-type" and k.lower() not in NGINX_OWNED_HEADERS
        }


def capture_reply(
    url: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> FixedReply:
    """POSTs `body` to a running stack once and keeps its reply for the null server.

    Args:
        url: the stack's predict URL.
        body: the request body the generator sends.
        headers: the generator's request headers (Content-Type, Authorization...).
        timeout_s: how long to wait for the reply.

    Returns:
        The reply's status, body bytes and headers, without those nginx writes itself.
    """
    # identity: a compressed reply would come back decompressed and no longer match its
    # Content-Encoding header; the generators here do not ask for compression either.
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    response = requests.post(url, data=body, headers=sent, timeout=timeout_s)
    kept = {k: v for k, v in response.headers.items() if k.lower() not in NGINX_OWNED_HEADERS}
    return FixedReply(body=response.content, status=response.status_code, headers=kept)


def nginx_binary() -> str | None:
    """Path of the nginx executable (often in /usr/sbin, outside a user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    fallback = Path("/usr/sbin/nginx")
    return str(fallback) if fallback.is_file() else None


def nginx_available() -> tuple[bool, str]:
    """Whether the null server can run here.

    Returns:
        (True, version line) or (False, why not and how to get nginx).
    """
    return probe("nginx", nginx_binary(), INSTALL_HINT)


def _build_flags(binary: str) -> str:
    done = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
    return done.stderr + done.stdout


def _quote(data: bytes) -> bytes:
    """`data` as a single-quoted nginx config string that parses back to the same bytes."""
    escaped = (
        data.replace(b"\\", b"\\\\")
        .replace(b"'", b"\\'")
        .replace(b"\r", b"\\r")
        .replace(b"\n", b"\\n")
        .replace(b"\t", b"\\t")
    )
    return b"'" + escaped + b"'"


def _chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def render_nginx_conf(reply: FixedReply, run_dir: Path, port: int, build_flags: str = "") -> bytes:
    """The nginx.conf that answers every request on 127.0.0.1:`port` with `reply`.

    Args:
        reply: the fixed reply.
        run_dir: folder for the pid file, error log and temp folders (absolute).
        port: loopback port to listen on.
        build_flags: `nginx -V` output; temp paths of modules built out are left out.

    Returns:
        The config file's bytes (bytes, since the body may be any bytes).
    """
    run_dir = run_dir.resolve()
    lines: list[bytes] = []

    def add(text: str) -> None:
        lines.append(text.encode())

    add("# Generated by loadtests/null_server.py: a fixed reply for the generator's floor.")
    # One worker: the floor of a client, not a benchmark of nginx; pin it with cores=.
    add("worker_processes 1;")
    add(f"pid {run_dir / 'nginx.pid'};")
    add(f"error_log {run_dir / 'error.log'} warn;")
    add(f"events {{ worker_connections {WORKER_CONNECTIONS}; }}")
    add("http {")
    # A log line per request would cost the null server and the disk.
    add("    access_log off;")
    add(f"    keepalive_timeout {KEEPALIVE_TIMEOUT_S}s;")
    add(f"    keepalive_requests {KEEPALIVE_REQUESTS};")
    # Never refuse a request body the real stack accepts (413 would be a fast failure).
    add("    client_max_body_size 0;")
    add("    server_tokens off;")
    for directive, left_out_by in _TEMP_PATHS.items():
        if left_out_by is None or left_out_by not in build_flags:
            add(f"    {directive} {run_dir / 'tmp' / directive.removesuffix('_temp_path')};")
    # No mime table: every reply gets exactly the Content-Type asked for, or none.
    add("    types {}")
    if reply.content_type is not None:
        lines.append(b"    default_type " + _quote(reply.content_type.encode()) + b";")
    else:
        add("    default_type '';")
    parts = _chunks(reply.body)
    for index, part in enumerate(parts):
        lines.append(b"    geo $reply_%d { default " % index + _quote(part) + b"; }")
    headers = reply.extra_headers()
    for index, value in enumerate(headers.values()):
        lines.append(b"    geo $header_%d { default " % index + _quote(value.encode()) + b"; }")
    add("    server {")
    add(f"        listen {LOOPBACK}:{port};")
    add("        location / {")
    for index, name in enumerate(headers):
        # always: the header comes with every status, 4xx/5xx replies included.
        add(f"            add_header {name} $header_{index} always;")
    body = "".join(f"${{reply_{i}}}" for i in range(len(parts)))
    add(f'            return {reply.status} "{body}";')
    add("        }")
    add("    }")
    add("}")
    return b"\n".join(lines) + b"\n"


class NullServer:
    """nginx answering `reply` on a free loopback port, for the span of a `with` block.

    Entering starts it (pinned to `cores` if given), waits until it answers, and yields
    itself; leaving stops it. `url` is its base URL; any path answers.
    """

    def __init__(
        self,
        reply: FixedReply,
        run_dir: Path,
        cores: Sequence[int] | None = None,
        port: int | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.reply = reply
        self.run_dir = Path(run_dir).resolve()
        self.cores = list(cores) if cores else None
        self.port = port
        self.ready_timeout_s = ready_timeout_s
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the null server has not started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.run_dir / "nginx.conf"

    def start(self) -> NullServer:
        """Writes the config, starts nginx and waits until it answers with the reply."""
        ok, reason = nginx_available()
        if not ok:
            raise RuntimeError(reason)
        binary = nginx_binary()
        assert binary is not None
        if self.port is None:
            self.port = free_port()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "tmp").mkdir(exist_ok=True)
        conf = render_nginx_conf(self.reply, self.run_dir, self.port, _build_flags(binary))
        self.conf_path.write_bytes(conf)
        error_log = self.run_dir / "error.log"
        argv = [
            binary,
            "-p", f"{self.run_dir}/",
            "-c", str(self.conf_path),
            "-e", str(error_log),
            "-g", "daemon off;",
        ]  # fmt: skip
        self.process = start_process(
            "null-server", argv, self.run_dir / "nginx.out", cores=self.cores
        )
        try:
            wait_until(
                self._answers,
                self.ready_timeout_s,
                f"null server on port {self.port}",
                interval_s=0.05,
                alive=self.process.alive,
            )
        except (TimeoutError, RuntimeError) as err:
            log = error_log.read_text(errors="replace") if error_log.exists() else ""
            self.stop()
            raise RuntimeError(f"{err}\n{self.process.log_tail()}\n{log[-2000:]}") from err
        return self

    def _answers(self) -> bool:
        response = requests.post(self.url, data=b"", timeout=1.0)
        return response.status_code == self.reply.status

    def stop(self) -> None:
        """Stops nginx (master and worker) if it runs."""
        if self.process is not None:
            stop_process_tree(self.process.pid, grace_s=5.0)
            if self.process.popen is not None:
                self.process.popen.wait(timeout=5)

    def __enter__(self) -> NullServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
