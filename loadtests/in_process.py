"""A stack's own code called in process, without its server: for loadtests.own_code.

Each stack that declares `in_process` (services/stack.py) gets a Probe here, built in a
process given the environment its server would give (ServingStack.app_env):

    wsgi        the Flask app its factory builds (model, settings, the twin's route on),
                called as a WSGI callable: Flask's dispatch and our route, no HTTP server
    torchserve  the model's and the twin's .mar loaded by TorchServe's own model loader,
                each request a frame read by the worker's own code and answered by
                Service.predict (our handler, TorchServe's context, metrics and reply
                frame; services/torchserve/worker_frames.py): no frontend, no socket

A probe checks both routes answer 200 and the predict route the right answer before
anything is timed, then offers each route as a call returning (seconds, the reply's
STAGE_HEADER), and each piece of our code alone in a hot loop.
"""

from __future__ import annotations

import atexit
import importlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import JSON_CONTENT_TYPE, STAGE_HEADER
from harness.payload import Batch, PayloadSet, check_json_reply
from loadtests.baselines import time_calls

MODEL = "model"
# A Flask worker loads its model in a background thread; TF's takes seconds.
LOAD_TIMEOUT_S = 120.0

# One request through a route: (seconds, its reply's STAGE_HEADER value).
Route = Callable[[], tuple[float, str]]


@dataclass(frozen=True)
class Probe:
    """The predict route and the twin's, and our pieces alone: `alone(iterations)` gives
    each piece's hot-loop p50 in us (MODEL among them, apart from ours)."""

    predict: Route
    twin: Route
    alone: Callable[[int], dict[str, float]]


def _answer_key(paths: ArtifactPaths) -> Batch:
    return PayloadSet(paths.spec, 1, paths.reference_predictions, limit=1).batches[0]


def _check_answer(batch: Batch, reply: bytes, num_classes: int, route: str) -> None:
    wrong = check_json_reply(batch, json.loads(reply), num_classes)
    if wrong:
        raise RuntimeError(f"{route} answered wrongly in process: {wrong}")


def _hot_split(first: Callable[[], Any], model: Callable[[Any], Any],
               last: Callable[[Any], Any], iterations: int) -> tuple[float, float]:  # fmt: skip
    """(convert, model) p50s in us of `first`, `model` on its result and `last` on that,
    timed apart within each call as the handlers time their stages."""
    converts, models = [], []
    for _ in range(iterations):
        started = time.perf_counter()
        prepared = first()
        running = time.perf_counter()
        out = model(prepared)
        ran = time.perf_counter()
        last(out)
        converts.append((running - started) + (time.perf_counter() - ran))
        models.append(ran - running)
    return statistics.median(converts) * 1e6, statistics.median(models) * 1e6


# --- wsgi: the Flask stacks ---------------------------------------------------------------


def _factory(spec: str) -> Callable[[], Any]:
    """"package.module:create_app()" (gunicorn's form, FlaskStack.app_factory) -> the function."""
    module, _, call = spec.partition(":")
    return getattr(importlib.import_module(module), call.removesuffix("()"))


def _environ(path: str, body: bytes) -> dict[str, Any]:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "CONTENT_TYPE": JSON_CONTENT_TYPE, "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr}  # fmt: skip


def wsgi_call(app: Callable, path: str, body: bytes) -> tuple[float, str, str, bytes]:
    """One request through the WSGI callable, its reply read whole: (seconds, status,
    STAGE_HEADER's value, the reply's body)."""
    got: list = []
    started = time.perf_counter()
    reply = app(_environ(path, body), lambda status, headers, exc_info=None: got.extend(
        (status, headers)))  # fmt: skip
    content = b"".join(reply)
    close = getattr(reply, "close", None)
    if close is not None:
        close()
    elapsed = time.perf_counter() - started
    status, headers = got
    timing = next((v for k, v in headers if k.lower() == STAGE_HEADER.lower()), "")
    return elapsed, status, timing, content


def check_wsgi(app: Callable, paths: tuple[str, str], batch: Batch, num_classes: int) -> None:
    """Both routes answer 200 in process, and the predict route the right answer: the
    figures are of the path that serves, not of an error page."""
    for path in paths:
        _elapsed, status, _timing, content = wsgi_call(app, path, batch.body)
        if not status.startswith("200"):
            raise RuntimeError(f"{path} answered {status} in process: {content[:200]!r}")
    _check_answer(batch, wsgi_call(app, paths[0], batch.body)[3], num_classes, paths[0])


def wsgi_alone(app: Any, body: bytes, iterations: int) -> dict[str, float]:
    """Each piece of the predict route in a hot loop, through the app's own objects;
    convert and model are the app's split of predict_timed, as its stages are. The gate
    runs its threads path (no gevent hub, no connection registry): one Event more per
    request than a lone connection under gunicorn takes."""
    from digitnet.wire import WIRE_CODECS
    from services.flask_torch.app import ADMISSION_KEY, EXTENSION_KEY

    settings, model = app.extensions[EXTENSION_KEY]
    codec = WIRE_CODECS[JSON_CONTENT_TYPE]
    images, fmt = codec.decode_request(body, settings.spec, settings.limits)
    logits, _compute = model.predict_timed(images)
    gate = app.extensions.get(ADMISSION_KEY)
    alone = {"decode": time_calls(lambda: codec.decode_request(body, settings.spec,
                                                               settings.limits),
                                  iterations)["p50_us"],  # fmt: skip
             "gate": 0.0 if gate is None else time_calls(
                 lambda: (gate.enter(), gate.leave(None)), iterations)["p50_us"],
             "encode": time_calls(lambda: codec.encode_reply(logits, fmt), iterations)["p50_us"]}
    totals, computes = [], []
    for _ in range(iterations):
        started = time.perf_counter()
        _logits, compute_s = model.predict_timed(images)
        totals.append(time.perf_counter() - started - compute_s)
        computes.append(compute_s)
    alone["convert"] = statistics.median(totals) * 1e6
    alone[MODEL] = statistics.median(computes) * 1e6
    return alone


