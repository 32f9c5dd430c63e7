"""The model as a keras.Model subclass; the torch twin is digitnet.torch_net."""

from __future__ import annotations

import keras

from digitnet.spec import ModelSpec


class DigitConvNetKeras(keras.Model):
    """conv -> relu -> conv -> relu -> 2x2 max-pool -> flatten -> dense, NHWC inside.

    Takes [N, side, side] float32 images and returns [N, classes] logits. Every layer is
    created here: a built subclassed model refuses new layers at export time.
    """

    def __init__(self, spec: ModelSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        first, second = spec.channels
        self.conv1 = keras.layers.Conv2D(first, 3, padding="same", name="conv1")
        self.conv2 = keras.layers.Conv2D(second, 3, padding="same", name="conv2")
        self.pool = keras.layers.MaxPooling2D(2, name="pool")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.head = keras.layers.Dense(spec.num_classes, name="head")

    def call(self, images, training=False):
        x = keras.ops.expand_dims(images, -1)
        x = keras.ops.relu(self.conv1(x))
        x = keras.ops.relu(self.conv2(x))
        x = self.pool(x)
        return self.head(self.flatten(x))

    def build_for_spec(self) -> DigitConvNetKeras:
        """Creates the variables by calling the model once on zeros."""
        self(keras.ops.zeros((1, self.spec.side, self.spec.side)))
        return self
