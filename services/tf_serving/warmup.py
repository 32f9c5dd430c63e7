"""TF Serving's warm-up records for the SavedModel (digitnet/savedmodel.py exports it).

The TF Serving plugin's build() writes into the version folder TF Serving's warm-up file,
`assets.extra/tf_serving_warmup_requests` (g3doc/saved_model_warmup.md): TFRecords of
`PredictionLog`, each with a PredictRequest that the server replays when it loads the
version, before it reports AVAILABLE. So the first client request does not pay for lazy
initialisation (graph optimisation, memory pools, the batching queue), which would
otherwise show up as a cold-start outlier in every load test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from digitnet.spec import (
    INPUT_KEY,
    SIGNATURE_NAME,
    ModelSpec,
    ServingLimits,
)
from services.tf_serving.server_flags import WARMUP_DIR, WARMUP_FILE

# Fixed by TF Serving (servables/tensorflow/saved_model_warmup_util.h): a file with more
# than kMaxNumRecords records fails the version's load. Its place: server_flags.
MAX_WARMUP_RECORDS = 1000
# Records per batch size: the first run of a shape pays the one-off costs, a few more let
# the allocator and thread pools settle; TF Serving replays each record once by default.
WARMUP_RECORDS_PER_BATCH = 3
# Fixed, so that two exports of the same model write the same bytes.
WARMUP_SEED = 0


def warmup_batch_sizes(limits: ServingLimits) -> tuple[int, ...]:
    """Batch 1 (the latency case) and the largest batch a request or the batcher can form,
    so that both ends of the shapes the server will see are initialised before traffic."""
    return tuple(sorted({1, limits.max_batch}))


def warmup_request(spec: ModelSpec, images: np.ndarray) -> predict_pb2.PredictRequest:
    """A PredictRequest exactly as our gRPC client sends it (model name, signature, input)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.name
    request.model_spec.signature_name = SIGNATURE_NAME
    request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(np.asarray(images, dtype=np.float32)))
    return request


def warmup_logs(spec: ModelSpec, limits: ServingLimits) -> list[prediction_log_pb2.PredictionLog]:
    """The warm-up records: WARMUP_RECORDS_PER_BATCH per batch size, pixels in [0, 1] like
    real requests (all-zero images could take faster paths than real ones)."""
    rng = np.random.default_rng(WARMUP_SEED)
    logs = []
    for batch in warmup_batch_sizes(limits):
        for _ in range(WARMUP_RECORDS_PER_BATCH):
            images = rng.random((batch, spec.side, spec.side), dtype=np.float32)
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(warmup_request(spec, images))
            logs.append(log)
    return logs


def warmup_path(version_dir: Path) -> Path:
    return version_dir / WARMUP_DIR / WARMUP_FILE


def write_warmup_requests(version_dir: Path, spec: ModelSpec, limits: ServingLimits) -> Path:
    """Writes the warm-up TFRecord file into a SavedModel version folder and returns it.

    Raises:
        ValueError: when the records would exceed TF Serving's limit, which would make the
            server refuse to load the version at all.
    """
    logs = warmup_logs(spec, limits)
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(logs)} warm-up records exceed TF Serving's {MAX_WARMUP_RECORDS}")
    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_dir: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The warm-up records of a version folder, parsed as TF Serving parses them; empty when
    there is no file (warm-up is optional for TF Serving too).

    Raises:
        ValueError: for a file that is not TFRecords, a record that is not a PredictionLog,
            or more records than TF Serving accepts; each makes the real server fail the
            version's load.
    """
    path = warmup_path(version_dir)
    if not path.is_file():
        return []
    try:
        records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    except tf.errors.DataLossError as err:
        raise ValueError(f"{path} is not in TFRecord format: {err.message}") from None
    if len(records) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{path} holds more than {MAX_WARMUP_RECORDS} warm-up records")
    return [_parse_log(record, index, path) for index, record in enumerate(records)]


def _parse_log(record: bytes, index: int, path: Path) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    try:
        log.ParseFromString(record)
    except DecodeError:
        raise ValueError(f"warm-up record {index} in {path} is not a PredictionLog") from None
    return log
