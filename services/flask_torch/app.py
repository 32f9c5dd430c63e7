"""The Flask application factory: TF Serving's REST routes in front of a TorchScript model.

Run it under gunicorn (each worker calls create_app() after the fork):
    gunicorn -c services/flask_torch/gunicorn.conf.py "services.flask_torch.app:create_app()"

Routes:
    POST /v1/models/<name>:predict   the shared JSON schema (digitnet.codec), or the binary
                                     tensor body (digitnet.binary_codec), chosen by the
                                     Content-Type and answered in the same codec
    GET  /v1/models/<name>           TF Serving-like model status
    GET  /healthz                    liveness: 200 whenever the process answers
    GET  /readyz                     readiness: 503 until the model is loaded and warm
    POST /v1/models/<name>:noop      only with DIGITNET_NOOP_TWIN=1 (digitnet/noop.py): a
                                     fixed reply, no decoding, no model, no admission
Every error answers {"error": ..., "reason": ...} JSON, never an HTML page or a traceback.

Admission control (digitnet.spec.AdmissionPolicy): each worker holds at most a bounded
number of predict requests, one computing and the rest queued in arrival order; the next
one is refused at once with 503 "overloaded" and Retry-After, instead of waiting in an
unbounded queue past the latency objective. Probes and model status are never refused.
With the bound off (the default) the same gate still takes requests in arrival order
(AdmissionPolicy.order): under gevent that is what keeps the tail fair.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from digitnet.clients import FLASK_LIVE_PATH, FLASK_PREDICT_PATH, FLASK_READY_PATH, TFS_STATUS_PATH
from digitnet.codec import (
    APP_STAGE,
    BATCH_HEADER,
    DEVICE_HEADER,
    INFERENCE_TIME_HEADER,
    JSON_CONTENT_TYPE,
    OVERLOADED_REASON,
    STAGE_HEADER,
    PayloadError,
    dumps,
    server_timing,
    too_large_document,
)
from digitnet.noop import NOOP_PATH, noop_reply
from digitnet.spec import AdmissionPolicy
from digitnet.wire import ACCEPTED_CONTENT_TYPES, WIRE_CODECS, WireCodec
from services.flask_torch.connections import OPEN
from services.flask_torch.http_timing import REPLIED_KEY, RETURNED_KEY, TIMER, HttpTimer
from services.flask_torch.predictor import ServedModel, TorchScriptModel
from services.flask_torch.settings import Settings

EXTENSION_KEY = "flask_torch"
ADMISSION_KEY = "flask_torch.admission"
# Seconds a client should wait before retrying while the model loads.
RETRY_AFTER_S = "1"

# Machine-readable reasons for the HTTP errors Werkzeug raises itself; codec errors carry
# their own reason.
_HTTP_REASONS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ModelNameConverter(BaseConverter):
    """A model name: no slash and no colon, so "/v1/models/x:predict" never matches the
    status route with name "x:predict" (a GET there must be a 405, not a 404)."""

    regex = "[^/:]+"


def _route(path_format: str) -> str:
    return path_format.format(name="<model_name:name>")


def _json(document: Any, status: int = 200, headers: Any = None) -> Response:
    # The shared codec's compact bytes, not jsonify: Flask's provider sorts keys and goes
    # through the standard library, twice the cost of a batch-1 reply's encode.
    return Response(dumps(document), status=status, headers=headers,
                    mimetype=JSON_CONTENT_TYPE)  # fmt: skip


def _error(status: int, reason: str, message: str, headers: Any = None) -> Response:
    return _json({"error": message, "reason": reason}, status, headers)


def _state() -> tuple[Settings, ServedModel]:
    settings, model = current_app.extensions[EXTENSION_KEY]
    return settings, model


def _unknown_model(name: str, settings: Settings) -> Response:
    return _error(
        404,
        "model_not_found",
        f"model {name!r} is not served here; this server serves {settings.spec.name!r}",
    )


def _not_ready(model: ServedModel) -> Response:
    if model.load_error:
        return _error(503, "load_failed", f"model failed to load: {model.load_error}")
    return _error(
        503, "model_not_ready", "model is loading; retry shortly", {"Retry-After": RETRY_AFTER_S}
    )


# Weight of the newest request in a worker's running average of its service time: the
# average follows a change of batch size within some tens of requests, while one slow
# request (a GC pause) moves the bound by a few percent only.
SERVICE_AVERAGE_WEIGHT = 0.05

# How a finishing request hands the worker to the next one: handoff(fn) runs fn now or later.
Handoff = Callable[[Callable[[], None]], None]


def _at_once(fn: Callable[[], None]) -> None:
    fn()


def _handoff_for_this_worker() -> Handoff:
    """Under gunicorn's gevent worker (monkey-patched; the default, see gunicorn.conf.py),
    the next queued request is woken on a later turn of the hub's event loop, by a
    zero-delay timer: libev fires it only after it has polled the sockets again. So
    between two requests' compute the worker reads what has arrived and refuses what does
    not fit, and a refusal waits for at most one request's compute, not the whole queue.
    gevent's own wake-ups (sleep(0), Event.set) are callbacks that would run in the same
    pass, back to back, without a poll. With threads (gthread, the Flask test client) the
    operating system interleaves requests: hand over at once."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return _at_once
    if not monkey.is_module_patched("threading"):
        return _at_once

    # Held until they fire: a started watcher nobody refers to must not be collected.
    pending: set = set()

    def next_loop_turn(fn: Callable[[], None]) -> None:
        timer = get_hub().loop.timer(0.0)
        pending.add(timer)

        def fire() -> None:
            pending.discard(timer)
            fn()

        timer.start(fire)

    return next_loop_turn


