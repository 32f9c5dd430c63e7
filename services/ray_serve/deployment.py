"""The Serve deployment: each replica loads the TorchScript model once, merges concurrent
requests with @serve.batch, and answers TF Serving's REST routes with the shared codec.

Lifecycle (Serve calls each; server.py builds the application with `build_app`, a
Serve config file such as KubeRay's serveConfigV2 with `app_builder`):
  __init__      when Serve starts a replica: load and warm up the model (flask_torch's
                TorchScriptModel); the replica takes no request before it returns, so a
                replica that exists is a warm one. A load failure raises, and Serve
                reports the deployment as failed instead of serving 503s.
  reconfigure   right after __init__, and whenever the user_config changes: applies the
                batching policy (settings.batching_config) to @serve.batch.
  check_health  every HEALTH_CHECK_PERIOD_S: a replica whose model is gone is replaced.
  __call__      per HTTP request, on the replica's event loop.

Routes (the Flask app's, services/flask_torch/app.py, with the same answers):
    POST /v1/models/<name>:predict   the shared JSON schema (digitnet.codec) or the binary
                                     tensor body (digitnet.binary_codec), by Content-Type,
                                     answered in the same codec
    GET  /v1/models/<name>           TF Serving-like model status
    GET  /healthz, /readyz           liveness and readiness of the replica that answers
    POST /v1/models/<name>:noop      only with DIGITNET_NOOP_TWIN=1 (digitnet/noop.py): a
                                     fixed reply through Serve's batcher, no decoding
Every error answers {"error": ..., "reason": ...} JSON with the Flask app's status.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np
import torch
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from digitnet.clients import FLASK_LIVE_PATH, FLASK_READY_PATH, TFS_PREDICT_PATH, TFS_STATUS_PATH
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
    too_large_document,
)
from digitnet.noop import NOOP_PATH, noop_reply
from digitnet.spec import BatchingPolicy
from digitnet.wire import ACCEPTED_CONTENT_TYPES, WIRE_CODECS, media_type
from services.flask_torch.predictor import TorchScriptModel
from services.flask_torch.settings import Settings
from services.ray_serve.settings import BATCHES_IN_FLIGHT, ServeSettings, deployment_options

# Serve's replica logger: lines land in the replica's log under the Ray session.
log = logging.getLogger("ray.serve")


def _bind_replica_grpc_to_loopback() -> None:
    """Ray 2.60's replica starts an inter-deployment gRPC server on "[::]:0" (all
    interfaces) whatever the node address; this project uses no inter-deployment calls
    and must expose nothing but the inference port. This module is imported in the
    replica process before Serve starts that server, so the replica module's helper is
    wrapped here to bind loopback instead. Private API, pinned with ray==2.60.0; the
    loopback test (tests/services/ray_serve) fails if an upgrade changes it."""
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "_loopback_only", False):
        return

    def add_port_on_loopback(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:"):]
        return original(server, address)

    add_port_on_loopback._loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port_on_loopback


_bind_replica_grpc_to_loopback()

# The decorator's values until reconfigure() applies the run's policy (always, since
# the deployment is always given a user_config): the spec's defaults, not new numbers.
_DEFAULT_POLICY = BatchingPolicy()


class HttpError(Exception):
    """An answer other than 200 that is not a codec error (route, method, media type)."""

    def __init__(self, status: int, reason: str, message: str,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


def _route(path_format: str) -> re.Pattern[str]:
    """A URL format of digitnet.clients as a pattern; a model name has no slash and no
    colon, as in the Flask app."""
    pattern = re.escape(path_format).replace(re.escape("{name}"), "(?P<name>[^/:]+)")
    return re.compile(f"^{pattern}$")


PREDICT_ROUTE = _route(TFS_PREDICT_PATH)
STATUS_ROUTE = _route(TFS_STATUS_PATH)


def json_response(document: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    return bytes_response(dumps(document), status, headers)


def bytes_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None,
                   content_type: str = JSON_CONTENT_TYPE) -> Response:  # fmt: skip
    return Response(body, status_code=status, headers=headers,
                    media_type=content_type)  # fmt: skip


def error_response(status: int, reason: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    return json_response({"error": message, "reason": reason}, status, headers)


def _allow(method: str, path: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, "method_not_allowed",
                        f"{method} is not allowed on {path}; use {allowed}", {"Allow": allowed})


@serve.deployment
class DigitNet:
    """One replica: the TorchScript model, its batch queue and the REST routes."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model = TorchScriptModel(settings)
        # Synchronously: Serve sends no request to a replica before __init__ returns.
        self._model.load()
        if not self._model.ready:
            raise RuntimeError(f"model failed to load: {self._model.load_error}")
        # The no-op twin: a route of this same deployment, so the same proxy, replica and
        # batching policy answer it (None: off, as in every image).
        self._noop_path = NOOP_PATH.format(name=settings.spec.name)
        self._noop_reply = noop_reply(settings.spec) if settings.noop_route else None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Applies settings.batching_config(policy) to the batch queue."""
        for queue in (self.predict_batch, self.noop_batch):
            queue.set_max_batch_size(int(user_config["max_batch_size"]))
            queue.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    def check_health(self) -> None:
        if not self._model.ready:
            raise RuntimeError(f"model is not loaded: {self._model.load_error}")

    def batching(self) -> dict[str, Any]:
        """What @serve.batch and this replica actually run with (server.py records it)."""
        return {
            "max_batch_size": self.predict_batch._get_max_batch_size(),
            "batch_wait_timeout_s": self.predict_batch._get_batch_wait_timeout_s(),
            "max_concurrent_batches": BATCHES_IN_FLIGHT,
            "torch_threads": torch.get_num_threads(),
            "device": self._model.device,
        }

    @serve.batch(
        max_batch_size=_DEFAULT_POLICY.requests_per_batch,
        batch_wait_timeout_s=_DEFAULT_POLICY.delay_ms / 1000.0,
        max_concurrent_batches=BATCHES_IN_FLIGHT,
    )
    async def predict_batch(self, batch: list[np.ndarray]
                            ) -> list[tuple[np.ndarray, float, int]]:
        """One forward pass over every request of the batch (each [n_i, side, side]);
        each gets its own rows back, the pass's compute time and the requests in it."""
        sizes = [len(images) for images in batch]
        logits, seconds = self._model.predict_timed(np.concatenate(batch))
        return [(rows, seconds, len(batch))
                for rows in np.split(logits, np.cumsum(sizes)[:-1])]  # fmt: skip

    @serve.batch(
        max_batch_size=_DEFAULT_POLICY.requests_per_batch,
        batch_wait_timeout_s=_DEFAULT_POLICY.delay_ms / 1000.0,
        max_concurrent_batches=BATCHES_IN_FLIGHT,
    )
    async def noop_batch(self, batch: list[None]) -> list[None]:
        """The no-op twin's pass through Serve's batcher, under the predict route's policy
        and doing nothing: the wait for a batch is Serve's (its config), so it stays in
        the framework's floor, as TorchServe's batching does in its twin's."""
        return [None] * len(batch)

    async def _noop(self, request: Request, reply: bytes) -> Response:
        entered = time.perf_counter()
        # The body crosses the proxy either way; it is read, never decoded.
        await request.body()
        await self.noop_batch(None)
        # Its span in the replica, the batcher's wait included, as the predict route's.
        return Response(reply, media_type=JSON_CONTENT_TYPE, headers={
            STAGE_HEADER: server_timing({APP_STAGE: time.perf_counter() - entered})})

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._answer(request)
        except PayloadError as err:
            return error_response(err.status, err.reason, err.message)
        except HttpError as err:
            return error_response(err.status, err.reason, err.message, err.headers)
        except Exception:
            # The traceback goes to the replica's log; the client learns only that it was
            # not its fault.
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(500, "internal", "internal server error")

    async def _answer(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if self._noop_reply is not None and path == self._noop_path and method == "POST":
            return await self._noop(request, self._noop_reply)
        if match := PREDICT_ROUTE.match(path):
            _allow(method, path, "POST")
            return await self._predict(request, match["name"])
        if match := STATUS_ROUTE.match(path):
            _allow(method, path, "GET")
            return self._status(match["name"])
        if path in (FLASK_LIVE_PATH, FLASK_READY_PATH):
            _allow(method, path, "GET")
            # A replica answers only once __init__ has loaded and warmed its model.
            return json_response({"status": "alive" if path == FLASK_LIVE_PATH else "ready"})
        raise HttpError(404, "not_found", f"no route {path}: the predict route is "
                        f"{TFS_PREDICT_PATH.format(name=self._settings.spec.name)}")

    def _check_model(self, name: str) -> None:
        served = self._settings.spec.name
        if name != served:
            raise HttpError(404, "model_not_found",
                            f"model {name!r} is not served here; this server serves {served!r}")

    async def _predict(self, request: Request, name: str) -> Response:
        entered = time.perf_counter()
        self._check_model(name)
        content_type = request.headers.get("content-type")
        codec = WIRE_CODECS.get(media_type(content_type))
        if codec is None:
            raise HttpError(415, "unsupported_media_type",
                            f"Content-Type must be {ACCEPTED_CONTENT_TYPES}, "
                            f"got {content_type or 'none'!r}")
        body = await self._read_body(request)
        # The request's codec answers it; a JSON reply takes the request's format, row or
        # columnar, as TF Serving's does.
        started = time.perf_counter()
        images, fmt = codec.decode_request(body, self._settings.spec, self._settings.limits)
        decoded = time.perf_counter()
        logits, seconds, shared = await self.predict_batch(images)
        returned = time.perf_counter()
        reply = codec.encode_reply(logits, fmt)
        encoded = time.perf_counter()
        # The Flask app's stage names; queue is the batcher's: the wait for a batch, the
        # hand-offs through the event loop and the batch's concatenation and split.
        stages = {"decode": decoded - started, "queue": (returned - decoded) - seconds,
                  "model": seconds, "encode": encoded - returned,
                  APP_STAGE: encoded - entered}  # fmt: skip
        return bytes_response(reply,
                              headers={INFERENCE_TIME_HEADER: f"{seconds * 1000:.3f}",
                                       DEVICE_HEADER: str(self._model.device),
                                       BATCH_HEADER: str(shared),
                                       STAGE_HEADER: server_timing(stages)},
                              content_type=codec.content_type)  # fmt: skip

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 past ServingLimits.max_body_bytes. What is over the
        limit is read and dropped rather than left unread: a client still uploading into
        an unread socket would see a reset instead of the 413."""
        limit = self._settings.limits.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            else:
                chunks.clear()
        if size > limit:
            too_large = too_large_document(limit)
            raise HttpError(413, too_large["reason"], too_large["error"])
        return b"".join(chunks)

    def _status(self, name: str) -> Response:
        self._check_model(name)
        # A replica exists only with its model loaded: it is always AVAILABLE.
        status = {"version": str(self._settings.spec.version), "state": "AVAILABLE",
                  "status": {"error_code": "OK", "error_message": ""}}  # fmt: skip
        return json_response({"model_version_status": [status]})


def model_settings(settings: ServeSettings) -> Settings:
    """What each replica's TorchScriptModel loads and how (flask_torch's Settings)."""
    return Settings(
        model_path=settings.model_path,
        spec=settings.spec,
        limits=settings.limits,
        torch_threads=settings.split.threads,
        warmup_iterations=settings.warmup_iterations,
        device=settings.device,
        noop_route=settings.noop,
    )


def build_app(settings: ServeSettings) -> Application:
    """The application server.py runs: the deployment with options derived from
    `settings` (settings.deployment_options)."""
    return DigitNet.options(**deployment_options(settings)).bind(model_settings(settings))


def app_builder(args: dict[str, str]) -> Application:
    """The application a Serve config file names by import path
    (`services.ray_serve.deployment:app_builder`, k8s/components/rayservice), built from
    the config's `args` (ServeSettings.from_args) into the same deployment as build_app."""
    return build_app(ServeSettings.from_args(args))
