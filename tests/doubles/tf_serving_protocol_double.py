"""PROTOCOL TEST DOUBLE of TF Serving, for testing our client code only.

This is NOT TF Serving. It speaks the parts of TF Serving's REST and gRPC protocols our
clients use, answers them by calling the exported SavedModel's `serving_default` signature
in-process with TensorFlow, and mimics TF Serving's status codes and response shapes:

  REST  POST /v1/models/<name>[/versions/<v>]:predict  row ("instances") or columnar
        ("inputs") format; several outputs come back as one dict per row
        GET  /v1/models/<name>[/versions/<v>]            model_version_status, AVAILABLE
        GET  /v1/models/<name>[/versions/<v>]/metadata   signature_def map
        errors as {"error": "..."}: 400 for bad input, 404 for an unknown model
  gRPC  tensorflow.serving.PredictionService Predict and GetModelMetadata,
        tensorflow.serving.ModelService GetModelStatus; unknown model NOT_FOUND, unknown
        signature FAILED_PRECONDITION, wrong input key / dtype / shape INVALID_ARGUMENT

There is no batching, no model polling, no metrics and none of TF Serving's threading, so
numbers measured on it are never TF Serving's: it is not a stack and must never be
registered for deploy-local, parity reports or benchmarks. It binds 127.0.0.1 only.

Use it as a context manager:

    with TfServingProtocolDouble(version_dir, "digitnet", 1, rest_port, grpc_port) as double:
        tf_serving_rest(double.rest_url, spec).predict(images)
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

LOOPBACK = "127.0.0.1"
DEFAULT_SIGNATURE = "serving_default"
SERVING_TAG = "serve"
# TF Serving's REST routes, reduced to the ones served here.
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?$"
)
# TF Serving's mapping from gRPC status codes to HTTP (model_servers/http_server.cc).
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
}


@dataclass(frozen=True)
class DoubleError(Exception):
    """A refused request, with the code TF Serving would answer with."""

    code: grpc.StatusCode
    message: str

    def __str__(self) -> str:
        return self.message

    @property
    def http_status(self) -> int:
        return int(_HTTP_STATUS.get(self.code, HTTPStatus.INTERNAL_SERVER_ERROR))


class _Servable:
    """One SavedModel version: its signature defs and a callable per serving signature."""

    def __init__(self, version_dir: Path, name: str, version: int) -> None:
        self.name = name
        self.version = version
        saved_model = saved_model_pb2.SavedModel.FromString(
            (version_dir / "saved_model.pb").read_bytes()
        )
        (meta_graph,) = [g for g in saved_model.meta_graphs if SERVING_TAG in g.meta_info_def.tags]
        self.signature_defs: dict[str, meta_graph_pb2.SignatureDef] = dict(meta_graph.signature_def)
        self.loaded = tf.saved_model.load(str(version_dir), tags=[SERVING_TAG])

    def check_spec(self, name: str, version: int | None) -> None:
        if name != self.name:
            raise DoubleError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
            )
        if version is not None and version != self.version:
            raise DoubleError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version})",
            )

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs or key not in self.loaded.signatures:
            raise DoubleError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        return self.signature_defs[key]

    def predict(
        self,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Checks `inputs` against the signature, then runs it.

        Raises:
            DoubleError: INVALID_ARGUMENT for an unknown or missing key, a wrong dtype or
                shape; FAILED_PRECONDITION for an unknown signature.
        """
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(key)
        expected = set(signature.inputs)
        unknown = sorted(set(inputs) - expected)
        if unknown:
            raise DoubleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input tensor alias not found in signature: {unknown[0]}. "
                f"Inputs expected to be in the set {{{','.join(sorted(expected))}}}.",
            )
        if set(inputs) != expected:
            raise DoubleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Request inputs do not match required inputs for model `{self.name}`. "
                f"Missing but required: {{{','.join(sorted(expected - set(inputs)))}}}.",
            )
        for position, alias in enumerate(sorted(expected)):
            _check_tensor(position, alias, inputs[alias], signature.inputs[alias])
        for alias in output_filter or []:
            if alias not in signature.outputs:
                raise DoubleError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias}",
                )
        results = self.loaded.signatures[key](**{k: tf.constant(v) for k, v in inputs.items()})
        wanted = output_filter or sorted(signature.outputs)
        return {alias: results[alias].numpy() for alias in wanted}

    def metadata(self) -> get_model_metadata_pb2.SignatureDefMap:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        return signature_map


