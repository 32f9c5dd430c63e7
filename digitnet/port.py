"""Copies trained torch weights into the Keras twin.

Layouts differ: conv kernels are OIHW in torch and HWIO in Keras, and the dense head
flattens (C, H, W) in torch but (H, W, C) in Keras, so its rows must be reordered.
"""

from __future__ import annotations

import numpy as np

from digitnet.keras_net import DigitConvNetKeras
from digitnet.torch_net import DigitConvNet


def conv_kernel_to_keras(weight: np.ndarray) -> np.ndarray:
    """OIHW -> HWIO."""
    return weight.transpose(2, 3, 1, 0)


def dense_kernel_to_keras(weight: np.ndarray, channels: int, side: int) -> np.ndarray:
    """[out, C*H*W] (torch flatten order) -> [H*W*C, out] (Keras flatten order)."""
    out = weight.shape[0]
    chw = weight.reshape(out, channels, side, side)
    return chw.transpose(2, 3, 1, 0).reshape(side * side * channels, out)


def port_torch_to_keras(torch_model: DigitConvNet, keras_model: DigitConvNetKeras) -> None:
    """Overwrites every Keras variable with the matching torch parameter."""
    spec = keras_model.spec
    keras_model.build_for_spec()
    state = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    keras_model.conv1.set_weights(
        [conv_kernel_to_keras(state["conv1.weight"]), state["conv1.bias"]]
    )
    keras_model.conv2.set_weights(
        [conv_kernel_to_keras(state["conv2.weight"]), state["conv2.bias"]]
    )
    keras_model.head.set_weights(
        [
            dense_kernel_to_keras(state["head.weight"], spec.channels[1], spec.pooled_side),
            state["head.bias"],
        ]
    )
