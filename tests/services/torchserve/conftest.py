"""Fixtures for the TorchServe tests.

`worker` drives TorchServe's real Python worker code (ts.protocol.otf_message_handler,
ts.model_loader, ts.service, ts.context) on the real .mar, without the Java frontend: each
request is encoded in the frontend's wire format (org.pytorch.serve.util.codec
.ModelRequestEncoder) and each answer decoded from the worker's reply frame. Only the
socket is replaced (`FrameStream`); the Java-side form decoding is not emulated, so
multipart/form bodies are covered by the integration tests against the real server.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import JSON_CONTENT_TYPE
from digitnet.noop import noop_model_name
from digitnet.spec import ModelSpec
from services.torchserve.launch import mar_path, noop_mar_path

BATCH_SIZE = 8


@dataclass(frozen=True)
class FrontendRequest:
    """One HTTP request as the Java frontend forwards it to a worker."""

    body: bytes
    content_type: str | None = JSON_CONTENT_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerReply:
    """One request's answer as the worker sends it back to the frontend."""

    status: int
    phrase: str
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


class FrameStream:
    """Test double for the frontend's socket: `recv` reads from a prepared byte string."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def recv(self, size: int) -> bytes:
        return self._buffer.read(size)


def _int(value: int) -> bytes:
    return struct.pack("!i", value)


def _blob(value: bytes) -> bytes:
    return _int(len(value)) + value


def encode_inference_frame(requests: Sequence[FrontendRequest]) -> bytes:
    """An inference command ("I") carrying `requests` as one dynamic batch."""
    frame = bytearray(b"I")
    for index, request in enumerate(requests):
        frame += _blob(f"request-{index}".encode())
        headers = dict(request.headers)
        if request.content_type is not None:
            headers.setdefault("Content-Type", request.content_type)
        for name, value in headers.items():
            frame += _blob(name.encode()) + _blob(value.encode())
        frame += _int(-1)
        # The frontend sends the body as parameter "body" with the bare media type
        # (Netty's HttpUtil.getMimeType), or an empty string when there is none.
        media_type = (request.content_type or "").split(";", 1)[0].strip()
        frame += _blob(b"body") + _blob(media_type.encode()) + _blob(request.body)
        frame += _int(-1)
    frame += _int(-1)
    return bytes(frame)


def decode_predict_response(raw: bytes) -> tuple[int, list[WorkerReply]]:
    """(batch status code, one reply per request) from the worker's reply frame."""
    stream = io.BytesIO(raw)

    def read_int() -> int:
        return struct.unpack("!i", stream.read(4))[0]

    def read_blob() -> bytes:
        return stream.read(read_int())

    code = read_int()
    read_blob()  # batch message, e.g. "Prediction success"
    replies = []
    while (id_length := read_int()) != -1:
        stream.read(id_length)  # request id
        content_type = read_blob().decode()
        status = read_int()
        phrase = read_blob().decode()
        headers = {}
        for _ in range(read_int()):
            name = read_blob().decode()
            headers[name] = read_blob().decode()
        replies.append(WorkerReply(status, phrase, content_type, read_blob(), headers))
    return code, replies


def load_service(mar: Path, name: str, model_dir: Path) -> tuple[Any, str]:
    """The archive's handler loaded by TorchServe's own model loader, as a worker does;
    returns the service and the handler's module name (to forget after the tests)."""
    import ts
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.model_loader import TsModelLoader

    with zipfile.ZipFile(mar) as archive:
        archive.extractall(model_dir)
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    metrics = MetricsCacheYamlImpl(
        config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml")
    )
    metrics.initialize_cache()
    metrics.model_name = name
    # initialize() sets torch's thread count for the whole process; give it back after.
    threads = torch.get_num_threads()
    sys.path.insert(0, str(model_dir))
    try:
        service = TsModelLoader().load(
            name,
            str(model_dir),
            handler=manifest["model"]["handler"],
            gpu_id=None,
            batch_size=BATCH_SIZE,
            metrics_cache=metrics,
        )
    finally:
        sys.path.remove(str(model_dir))
        torch.set_num_threads(threads)
    service.set_cl_socket(None)
    return service, Path(manifest["model"]["handler"]).stem


@pytest.fixture(scope="session")
def worker_service(
    artifacts: ArtifactPaths, spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The model's archive (handler.py) in TorchServe's worker code."""
    service, module = load_service(mar_path(artifacts), spec.name,
                                   tmp_path_factory.mktemp("mar"))  # fmt: skip
    yield service
    sys.modules.pop(module, None)


@pytest.fixture(scope="session")
def noop_worker_service(
    artifacts: ArtifactPaths, spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The no-op twin's archive (noop_handler.py) in TorchServe's worker code."""
    service, module = load_service(noop_mar_path(artifacts), noop_model_name(spec),
                                   tmp_path_factory.mktemp("noop-mar"))  # fmt: skip
    yield service
    sys.modules.pop(module, None)


@pytest.fixture
def decode_input_request() -> str:
    """config.properties' decode_input_request; tests parametrize it to cover "true" too."""
    return "false"


def batch_runner(service: Any) -> Callable[[Sequence[FrontendRequest]], list[WorkerReply]]:
    """Sends one dynamic batch through the real worker code; returns one reply per request
    and checks the batch as a whole succeeded (per-request errors are in the replies)."""
    from ts.protocol.otf_message_handler import retrieve_msg

    def run(requests: Sequence[FrontendRequest]) -> list[WorkerReply]:
        command, batch = retrieve_msg(FrameStream(encode_inference_frame(requests)))
        assert command == b"I"
        code, replies = decode_predict_response(service.predict(batch))
        assert code == 200, replies
        assert len(replies) == len(requests)
        return replies

    return run


@pytest.fixture
def worker(
    worker_service: Any, decode_input_request: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Sequence[FrontendRequest]], list[WorkerReply]]:
    """The model's worker (batch_runner)."""
    # The frontend passes decode_input_request to workers as this variable, which the
    # worker reads for every request.
    monkeypatch.setenv("TS_DECODE_INPUT_REQUEST", decode_input_request)
    return batch_runner(worker_service)


@pytest.fixture
def noop_worker(
    noop_worker_service: Any, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Sequence[FrontendRequest]], list[WorkerReply]]:
    """The no-op twin's worker (batch_runner), with config.properties' decoding setting."""
    monkeypatch.setenv("TS_DECODE_INPUT_REQUEST", "false")
    return batch_runner(noop_worker_service)
