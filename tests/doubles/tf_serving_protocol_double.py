"""PROTOCOL TEST DOUBLE of TF Serving, for testing our client code only.

This is NOT TF Serving. It speaks the parts of TF Serving's REST and gRPC protocols our
clients use, answers them by calling the exported SavedModel's `serving_default` signature
in-process with TensorFlow, and mimics TF Serving's status codes and response shapes:

  REST  POST /v1/models/<name>[/versions/<v>]:predict  row ("instances") or columnar
        ("inputs") format, parsed and refused with TF Serving's own rules and wording
        (util/json_tensor.cc); several outputs come back as one dict per row
        GET  /v1/models/<name>[/versions/<v>]            model_version_status, AVAILABLE
        GET  /v1/models/<name>[/versions/<v>]/metadata   signature_def map
        errors as {"error": "..."}: 400 for bad input or a malformed path, 404 for an
        unknown model; no version labels are served
  gRPC  tensorflow.serving.PredictionService Predict and GetModelMetadata,
        tensorflow.serving.ModelService GetModelStatus; unknown model NOT_FOUND, unknown
        signature FAILED_PRECONDITION, wrong input key / dtype / shape INVALID_ARGUMENT
  start replays the version's assets.extra/tf_serving_warmup_requests, as TF Serving does
        before it reports a version AVAILABLE; a bad record fails the start

tests/services/tf_serving/vectors.py lists the cases (from TF Serving's own tests)
this double is held to. Where it cannot know TF Serving's answer (the wording of a
TensorFlow runtime error for a wrong shape), its message is its own and says so.

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

from services.tf_serving.warmup import read_warmup_requests

LOOPBACK = "127.0.0.1"
DEFAULT_SIGNATURE = "serving_default"
SERVING_TAG = "serve"
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
        if not name:
            # server_core.cc ServableRequestFromModelSpec.
            raise DoubleError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if name != self.name or (version is not None and version != self.version):
            wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise DoubleError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {wanted}"
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
        _check_input_keys(set(inputs), expected)
        for position, alias in enumerate(sorted(expected)):
            _check_tensor(position, alias, inputs[alias], signature.inputs[alias])
        _check_output_filter(output_filter or [], set(signature.outputs))
        results = self.loaded.signatures[key](**{k: tf.constant(v) for k, v in inputs.items()})
        wanted = output_filter or sorted(signature.outputs)
        return {alias: results[alias].numpy() for alias in wanted}

    def metadata(self) -> get_model_metadata_pb2.SignatureDefMap:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        return signature_map


def _check_input_keys(sent: set[str], expected: set[str]) -> None:
    """predict_util.cc VerifyRequestInputsSize (counts first), then the alias lookup of
    saved_model::GetInputValues: the two errors TF Serving gives for wrong input keys."""

    def braces(names: set[str]) -> str:
        return "{" + ",".join(sorted(names)) + "}"

    if len(sent) != len(expected):
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({braces(sent)}) != len({braces(expected)}). Sent extra: "
            f"{braces(sent - expected)}. Missing but required: {braces(expected - sent)}.",
        )
    unknown = sorted(sent - expected)
    if unknown:
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input tensor alias not found in signature: {unknown[0]}. "
            f"Inputs expected to be in the set {braces(expected)}.",
        )


def _check_output_filter(wanted: list[str], outputs: set[str]) -> None:
    """predict_util.cc PreProcessPrediction's output_filter checks."""
    seen: set[str] = set()
    for alias in wanted:
        if alias not in outputs:
            raise DoubleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(outputs))}}}.",
            )
        if alias in seen:
            raise DoubleError(
                grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}"
            )
        seen.add(alias)


# TensorFlow's DataTypeString names, where they differ from tf.DType.name.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double"}


def _type_name(dtype: tf.dtypes.DType) -> str:
    return _TF_TYPE_NAMES.get(dtype.name, dtype.name)


