"""TorchServe's Python worker driven in process, without the Java frontend: a .mar loaded by
TorchServe's own model loader (ts.model_loader) as a worker loads it, each request encoded
in the frontend's wire format (org.pytorch.serve.util.codec.ModelRequestEncoder) and read
by the worker's own code (ts.protocol.otf_message_handler.retrieve_msg), each answer
decoded from the worker's reply frame. Only the socket is replaced (`FrameStream`); the
Java-side form decoding is not emulated (multipart bodies need the real server).

The handler tests drive the real worker code through it (tests/services/torchserve/
conftest.py), and loadtests.own_code times our handler in it.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from digitnet.codec import JSON_CONTENT_TYPE

# The dynamic batch the loaded service is told it may get (the tests' batches fit in it).
BATCH_SIZE = 8
# config.properties' decode_input_request, which the frontend hands its workers as this
# variable and the worker reads for every request.
DECODE_INPUT_VARIABLE = "TS_DECODE_INPUT_REQUEST"


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
    """The frontend's socket, replaced: `recv` reads from a prepared byte string."""

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


def load_service(mar: Path, name: str, model_dir: Path,
                 batch_size: int = BATCH_SIZE) -> tuple[Any, str]:  # fmt: skip
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
            batch_size=batch_size,
            metrics_cache=metrics,
        )
    finally:
        sys.path.remove(str(model_dir))
        torch.set_num_threads(threads)
    service.set_cl_socket(None)
    return service, Path(manifest["model"]["handler"]).stem


def run_batch(service: Any, requests: Sequence[FrontendRequest]) -> tuple[int, list[WorkerReply]]:
    """One dynamic batch through the worker's own code, as a frame off its socket: (the
    batch's status code, one reply per request)."""
    from ts.protocol.otf_message_handler import retrieve_msg

    command, batch = retrieve_msg(FrameStream(encode_inference_frame(requests)))
    if command != b"I":
        raise ValueError(f"the frame decoded as command {command!r}, not inference")
    return decode_predict_response(service.predict(batch))