def _check_tensor(
    position: int, alias: str, value: np.ndarray, info: meta_graph_pb2.TensorInfo
) -> None:
    expected_dtype = tf.dtypes.as_dtype(info.dtype)
    if tf.dtypes.as_dtype(value.dtype) != expected_dtype:
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Expects arg[{position}] to be {expected_dtype.name} but "
            f"{tf.dtypes.as_dtype(value.dtype).name} is provided",
        )
    dims = [d.size for d in info.tensor_shape.dim]
    if info.tensor_shape.unknown_rank:
        return
    fits = value.ndim == len(dims) and all(
        want < 0 or want == got for want, got in zip(dims, value.shape, strict=True)
    )
    if not fits:
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{alias}' has shape {list(value.shape)}, the signature expects {dims} "
            "(-1: any size)",
        )


# --- REST -------------------------------------------------------------------------------


def _json_to_array(value: Any, info: meta_graph_pb2.TensorInfo, where: str) -> np.ndarray:
    """JSON numbers -> the signature's dtype; strings, booleans and ragged lists are refused
    like TF Serving refuses them (a JSON type that does not match the tensor's dtype)."""
    expected = tf.dtypes.as_dtype(info.dtype)
    try:
        array = np.asarray(value)
    except ValueError:
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{where}: lists of unequal length (ragged)"
        ) from None
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and expected.is_integer):
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{where}: JSON value of type {array.dtype.name} is not of expected type: "
            f"{expected.name}",
        )
    return array.astype(expected.as_numpy_dtype)


def _rest_inputs(
    body: Any, signature: meta_graph_pb2.SignatureDef
) -> tuple[dict[str, np.ndarray], str]:
    """Request body -> (inputs, "row" or "columnar")."""
    if not isinstance(body, dict):
        raise DoubleError(grpc.StatusCode.INVALID_ARGUMENT, "JSON body must be an object")
    if ("instances" in body) == ("inputs" in body):
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing 'inputs' or 'instances' key"
            if "instances" not in body
            else "Request can contain only one of 'inputs' or 'instances'",
        )
    aliases = sorted(signature.inputs)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise DoubleError(
                grpc.StatusCode.INVALID_ARGUMENT, "'instances' must be a non-empty list"
            )
        if all(isinstance(row, dict) for row in instances):
            names = sorted({key for row in instances for key in row})
            columns = {n: [row.get(n) for row in instances] for n in names}
        elif len(aliases) == 1:
            columns = {aliases[0]: instances}
        else:
            raise DoubleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "instances must be objects naming each input when the signature has several",
            )
        style = "row"
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict):
            columns = dict(inputs)
        elif len(aliases) == 1:
            columns = {aliases[0]: inputs}
        else:
            raise DoubleError(grpc.StatusCode.INVALID_ARGUMENT, "'inputs' must name each input")
        style = "columnar"
    unknown = sorted(set(columns) - set(aliases))
    if unknown:
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input tensor alias not found in signature: {unknown[0]}. "
            f"Inputs expected to be in the set {{{','.join(aliases)}}}.",
        )
    arrays = {
        alias: _json_to_array(value, signature.inputs[alias], f"input '{alias}'")
        for alias, value in columns.items()
    }
    return arrays, style


def _rest_outputs(outputs: dict[str, np.ndarray], style: str) -> dict[str, Any]:
    if style == "columnar":
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    rows = len(next(iter(outputs.values())))
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(rows)]}