def _check_tensor(
    position: int, alias: str, value: np.ndarray, info: meta_graph_pb2.TensorInfo
) -> None:
    expected_dtype = tf.dtypes.as_dtype(info.dtype)
    if tf.dtypes.as_dtype(value.dtype) != expected_dtype:
        raise DoubleError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Expects arg[{position}] to be {_type_name(expected_dtype)} but "
            f"{_type_name(tf.dtypes.as_dtype(value.dtype))} is provided",
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
# The request parsing follows TF Serving's own (util/json_tensor.cc FillPredictRequestFromJson,
# model_servers/http_rest_api_handler.cc, http_rest_api_util.cc), including the wording of
# its errors; tests/services/tf_serving/vectors.py holds the cases it is checked on.

# http_rest_api_util.cc: kPredictionApiGegex and kModelStatusApiRegex (case-insensitive).
_POST_PATH = re.compile(
    r"(?i)/v1/models/(?P<name>[^/:]+)(?:(?:/versions/(?P<version>\d+))|"
    r"(?:/labels/(?P<label>[^/:]+)))?:(?P<verb>classify|regress|predict)"
)
_GET_PATH = re.compile(
    r"(?i)/v1/models(?:/(?P<name>[^/:]+))?(?:(?:/versions/(?P<version>\d+))|"
    r"(?:/labels/(?P<label>[^/:]+)))?(?:/(?P<metadata>metadata))?"
)
_INT64_MAX = 2**63 - 1
# JsonValueToDebugString truncates what an error quotes.
_DEBUG_BYTES = 256
# rapidjson's GetParseError_En for the errors Python's json names differently.
_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
}


def _invalid(message: str) -> DoubleError:
    return DoubleError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _debug(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"))[:_DEBUG_BYTES]
    except RecursionError:
        return "(nested too deep to print)"


def _route(method: str, path: str) -> re.Match[str]:
    """The model, version and verb of a REST path, refused as TF Serving refuses it."""
    pattern = _POST_PATH if method == "POST" else _GET_PATH
    match = pattern.fullmatch(path)
    if match is None:
        raise _invalid(f"Malformed request: {method} {path}")
    if match["version"] and int(match["version"]) > _INT64_MAX:
        raise _invalid(f"Failed to convert version: {match['version']} to numeric.")
    if method == "GET" and not match["name"]:
        raise _invalid("Missing model name in request.")
    return match


def _check_model(servable: _Servable, match: re.Match[str]) -> None:
    """ServerCore::GetServableHandle: the label first, then the model and version."""
    if match["label"]:
        # This double serves no version labels, so every label is an unknown one.
        raise _invalid(f"Unrecognized servable version label: {match['label']}")
    version = match["version"]
    servable.check_spec(match["name"], int(version) if version else None)


def _parse_json(raw: bytes) -> Any:
    """rapidjson's parse as TF Serving configures it: NaN and Infinity allowed, anything
    after the first complete document ignored (kParseStopWhenDoneFlag), no depth limit."""
    if not raw:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        reason = f"Invalid encoding in string. at offset: {err.start}"
        raise _invalid(f"JSON Parse error: {reason}") from None
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise _invalid(f"JSON Parse error: The document is empty. at offset: {start}")
    try:
        return json.JSONDecoder().raw_decode(text, start)[0]
    except RecursionError:
        return _parse_deep(text[start:])
    except json.JSONDecodeError as err:
        reason = _PARSE_ERRORS.get(err.msg, err.msg)
        raise _invalid(f"JSON Parse error: {reason} at offset: {err.pos}") from None


_TOKEN = re.compile(
    r'\s*(?:(?P<punct>[\[\]{},:])|(?P<scalar>"(?:[^"\\]|\\.)*"|-?Infinity|NaN|true|false|null|'
    r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?))"
)


def _parse_deep(text: str) -> Any:
    """An iterative parse for documents nested beyond Python's recursion limit, which
    rapidjson's iterative parser (kParseIterativeFlag) reads without trouble."""
    stack: list[Any] = []
    keys: list[Any] = []
    position, root, done = 0, None, False
    while not done:
        match = _TOKEN.match(text, position)
        if match is None:
            raise _invalid(f"JSON Parse error: Invalid value. at offset: {position}")
        position = match.end()
        token = match["punct"]
        if token in ("[", "{"):
            stack.append([] if token == "[" else {})
            keys.append(None)
            continue
        if token in (",", ":"):
            continue
        if token in ("]", "}"):
            value = stack.pop()
            keys.pop()
        else:
            value = json.loads(match["scalar"])
            if stack and isinstance(stack[-1], dict) and keys[-1] is None:
                keys[-1] = value  # an object's key: its value comes next
                continue
        if not stack:
            root, done = value, True
        elif isinstance(stack[-1], list):
            stack[-1].append(value)
        else:
            stack[-1][keys[-1]] = value
            keys[-1] = None
    return root


