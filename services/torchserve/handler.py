"""TorchServe handler: the shared JSON schema or the binary tensor body in, logits and
class out, each request answered in its own codec (digitnet.wire, by its Content-Type).

Lifecycle: `initialize` once per worker, then `handle` per dynamic batch. Each request
in the batch is validated on its own, so one bad request gets its own 4xx and the rest
of the batch is still answered (a handler that raises would fail the whole batch with 503).

What TorchServe 0.12 hands the handler (ts/service.py, ts/protocol/otf_message_handler.py):
one dict per request, the raw body under "body" (the frontend's name for a non-form body).
The body arrives as bytes when config.properties sets decode_input_request=false (ours
does); with the default `true` the worker json-decodes application/json bodies itself and
forwards the bytes only when that fails. Both forms go through digitnet.codec. Binary
bodies (digitnet.binary_codec's media type) always arrive as bytes: the worker decodes
only application/json and text/* bodies. The request's headers are in the context's
request header map (context.get_all_request_header(idx), ts/context.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch

from digitnet.codec import (
    APP_STAGE,
    BATCH_HEADER,
    DEVICE_HEADER,
    INFERENCE_TIME_HEADER,
    JSON_CONTENT_TYPE,
    STAGE_HEADER,
    PayloadError,
    dumps,
    server_timing,
)
from digitnet.env import env_int
from digitnet.spec import ModelSpec, ServingLimits
from digitnet.torchscript import load_torchscript
from digitnet.wire import ACCEPTED_CONTENT_TYPES, WIRE_CODECS, WireCodec, media_type

# Torch intra-op threads per worker; services/torchserve/launch.py derives it from the cores.
THREADS_ENV = "DIGITNET_TORCH_THREADS"
DEFAULT_THREADS = 1
# Forward passes on zeros before the worker takes requests (0: none, for cold-start runs).
WARMUP_ENV = "DIGITNET_TORCHSERVE_WARMUP_ITERATIONS"
DEFAULT_WARMUP_ITERATIONS = 1
# The frontend names a raw (non-multipart, non-form) request body "body".
BODY_PARAMETER = "body"


def torch_threads() -> int:
    """Intra-op threads from DIGITNET_TORCH_THREADS (default 1).

    Raises:
        ValueError: naming the variable when it is not a positive integer.
    """
    threads = env_int(THREADS_ENV, DEFAULT_THREADS)
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {threads}")
    return threads


def request_content_type(headers: Mapping[str, Any]) -> str | None:
    """The request's Content-Type header, whatever case the client spelled its name in.

    Only string values count: TorchServe also files a dict per body parameter under the
    parameter's name ({"body": {"content-type": ...}}) in the same mapping.
    """
    for name, value in headers.items():
        if name.lower() == "content-type" and isinstance(value, str):
            return value
    return None


def select_codec(content_type: str | None) -> WireCodec:
    """The codec the request's Content-Type names (parameters like charset are allowed).

    Raises:
        PayloadError: 415 naming the content type received and the accepted ones.
    """
    codec = WIRE_CODECS.get(media_type(content_type))
    if codec is None:
        got = f'"{content_type}"' if content_type else "no Content-Type header"
        raise PayloadError(
            415,
            "unsupported_media_type",
            f"Content-Type must be {ACCEPTED_CONTENT_TYPES}, got {got}",
        )
    return codec


def request_payload(request: Mapping[str, Any]) -> bytes | bytearray | Mapping[str, Any]:
    """The body in a form digitnet.codec.decode_request takes.

    Raises:
        PayloadError: when there is no body, or the worker already decoded it into a JSON
            value that is not an object (a list, string, number or null).
    """
    if BODY_PARAMETER not in request:
        raise PayloadError(400, "empty_body", "request has no body")
    payload = request[BODY_PARAMETER]
    if isinstance(payload, (bytes, bytearray, Mapping)):
        return payload
    raise PayloadError(
        400, "wrong_schema", 'body must be a JSON object {"instances": [...]}'
    )


class DigitNetHandler:
    """Per-worker state: the scripted model and the request limits.

    TorchServe instantiates the only class defined in this module, so helpers above are
    functions, not classes.
    """

    def __init__(self) -> None:
        self.model: torch.jit.ScriptModule | None = None
        self.device = "cpu"
        self.spec = ModelSpec.from_env()
        self.limits = ServingLimits.from_env()
        self.initialized = False

    def initialize(self, context: Any) -> None:
        """Called once when a worker starts: loads TorchScript and warms it up."""
        properties = context.system_properties
        torch.set_num_threads(torch_threads())
        gpu_id = properties.get("gpu_id")
        if torch.cuda.is_available() and gpu_id is not None:
            self.device = f"cuda:{gpu_id}"
        serialized = context.manifest["model"]["serializedFile"]
        self.model = load_torchscript(Path(properties["model_dir"]) / serialized, self.device)
        with torch.inference_mode():
            for _ in range(env_int(WARMUP_ENV, DEFAULT_WARMUP_ITERATIONS)):
                self.model(torch.zeros(1, self.spec.side, self.spec.side, device=self.device))
        self.initialized = True

    def decode(
        self, request: Mapping[str, Any], headers: Mapping[str, Any]
    ) -> tuple[torch.Tensor, WireCodec, Any]:
        """One request's images as float32 [N, side, side], the codec its reply must be
        written in, and the reply's format within it (JSON: row or columnar).

        Raises:
            PayloadError: naming the first problem found.
        """
        codec = select_codec(request_content_type(headers))
        images, fmt = codec.decode_request(request_payload(request), self.spec, self.limits)
        return torch.from_numpy(images), codec, fmt

    def handle(self, data: list[dict], context: Any) -> list[bytes]:
        """Called per dynamic batch: one entry in `data` per client request.

        Returns:
            One reply per request, in order: predictions in the request's codec, or a
            JSON error whose HTTP status is set on that request alone.
        """
        # Bytes, which TorchServe sends as they are; a returned dict it would pretty-print
        # (indent=2), a third more bytes per response.
        entered = time.perf_counter()
        responses: list[bytes] = [b""] * len(data)
        valid: list[tuple[int, torch.Tensor, WireCodec, Any, float]] = []
        for idx, request in enumerate(data):
            context.set_response_content_type(idx, JSON_CONTENT_TYPE)
            started = time.perf_counter()
            try:
                decoded = self.decode(request, context.get_all_request_header(idx))
            except PayloadError as err:
                # The standard phrase, not the message: a reason phrase must be one line
                # of plain text, while the message quotes client input.
                context.set_response_status(err.status, HTTPStatus(err.status).phrase, idx)
                responses[idx] = dumps(err.to_json())
            else:
                valid.append((idx, *decoded, time.perf_counter() - started))
        if valid:
            converting = time.perf_counter()
            batch = torch.cat([images for _, images, _, _, _ in valid]).to(self.device)
            started = time.perf_counter()
            with torch.inference_mode():
                # .cpu() inside: on CUDA it is where the forward pass is waited for.
                out = self.model(batch).cpu()
            computed = time.perf_counter()
            logits = out.numpy()
            converted = time.perf_counter()
            # The forward pass of the whole dynamic batch, which every request in it waited
            # for: the framework floor's split reads it as the model's served cost.
            forward_ms = f"{(computed - started) * 1000:.3f}"
            shared = {"convert": (started - converting) + (converted - computed),
                      "model": computed - started}  # fmt: skip
            start = 0
            for idx, images, codec, fmt, decode_s in valid:
                rows = len(images)
                # Without a phrase TorchServe sends a bare "HTTP/1.1 200 " status line.
                context.set_response_status(HTTPStatus.OK.value, HTTPStatus.OK.phrase, idx)
                context.set_response_content_type(idx, codec.content_type)
                context.set_response_header(idx, DEVICE_HEADER, self.device)
                context.set_response_header(idx, BATCH_HEADER, str(len(valid)))
                context.set_response_header(idx, INFERENCE_TIME_HEADER, forward_ms)
                encoding = time.perf_counter()
                responses[idx] = codec.encode_reply(logits[start : start + rows], fmt)
                encoded = time.perf_counter()
                start += rows
                # The handler's own stages (the Flask app's names; the wait for a batch is
                # the frontend's, in its counters) and its span for this request, from
                # handle()'s entry to this reply's bytes: the rest of the request's time
                # in TorchServe is its frontend and the worker protocol.
                stages = {"decode": decode_s, **shared, "encode": encoded - encoding,
                          APP_STAGE: encoded - entered}  # fmt: skip
                context.set_response_header(idx, STAGE_HEADER, server_timing(stages))
        return responses
