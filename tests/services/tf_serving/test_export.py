"""The exported SavedModel, checked the way `saved_model_cli show --all` and TF Serving see it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from digitnet.artifacts import ArtifactPaths
from digitnet.data import DigitsSplit
from digitnet.savedmodel import load_signature
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME, ModelSpec
from digitnet.torchscript import load_torchscript

PREDICT_METHOD = "tensorflow/serving/predict"
# TF2 SavedModels list their initializer as a pseudo-signature; TF Serving skips it.
INIT_OP_SIGNATURE = "__saved_model_init_op"
LOGITS_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def meta_graph(artifacts: ArtifactPaths) -> meta_graph_pb2.MetaGraphDef:
    saved_model = saved_model_pb2.SavedModel.FromString(
        (artifacts.savedmodel / "saved_model.pb").read_bytes()
    )
    serving = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    assert len(serving) == 1, "exactly one MetaGraphDef tagged 'serve'"
    return serving[0]


def _shape(info: meta_graph_pb2.TensorInfo) -> list[int]:
    return [dim.size for dim in info.tensor_shape.dim]


def test_layout_is_base_name_version(artifacts: ArtifactPaths, spec: ModelSpec) -> None:
    model_base = artifacts.tf_serving_base / spec.name
    assert artifacts.savedmodel == model_base / str(spec.version)
    assert (artifacts.savedmodel / "saved_model.pb").is_file()
    assert (artifacts.savedmodel / "variables" / "variables.index").is_file()
    # TF Serving treats every numeric child as a version; nothing else may sit there.
    assert [p.name for p in model_base.iterdir()] == [str(spec.version)]


def test_only_serving_default_signature(meta_graph: meta_graph_pb2.MetaGraphDef) -> None:
    signatures = set(meta_graph.signature_def) - {INIT_OP_SIGNATURE}
    assert signatures == {SIGNATURE_NAME}
    assert meta_graph.signature_def[SIGNATURE_NAME].method_name == PREDICT_METHOD


def test_signature_tensors(meta_graph: meta_graph_pb2.MetaGraphDef, spec: ModelSpec) -> None:
    signature = meta_graph.signature_def[SIGNATURE_NAME]
    assert set(signature.inputs) == {INPUT_KEY}
    assert signature.inputs[INPUT_KEY].dtype == tf.float32.as_datatype_enum
    assert _shape(signature.inputs[INPUT_KEY]) == [-1, spec.side, spec.side]

    assert set(signature.outputs) == {LOGITS_KEY, CLASSES_KEY}
    assert signature.outputs[LOGITS_KEY].dtype == tf.float32.as_datatype_enum
    assert _shape(signature.outputs[LOGITS_KEY]) == [-1, spec.num_classes]
    assert signature.outputs[CLASSES_KEY].dtype == tf.int64.as_datatype_enum
    assert _shape(signature.outputs[CLASSES_KEY]) == [-1]


def test_loaded_signature_matches_metagraph(artifacts: ArtifactPaths, spec: ModelSpec) -> None:
    loaded = tf.saved_model.load(str(artifacts.savedmodel))
    assert set(loaded.signatures) == {SIGNATURE_NAME}
    _, kwargs = loaded.signatures[SIGNATURE_NAME].structured_input_signature
    assert kwargs[INPUT_KEY].shape.as_list() == [None, spec.side, spec.side]
    assert kwargs[INPUT_KEY].dtype == tf.float32


def test_signature_logits_equal_torchscript(artifacts: ArtifactPaths, split: DigitsSplit) -> None:
    outputs = load_signature(artifacts.savedmodel)(**{INPUT_KEY: tf.constant(split.test_images)})
    tf_logits = outputs[LOGITS_KEY].numpy()
    tf_classes = outputs[CLASSES_KEY].numpy()

    scripted = load_torchscript(artifacts.torchscript)
    with torch.no_grad():
        torch_logits = scripted(torch.from_numpy(split.test_images)).numpy()

    assert tf_logits.shape == torch_logits.shape
    np.testing.assert_allclose(tf_logits, torch_logits, rtol=0, atol=LOGITS_TOLERANCE)
    assert tf_classes.dtype == np.int64
    np.testing.assert_array_equal(tf_classes, torch_logits.argmax(axis=1))
