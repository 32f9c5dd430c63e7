"""`make gpu-bench` without a GPU: its refusal, and its profile's size, by arithmetic."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadtests import gpu_bench
from loadtests.gpu_bench import BUDGET_S, TORCH_STACKS, check_gpu, planned_seconds
from loadtests.profiles import PROFILES
from services.registry import load_stack
from services.stack import CUDA
from tests.doubles.fake_nvml import FakeGpu, FakeNvml, NVMLError_DriverNotLoaded

ROOT = Path(__file__).resolve().parents[2]


def fake_torch(cuda: str | None = "13.0", available: bool = True) -> SimpleNamespace:
    return SimpleNamespace(__version__="2.11.0", version=SimpleNamespace(cuda=cuda),
                           cuda=SimpleNamespace(is_available=lambda: available))  # fmt: skip


def test_a_cuda_torch_and_an_nvml_gpu_pass_and_label_the_run():
    check = check_gpu(fake_torch(), FakeNvml(gpus=[FakeGpu(name="NVIDIA H200")],
                                             driver="580.65.06", cuda=13000), visible=None)
    assert check.ok and check.torch_cuda == "13.0"
    block = gpu_bench.gpu_run_block(check, 4, list(TORCH_STACKS))
    assert block["label"] == "NVIDIA H200 ×1, driver 580.65.06, CUDA 13.0"
    assert block["server_cpus"] == 4 and block["inventory"]["devices"][0]["name"] == "NVIDIA H200"


@pytest.mark.parametrize(
    ("torch", "nvml", "words"),
    [
        (fake_torch(cuda=None), FakeNvml(), "no CUDA torch: torch 2.11.0 is a CPU-only build"),
        (fake_torch(available=False), FakeNvml(), "torch.cuda.is_available() is False"),
        (fake_torch(), FakeNvml(init_error=NVMLError_DriverNotLoaded("Driver Not Loaded")),
         "no GPU for NVML (GPU telemetry): NVML: the NVIDIA kernel driver is not loaded"),
        (fake_torch(), FakeNvml(gpus=[]), "NVML answers but lists no GPU"),
    ],
)
def test_each_missing_piece_is_named(torch, nvml, words):
    check = check_gpu(torch, nvml, visible=None)
    assert not check.ok
    assert any(words in problem for problem in check.problems), check.problems
    assert words in gpu_bench.refusal(check)


def test_the_entry_point_refuses_when_no_cuda_device_answers():
    # CUDA_VISIBLE_DEVICES="" hides every GPU, so this refuses on a GPU machine too.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "loadtests.gpu_bench", "--check"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == gpu_bench.EXIT_NO_GPU, done.stderr
    assert "refused before starting any server, no CUDA device answers" in done.stderr
    assert "no GPU for NVML" in done.stderr


def test_only_stacks_that_run_on_cuda_are_accepted(capsys):
    with pytest.raises(SystemExit) as exited:
        gpu_bench.main(["--check", "--stacks", "flask_torch,tf_serving"])
    assert exited.value.code == 2
    assert "tf_serving cannot run on CUDA" in capsys.readouterr().err


def test_the_torch_stacks_all_run_on_cuda():
    assert all(CUDA in load_stack(name).devices for name in TORCH_STACKS)


def test_the_gpu_profile_fits_about_eight_minutes():
    profile = PROFILES["gpu"]
    assert profile.name == "gpu"
    assert planned_seconds(profile, len(TORCH_STACKS)) <= BUDGET_S
    # Batches a GPU can use, and the cold starts left to the CPU profiles.
    assert max(profile.closed_users) >= 16 and profile.coldstart_repeats == 0


def test_planned_seconds_counts_every_window_and_overhead():
    profile = dataclasses.replace(
        PROFILES["gpu"], warmup_s=1.0, duration_s=2.0, closed_users={1: (4,)}, open_users=4,
        max_windows=2, calibration_warmup_s=0.0, calibration_duration_s=1.0,
        calibration_rates=(100.0,), wrk_duration_s=2, wrk_repeats=1, capacity_duration_s=3.0,
        capacity_max_trials=2, capacity_retries=1)  # fmt: skip
    overhead = gpu_bench.WINDOW_OVERHEAD_S
    wrk_run = 2 + gpu_bench.WRK_OVERHEAD_S
    per_target = (
        2 * (1.0 + overhead)  # floors: users 4, rate 100
        + 2 * (3.0 + overhead)  # one level, two windows
        + wrk_run  # wrk once after it
        + 2 * 2 * (4.0 + overhead)  # two capacity trials, each retried once
    )
    flask = 3 * wrk_run + gpu_bench.FLASK_RESTARTS * gpu_bench.START_S
    expected = gpu_bench.BASELINES_S + 3 * (gpu_bench.START_S + per_target) + flask
    assert planned_seconds(profile, 3) == pytest.approx(expected)


def test_the_run_is_labelled_in_its_environment(tmp_path):
    (tmp_path / "environment.json").write_text('{"server_cores": [0, 1, 2], "skipped": {}}')
    check = check_gpu(fake_torch(), FakeNvml(gpus=[FakeGpu(name="NVIDIA H100")]), visible=None)
    env = gpu_bench.label_run(tmp_path, check, None, ["flask_torch"])
    saved = json.loads((tmp_path / "environment.json").read_text())
    assert env["gpu_run"]["server_cpus"] == 3  # every server core when no budget is given
    assert saved["gpu_run"]["label"] == "NVIDIA H100 ×1, driver 999.99.99, CUDA 12.8"
    assert gpu_bench.label_run(tmp_path, check, 2, ["flask_torch"])["gpu_run"]["server_cpus"] == 2


def test_a_cpu_budget_beyond_the_server_cores_is_refused_before_the_check(capsys):
    with pytest.raises(SystemExit) as exited:
        gpu_bench.main(["--check", "--server-cpus", "999"])
    assert exited.value.code == 2
    assert "--server-cpus (GPU_SERVER_CPUS): 999 CPUs per server asked" in capsys.readouterr().err
