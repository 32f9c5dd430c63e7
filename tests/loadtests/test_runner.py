"""Runner decisions that need no server: core split, device selection, environment."""

from __future__ import annotations

import pytest

from loadtests import runner
from loadtests.settings import Mode
from services.registry import load_stack


@pytest.mark.parametrize(
    ("cores", "server", "generator"),
    [([0], [0], [0]), ([0, 1], [0], [1]), (list(range(8)), list(range(6)), [6, 7])],
)
def test_generator_and_server_get_separate_cores(cores, server, generator):
    assert runner.split_cores(cores) == (server, generator)


FLASK = load_stack("flask_torch")
TORCHSERVE = load_stack("torchserve")


def test_cpu_runs_hide_every_gpu():
    env = runner.server_env(FLASK, "cpu", cuda_available=True)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["FLASK_TORCH_DEVICE"] == "cpu"
    assert runner.server_env(TORCHSERVE, "cpu", cuda_available=True)["CUDA_VISIBLE_DEVICES"] == ""


def test_cuda_is_requested_explicitly_and_refused_without_a_gpu():
    assert runner.server_env(FLASK, "cuda", cuda_available=True) == {"FLASK_TORCH_DEVICE": "cuda"}
    with pytest.raises(ValueError, match="cuda"):
        runner.server_env(FLASK, "cuda", cuda_available=False)
    with pytest.raises(ValueError, match="unknown device"):
        runner.server_env(FLASK, "tpu", cuda_available=True)
    with pytest.raises(ValueError, match="runs on cpu"):
        runner.server_env(load_stack("tf_serving"), "cuda", cuda_available=True)


def test_gpu_rows_are_added_only_where_cuda_exists():
    assert runner.default_devices(cuda_available=False) == ["cpu"]
    assert runner.default_devices(cuda_available=True) == ["cpu", "cuda"]


def test_load_names_say_mode_batch_and_level():
    assert runner.Load(Mode.CLOSED, 8, 16).slug == "closed-b8-u16"
    assert runner.Load(Mode.OPEN, 1, 32, rate=450.4).slug == "open-b1-r450"
