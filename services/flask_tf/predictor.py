"""The SavedModel one Flask worker serves: its `serving_default` signature, loaded once,
warmed up, then called per request, through the same BackgroundLoadedModel as the
TorchScript model (services/flask_torch/predictor.py: readiness, errors, timing).

Loading happens when `load()` is called (create_app runs it in a background thread),
never at import, so the gunicorn master never imports TensorFlow.
"""

from __future__ import annotations

import numpy as np

from digitnet.spec import INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME
from services.flask_torch.predictor import BackgroundLoadedModel


class SavedModelModel(BackgroundLoadedModel):
    """A SavedModel signature served on the CPU, safe to call from gunicorn's greenlets."""

    def _load(self) -> tuple[object, str]:
        import tensorflow as tf

        if self.settings.device != "cpu":
            raise ValueError(f"flask_tf serves on the CPU only, not {self.settings.device}")
        # Before the first op: TensorFlow fixes its pools when its runtime starts. Intra-op
        # is the worker's share of the cores; one inter-op thread, as one request runs at
        # a time per worker.
        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.settings.torch_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            # TensorFlow would place the graph on a visible GPU by itself.
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            # TensorFlow already ran an op in this process (the app built in-process by a
            # test): its pools stay as they are. A gunicorn worker always gets here first.
            pass
        loaded = tf.saved_model.load(str(self.settings.model_path))
        signature = loaded.signatures[SIGNATURE_NAME]
        side = self.settings.spec.side
        for batch in self._warmup_batches():
            logits = signature(**{INPUT_KEY: tf.zeros((batch, side, side), tf.float32)})
            self._check_shape(logits[LOGITS_KEY].shape, batch)
        # Keep the loaded object alive: the signature holds only weak references to it.
        self._loaded = loaded
        # What the runtime actually has, not what was asked: a GPU still visible (the pools
        # were fixed before this worker got here) would take the graph.
        self._device = "cuda:0" if tf.config.get_visible_devices("GPU") else "cpu"
        return signature, (f"SavedModel {self.settings.model_path} loaded with "
                           f"{self.settings.torch_threads} intra-op thread(s)")

    def _prepare(self, images: np.ndarray):
        import tensorflow as tf

        return tf.constant(images)

    def _run(self, served, prepared) -> np.ndarray:
        return served(**{INPUT_KEY: prepared})[LOGITS_KEY].numpy()
