"""TF Serving's own test cases, ported as data onto our model (`images` float32 [N, 8, 8] in,
`logits` float32 [N, 10] and `classes` int64 [N] out).

Each group names the TF Serving source it was read from (github.com/tensorflow/serving,
read at commit 9d981c5c, July 2026). The facts are TF Serving's: which request is accepted,
the status it answers with and a fragment of its error text. The bodies are rewritten for
our signature where the original used its test model (half_plus_two, int/string tensors).

These are what the protocol double (tests/doubles/tf_serving_protocol_double.py) must
answer; they are not what our own codec answers: digitnet.codec is stricter (it refuses
NaN, unknown keys and out-of-range pixels) and answers {"error", "reason"}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME, ModelSpec

SIDE = 8
NAME = "{name}"  # filled with the served model's name
PREDICT = f"/v1/models/{NAME}:predict"
# Depth of the nesting TF Serving parses without trouble (its test uses 500000); far past
# Python's recursion limit, so the double needs its iterative fallback too.
DEEP = 100_000


def image(value: float = 0.5, rows: int = SIDE, cols: int = SIDE) -> list[list[float]]:
    return [[value] * cols for _ in range(rows)]


def text(document: Any) -> bytes:
    return json.dumps(document).encode()


@dataclass(frozen=True)
class RestVector:
    """One HTTP request and TF Serving's answer: the status, and either an error fragment
    or the response's top-level key ("predictions" for row, "outputs" for columnar)."""

    name: str
    source: str
    method: str
    path: str
    body: bytes = b""
    status: int = 200
    error: str | None = None
    response_key: str | None = None
    rows: int = 0

    def url_path(self, model_name: str) -> str:
        return self.path.replace(NAME, model_name)


def ok(name: str, source: str, body: bytes, key: str, rows: int, path: str = PREDICT) -> RestVector:
    return RestVector(name, source, "POST", path, body, 200, None, key, rows)


def refused(name: str, source: str, body: bytes, status: int, error: str, path: str = PREDICT,
            method: str = "POST") -> RestVector:  # fmt: skip
    return RestVector(name, source, method, path, body, status, error)


HANDLER_TEST = "model_servers/http_rest_api_handler_test.cc"
HANDLER = "model_servers/http_rest_api_handler.cc"
JSON_TENSOR_TEST = "util/json_tensor_test.cc"
JSON_TENSOR = "util/json_tensor.cc"

TWO = text({"instances": [image(0.25), image(0.75)]})

