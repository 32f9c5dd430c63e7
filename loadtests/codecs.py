"""What each predict body codec costs, in-process, without a server: a measurement, not a
test (nothing here asserts a figure).

Per batch size (default 1 and 64: real held-out digits and the TorchScript model's own
logits for them), per codec: the request's and the reply's bytes, and the server's side
of the codec in median microseconds per request: decoding and validating the request
body, and encoding the reply. Codecs: JSON rows ({"instances": ...}), JSON columnar
({"inputs": ...}), the binary tensor body (digitnet.binary_codec), and, where
tensorflow-serving-api imports, TF Serving's gRPC PredictRequest/PredictResponse with the
values in tensor_content. Its sizes are the serialized messages; its decode and encode
here are Python protobuf plus tf.make_ndarray/make_tensor_proto, which TF Serving does in
C++, so those two figures are only an indication.

  python -m loadtests.codecs --artifacts artifacts [--batches 1,64] [--iterations 3000]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from digitnet.binary_codec import (
    decode_binary_request,
    encode_binary_predictions,
    encode_binary_request,
)
from digitnet.codec import (
    INPUTS_KEY,
    RequestFormat,
    decode_request_format,
    encode_predictions_json,
    encode_request,
)
from digitnet.data import load_split
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, ModelSpec, ServingLimits
from loadtests.baselines import time_calls
from loadtests.environment import with_provenance

DEFAULT_OUT = Path("results") / "codecs.json"


@dataclass(frozen=True)
class CodecCase:
    """One codec at one batch size: its bodies, and the server's two steps as calls."""

    name: str
    request: bytes
    reply: bytes
    decode: Callable[[], object]
    encode: Callable[[], object]
    note: str = ""


def json_cases(spec: ModelSpec, limits: ServingLimits, images: np.ndarray,
               logits: np.ndarray) -> list[CodecCase]:  # fmt: skip
    """Both JSON formats, bodies written as the REST client writes them."""
    rows = encode_request(images)
    cases = []
    for name, document, fmt in (
        ("json_rows", rows, RequestFormat.ROW),
        ("json_columnar", {INPUTS_KEY: next(iter(rows.values()))}, RequestFormat.COLUMNAR),
    ):
        request = json.dumps(document).encode()
        cases.append(CodecCase(
            name, request, encode_predictions_json(logits, fmt),
            lambda request=request: decode_request_format(request, spec, limits),
            lambda fmt=fmt: encode_predictions_json(logits, fmt),
        ))  # fmt: skip
    return cases


def binary_case(spec: ModelSpec, limits: ServingLimits, images: np.ndarray,
                logits: np.ndarray) -> CodecCase:  # fmt: skip
    request = encode_binary_request(images)
    return CodecCase("binary", request, encode_binary_predictions(logits),
                     lambda: decode_binary_request(request, spec, limits),
                     lambda: encode_binary_predictions(logits))  # fmt: skip


def grpc_case(spec: ModelSpec, images: np.ndarray, logits: np.ndarray) -> CodecCase | str:
    """TF Serving's messages (digitnet.clients builds the request), or why not here."""
    try:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        from digitnet.clients import grpc_predict_request
    except ImportError as err:
        return f"tensorflow-serving-api does not import: {err}"

    request = grpc_predict_request(spec, images).SerializeToString()
    classes = logits.argmax(axis=1).astype(np.int64)

    def decode() -> np.ndarray:
        return tf.make_ndarray(predict_pb2.PredictRequest.FromString(request).inputs[INPUT_KEY])

    def encode() -> bytes:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = spec.version
        response.model_spec.signature_name = "serving_default"
        response.outputs[LOGITS_KEY].CopyFrom(tf.make_tensor_proto(logits))
        response.outputs[CLASSES_KEY].CopyFrom(tf.make_tensor_proto(classes))
        return response.SerializeToString()

    return CodecCase("tf_serving_grpc", request, encode(), decode, encode,
                     note="decode/encode in Python protobuf; TF Serving's are C++")  # fmt: skip