class AdmissionGate:
    """Admission control of one worker process: at most `bound` predict requests inside,
    one at a time holding the worker's turn, the others queued in arrival order; one more
    is refused.

    Why a queue of turns and not only a counter: under gevent a request's compute never
    yields, so a counter around it would never see a second request; every request
    therefore waits for its turn, handed over by `handoff` (see _handoff_for_this_worker).
    A worker computes one request at a time anyway (the GIL and the forward-pass lock in
    predictor.py), so the order costs nothing, and the queue length times the service
    time is exactly the wait a newcomer faces (AdmissionPolicy's derivation).

    The one exception: an idle worker whose request came on its only open connection,
    with no other connection waiting to be accepted or started (`alone`,
    connections.OPEN), takes the turn at once, for nothing else can be waiting to be
    read; the hand-off through the event loop cost a lone client ~45 us of a 0.66
    ms p50 (measured: flask_torch, wrk at one connection, the gate off 0.62 ms).
    """

    def __init__(self, policy: AdmissionPolicy, handoff: Handoff = _at_once,
                 alone: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.policy = policy
        self._handoff = handoff
        self._alone = alone
        self._lock = threading.Lock()
        self._queued: deque[threading.Event] = deque()
        self._busy = False
        self._service_ms = policy.service_ms
        # When the current turn began, and whether it was handed over from a predecessor
        # with the queue non-empty (then the time between the two turns' starts is what
        # one queued request really costs the worker: see _begin_turn).
        self._turn_started: float | None = None
        self._chained = False
        self.refused = 0

    @property
    def service_ms(self) -> float:
        """The service time the bound is derived from (measured, or configured)."""
        return self._service_ms

    @property
    def bound(self) -> int:
        """Requests this worker may hold; unbounded when the policy only orders them."""
        if not self.policy.enabled:
            return sys.maxsize
        return self.policy.bound(self._service_ms)

    @property
    def inside(self) -> int:
        """Requests admitted and not yet done: the one holding the turn and those queued."""
        return len(self._queued) + int(self._busy)

    def enter(self) -> bool:
        """Admits the request and blocks until it is its turn; False (at once) when the
        worker already holds `bound` requests."""
        with self._lock:
            if self.inside >= self.bound:
                self.refused += 1
                return False
            if not self._busy and self._alone():
                self._busy, self._chained = True, False
                turn = None
            else:
                turn = threading.Event()
                self._queued.append(turn)
                if not self._busy:
                    self._chained = False
                    self._pass_turn()
        if turn is None:
            self._begin_turn()
            return True
        try:
            turn.wait()
        except BaseException:
            # Killed while waiting (a worker shutting down): never keep a turn nobody uses.
            with self._lock:
                if turn in self._queued:
                    self._queued.remove(turn)
                    turn = None
            if turn is not None:
                self.leave(None)
            raise
        self._begin_turn()
        return True

    def _begin_turn(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._chained and self._turn_started is not None:
                # Under backlog, turn start to turn start: the predecessor's compute plus
                # everything else the worker did meanwhile (parsing, writing, refusing),
                # which is the rate the queue drains at. Compute time alone understates it
                # several times in this Python stack.
                self._fold(now - self._turn_started)
            self._turn_started = now

    def _fold(self, seconds: float) -> None:
        if not self.policy.measure:
            return
        # Capped at the objective: one request that alone misses it says nothing about
        # how many fit, and must not shut the worker for the next hundred.
        sample = min(seconds * 1000.0, self.policy.objective_ms)
        self._service_ms += SERVICE_AVERAGE_WEIGHT * (sample - self._service_ms)

    def leave(self, service_s: float | None) -> None:
        """Ends the request's turn and hands it to the next queued one.

        Args:
            service_s: the seconds it computed (without waiting for the model), folded
                into the running average when the policy measures and nothing is queued
                (with a queue, the next turn's start measures the real cost); None for
                none.
        """
        with self._lock:
            self._busy = False
            self._chained = bool(self._queued)
            if service_s is not None and not self._chained:
                self._fold(service_s)
            if self._queued:
                self._pass_turn()

    def _pass_turn(self) -> None:
        self._busy = True
        self._handoff(self._queued.popleft().set)


def _gate() -> AdmissionGate | None:
    return current_app.extensions.get(ADMISSION_KEY)


def _overloaded(gate: AdmissionGate) -> Response:
    retry = str(gate.policy.retry_after_s)
    return _error(
        503,
        OVERLOADED_REASON,
        f"server overloaded: this worker holds {gate.bound} request(s) already, as many as "
        f"it answers within the {gate.policy.objective_ms:g} ms objective; retry after "
        f"{retry} s",
        {"Retry-After": retry},
    )


api = Blueprint("serving", __name__)


@api.post(_route(FLASK_PREDICT_PATH))
def predict(name: str) -> Response:
    settings, model = _state()
    if name != settings.spec.name:
        return _unknown_model(name, settings)
    codec = WIRE_CODECS.get(request.mimetype)
    if codec is None:
        return _error(
            415,
            "unsupported_media_type",
            f"Content-Type must be {ACCEPTED_CONTENT_TYPES}, "
            f"got {request.content_type or 'none'!r}",
        )
    # Raw bytes, not request.get_json(): the codec owns validation and its error messages,
    # and Flask's JSON errors would answer with an HTML page. cache=False: read once.
    # Read before admission: a slow upload costs a greenlet, never a place in the queue.
    body = request.get_data(cache=False)
    gate = _gate()
    if gate is None:
        return _predict(body, codec, settings, model, 0.0)[0]
    entered = time.perf_counter()
    if not gate.enter():
        return _overloaded(gate)
    queued_s = time.perf_counter() - entered
    service_s = None
    try:
        response, service_s = _predict(body, codec, settings, model, queued_s)
    finally:
        gate.leave(service_s)
    return response


def _predict(body: bytes, codec: WireCodec, settings: Settings, model: ServedModel,
             queued_s: float) -> tuple[Response, float | None]:  # fmt: skip
    """The answer to one predict body in the request's codec, and the seconds it computed
    (decode, forward pass, encode; without the wait for a loading model), None when it did
    not get that far. `queued_s` is how long it waited for the worker's turn; the reply
    names every stage (STAGE_HEADER). A JSON reply takes the request's format, row or
    columnar, as TF Serving's does."""
    started = time.perf_counter()
    images, fmt = codec.decode_request(body, settings.spec, settings.limits)
    decoded = time.perf_counter()
    # A request that reaches a sibling worker still loading waits briefly instead of failing.
    if not model.wait_ready(settings.load_wait_s):
        return _not_ready(model), None
    waited = time.perf_counter()
    logits, compute_s = model.predict_timed(images)
    predicted = time.perf_counter()
    reply = codec.encode_reply(logits, fmt)
    encoded = time.perf_counter()
    stages = {
        "decode": decoded - started,
        "queue": queued_s + (waited - decoded),
        "convert": (predicted - waited) - compute_s,
        "model": compute_s,
        "encode": encoded - predicted,
    }
    response = Response(
        reply,
        mimetype=codec.content_type,
        headers={
            INFERENCE_TIME_HEADER: f"{compute_s * 1000:.3f}",
            DEVICE_HEADER: model.device,
            # One request per forward pass: the Flask app never batches across requests.
            BATCH_HEADER: "1",
            STAGE_HEADER: server_timing(stages),
        },
    )
    return response, (decoded - started) + (encoded - waited)


@api.get(_route(TFS_STATUS_PATH))
def model_status(name: str) -> Response:
    settings, model = _state()
    if name != settings.spec.name:
        return _unknown_model(name, settings)
    if model.ready:
        state, code, message = "AVAILABLE", "OK", ""
    elif model.load_error:
        state, code, message = "END", "UNKNOWN", model.load_error
    else:
        state, code, message = "LOADING", "OK", ""
    return _json(
        {
            "model_version_status": [
                {
                    "version": str(settings.spec.version),
                    "state": state,
                    "status": {"error_code": code, "error_message": message},
                }
            ]
        }
    )


@api.get(FLASK_LIVE_PATH)
def healthz() -> Response:
    return _json({"status": "alive"})


@api.get(FLASK_READY_PATH)
def readyz() -> Response:
    _, model = _state()
    if not model.ready:
        return _not_ready(model)
    return _json({"status": "ready"})


def _noop_view(reply: bytes) -> Callable[[], Response]:
    """The no-op twin's view: the framework's share of a predict request and nothing of
    ours. It reads the body as the predict route does (the bytes cross the socket either
    way; unread, gunicorn would drain them before the next request), never decodes it, and
    answers precomputed bytes: no codec, no jsonify, no admission gate, no model."""

    def noop() -> Response:
        request.get_data(cache=False)
        return Response(reply, mimetype=JSON_CONTENT_TYPE)

    return noop


def _payload_error(error: PayloadError) -> Response:
    return _error(error.status, error.reason, error.message)


def _http_error(error: HTTPException) -> Response:
    code = error.code or 500
    message = error.description or error.name
    if isinstance(error, MethodNotAllowed):
        # OPTIONS and HEAD are implicit on every route; naming them would only confuse.
        allowed = ", ".join(sorted(set(error.valid_methods or ()) - {"OPTIONS", "HEAD"}))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
    elif isinstance(error, RequestEntityTooLarge):
        message = too_large_document(current_app.config["MAX_CONTENT_LENGTH"])["error"]
    # Keep headers such as Allow on a 405, but not Werkzeug's HTML Content-Type.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return _error(code, _HTTP_REASONS.get(code, "http_error"), message, headers)


def _unexpected_error(error: Exception) -> Response:
    # The traceback goes to the server log; the client learns only that it was not its fault.
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return _error(500, "internal", "internal server error")


def _log_through_gunicorn(app: Flask) -> None:
    # Under gunicorn, Python logging has no handler of its own: reuse gunicorn's error log
    # so load times and tracebacks land in the same stream. Outside gunicorn, no change.
    gunicorn_log = logging.getLogger("gunicorn.error")
    if not gunicorn_log.handlers:
        return
    for logger in (app.logger, logging.getLogger(__package__)):
        logger.handlers = list(gunicorn_log.handlers)
        logger.setLevel(gunicorn_log.level)
        logger.propagate = False


def _start_loading(model: ServedModel) -> None:
    # Started in the worker (create_app runs after the fork); readiness answers 503 meanwhile.
    # Not a daemon: a worker told to stop mid-load lets the load finish before the
    # interpreter exits, instead of tearing torch down under it (which aborts the process).
    # A load that hangs is still ended by gunicorn's graceful_timeout.
    threading.Thread(target=model.load, name="model-loader", daemon=False).start()


def _admission_line(policy: AdmissionPolicy) -> str:
    if not policy.enabled:
        return "off (requests taken in arrival order)" if policy.order else "off"
    if policy.limit:
        return f"at most {policy.limit} requests per worker (fixed)"
    return (f"at most {policy.bound()} requests per worker to start with "
            f"({policy.objective_ms:g} ms x {policy.queue_share:g} / {policy.service_ms:g} ms"
            f"{', then the measured service time' if policy.measure else ''})")


class AppTimer:
    """WSGI wrapper adding `Server-Timing: app;dur=<ms>` (APP_STAGE) to every reply: from
    the app's entry to its reply's headers. Flask builds the whole reply (body in memory)
    before it calls start_response, so this is the app's whole time: Flask's dispatch and
    hooks, our code and every stage. The framework floor phase (loadtests.framework_floor)
    attributes the served p50 with it: the app's time beyond the named stages is Flask's
    and our untimed code. With `http` (a gunicorn worker's http_timing.TIMER) the same
    header carries the HTTP server's own stages around the app, and the environ the
    moments post_request needs for the next reply's (http_timing's docstring)."""

    def __init__(self, wsgi_app: Callable, http: HttpTimer | None = None) -> None:
        self.wsgi_app = wsgi_app
        self.http = http

    def __call__(self, environ: dict, start_response: Callable) -> object:
        started = time.perf_counter()
        around = self.http.stages(environ) if self.http is not None else {}

        def timed(status: str, headers: list, exc_info: object = None) -> object:
            replied = time.perf_counter()
            environ[REPLIED_KEY] = replied
            app = server_timing({**around, APP_STAGE: replied - started})
            # One header, the stages' and the app's (a client's header table, wrk's Lua
            # one among them, may keep only the last of two with one name).
            for index, (name, value) in enumerate(headers):
                if name.lower() == STAGE_HEADER.lower():
                    headers[index] = (name, f"{value}, {app}")
                    break
            else:
                headers.append((STAGE_HEADER, app))
            return start_response(status, headers, exc_info)

        reply = self.wsgi_app(environ, timed)
        environ[RETURNED_KEY] = time.perf_counter()
        return reply


def create_app(settings: Settings | None = None, model: ServedModel | None = None) -> Flask:
    """Builds the app and starts loading the model in the background.

    Args:
        settings: defaults to Settings.from_env().
        model: defaults to TorchScriptModel(settings); tests inject one with a slow loader.
            Loading is started unless the model is already ready.

    Returns:
        The WSGI app; /readyz answers 503 until the model is loaded and warm. With
        settings.admission enabled (or only ordering), each app (one per gunicorn worker)
        has its own AdmissionGate around the predict route; with settings.noop_route, the no-op twin
        answers beside it.
    """
    settings = settings or Settings.from_env()
    model = model if model is not None else TorchScriptModel(settings)
    app = Flask(__name__)
    app.config.update(
        DEBUG=False,
        # Werkzeug refuses larger bodies with 413 before reading them; the codec checks again.
        MAX_CONTENT_LENGTH=settings.limits.max_body_bytes,
    )
    app.url_map.converters["model_name"] = ModelNameConverter
    app.extensions[EXTENSION_KEY] = (settings, model)
    if settings.admission.enabled or settings.admission.order:
        # One gate per worker: create_app runs in each worker after gunicorn's fork.
        app.extensions[ADMISSION_KEY] = AdmissionGate(settings.admission,
                                                      _handoff_for_this_worker(), OPEN.alone)
    app.register_blueprint(api)
    if settings.noop_route:
        app.add_url_rule(NOOP_PATH.format(name=settings.spec.name), "noop",
                         _noop_view(noop_reply(settings.spec)), methods=["POST"])
    app.wsgi_app = AppTimer(app.wsgi_app, TIMER)
    app.register_error_handler(PayloadError, _payload_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    _log_through_gunicorn(app)
    if not model.ready:
        _start_loading(model)
    app.logger.info("serving %s from %s; admission %s", settings.spec.name, settings.model_path,
                    _admission_line(settings.admission))
    return app