def _make_handler(servable: _Servable) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as clients with a requests.Session expect from TF Serving.
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # test output stays readable

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> re.Match[str]:
            match = _PATH.match(self.path)
            if match is None:
                raise DoubleError(
                    grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.command} {self.path}"
                )
            version = match["version"]
            servable.check_spec(match["name"], int(version) if version else None)
            return match

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            try:
                match = self._route()
                if match["verb"]:
                    raise DoubleError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Malformed request: GET {self.path}",
                    )
                if match["metadata"]:
                    self._send(200, _metadata_json(servable))
                else:
                    self._send(200, _status_json(servable))
            except DoubleError as err:
                self._send(err.http_status, {"error": err.message})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                match = self._route()
                if match["verb"] != "predict":
                    raise DoubleError(
                        grpc.StatusCode.UNIMPLEMENTED
                        if match["verb"] in ("classify", "regress")
                        else grpc.StatusCode.INVALID_ARGUMENT,
                        f"Malformed request: POST {self.path}",
                    )
                try:
                    body = json.loads(raw)
                except ValueError as err:
                    raise DoubleError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {err}"
                    ) from None
                signature_name = body.get("signature_name", "") if isinstance(body, dict) else ""
                signature = servable.signature(signature_name)
                inputs, style = _rest_inputs(body, signature)
                outputs = servable.predict(signature_name, inputs)
                self._send(200, _rest_outputs(outputs, style))
            except DoubleError as err:
                self._send(err.http_status, {"error": err.message})

    return Handler


def _status_json(servable: _Servable) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(servable.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def _metadata_json(servable: _Servable) -> dict[str, Any]:
    return {
        "model_spec": {
            "name": servable.name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {"signature_def": json_format.MessageToDict(servable.metadata())},
    }


# --- gRPC -------------------------------------------------------------------------------


def _abort(context: grpc.ServicerContext, err: DoubleError) -> None:
    context.abort(err.code, err.message)


def _requested_version(model_spec: Any) -> int | None:
    return model_spec.version.value if model_spec.HasField("version") else None


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, servable: _Servable) -> None:
        self.servable = servable

    def Predict(self, request, context):  # noqa: N802 - gRPC's method name
        try:
            spec = request.model_spec
            self.servable.check_spec(spec.name, _requested_version(spec))
            inputs = {alias: tf.make_ndarray(t) for alias, t in request.inputs.items()}
            outputs = self.servable.predict(
                spec.signature_name, inputs, list(request.output_filter)
            )
        except DoubleError as err:
            _abort(context, err)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.servable.name
        response.model_spec.version.value = self.servable.version
        response.model_spec.signature_name = spec.signature_name or DEFAULT_SIGNATURE
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802 - gRPC's method name
        try:
            self.servable.check_spec(
                request.model_spec.name, _requested_version(request.model_spec)
            )
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise DoubleError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Metadata field(s) {fields} not supported; only signature_def",
                )
        except DoubleError as err:
            _abort(context, err)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.servable.name
        response.model_spec.version.value = self.servable.version
        response.metadata["signature_def"].Pack(self.servable.metadata())
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, servable: _Servable) -> None:
        self.servable = servable

    def GetModelStatus(self, request, context):  # noqa: N802 - gRPC's method name
        try:
            self.servable.check_spec(
                request.model_spec.name, _requested_version(request.model_spec)
            )
        except DoubleError:
            _abort(
                context,
                DoubleError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find any versions of model {request.model_spec.name}",
                ),
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self.servable.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


# --- lifecycle --------------------------------------------------------------------------


class TfServingProtocolDouble:
    """Runs the double's REST and gRPC servers on 127.0.0.1 in background threads."""

    def __init__(
        self, version_dir: Path, model_name: str, version: int, rest_port: int, grpc_port: int
    ) -> None:
        """
        Args:
            version_dir: the SavedModel folder `<base>/<name>/<version>`.
            model_name: the name clients must send (TF Serving's model config name).
            version: the version reported as AVAILABLE.
            rest_port, grpc_port: free ports on 127.0.0.1.
        """
        self.servable = _Servable(version_dir, model_name, version)
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def start(self) -> TfServingProtocolDouble:
        self._http = ThreadingHTTPServer((LOOPBACK, self.rest_port), _make_handler(self.servable))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="tfs-double-rest", daemon=True
        )
        self._http_thread.start()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self.servable), self._grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            _ModelService(self.servable), self._grpc
        )
        if self._grpc.add_insecure_port(self.grpc_target) != self.grpc_port:
            self.stop()
            raise OSError(f"could not bind gRPC to {self.grpc_target}")
        self._grpc.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(timeout=5)
            self._grpc = None

    def __enter__(self) -> TfServingProtocolDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