def wsgi_probe(stack: Any, paths: ArtifactPaths) -> Probe:
    from digitnet.clients import FLASK_PREDICT_PATH
    from digitnet.noop import NOOP_PATH
    from services.flask_torch.app import EXTENSION_KEY

    app = _factory(stack.app_factory)()
    settings, model = app.extensions[EXTENSION_KEY]
    if not model.wait_ready(LOAD_TIMEOUT_S):
        raise RuntimeError(f"model did not load: {model.load_error or 'timed out'}")
    batch = _answer_key(paths)
    routes = (FLASK_PREDICT_PATH.format(name=settings.spec.name),
              NOOP_PATH.format(name=settings.spec.name))  # fmt: skip
    check_wsgi(app, routes, batch, settings.spec.num_classes)

    def route(path: str) -> Route:
        def call() -> tuple[float, str]:
            elapsed, _status, timing, _content = wsgi_call(app, path, batch.body)
            return elapsed, timing

        return call

    return Probe(route(routes[0]), route(routes[1]),
                 lambda iterations: wsgi_alone(app, batch.body, iterations))  # fmt: skip


# --- torchserve: our handler in TorchServe's Python worker ---------------------------------


def torchserve_probe(stack: Any, paths: ArtifactPaths) -> Probe:
    import torch
    from ts.protocol.otf_message_handler import retrieve_msg

    from digitnet.noop import noop_model_name
    from services.torchserve.launch import decode_input_request, mar_path, noop_mar_path
    from services.torchserve.worker_frames import (
        DECODE_INPUT_VARIABLE,
        FrameStream,
        FrontendRequest,
        decode_predict_response,
        encode_inference_frame,
        load_service,
        run_batch,
    )

    # As the frontend tells its workers, from the config the server would run with.
    os.environ[DECODE_INPUT_VARIABLE] = decode_input_request()
    work = Path(tempfile.mkdtemp(prefix="digitnet-in-process-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    spec = paths.spec
    service, _module = load_service(mar_path(paths), spec.name, work / "model", batch_size=1)
    twin, _twin_module = load_service(noop_mar_path(paths), noop_model_name(spec),
                                      work / "twin", batch_size=1)  # fmt: skip
    batch = _answer_key(paths)
    request = FrontendRequest(batch.body)
    answers = {}
    for name, served in ((spec.name, service), (noop_model_name(spec), twin)):
        code, replies = run_batch(served, [request])
        if code != 200 or replies[0].status != 200:
            raise RuntimeError(f"{name} answered {code}/{replies[0].status} in process: "
                               f"{replies[0].body[:200]!r}")  # fmt: skip
        answers[name] = replies[0].body
    _check_answer(batch, answers[spec.name], spec.num_classes, spec.name)
    frame = encode_inference_frame([request])

    def route(served: Any) -> Route:
        # What the worker does with a request off its socket: read the frame, run the
        # handler under TorchServe's service, write the reply frame; the frontend's
        # reading of that frame (decode_predict_response) is the Java side's, untimed.
        def call() -> tuple[float, str]:
            started = time.perf_counter()
            _command, message = retrieve_msg(FrameStream(frame))
            raw = served.predict(message)
            elapsed = time.perf_counter() - started
            _code, replies = decode_predict_response(raw)
            return elapsed, replies[0].headers.get(STAGE_HEADER, "")

        return call

    handler = service._entry_point.__self__  # the DigitNetHandler TorchServe instantiated
    _command, message = retrieve_msg(FrameStream(frame))
    _headers, data, _ids = service.retrieve_data_for_inference(message)
    headers = service.context.get_all_request_header(0)

    def alone(iterations: int) -> dict[str, float]:
        images, codec, fmt = handler.decode(data[0], headers)

        def forward(prepared: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return handler.model(prepared).cpu()

        convert, model = _hot_split(lambda: torch.cat([images]).to(handler.device), forward,
                                    lambda out: out.numpy(), iterations)  # fmt: skip
        logits = forward(torch.cat([images])).numpy()
        return {"decode": time_calls(lambda: handler.decode(data[0], headers),
                                     iterations)["p50_us"],  # fmt: skip
                "convert": convert, MODEL: model,
                "encode": time_calls(lambda: codec.encode_reply(logits, fmt),
                                     iterations)["p50_us"]}  # fmt: skip

    return Probe(route(service), route(twin), alone)


PROBES: dict[str, Callable[[Any, ArtifactPaths], Probe]] = {
    "wsgi": wsgi_probe,
    "torchserve": torchserve_probe,
}