REST_VECTORS = [
    # --- http_rest_api_handler_test.cc, TEST UnsupportedApiCalls: every malformed path is
    # INVALID_ARGUMENT (HTTP 400) "Malformed request", except a GET without a model name.
    *(
        refused(f"malformed_{i}", f"{HANDLER_TEST} UnsupportedApiCalls", b"", 400,
                "Malformed request", path, method)
        for i, (method, path) in enumerate([
            ("GET", "/v1/foo"),
            ("POST", "/v1/foo"),
            ("GET", "/v1/models/debug/model_name"),
            ("POST", "/v1/models"),
            ("GET", f"/v1/models/{NAME}:predict"),
            ("GET", f"/v1/models/{NAME}/version/50:predict"),
            ("POST", f"/v1/models/{NAME}/version/50:regress"),
            ("POST", f"/v1/models/{NAME}/versions/HELLO:regress"),
            ("POST", f"/v1/models/{NAME}/metadata"),
            ("POST", f"/v1/models/{NAME}/label/some_label:regress"),
            ("POST", f"/v1/models/{NAME}/versions/50/labels/some_label:regress"),
            ("POST", f"/v1/models/{NAME}/versions/some_label:regress"),
        ])
    ),
    refused("missing_model_name", f"{HANDLER_TEST} UnsupportedApiCalls", b"", 400,
            "Missing model name", "/v1/models", "GET"),
    refused("version_over_uint64", f"{HANDLER_TEST} UnsupportedApiCalls", b"", 400,
            "Failed to convert version",
            f"/v1/models/{NAME}/versions/{2**64 - 1}:regress"),
    # --- http_rest_api_handler_test.cc, TEST PredictModelNameVersionErrors: NOT_FOUND (404).
    refused("unknown_model", f"{HANDLER_TEST} PredictModelNameVersionErrors",
            text({"instances": [image()]}), 404, "Servable not found", "/v1/models/foo:predict"),
    refused("unknown_model_version", f"{HANDLER_TEST} PredictModelNameVersionErrors",
            text({"instances": [image()]}), 404, "Servable not found",
            "/v1/models/foo/versions/50:predict"),
    refused("model_name_with_suffix", f"{HANDLER_TEST} PredictModelNameVersionErrors",
            text({"instances": [image()]}), 404, "Servable not found",
            f"/v1/models/{NAME}99:predict"),
    refused("unknown_version", f"{HANDLER_TEST} PredictModelNameVersionErrors (comment: "
            "valid model name, but invalid version number)", text({"instances": [image()]}),
            404, "Servable not found", f"/v1/models/{NAME}/versions/99:predict"),
    # --- http_rest_api_handler_test.cc, TEST PredictRequestErrors: INVALID_ARGUMENT (400).
    refused("empty_document", f"{HANDLER_TEST} PredictRequestErrors", b"", 400,
            "JSON Parse error: The document is empty"),
    refused("not_json", f"{HANDLER_TEST} PredictRequestErrors", b"instances = [1, 2]", 400,
            "JSON Parse error: Invalid value"),
    refused("strings_for_float", f"{HANDLER_TEST} PredictRequestErrors",
            text({"instances": ["x", "y"]}), 400, "not of expected type: float"),
    refused("unknown_version_label", f"{HANDLER_TEST} PredictRequestErrors",
            text({"instances": ["x", "y"]}), 400, "Unrecognized servable version label",
            f"/v1/models/{NAME}/labels/nonexistent:predict"),
    refused("signature_name_not_string", f"{HANDLER_TEST} PredictRequestErrors",
            text({"signature_name": 100}), 400,
            "'signature_name' key must be a string value."),
    # --- http_rest_api_handler_test.cc, TEST Predict: row in, "predictions" out; columnar
    # in, "outputs" out; versioned path and explicit serving_default signature.
    ok("row", f"{HANDLER_TEST} Predict", TWO, "predictions", 2),
    ok("row_versioned", f"{HANDLER_TEST} Predict", TWO, "predictions", 2,
       f"/v1/models/{NAME}/versions/1:predict"),
    ok("row_with_signature", f"{HANDLER_TEST} Predict",
       text({"signature_name": SIGNATURE_NAME, "instances": [image()]}), "predictions", 1,
       f"/v1/models/{NAME}/versions/1:predict"),
    ok("columnar_with_signature", f"{HANDLER_TEST} Predict",
       text({"signature_name": SIGNATURE_NAME, "inputs": [image(), image(0.1)]}), "outputs", 2,
       f"/v1/models/{NAME}/versions/1:predict"),
    ok("case_insensitive_path", f"{HANDLER_TEST} kPathRegex / http_rest_api_util.cc (?i)",
       TWO, "predictions", 2, f"/V1/MODELS/{NAME}:PREDICT"),
    # --- http_rest_api_handler.cc GetInfoMap: an unknown REST signature is INVALID_ARGUMENT
    # (gRPC answers FAILED_PRECONDITION for the same request, see GRPC_VECTORS).
    refused("unknown_signature", f"{HANDLER} GetInfoMap",
            text({"signature_name": "train", "instances": [image()]}), 400,
            'Serving signature name: "train" not found in signature def'),
    # --- json_tensor_test.cc, TESTs SingleUnnamedTensor, MixedInputForFloatTensor,
    # SingleUnnamedTensorWithSignature, MultipleNamedTensor: accepted row forms.
    ok("mixed_ints_and_floats", f"{JSON_TENSOR_TEST} MixedInputForFloatTensor",
       text({"instances": [[[1, 0.5, 0, 0.007, 1, 0.0, 0, 1]] * SIDE]}), "predictions", 1),
    ok("row_objects_naming_the_input", f"{JSON_TENSOR_TEST} MultipleNamedTensor",
       text({"instances": [{INPUT_KEY: image()}, {INPUT_KEY: image(0.2)}]}), "predictions", 2),
    ok("nan_and_infinity_literals", f"{JSON_TENSOR_TEST} MultipleNamedTensor (NaN, "
       "Infinity in a float tensor; json_tensor.cc kParseNanAndInfFlag)",
       text({"instances": [image()]}).replace(b"0.5", b"NaN", 1).replace(b"0.5", b"Infinity", 1),
       "predictions", 1),
    ok("float_beyond_float32", f"{JSON_TENSOR_TEST} FloatTensorThatExceedsMaxReturnsInf",
       text({"instances": [image(1.7976931348623157e308)]}), "predictions", 1),
    ok("deep_nesting_in_an_unread_key", f"{JSON_TENSOR_TEST} DeeplyNestedWellFormed",
       b'{"instances": [' + text(image()) + b'], "nested": ' + b"[" * DEEP + b"]" * DEEP
       + b"}", "predictions", 1),
    ok("trailing_data_after_the_document", f"{JSON_TENSOR} ParseJson (kParseStopWhenDoneFlag)",
       TWO + b" trailing", "predictions", 2),
    # --- json_tensor_test.cc, TESTs SingleUnnamedTensorColumnarFormat: "inputs" bare or
    # named; MultipleNamedTensorColumnarFormat: an object naming the inputs.
    ok("columnar_bare", f"{JSON_TENSOR_TEST} SingleUnnamedTensorColumnarFormat",
       text({"inputs": [image()]}), "outputs", 1),
    ok("columnar_named", f"{JSON_TENSOR_TEST} SingleUnnamedTensorColumnarFormat",
       text({"inputs": {INPUT_KEY: [image(), image(0.3), image(0.9)]}}), "outputs", 3),
    ok("columnar_named_ignores_other_keys", f"{JSON_TENSOR} FillTensorMapFromInputsMap "
       "(reads only the signature's inputs)",
       text({"inputs": {INPUT_KEY: [image()], "extra": [1]}}), "outputs", 1),
    ok("unknown_top_level_key_ignored", f"{JSON_TENSOR_TEST} DeeplyNestedWellFormed (a "
       "\"nested\" key next to instances)", text({"instances": [image()], "nested": 1}),
       "predictions", 1),
    # --- json_tensor_test.cc, TEST SingleUnnamedTensorErrors.
    refused("signature_name_number", f"{JSON_TENSOR_TEST} SingleUnnamedTensorErrors",
            text({"signature_name": 5, "instances": [image()]}), 400,
            "must be a string value"),
    refused("instances_and_inputs", f"{JSON_TENSOR_TEST} SingleUnnamedTensorErrors",
            text({"instances": [image()], "inputs": [image()]}), 400,
            "Not formatted correctly expecting only one of 'inputs' or 'instances'"),
    refused("ragged_size", f"{JSON_TENSOR_TEST} SingleUnnamedTensorErrors",
            text({"instances": [image(), image(rows=SIDE - 1)]}), 400,
            f"Expecting tensor size: {SIDE * SIDE} but got: {SIDE * (SIDE - 1)}"),
    refused("ragged_shape", f"{JSON_TENSOR_TEST} SingleUnnamedTensorErrors",
            text({"instances": [image(), image(rows=SIDE // 2, cols=SIDE * 2)]}), 400,
            f"Expecting shape [{SIDE},{SIDE}] but got: [{SIDE // 2},{SIDE * 2}]"),
    refused("scalar_then_list", f"{JSON_TENSOR_TEST} SingleUnnamedTensorErrors",
            text({"instances": [1, [1]]}), 400, "Expecting shape [] but got: [1]"),
    refused("strings_in_second_image", f"{JSON_TENSOR_TEST} SingleUnnamedTensorErrors",
            text({"instances": [image(), [["a"] * SIDE] * SIDE]}), 400,
            "not of expected type"),
    # --- json_tensor_test.cc, TEST DeeplyNestedMalformed.
    refused("deep_signature_name", f"{JSON_TENSOR_TEST} DeeplyNestedMalformed",
            b'{"signature_name": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400,
            "key must be a string value"),
    # --- json_tensor_test.cc, TEST MultipleNamedTensorErrors.
    refused("objects_of_different_shape", f"{JSON_TENSOR_TEST} MultipleNamedTensorErrors",
            text({"instances": [{INPUT_KEY: image()},
                                {INPUT_KEY: image(rows=SIDE // 2, cols=SIDE * 2)}]}),
            400, "Expecting shape"),
    refused("objects_of_different_size", f"{JSON_TENSOR_TEST} MultipleNamedTensorErrors",
            text({"instances": [{INPUT_KEY: image()}, {INPUT_KEY: image(rows=SIDE - 1)}]}),
            400, "Expecting tensor size"),
    refused("object_then_list", f"{JSON_TENSOR_TEST} MultipleNamedTensorErrors",
            text({"instances": [{INPUT_KEY: image()}, image()]}), 400,
            "Expecting object but got list"),
    refused("list_then_object", f"{JSON_TENSOR_TEST} MultipleNamedTensorErrors",
            text({"instances": [image(), {INPUT_KEY: image()}]}), 400,
            "Expecting value/list but got object"),
    # --- json_tensor.cc, FillPredictRequestFromJson / ParseJson / AddInstanceItem /
    # FillTensorMapFromInputsMap: the remaining refusals, read from the code.
    refused("no_instances_or_inputs", f"{JSON_TENSOR} FillPredictRequestFromJson",
            text({"rows": [image()]}), 400, "Missing 'inputs' or 'instances' key"),
    refused("not_an_object", f"{JSON_TENSOR} ParseJson", text([image()]), 400,
            "Is not object"),
    refused("instances_not_a_list", f"{JSON_TENSOR} FillPredictRequestFromJson",
            text({"instances": "abc"}), 400, "Expecting 'instances' to be an list/array"),
    refused("instances_empty", f"{JSON_TENSOR} FillPredictRequestFromJson",
            text({"instances": []}), 400, "No values in 'instances' array"),
    refused("object_with_unknown_input", f"{JSON_TENSOR} AddInstanceItem",
            text({"instances": [{"pixels": image()}]}), 400,
            "does not have named input: pixels"),
    refused("object_missing_the_input", f"{JSON_TENSOR} FillTensorMapFromInstancesList",
            text({"instances": [{}]}), 400, f"keys must be equal to: {INPUT_KEY}"),
    refused("columnar_missing_named_input", f"{JSON_TENSOR} FillTensorMapFromInputsMap",
            text({"inputs": {"pixels": [image()]}}), 400,
            f"Missing named input: {INPUT_KEY} in 'inputs' object."),
    refused("bools_for_float", f"{JSON_TENSOR} AddValueToTensor (DT_FLOAT takes numbers)",
            text({"instances": [image(True)]}), 400, "Type: True is not of expected type: float"),
    refused("nulls_for_float", f"{JSON_TENSOR} AddValueToTensor (DT_FLOAT takes numbers)",
            text({"instances": [image(None)]}), 400, "Type: Null is not of expected type: float"),
    refused("leaf_at_wrong_level", f"{JSON_TENSOR} FillTensorProto",
            text({"inputs": [[[0.5] * SIDE] * (SIDE - 1) + [0.5]]}), 400,
            "found at incorrect level"),
    refused("list_of_unexpected_size", f"{JSON_TENSOR} FillTensorProto",
            text({"inputs": [image(), image(rows=SIDE - 1)]}), 400,
            "Encountered list at unexpected size"),
]  # fmt: skip


# --- gRPC --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcVector:
    """One PredictRequest, built for a spec, and TF Serving's status code and fragment."""

    name: str
    source: str
    build: Callable[[ModelSpec], Any]
    code: str
    error: str


def _request(spec: ModelSpec, inputs: dict[str, Any] | None = None, signature: str = "",
             output_filter: tuple[str, ...] = ()) -> Any:  # fmt: skip
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.name
    request.model_spec.signature_name = signature
    for alias, value in (inputs or {}).items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def _images(spec: ModelSpec) -> np.ndarray:
    return np.full((1, spec.side, spec.side), 0.5, dtype=np.float32)


def _no_model_spec(spec: ModelSpec) -> Any:
    request = _request(spec, {INPUT_KEY: _images(spec)})
    request.ClearField("model_spec")
    return request


def _empty_name(spec: ModelSpec) -> Any:
    request = _request(spec, {INPUT_KEY: _images(spec)})
    request.model_spec.name = ""
    return request


def _wrong_name(spec: ModelSpec) -> Any:
    request = _request(spec, {INPUT_KEY: _images(spec)})
    request.model_spec.name = "test"
    return request


PREDICT_IMPL_TEST = "servables/tensorflow/predict_impl_test.cc"
PREDICT_UTIL_TEST = "servables/tensorflow/predict_util_test.cc"
PREDICT_UTIL = "servables/tensorflow/predict_util.cc"

GRPC_VECTORS = [
    GrpcVector("no_model_spec", f"{PREDICT_IMPL_TEST} MissingOrEmptyModelSpec",
               _no_model_spec, "INVALID_ARGUMENT", "Missing ModelSpec"),
    GrpcVector("empty_model_name", f"{PREDICT_IMPL_TEST} MissingOrEmptyModelSpec",
               _empty_name, "INVALID_ARGUMENT", "no name"),
    GrpcVector("wrong_model_name", f"{PREDICT_IMPL_TEST} MissingOrEmptyModelSpec",
               _wrong_name, "NOT_FOUND", "Servable not found"),
    GrpcVector("empty_input_list", f"{PREDICT_IMPL_TEST} EmptyInputList",
               lambda s: _request(s), "INVALID_ARGUMENT", "Missing but required: {images}"),
    GrpcVector("unknown_input_keys", f"{PREDICT_UTIL_TEST} InputTensorsDontMatchModelSpecInputs",
               lambda s: _request(s, {"unknown_key1": np.array(["any_value"]),
                                      "unknown_key2": np.array([1.0], dtype=np.float32)}),
               "INVALID_ARGUMENT", "Sent extra: {unknown_key1,unknown_key2}"),
    GrpcVector("unknown_input_keys_missing", f"{PREDICT_UTIL_TEST} "
               "InputTensorsDontMatchModelSpecInputs",
               lambda s: _request(s, {"unknown_key1": np.array(["any_value"]),
                                      "unknown_key2": np.array([1.0], dtype=np.float32)}),
               "INVALID_ARGUMENT", f"Missing but required: {{{INPUT_KEY}}}"),
    GrpcVector("bool_tensor", f"{PREDICT_UTIL_TEST} PredictionInvalidTensor",
               lambda s: _request(s, {INPUT_KEY: np.array(True)}), "INVALID_ARGUMENT",
               "Expects arg[0] to be float but bool is provided"),
    GrpcVector("string_tensor", f"{PREDICT_UTIL_TEST} InputTensorsHaveWrongType",
               lambda s: _request(s, {INPUT_KEY: np.array(["any_value"])},
                                  output_filter=(LOGITS_KEY,)),
               "INVALID_ARGUMENT", "to be float but string is provided"),
    GrpcVector("unknown_output_filter", f"{PREDICT_UTIL_TEST} "
               "OutputFiltersDontMatchModelSpecOutputs",
               lambda s: _request(s, {INPUT_KEY: _images(s)}, output_filter=("output_filter",)),
               "INVALID_ARGUMENT", "output tensor alias not found in signature: output_filter"),
    GrpcVector("duplicate_output_filter", f"{PREDICT_UTIL_TEST} "
               "OutputFiltersDontMatchModelSpecOutputs",
               lambda s: _request(s, {INPUT_KEY: _images(s)},
                                  output_filter=(CLASSES_KEY, CLASSES_KEY)),
               "INVALID_ARGUMENT", f"duplicate output tensor alias: {CLASSES_KEY}"),
    GrpcVector("unknown_signature", f"{PREDICT_UTIL} RunPredict",
               lambda s: _request(s, {INPUT_KEY: _images(s)}, signature="train"),
               "FAILED_PRECONDITION", 'Serving signature key "train" not found.'),
]  # fmt: skip
