"""Exports the Keras model as a SavedModel in TF Serving's `<base>/<name>/<version>/` layout:
the TF model every TF stack serves (TF Serving, and Flask with the SavedModel).

The only signature is `serving_default`: input `images` float32 [N, side, side], outputs
`logits` float32 [N, classes] and `classes` int64 [N]. Keras' plain `model.export()` would
name them `args_0`/`output_0`; an ExportArchive gives them stable names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import tensorflow as tf

from digitnet.keras_net import DigitConvNetKeras
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME


def export_savedmodel(model: DigitConvNetKeras, base_dir: Path) -> Path:
    """Writes `base_dir/<name>/<version>/` and returns that version directory.

    Args:
        model: a built Keras model whose spec names the model and version.
        base_dir: TF Serving's model base path parent (the server gets `base_dir/<name>`).
    """
    spec = model.spec
    version_dir = base_dir / spec.name / str(spec.version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.parent.mkdir(parents=True, exist_ok=True)

    def serve(images):
        logits = model(images, training=False)
        return {LOGITS_KEY: logits, CLASSES_KEY: tf.argmax(logits, axis=1)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[
            tf.TensorSpec([None, spec.side, spec.side], tf.float32, name=INPUT_KEY)
        ],
    )
    archive.write_out(str(version_dir), verbose=False)
    return version_dir


def load_signature(version_dir: Path):
    """The exported `serving_default` concrete function, as TF Serving would call it."""
    return tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
