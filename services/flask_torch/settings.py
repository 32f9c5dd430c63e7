"""Configuration of the Flask + gunicorn stack: one frozen dataclass, defaults visible here,
each overridable by an environment variable.

gunicorn.conf.py (in the master) and create_app() (in every worker) both read from here,
so the worker count and torch's thread count are derived by one function
(services.cores.split_cores, the rule of every stack). Nothing here
imports torch: the gunicorn master must stay free of it (see gunicorn.conf.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from digitnet.env import env_float, env_str
from digitnet.env import env_optional_int as env_int
from digitnet.noop import NOOP_ENV, noop_enabled
from digitnet.spec import AdmissionPolicy, ModelSpec, ServingLimits
from services.cores import CoreSplit, split_from_env

MODEL_PATH_ENV = "FLASK_TORCH_MODEL_PATH"
TORCH_THREADS_ENV = "FLASK_TORCH_THREADS"
WORKERS_ENV = "FLASK_TORCH_WORKERS"
WORKER_CONNECTIONS_ENV = "FLASK_TORCH_WORKER_CONNECTIONS"
BIND_ENV = "FLASK_TORCH_BIND"
DEVICE_ENV = "FLASK_TORCH_DEVICE"
WARMUP_ENV = "FLASK_TORCH_WARMUP_ITERATIONS"
LOAD_WAIT_ENV = "FLASK_TORCH_LOAD_WAIT_S"

# Where `make artifacts` writes it, relative to the repository root (gunicorn's working dir).
DEFAULT_ARTIFACTS_DIR = Path("artifacts")
DEFAULT_MODEL_PATH = ArtifactPaths(DEFAULT_ARTIFACTS_DIR, ModelSpec()).torchscript
DEFAULT_BIND = "127.0.0.1:8000"
# Concurrent connections per gevent worker (gunicorn's default); inference itself is
# serialised per worker (see predictor.py), so these only keep slow clients from blocking.
DEFAULT_WORKER_CONNECTIONS = 1000
# One intra-op thread per worker: an 8x8 conv net is far too small for intra-op
# parallelism to pay off, while one worker per core scales with concurrent requests.
DEFAULT_TORCH_THREADS = 1

DEVICE_AUTO = "auto"
DEVICE_CPU = "cpu"
DEVICE_CUDA = "cuda"


def parallelism_from_env(cores: int) -> CoreSplit:
    """services.cores.split_cores with FLASK_TORCH_WORKERS / FLASK_TORCH_THREADS as overrides
    (services.cores.split_from_env)."""
    return split_from_env(cores, WORKERS_ENV, TORCH_THREADS_ENV)


def select_device(requested: str, cuda_available: bool) -> str:
    """The torch device to load the model on.

    "cuda" (or "cuda:N") on a machine without CUDA is an error rather than a silent
    fallback: a benchmark labelled GPU that quietly ran on the CPU would be a wrong
    result. "auto" is the explicit way to ask for "CUDA when present, else CPU".

    Args:
        requested: "cpu", "cuda", "cuda:N" or "auto".
        cuda_available: torch.cuda.is_available() (passed in so this stays pure).

    Returns:
        "cpu", "cuda" or "cuda:N".

    Raises:
        ValueError: for an unknown device or CUDA requested where there is none.
    """
    device = requested.strip().lower()
    if device == DEVICE_AUTO:
        return DEVICE_CUDA if cuda_available else DEVICE_CPU
    if device == DEVICE_CPU:
        return DEVICE_CPU
    is_cuda = device == DEVICE_CUDA or (
        device.startswith(DEVICE_CUDA + ":") and device[len(DEVICE_CUDA) + 1 :].isdigit()
    )
    if not is_cuda:
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {requested!r}")
    if not cuda_available:
        raise ValueError(
            f"device {requested!r} requested but CUDA is not available (CPU-only torch build "
            f"or no GPU); set {DEVICE_ENV}=cpu or {DEVICE_ENV}=auto"
        )
    return device


@dataclass(frozen=True)
class Settings:
    """Everything one Flask worker needs; gunicorn's own knobs live in gunicorn.conf.py."""

    # The TorchScript file written by harness.artifacts (relative to the working directory):
    # artifacts/torchscript/digitnet.torchscript.pt.
    model_path: Path = DEFAULT_MODEL_PATH
    spec: ModelSpec = field(default_factory=ModelSpec)
    limits: ServingLimits = field(default_factory=ServingLimits)
    # Predict requests one worker holds at once before it answers 503 (see AdmissionPolicy).
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    torch_threads: int = DEFAULT_TORCH_THREADS
    device: str = DEVICE_CPU
    # Forward passes run before readiness turns green, so the first real request does not
    # pay TorchScript's profiling and optimisation passes.
    warmup_iterations: int = 3
    # How long a predict request that reaches a still-loading worker waits for its model
    # before answering 503. With several workers, /readyz turns 200 when the worker that
    # answered it is ready, while a sibling may still be loading for a moment.
    load_wait_s: float = 30.0
    # The no-op twin route (digitnet/noop.py), registered only when NOOP_ENV=1: the plugin
    # sets it for runs that measure the framework's floor; images and k8s never do.
    noop_route: bool = False

    def __post_init__(self) -> None:
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {self.warmup_iterations}")
        if self.load_wait_s < 0:
            raise ValueError(f"load_wait_s must be >= 0, got {self.load_wait_s}")

    @classmethod
    def from_env(cls) -> Settings:
        """Reads FLASK_TORCH_MODEL_PATH, FLASK_TORCH_THREADS, FLASK_TORCH_DEVICE,
        FLASK_TORCH_WARMUP_ITERATIONS, FLASK_TORCH_LOAD_WAIT_S, DIGITNET_NOOP_TWIN, and the
        DIGITNET_* variables of ModelSpec, ServingLimits and AdmissionPolicy."""
        base = cls()
        spec = ModelSpec.from_env()
        threads = env_int(TORCH_THREADS_ENV)
        warmup = env_int(WARMUP_ENV)
        # Without an explicit path, the artifact layout's file for this spec's model name.
        default_path = ArtifactPaths(DEFAULT_ARTIFACTS_DIR, spec).torchscript
        return cls(
            model_path=Path(env_str(MODEL_PATH_ENV, str(default_path))),
            spec=spec,
            limits=ServingLimits.from_env(),
            admission=AdmissionPolicy.from_env(),
            torch_threads=base.torch_threads if threads is None else threads,
            device=env_str(DEVICE_ENV, base.device),
            warmup_iterations=base.warmup_iterations if warmup is None else warmup,
            load_wait_s=env_float(LOAD_WAIT_ENV, base.load_wait_s),
            noop_route=noop_enabled(env_str(NOOP_ENV, "")),
        )