def reference_logits(paths: ArtifactPaths, images: np.ndarray) -> np.ndarray:
    import torch

    from digitnet.torchscript import load_torchscript

    with torch.inference_mode():
        return load_torchscript(paths.torchscript)(torch.from_numpy(images)).numpy()


def measure(paths: ArtifactPaths, batches: tuple[int, ...], iterations: int) -> dict:
    """Every codec at every batch size.

    Returns:
        {"settings": ..., "rows": [one per batch x codec], "skipped": {codec: why}}.
    """
    spec, limits = paths.spec, ServingLimits.from_env()
    images = load_split(spec).test_images
    rows, skipped = [], {}
    for batch in batches:
        chosen = np.ascontiguousarray(images[:batch])
        logits = reference_logits(paths, chosen)
        cases = [*json_cases(spec, limits, chosen, logits),
                 binary_case(spec, limits, chosen, logits)]  # fmt: skip
        grpc = grpc_case(spec, chosen, logits)
        if isinstance(grpc, str):
            skipped["tf_serving_grpc"] = grpc
        else:
            cases.append(grpc)
        for case in cases:
            rows.append({
                "batch_size": batch,
                "codec": case.name,
                "request_bytes": len(case.request),
                "reply_bytes": len(case.reply),
                "decode_request_us": time_calls(case.decode, iterations)["p50_us"],
                "encode_reply_us": time_calls(case.encode, iterations)["p50_us"],
                "note": case.note,
            })  # fmt: skip
    settings = {"batches": list(batches), "iterations": iterations, "statistic": "median",
                "side": spec.side, "num_classes": spec.num_classes,
                "cpu_affinity": sorted(os.sched_getaffinity(0))}  # fmt: skip
    return {"settings": settings, "rows": rows, "skipped": skipped}


def table(results: dict) -> list[str]:
    lines = [f"{'batch':>5}  {'codec':<16} {'request B':>10} {'reply B':>9} "
             f"{'decode us':>10} {'encode us':>10}"]  # fmt: skip
    for row in results["rows"]:
        lines.append(f"{row['batch_size']:>5}  {row['codec']:<16} {row['request_bytes']:>10} "
                     f"{row['reply_bytes']:>9} {row['decode_request_us']:>10.1f} "
                     f"{row['encode_reply_us']:>10.1f}")  # fmt: skip
    lines += [f"skipped {name}: {why}" for name, why in results["skipped"].items()]
    if any(row["note"] for row in results["rows"]):
        lines.append("tf_serving_grpc: decode/encode in Python protobuf; TF Serving's are C++")
    return lines


MARKDOWN_FILE = "CODECS.md"


def markdown(results: dict) -> list[str]:
    """CODECS.md: the table, for a run's report (tools.report takes it as a section)."""
    md = ["# Codecs: bytes and the server's cost per request", "",
          "In-process, no server: median µs per request over "
          f"{results['settings']['iterations']} calls of decoding and validating the request "
          "body, and of encoding the reply (TF Serving's gRPC figures are Python protobuf, "
          "which TF Serving does in C++: an indication only).", "",
          "| batch | codec | request bytes | reply bytes | decode µs | encode µs |",
          "|" + " --- |" * 6]  # fmt: skip
    md += [f"| {r['batch_size']} | {r['codec']} | {r['request_bytes']} | {r['reply_bytes']} "
           f"| {r['decode_request_us']:.1f} | {r['encode_reply_us']:.1f} |"
           for r in results["rows"]]  # fmt: skip
    md += [f"- {name}: not measured: {why}" for name, why in results["skipped"].items()]
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    paths = ArtifactPaths(args.artifacts, ModelSpec.from_env())
    batches = tuple(int(b) for b in args.batches.split(","))
    results = measure(paths, batches, args.iterations)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    (args.out.parent / MARKDOWN_FILE).write_text(
        "\n".join(with_provenance(markdown(results))) + "\n")
    print("\n".join(table(results)))
    print(f"written to {args.out} and {args.out.parent / MARKDOWN_FILE}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
