"""The Keras twin with ported weights computes what the torch model computes."""

from __future__ import annotations

import numpy as np
import torch

from digitnet.keras_net import DigitConvNetKeras
from digitnet.port import dense_kernel_to_keras, port_torch_to_keras
from digitnet.spec import ModelSpec
from digitnet.torch_net import DigitConvNet

PARITY_ATOL = 1e-5


def torch_logits(model: DigitConvNet, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def test_ported_untrained_model_matches_on_random_input():
    spec = ModelSpec()
    torch.manual_seed(1)
    model = DigitConvNet(spec).eval()
    keras_model = DigitConvNetKeras(spec)
    port_torch_to_keras(model, keras_model)
    images = np.random.default_rng(0).random((16, spec.side, spec.side), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(keras_model(images)), torch_logits(model, images), atol=PARITY_ATOL
    )


def test_larger_variant_ports_without_code_changes():
    spec = ModelSpec(side=16, channels=(8, 12))
    model = DigitConvNet(spec).eval()
    keras_model = DigitConvNetKeras(spec)
    port_torch_to_keras(model, keras_model)
    images = np.random.default_rng(1).random((4, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(keras_model(images)), torch_logits(model, images), atol=PARITY_ATOL
    )


def test_dense_port_reorders_flatten_axes():
    """A naive transpose (ignoring C,H,W vs H,W,C) must not pass for the head."""
    channels, side, out = 3, 2, 4
    weight = np.arange(out * channels * side * side, dtype=np.float32).reshape(out, -1)
    ported = dense_kernel_to_keras(weight, channels, side)
    # Keras flattens (h, w, c); torch flattens (c, h, w): same feature, same weight.
    h, w, c = 1, 0, 2
    keras_row = (h * side + w) * channels + c
    torch_col = (c * side + h) * side + w
    np.testing.assert_array_equal(ported[keras_row], weight[:, torch_col])
    assert not np.array_equal(ported, weight.T)
