"""TF Serving's warm-up file in the SavedModel (assets.extra/tf_serving_warmup_requests),
read back the way TF Serving reads it: TFRecords of its own PredictionLog proto, each
request run on the exported signature, and replayed by the protocol double at start."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from digitnet.artifacts import ArtifactPaths
from digitnet.keras_net import DigitConvNetKeras
from digitnet.savedmodel import export_savedmodel, load_signature
from digitnet.spec import (
    CLASSES_KEY,
    INPUT_KEY,
    LOGITS_KEY,
    SIGNATURE_NAME,
    ModelSpec,
    ServingLimits,
)
from services.process import free_port
from services.tf_serving.launch import STACK, noop_savedmodel
from services.tf_serving.warmup import (
    MAX_WARMUP_RECORDS,
    WARMUP_RECORDS_PER_BATCH,
    read_warmup_requests,
    warmup_path,
    write_warmup_requests,
)
from tests.doubles.tf_serving_protocol_double import TfServingProtocolDouble, WarmupError


@pytest.fixture
def warm_dir(artifacts, spec: ModelSpec, limits: ServingLimits, tmp_path: Path) -> Path:
    """A copy of the exported version folder with the warm-up file written into it."""
    version_dir = tmp_path / spec.name / str(spec.version)
    shutil.copytree(artifacts.savedmodel, version_dir)
    write_warmup_requests(version_dir, spec, limits)
    return version_dir


def _raw_logs(version_dir: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Parsed without our reader: TF's own TFRecord iterator and TF Serving's proto."""
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    logs = []
    for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs


def test_records_are_predict_requests_for_our_signature(warm_dir, spec, limits) -> None:
    logs = _raw_logs(warm_dir)

    assert 0 < len(logs) <= MAX_WARMUP_RECORDS
    assert {log.WhichOneof("log_type") for log in logs} == {"predict_log"}
    shapes = []
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == spec.name
        assert request.model_spec.signature_name == SIGNATURE_NAME
        assert list(request.inputs) == [INPUT_KEY]
        assert request.inputs[INPUT_KEY].dtype == tf.float32.as_datatype_enum
        images = tf.make_ndarray(request.inputs[INPUT_KEY])
        assert images.min() >= 0.0 and images.max() <= 1.0
        shapes.append(images.shape)
    expected = [(1, spec.side, spec.side)] * WARMUP_RECORDS_PER_BATCH
    expected += [(limits.max_batch, spec.side, spec.side)] * WARMUP_RECORDS_PER_BATCH
    assert shapes == expected


def test_the_signature_runs_on_every_record(warm_dir) -> None:
    signature = load_signature(warm_dir)
    for log in _raw_logs(warm_dir):
        images = tf.make_ndarray(log.predict_log.request.inputs[INPUT_KEY])
        outputs = signature(**{INPUT_KEY: tf.constant(images)})
        logits, classes = outputs[LOGITS_KEY].numpy(), outputs[CLASSES_KEY].numpy()
        assert logits.shape == (len(images), 10) and np.all(np.isfinite(logits))
        np.testing.assert_array_equal(classes, logits.argmax(axis=1))


def test_reader_returns_what_was_written(warm_dir) -> None:
    assert read_warmup_requests(warm_dir) == _raw_logs(warm_dir)


def test_writing_twice_gives_the_same_bytes(warm_dir, spec, limits) -> None:
    first = warmup_path(warm_dir).read_bytes()
    write_warmup_requests(warm_dir, spec, limits)
    assert warmup_path(warm_dir).read_bytes() == first


def test_a_folder_without_warmup_has_no_records(tmp_path: Path) -> None:
    assert read_warmup_requests(tmp_path) == []


def test_a_file_that_is_not_tfrecords_is_refused(warm_dir) -> None:
    warmup_path(warm_dir).write_bytes(b"not a TFRecord file at all")
    with pytest.raises(ValueError, match="TFRecord"):
        read_warmup_requests(warm_dir)


def test_the_plugin_build_writes_the_warmup_file(tmp_path: Path, monkeypatch) -> None:
    spec = ModelSpec()
    monkeypatch.setenv("DIGITNET_MAX_BATCH", "4")
    paths = ArtifactPaths(tmp_path, spec)
    export_savedmodel(DigitConvNetKeras(spec).build_for_spec(), paths.tf_serving_base)
    STACK.build(paths)
    version_dir = paths.savedmodel
    twin = noop_savedmodel(paths)
    assert STACK.artifact_files(paths) == [warmup_path(version_dir), twin / "saved_model.pb"]
    assert all(path.is_file() for path in STACK.artifact_files(paths))
    assert len(read_warmup_requests(twin)) == 2 * WARMUP_RECORDS_PER_BATCH

    logs = read_warmup_requests(version_dir)
    assert [
        tf.make_ndarray(log.predict_log.request.inputs[INPUT_KEY]).shape[0] for log in logs
    ] == ([1] * WARMUP_RECORDS_PER_BATCH + [4] * WARMUP_RECORDS_PER_BATCH)
    # TF Serving treats every numeric child of the model folder as a version; assets.extra
    # sits inside the version, beside saved_model.pb.
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "assets", "assets.extra", "fingerprint.pb", "saved_model.pb", "variables",
    ]  # fmt: skip


# --- the protocol double replays them at start, as TF Serving does at load --------------


def test_double_replays_every_record_before_serving(warm_dir, spec) -> None:
    with TfServingProtocolDouble(warm_dir, spec.name, spec.version, free_port(), free_port()) as d:
        assert d.warmup_records == 2 * WARMUP_RECORDS_PER_BATCH


def test_double_fails_to_start_on_a_record_tf_serving_would_fail(warm_dir, spec) -> None:
    """A failing warm-up request fails the version's load in TF Serving
    (saved_model_warmup_util.cc returns the executor's first error)."""
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = spec.name
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 8, 8), np.float32)))
    with tf.io.TFRecordWriter(str(warmup_path(warm_dir))) as writer:
        writer.write(log.SerializeToString())

    double = TfServingProtocolDouble(warm_dir, spec.name, spec.version, free_port(), free_port())
    with pytest.raises(WarmupError, match="pixels"):
        double.start()
    double.stop()