def _is_object(value: Any) -> bool:
    """A JSON object naming inputs; {"b64": "..."} is a value (base64 bytes), not one."""
    is_b64 = isinstance(value, dict) and list(value) == ["b64"] and isinstance(value["b64"], str)
    return isinstance(value, dict) and not is_b64


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    return {str: "String", list: "Array", dict: "Object"}[type(value)]


def _scalar(value: Any, dtype: tf.dtypes.DType) -> Any:
    """AddValueToTensor: a float tensor takes any JSON number, an integer one only integers;
    booleans, strings and null are never numbers."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = (
        (dtype.is_floating and number)
        or (dtype.is_integer and number and isinstance(value, int))
        or (dtype == tf.bool and isinstance(value, bool))
        or (dtype == tf.string and isinstance(value, str))
    )
    if not fits:
        raise _invalid(
            f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected "
            f"type: {_type_name(dtype)}"
        )
    return value


def _dense_shape(value: Any) -> list[int]:
    """GetDenseTensorShape: the shape read along the first element of every level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: tf.dtypes.DType, out: list) -> None:
    """FillTensorProto: every leaf at depth len(shape), every list of its level's size."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _json_to_array(value: Any, info: meta_graph_pb2.TensorInfo) -> np.ndarray:
    dtype = tf.dtypes.as_dtype(info.dtype)
    shape = _dense_shape(value)
    values: list = []
    _fill(value, 0, shape, dtype, values)
    # A double beyond float32 becomes +-inf, as rapidjson's GetFloat makes it.
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=dtype.as_numpy_dtype).reshape(shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class _RowBatcher:
    """AddInstanceItem: the instances of one input must agree in size, then in shape."""

    def __init__(self, infos: dict[str, meta_graph_pb2.TensorInfo]) -> None:
        self.infos = infos
        self.items: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, value: Any) -> None:
        if name not in self.infos:
            raise _invalid(f"JSON object: does not have named input: {name}")
        array = _json_to_array(value, self.infos[name])
        seen = self.items.setdefault(name, [])
        if seen and seen[0].size != array.size:
            raise _invalid(f"Expecting tensor size: {seen[0].size} but got: {array.size}")
        if seen and seen[0].shape != array.shape:
            raise _invalid(
                f"Expecting shape {_shape_text(seen[0].shape)} but got: {_shape_text(array.shape)}"
            )
        seen.append(array)

    def tensors(self) -> dict[str, np.ndarray]:
        return {name: np.stack(arrays) for name, arrays in self.items.items()}


def _row_inputs(
    instances: Any, infos: dict[str, meta_graph_pb2.TensorInfo]
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: plain values for one input, objects naming every
    input otherwise; never a mix."""
    if not isinstance(instances, list):
        raise _invalid("Expecting 'instances' to be an list/array")
    if not instances:
        raise _invalid("No values in 'instances' array")
    objects = _is_object(instances[0])
    if not objects and len(infos) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    batcher = _RowBatcher(infos)
    for index, item in enumerate(instances):
        if objects:
            _add_object(batcher, index, item, sorted(infos))
        else:
            if _is_object(item):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            try:
                batcher.add(next(iter(infos)), item)
            except DoubleError as err:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: {err.message}"
                ) from None
    return batcher.tensors()


def _add_object(batcher: _RowBatcher, index: int, item: Any, names: list[str]) -> None:
    if not _is_object(item):
        raise _invalid(f"Expecting object but got list at item {index} of input list")
    for name, value in item.items():
        try:
            batcher.add(name, value)
        except DoubleError as err:
            raise _invalid(
                f"Failed to process element: {index} key: {name} of 'instances' list. "
                f"Error: INVALID_ARGUMENT: {err.message}"
            ) from None
    if sorted(item) != names:
        raise _invalid(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{_debug(item)} keys must be equal to: {','.join(names)}"
        )


