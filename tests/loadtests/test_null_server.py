"""The nginx null server: config rendering, and the exact reply from a real nginx."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests

from loadtests.null_server import (
    CHUNK_BYTES,
    FixedReply,
    NullServer,
    capture_reply,
    nginx_available,
    render_nginx_conf,
)

NGINX_OK, NGINX_REASON = nginx_available()
needs_nginx = pytest.mark.skipif(not NGINX_OK, reason=NGINX_REASON)

JSON_REPLY = FixedReply(
    body=json.dumps({"predictions": [[0.1, 0.9]], "classes": [1]}).encode(),
    headers={"Content-Type": "application/json", "X-Inference-Time-Ms": "0.042"},
)
# Every byte nginx's config syntax treats specially, plus NUL, CR/LF and non-UTF-8.
NASTY = b"{'q': \"a\\b\", $HOME ${x} ;{}#\x00\x01\r\n\t\xff\xfe \xc3\xa9" * 3


def test_available_names_the_install_script_when_missing(monkeypatch) -> None:
    monkeypatch.setattr("loadtests.null_server.nginx_binary", lambda: None)
    ok, reason = nginx_available()
    assert not ok
    assert "scripts/install_tools.sh" in reason


def test_conf_keeps_everything_in_the_run_dir(tmp_path: Path) -> None:
    conf = render_nginx_conf(JSON_REPLY, tmp_path, 12345).decode()
    assert f"pid {tmp_path.resolve()}/nginx.pid;" in conf
    assert f"error_log {tmp_path.resolve()}/error.log" in conf
    assert "access_log off;" in conf
    assert "worker_processes 1;" in conf
    assert "listen 127.0.0.1:12345;" in conf
    assert "daemon" not in conf  # given on the command line (-g 'daemon off;')


def test_conf_leaves_out_temp_paths_of_modules_built_out(tmp_path: Path) -> None:
    conf = render_nginx_conf(
        JSON_REPLY, tmp_path, 1, build_flags="--without-http_uwsgi_module"
    ).decode()
    assert "uwsgi_temp_path" not in conf
    assert "scgi_temp_path" in conf


def test_long_bodies_are_split_into_several_tokens(tmp_path: Path) -> None:
    reply = FixedReply(body=b"x" * (CHUNK_BYTES * 2 + 1))
    conf = render_nginx_conf(reply, tmp_path, 1).decode()
    assert '"${reply_0}${reply_1}${reply_2}"' in conf


@pytest.mark.parametrize("status", [100, 204, 302, 600])
def test_statuses_without_a_body_are_refused(status: int) -> None:
    with pytest.raises(ValueError):
        FixedReply(body=b"", status=status)


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        FixedReply(body=b"", headers={"X-A": "1\r\nX-B: 2"})
    with pytest.raises(ValueError):
        FixedReply(body=b"", headers={"Bad Name": "1"})


def test_nginx_owned_headers_are_not_copied() -> None:
    reply = FixedReply(
        body=b"",
        headers={
            "Server": "gunicorn",
            "Content-Length": "0",
            "Content-Type": "text/plain",
            "X-A": "1",
        },
    )
    assert reply.extra_headers() == {"X-A": "1"}
    assert reply.content_type == "text/plain"


def fetch(url: str, body: bytes = b'{"instances": [1]}') -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=5)


@pytest.mark.integration
@needs_nginx
def test_answers_post_on_any_path_with_the_exact_reply(tmp_path: Path) -> None:
    with NullServer(JSON_REPLY, tmp_path) as server:
        for path in ("/", "/predictions/digitnet", "/v1/models/digitnet:predict"):
            response = fetch(server.url + path)
            assert response.status_code == 200
            assert response.content == JSON_REPLY.body
            assert response.headers["Content-Type"] == "application/json"
            assert response.headers["X-Inference-Time-Ms"] == "0.042"
            assert response.headers["Content-Length"] == str(len(JSON_REPLY.body))
            # A static file would add these; the reply under test has none of them.
            for header in ("ETag", "Last-Modified", "Accept-Ranges"):
                assert header not in response.headers
        assert requests.get(server.url + "/x", timeout=5).content == JSON_REPLY.body
    assert (tmp_path / "nginx.conf").is_file()
    assert (tmp_path / "nginx.pid").exists() is False  # nginx removes it at exit


@pytest.mark.integration
@needs_nginx
def test_any_bytes_status_and_header_values_come_back_unchanged(tmp_path: Path) -> None:
    reply = FixedReply(
        body=NASTY * 700,  # ~40 KB: many config tokens
        status=503,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "X-Odd": "a'b\"c\\d $HOME ${x} ;{}",
        },
    )
    with NullServer(reply, tmp_path) as server:
        response = fetch(server.url + "/predictions/digitnet")
    assert response.status_code == 503
    assert response.content == reply.body
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["X-Odd"] == "a'b\"c\\d $HOME ${x} ;{}"


@pytest.mark.integration
@needs_nginx
def test_empty_body_without_content_type(tmp_path: Path) -> None:
    with NullServer(FixedReply(body=b""), tmp_path) as server:
        response = fetch(server.url)
    assert response.status_code == 200
    assert response.content == b""
    assert "Content-Type" not in response.headers


@pytest.mark.integration
@needs_nginx
def test_keeps_connections_alive_and_stops(tmp_path: Path) -> None:
    with NullServer(JSON_REPLY, tmp_path, cores=[0]) as server:
        with requests.Session() as session:
            for _ in range(50):
                response = session.post(server.url, data=b"{}", timeout=5)
                assert response.content == JSON_REPLY.body
                assert response.headers.get("Connection", "keep-alive") == "keep-alive"
        pid, port = server.process.pid, server.port
    assert not server.process.alive()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"nginx {pid} still listens"


@pytest.mark.integration
@needs_nginx
def test_capture_reply_reproduces_a_servers_reply(tmp_path: Path) -> None:
    with NullServer(JSON_REPLY, tmp_path / "original") as original:
        captured = capture_reply(
            original.url + "/predict", b"{}", {"Content-Type": "application/json"}
        )
    assert captured.body == JSON_REPLY.body
    assert captured.status == 200
    assert dict(captured.headers) == dict(JSON_REPLY.headers)
    with NullServer(captured, tmp_path / "copy") as copy:
        assert fetch(copy.url).content == JSON_REPLY.body


@pytest.mark.integration
@needs_nginx
def test_a_broken_config_is_reported_with_nginx_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        "loadtests.null_server.render_nginx_conf", lambda *args: b"this is not a config;\n"
    )
    server = NullServer(JSON_REPLY, tmp_path, ready_timeout_s=3)
    with pytest.raises(RuntimeError, match="unknown directive"):
        server.start()
