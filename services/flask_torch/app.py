"""The Flask application factory: TF Serving's REST routes in front of a TorchScript model.

Run it under gunicorn (each worker calls create_app() after the fork):
    gunicorn -c services/flask_torch/gunicorn.conf.py "services.flask_torch.app:create_app()"

Routes:
    POST /v1/models/<name>:predict   the shared JSON schema (digitnet.codec)
    GET  /v1/models/<name>           TF Serving-like model status
    GET  /healthz                    liveness: 200 whenever the process answers
    GET  /readyz                     readiness: 503 until the model is loaded and warm
Every error answers {"error": ..., "reason": ...} JSON, never an HTML page or a traceback.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from digitnet.clients import FLASK_LIVE_PATH, FLASK_PREDICT_PATH, FLASK_READY_PATH, TFS_STATUS_PATH
from digitnet.codec import (
    JSON_CONTENT_TYPE,
    PayloadError,
    decode_request_format,
    encode_predictions,
)
from services.flask_torch.predictor import ServedModel, TorchScriptModel
from services.flask_torch.settings import Settings

EXTENSION_KEY = "flask_torch"
INFERENCE_TIME_HEADER = "X-Inference-Time-Ms"
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


def _error(status: int, reason: str, message: str, headers: Any = None) -> Response:
    response = jsonify({"error": message, "reason": reason})
    response.status_code = status
    if headers:
        response.headers.extend(headers)
    return response


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


api = Blueprint("serving", __name__)


@api.post(_route(FLASK_PREDICT_PATH))
def predict(name: str) -> Response:
    settings, model = _state()
    if name != settings.spec.name:
        return _unknown_model(name, settings)
    if request.mimetype != JSON_CONTENT_TYPE:
        return _error(
            415,
            "unsupported_media_type",
            f"Content-Type must be {JSON_CONTENT_TYPE}, got {request.content_type or 'none'!r}",
        )
    # Raw bytes, not request.get_json(): the codec owns validation and its error messages,
    # and Flask's JSON errors would answer with an HTML page. cache=False: read once.
    # The reply takes the request's format, row or columnar, as TF Serving's does.
    images, fmt = decode_request_format(
        request.get_data(cache=False), settings.spec, settings.limits
    )
    # A request that reaches a sibling worker still loading waits briefly instead of failing.
    if not model.wait_ready(settings.load_wait_s):
        return _not_ready(model)
    logits, compute_s = model.predict_timed(images)
    response = jsonify(encode_predictions(logits, fmt))
    response.headers[INFERENCE_TIME_HEADER] = f"{compute_s * 1000:.3f}"
    return response


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
    return jsonify(
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
    return jsonify({"status": "alive"})


@api.get(FLASK_READY_PATH)
def readyz() -> Response:
    _, model = _state()
    if not model.ready:
        return _not_ready(model)
    return jsonify({"status": "ready"})


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
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"request body exceeds the maximum of {limit} bytes"
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


def create_app(settings: Settings | None = None, model: ServedModel | None = None) -> Flask:
    """Builds the app and starts loading the model in the background.

    Args:
        settings: defaults to Settings.from_env().
        model: defaults to TorchScriptModel(settings); tests inject one with a slow loader.
            Loading is started unless the model is already ready.

    Returns:
        The WSGI app; /readyz answers 503 until the model is loaded and warm.
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
    app.register_blueprint(api)
    app.register_error_handler(PayloadError, _payload_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    _log_through_gunicorn(app)
    if not model.ready:
        _start_loading(model)
    app.logger.info("serving %s from %s", settings.spec.name, settings.model_path)
    return app
