"""The SavedModel one Flask worker serves: its `serving_default` signature, loaded once,
warmed up, then called per request, behind the same ServedModel interface as the
TorchScript model (services/flask_torch/predictor.py).

Loading happens when `load()` is called (create_app runs it in a background thread),
never at import, so the gunicorn master never imports TensorFlow.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from digitnet.spec import INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME
from services.flask_torch.predictor import ModelNotReady
from services.flask_torch.settings import Settings

log = logging.getLogger(__name__)


class SavedModelModel:
    """A SavedModel signature served on the CPU, safe to call from gunicorn's greenlets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._signature = None
        self._load_error: str | None = None
        self._settled = threading.Event()
        # One forward pass at a time per worker: CPU use stays at the worker's threads, so
        # workers x threads <= cores holds as for the torch model.
        self._compute_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._settled.is_set() and self._signature is not None

    @property
    def load_error(self) -> str | None:
        return self._load_error

    def load(self) -> None:
        """Sets TensorFlow's thread pools, loads the signature, warms up, then `ready`.

        A failure is kept in `load_error` (readiness then stays 503 and says why).
        """
        try:
            import tensorflow as tf

            if self.settings.device != "cpu":
                raise ValueError(f"flask_tf serves on the CPU only, not {self.settings.device}")
            # Before the first op: TensorFlow fixes its pools at runtime start. Intra-op is
            # the worker's share of the cores; one inter-op thread, as one request runs at a
            # time per worker.
            tf.config.threading.set_intra_op_parallelism_threads(self.settings.torch_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            started = time.perf_counter()
            loaded = tf.saved_model.load(str(self.settings.model_path))
            signature = loaded.signatures[SIGNATURE_NAME]
            self._warm_up(tf, signature)
            # Keep the loaded object alive: the signature holds only weak references.
            self._loaded = loaded
            self._signature = signature
            log.info("SavedModel %s loaded with %d intra-op thread(s) in %.2f s",
                     self.settings.model_path, self.settings.torch_threads,
                     time.perf_counter() - started)
        except Exception as err:  # noqa: BLE001 - reported through readiness
            self._load_error = f"{type(err).__name__}: {err}"
            log.exception("SavedModel %s failed to load", self.settings.model_path)
        finally:
            self._settled.set()

    def _warm_up(self, tf, signature) -> None:
        spec = self.settings.spec
        # Both ends of the allowed batch range, so neither the first single image nor the
        # first full batch pays for graph initialisation.
        for _ in range(self.settings.warmup_iterations):
            for batch in sorted({1, self.settings.limits.max_batch}):
                images = tf.zeros((batch, spec.side, spec.side), tf.float32)
                logits = signature(**{INPUT_KEY: images})[LOGITS_KEY]
                if tuple(logits.shape) != (batch, spec.num_classes):
                    raise ValueError(f"signature returns {tuple(logits.shape)} for {batch} "
                                     f"images, expected ({batch}, {spec.num_classes})")

    def wait_ready(self, timeout_s: float) -> bool:
        self._settled.wait(timeout_s)
        return self.ready

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        """Logits for float32 [N, side, side] images, and the seconds the signature call
        took (inside the lock: compute only).

        Raises:
            ModelNotReady: if the model is not loaded.
        """
        signature = self._signature
        if signature is None:
            raise ModelNotReady(self._load_error or "model is still loading")
        import tensorflow as tf

        tensor = tf.constant(np.ascontiguousarray(images, dtype=np.float32))
        with self._compute_lock:
            started = time.perf_counter()
            logits = signature(**{INPUT_KEY: tensor})[LOGITS_KEY].numpy()
            elapsed = time.perf_counter() - started
        return logits, elapsed
