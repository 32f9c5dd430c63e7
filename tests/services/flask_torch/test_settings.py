"""Settings defaults and env overrides, the worker/thread split, and device selection."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digitnet.spec import ModelSpec, ServingLimits
from services.flask_torch.settings import (
    DEFAULT_MODEL_PATH,
    Parallelism,
    Settings,
    derive_parallelism,
    parallelism_from_env,
    select_device,
)

ENV_NAMES = [
    "FLASK_TORCH_MODEL_PATH",
    "FLASK_TORCH_THREADS",
    "FLASK_TORCH_WORKERS",
    "FLASK_TORCH_DEVICE",
    "FLASK_TORCH_WARMUP_ITERATIONS",
    "FLASK_TORCH_LOAD_WAIT_S",
    "DIGITNET_NAME",
    "DIGITNET_MAX_BATCH",
    "DIGITNET_MAX_BODY_BYTES",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_from_env_without_variables_gives_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.model_path == DEFAULT_MODEL_PATH
    assert DEFAULT_MODEL_PATH == Path("artifacts/torchscript/digitnet.torchscript.pt")
    assert settings.spec == ModelSpec()
    assert settings.limits == ServingLimits()
    assert (settings.torch_threads, settings.device) == (1, "cpu")


def test_every_setting_follows_its_environment_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_TORCH_MODEL_PATH", "/models/x.pt")
    clean_env.setenv("FLASK_TORCH_THREADS", "3")
    clean_env.setenv("FLASK_TORCH_DEVICE", "auto")
    clean_env.setenv("FLASK_TORCH_WARMUP_ITERATIONS", "0")
    clean_env.setenv("FLASK_TORCH_LOAD_WAIT_S", "2.5")
    clean_env.setenv("DIGITNET_NAME", "digits-big")
    clean_env.setenv("DIGITNET_MAX_BATCH", "8")
    clean_env.setenv("DIGITNET_MAX_BODY_BYTES", "1000")
    settings = Settings.from_env()
    assert settings.model_path == Path("/models/x.pt")
    assert settings.torch_threads == 3
    assert settings.device == "auto"
    assert settings.warmup_iterations == 0
    assert settings.load_wait_s == 2.5
    assert settings.spec.name == "digits-big"
    assert (settings.limits.max_batch, settings.limits.max_body_bytes) == (8, 1000)


def test_default_model_path_follows_the_model_name(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DIGITNET_NAME", "digits-big")
    model_path = Settings.from_env().model_path
    assert model_path == Path("artifacts/torchscript/digits-big.torchscript.pt")


def test_non_integer_variable_is_an_error_naming_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_TORCH_THREADS", "two")
    with pytest.raises(ValueError, match="FLASK_TORCH_THREADS"):
        Settings.from_env()


@pytest.mark.parametrize(
    "field, value",
    [("torch_threads", 0), ("warmup_iterations", -1), ("load_wait_s", -1.0)],
)
def test_invalid_values_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})


@pytest.mark.parametrize(
    "cores, workers, threads, expected",
    [
        (1, None, None, Parallelism(1, 1)),
        (2, None, None, Parallelism(2, 1)),
        (16, None, None, Parallelism(16, 1)),
        (8, None, 2, Parallelism(4, 2)),
        (3, None, 2, Parallelism(1, 2)),
        (8, 2, None, Parallelism(2, 4)),
        (7, 2, None, Parallelism(2, 3)),
        (4, 2, 2, Parallelism(2, 2)),
    ],
)
def test_derive_parallelism(
    cores: int, workers: int | None, threads: int | None, expected: Parallelism
) -> None:
    assert derive_parallelism(cores, workers, threads) == expected


@pytest.mark.parametrize(
    "cores, workers, threads, message",
    [
        (2, 2, 2, "exceeds the 2 cores"),
        (2, 3, None, "exceeds the 2 cores"),
        (2, None, 4, "exceeds the 2 cores"),
        (0, None, None, "cores"),
        (4, 0, None, "workers"),
        (4, None, 0, "torch_threads"),
    ],
)
def test_derive_parallelism_refuses_oversubscription_and_zero(
    cores: int, workers: int | None, threads: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        derive_parallelism(cores, workers, threads)


@given(
    cores=st.integers(1, 256),
    workers=st.none() | st.integers(1, 256),
    threads=st.none() | st.integers(1, 256),
)
def test_derived_split_never_exceeds_the_cores(
    cores: int, workers: int | None, threads: int | None
) -> None:
    try:
        split = derive_parallelism(cores, workers, threads)
    except ValueError:
        # Refused only when explicit numbers alone oversubscribe the cores.
        assert (workers or 1) * (threads or 1) > cores
        return
    assert split.workers * split.torch_threads <= cores
    assert split.workers >= 1 and split.torch_threads >= 1
    assert workers is None or split.workers == workers
    assert threads is None or split.torch_threads == threads


def test_parallelism_from_env_uses_the_overrides(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_TORCH_THREADS", "2")
    assert parallelism_from_env(8) == Parallelism(4, 2)
    clean_env.setenv("FLASK_TORCH_WORKERS", "3")
    assert parallelism_from_env(8) == Parallelism(3, 2)


@pytest.mark.parametrize(
    "requested, cuda_available, expected",
    [
        ("cpu", False, "cpu"),
        ("cpu", True, "cpu"),
        ("CPU", False, "cpu"),
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("cuda", True, "cuda"),
        ("cuda:1", True, "cuda:1"),
    ],
)
def test_select_device(requested: str, cuda_available: bool, expected: str) -> None:
    assert select_device(requested, cuda_available) == expected


@pytest.mark.parametrize("requested", ["cuda", "cuda:0"])
def test_cuda_requested_without_cuda_is_an_error_not_a_silent_fallback(requested: str) -> None:
    with pytest.raises(ValueError, match="CUDA is not available.*auto"):
        select_device(requested, cuda_available=False)


@pytest.mark.parametrize("requested", ["gpu", "cuda:x", "mps", ""])
def test_unknown_device_is_an_error(requested: str) -> None:
    with pytest.raises(ValueError, match="device must be"):
        select_device(requested, cuda_available=True)
