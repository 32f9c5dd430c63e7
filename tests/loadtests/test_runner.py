"""Runner decisions that need no server: core split, device selection, environment."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from loadtests import runner
from loadtests.sampler import ResourceSamples, TreeSampler
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


def test_a_gpu_server_cpu_budget_takes_the_first_server_cores():
    assert runner.limit_cores([0, 1, 2, 3], None) == [0, 1, 2, 3]
    assert runner.limit_cores([0, 1, 2, 3], 2) == [0, 1]
    for too_many in (0, 5):
        with pytest.raises(ValueError, match="CPUs per server"):
            runner.limit_cores([0, 1, 2, 3], too_many)


def test_only_cuda_points_carry_a_gpu_block_and_it_says_why_when_empty():
    from loadtests.gpu_telemetry import GpuSampler
    from tests.doubles.fake_nvml import FakeNvml

    local = runner.Target("flask_torch", "rest", "http://x", {}, server_pid=1, device="cuda")
    remote = runner.Target("flask_torch", "rest", "http://x", {}, server_pid=None,
                           device="cuda")  # fmt: skip
    cpu = runner.Target("flask_torch", "rest", "http://x", {}, server_pid=1, device="cpu")
    assert runner.samples_gpu(local) and not runner.samples_gpu(remote)
    assert not runner.samples_gpu(cpu) and runner.gpu_fields(cpu, None) == {}
    assert "another machine" in runner.gpu_fields(remote, None)["gpu"]["reason"]
    nvml = FakeNvml()
    with GpuSampler(interval_s=0.001, nvml=nvml, visible="0") as sampler:
        assert nvml.enough.wait(30)
    block = runner.gpu_fields(local, sampler)["gpu"]
    assert block["reason"] is None and block["gpus"][0]["samples"] >= 3


def test_one_busy_generator_process_saturates_the_generator() -> None:
    """Two Locust processes in a 2-CPU pod: the sum can stay under its gate (90% of 200)
    while one process is at a full core, and that one's users are starved."""
    one_busy = ResourceSamples(cpu_pct=[105.0, 105.0],
                               process_cpu_pct={1: [5.0, 5.0], 2: [96.0, 96.0], 3: [4.0, 4.0]})
    assert one_busy.busiest_process_cpu() == 96.0
    assert runner.generator_saturated(one_busy, capacity_pct=200.0)
    even = ResourceSamples(cpu_pct=[130.0], process_cpu_pct={2: [65.0], 3: [65.0]})
    assert not runner.generator_saturated(even, capacity_pct=200.0)
    both_busy = ResourceSamples(cpu_pct=[185.0], process_cpu_pct={2: [89.0], 3: [89.0]})
    assert runner.generator_saturated(both_busy, capacity_pct=200.0)


def test_the_tree_sampler_keeps_each_process_apart() -> None:
    """A busy child and an idle child of one parent: the busiest process is the busy one."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "idle = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n")])
    try:
        time.sleep(0.5)
        with TreeSampler(parent.pid, interval_s=0.2) as sampler:
            time.sleep(1.5)
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    per_process = sampler.samples.process_cpu_pct
    assert len(per_process) == 3
    means = sorted(sum(v) / len(v) for v in per_process.values())
    assert means[-1] > 50.0 and means[0] < 20.0
    assert sampler.samples.busiest_process_cpu() == means[-1]
