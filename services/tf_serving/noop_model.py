"""TF Serving's no-op twin (digitnet/noop.py): a second, trivial SavedModel in the same server.

TF Serving decodes a request into tensors itself before any model runs, so its twin cannot
skip the decode the way our Flask route does: it is a model whose `serving_default` takes
the same input as digitnet's and, without reading the pixels, answers the twin's fixed
logits (digitnet.noop.noop_logits) and their class for each row. Served beside digitnet
(launch.py lists it in models.config only when the server starts with DIGITNET_NOOP_TWIN=1),
with the same flags and batching, what it costs is TF Serving's own: the HTTP front, the
JSON to tensor decode, the batching, one call of a graph that does nothing, the encode.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf

from digitnet.noop import noop_logits
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME, ModelSpec


class NoopTwin(tf.Module):
    """The twin's graph: the fixed logits and their class, one row per input row."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        logits = noop_logits(spec)
        self._logits = tf.constant(logits[None, :])
        self._class = tf.constant(int(logits.argmax()), tf.int64)
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, spec.side, spec.side], tf.float32, name=INPUT_KEY)
            ],
        )

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Only the batch size is read: the pixels are never touched.
        rows = tf.shape(images)[0]
        return {
            LOGITS_KEY: tf.tile(self._logits, [rows, 1]),
            CLASSES_KEY: tf.fill([rows], self._class),
        }


def export_noop_savedmodel(version_dir: Path, spec: ModelSpec) -> Path:
    """Writes the twin into `version_dir` (launch.noop_savedmodel: `<name>_noop/<version>/`
    beside digitnet's), its signature named and shaped as digitnet's (digitnet/savedmodel.py),
    and returns that folder."""
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    twin = NoopTwin(spec)
    tf.saved_model.save(twin, str(version_dir), signatures={SIGNATURE_NAME: twin.serve})
    return version_dir