def _columnar_inputs(
    inputs: Any, infos: dict[str, meta_graph_pb2.TensorInfo]
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: the value is the whole tensor (batch axis included),
    bare for one input, or an object with every input; other keys are ignored."""
    if not _is_object(inputs):
        if len(infos) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        ((name, info),) = infos.items()
        return {name: _json_to_array(inputs, info)}
    for name in sorted(infos):
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
    return {name: _json_to_array(inputs[name], info) for name, info in infos.items()}


def _rest_inputs(
    body: dict[str, Any], infos: dict[str, meta_graph_pb2.TensorInfo]
) -> tuple[dict[str, np.ndarray], str]:
    """Request body -> (inputs, "row" or "columnar"); keys other than these are ignored."""
    if "instances" in body:
        if "inputs" in body:
            raise _invalid(
                f"JSON Value: {_debug(body)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        return _row_inputs(body["instances"], infos), "row"
    if "inputs" in body:
        return _columnar_inputs(body["inputs"], infos), "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def _rest_outputs(outputs: dict[str, np.ndarray], style: str) -> dict[str, Any]:
    """MakeJsonFromTensors: one value per output when there is one, else a dict of them."""
    if style == "columnar":
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    rows = len(next(iter(outputs.values())))
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(rows)]}


def _predict_json(servable: _Servable, match: re.Match[str], raw: bytes) -> dict[str, Any]:
    """ProcessPredictRequest's order: parse, signature_name, model, signature, inputs, run."""
    body = _parse_json(raw)
    if not isinstance(body, dict):
        raise _invalid(f"JSON Value: {_debug(body)} Is not object")
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _invalid(
            f"JSON Value: {_debug(body)} not formatted correctly. 'signature_name' key must "
            "be a string value."
        )
    _check_model(servable, match)
    key = signature_name or DEFAULT_SIGNATURE
    if key not in servable.signature_defs:
        raise _invalid(f'Serving signature name: "{key}" not found in signature def')
    inputs, style = _rest_inputs(body, dict(servable.signature_defs[key].inputs))
    return _rest_outputs(servable.predict(signature_name, inputs), style)


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

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            try:
                match = _route("GET", self.path)
                _check_model(servable, match)
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
                match = _route("POST", self.path)
                if match["verb"].lower() != "predict":
                    # Real TF Serving has these verbs; our signature is predict-only and
                    # this double does not speak them.
                    raise DoubleError(
                        grpc.StatusCode.UNIMPLEMENTED, f"{match['verb']} is not in this double"
                    )
                self._send(200, _predict_json(servable, match, raw))
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
            if not request.HasField("model_spec"):
                raise DoubleError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
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


# --- warm-up ----------------------------------------------------------------------------


class WarmupError(Exception):
    """A warm-up record that would make TF Serving fail the version's load."""


def replay_warmup(servable: _Servable, version_dir: Path) -> int:
    """Runs every warm-up record once, as TF Serving does at load (saved_model_warmup.cc:
    one iteration per record by default, the first failure fails the load) and returns
    how many ran. Predict records only: the signature is predict-only, and this double
    does not speak classify, regress or multi-inference.

    Like TF Serving's RunPredict at warm-up, the request's model name is not looked up:
    the records run on the version being loaded.
    """
    try:
        logs = read_warmup_requests(version_dir)
    except ValueError as err:
        raise WarmupError(str(err)) from None
    for index, log in enumerate(logs):
        if log.WhichOneof("log_type") != "predict_log":
            raise WarmupError(f"record {index}: unsupported log_type {log.WhichOneof('log_type')}")
        request = log.predict_log.request
        try:
            inputs = {alias: tf.make_ndarray(t) for alias, t in request.inputs.items()}
            servable.predict(request.model_spec.signature_name, inputs, list(request.output_filter))
        except DoubleError as err:
            raise WarmupError(f"record {index}: {err.code.name}: {err.message}") from None
    return len(logs)


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
        self.version_dir = version_dir
        self.servable = _Servable(version_dir, model_name, version)
        # How many warm-up records start() replayed, as TF Serving does before AVAILABLE.
        self.warmup_records = 0
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
        """Replays the version's warm-up records, then serves.

        Raises:
            WarmupError: for a record TF Serving would fail the version's load on.
        """
        self.warmup_records = replay_warmup(self.servable, self.version_dir)
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
