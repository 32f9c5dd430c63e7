"""The TorchScript model one Flask worker serves: load once, warm up, then predict.

Loading happens when `load()` is called (create_app runs it in a background thread),
never at import, so the gunicorn master never touches torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from digitnet.torchscript import load_torchscript
from services.flask_torch.settings import Settings, select_device

log = logging.getLogger(__name__)

# (path, device) -> module; tests inject a slow or failing loader here.
Loader = Callable[[Path, str], torch.jit.ScriptModule]


class ModelNotReady(RuntimeError):
    """predict() was called before the model finished loading, or loading failed."""


class ServedModel(Protocol):
    """What the Flask app needs from a model; TorchScriptModel is the real one."""

    @property
    def ready(self) -> bool: ...

    @property
    def load_error(self) -> str | None: ...

    def load(self) -> None: ...

    def wait_ready(self, timeout_s: float) -> bool: ...

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]: ...


class TorchScriptModel:
    """A TorchScript file served on one device, safe to call from gunicorn's threads."""

    def __init__(self, settings: Settings, loader: Loader = load_torchscript) -> None:
        self.settings = settings
        self._loader = loader
        self._module: torch.jit.ScriptModule | None = None
        self._device: str | None = None
        self._load_error: str | None = None
        # Set once loading has finished, successfully or not, so waiters never hang.
        self._settled = threading.Event()
        # gevent runs requests in greenlets (tests in threads); one forward pass at a time
        # keeps CPU use at torch_threads per worker, so workers x threads <= cores holds.
        self._compute_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed up; readiness probes read this."""
        return self._settled.is_set() and self._module is not None

    @property
    def load_error(self) -> str | None:
        """Why loading failed, or None."""
        return self._load_error

    @property
    def device(self) -> str | None:
        return self._device

    def load(self) -> None:
        """Loads the TorchScript file, sets torch's threads, warms up, then sets `ready`.

        A failure is logged and kept in `load_error` (readiness then stays 503 and says
        why) instead of being raised into a background thread where nobody would see it.
        """
        try:
            device = select_device(self.settings.device, torch.cuda.is_available())
            # Process-wide: torch applies it to each thread on that thread's first parallel
            # op, and request threads run none before the model is ready.
            torch.set_num_threads(self.settings.torch_threads)
            started = time.perf_counter()
            module = self._loader(self.settings.model_path, device)
            self._warm_up(module, device)
            self._device = device
            self._module = module
            log.info(
                "model %s loaded on %s with %d torch thread(s) in %.2f s",
                self.settings.model_path,
                device,
                torch.get_num_threads(),
                time.perf_counter() - started,
            )
        except Exception as err:  # noqa: BLE001 - reported through readiness, see docstring
            self._load_error = f"{type(err).__name__}: {err}"
            log.exception("model %s failed to load", self.settings.model_path)
        finally:
            self._settled.set()

    def _warm_up(self, module: torch.jit.ScriptModule, device: str) -> None:
        spec = self.settings.spec
        # Both ends of the allowed batch range, so neither the first single-image request
        # nor the first full batch pays for TorchScript's profiling runs.
        batch_sizes = sorted({1, self.settings.limits.max_batch})
        with torch.inference_mode():
            for _ in range(self.settings.warmup_iterations):
                for batch in batch_sizes:
                    images = torch.zeros((batch, spec.side, spec.side), device=device)
                    logits = module(images)
                    if tuple(logits.shape) != (batch, spec.num_classes):
                        raise ValueError(
                            f"model returns shape {tuple(logits.shape)} for {batch} images, "
                            f"expected ({batch}, {spec.num_classes}): wrong model file?"
                        )

    def wait_ready(self, timeout_s: float) -> bool:
        """Blocks until loading has finished (or `timeout_s` passed); returns `ready`."""
        self._settled.wait(timeout_s)
        return self.ready

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        """Logits for float32 [N, side, side] images, and the seconds the forward pass took
        (measured inside the lock: compute only, not the wait for a sibling thread).

        Raises:
            ModelNotReady: if the model is not loaded.
        """
        module, device = self._module, self._device
        if module is None or device is None:
            raise ModelNotReady(self._load_error or "model is still loading")
        tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with self._compute_lock, torch.inference_mode():
            started = time.perf_counter()
            logits = module(tensor.to(device)).cpu().numpy()
            elapsed = time.perf_counter() - started
        return logits, elapsed

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Logits float32 [N, classes] for float32 [N, side, side] images."""
        return self.predict_timed(images)[0]
