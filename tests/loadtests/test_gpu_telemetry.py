"""The GPU sampler against a fake NVML: its records, its summary, its refusals, its stop."""

from __future__ import annotations

import pytest

from loadtests.gpu_telemetry import (
    GpuDevice,
    GpuSample,
    GpuSampler,
    gpu_summary,
    import_nvml,
    probe,
    unsampled,
    visible_devices,
)
from tests.doubles.fake_nvml import (
    FakeGpu,
    FakeNvml,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
    Reading,
)

# Long enough for the test to stop the sampler well before a second interval would end,
# so the number of readings is decided by the fake, not by the clock.
WAIT_S = 30.0


def sampled(nvml: FakeNvml, visible: str | None = "0") -> GpuSampler:
    """A sampler run until the fake has answered its wanted queries."""
    with GpuSampler(interval_s=0.001, nvml=nvml, visible=visible) as sampler:
        assert nvml.enough.wait(WAIT_S), "the sampler never read the fake GPU"
    return sampler


def test_records_every_counter_of_every_reading():
    nvml = FakeNvml(gpus=[FakeGpu(readings=[
        Reading(util=20, memory_util=5, memory_used_mib=1000, power_w=80, sm_clock=1200,
                memory_clock=2600),
        Reading(util=90, memory_util=40, memory_used_mib=3000, power_w=300, sm_clock=1980,
                memory_clock=2619),
    ])], wanted_queries=2)  # fmt: skip
    sampler = sampled(nvml)
    first, second = sampler.samples[:2]
    assert (first.index, first.util_pct, first.memory_util_pct, first.memory_used_mib,
            first.power_w, first.sm_clock_mhz, first.memory_clock_mhz) == (
        0, 20, 5, 1000.0, 80.0, 1200, 2600)  # fmt: skip
    assert (second.util_pct, second.memory_used_mib, second.power_w) == (90, 3000.0, 300.0)
    assert first.t_s <= second.t_s


def test_summary_arithmetic():
    device = GpuDevice(0, "NVIDIA H200", "GPU-h200", 143771.0)
    samples = [GpuSample(t, 0, u, 2 * u, m, p, c, 2619)
               for t, u, m, p, c in [(0.0, 10, 500, 100, 1400), (0.25, 50, 900, 200, 1980),
                                     (0.5, 90, 700, None, 1600)]]  # fmt: skip
    gpu = gpu_summary(device, samples)
    assert gpu["samples"] == 3
    assert gpu["util_mean_pct"] == pytest.approx(50.0) and gpu["util_max_pct"] == 90
    assert gpu["memory_util_mean_pct"] == pytest.approx(100.0)
    assert gpu["memory_max_mib"] == 900 and gpu["memory_total_mib"] == 143771.0
    # A reading without power counts for the others, not for the power mean.
    assert gpu["power_mean_w"] == pytest.approx(150.0) and gpu["power_max_w"] == 200
    assert (gpu["sm_clock_min_mhz"], gpu["sm_clock_max_mhz"]) == (1400, 1980)
    assert (gpu["memory_clock_min_mhz"], gpu["memory_clock_max_mhz"]) == (2619, 2619)
    empty = gpu_summary(device, [])
    assert empty["samples"] == 0 and empty["util_mean_pct"] is None


def test_summary_labels_the_card_driver_and_cuda():
    nvml = FakeNvml(gpus=[FakeGpu(name="NVIDIA H200")], driver="570.86.15", cuda=12080)
    sampler = sampled(nvml)
    block = sampler.summary()
    assert block["reason"] is None
    assert (block["driver_version"], block["cuda_version"]) == ("570.86.15", "12.8")
    # Decoded from the bytes older pynvml returns.
    assert block["gpus"][0]["name"] == "NVIDIA H200"
    assert block["gpus"][0]["samples"] == len(sampler.samples) >= 3
    assert sampler.inventory.label() == "NVIDIA H200 ×1, driver 570.86.15, CUDA 12.8"


def test_a_counter_the_card_lacks_is_none_and_the_others_stay():
    nvml = FakeNvml(gpus=[FakeGpu(readings=[Reading(power_w=None)])])
    (gpu,) = sampled(nvml).summary()["gpus"]
    assert gpu["power_mean_w"] is None and gpu["power_max_w"] is None
    assert gpu["util_mean_pct"] == pytest.approx(50.0) and gpu["samples"] >= 3


def test_each_visible_gpu_has_its_own_summary():
    nvml = FakeNvml(gpus=[FakeGpu(uuid="GPU-aaa", readings=[Reading(util=10)]),
                          FakeGpu(uuid="GPU-bbb", readings=[Reading(util=70)])])  # fmt: skip
    block = sampled(nvml, visible=None).summary()
    assert [(g["index"], g["util_mean_pct"]) for g in block["gpus"]] == [(0, 10.0), (1, 70.0)]


def test_cuda_visible_devices_narrows_the_gpus_sampled():
    devices = [GpuDevice(0, "a", "GPU-aaa1", None), GpuDevice(1, "b", "GPU-bbb2", None)]
    assert visible_devices(None, devices) == (devices, None)
    assert visible_devices("1", devices) == ([devices[1]], None)
    assert visible_devices("GPU-bbb,0", devices) == ([devices[1], devices[0]], None)
    assert visible_devices("0,7,1", devices) == ([devices[0]], None)  # CUDA stops at 7
    for hidden in ("", "-1", "MIG-1234"):
        chosen, why = visible_devices(hidden, devices)
        assert chosen == [] and "CUDA_VISIBLE_DEVICES" in why


@pytest.mark.parametrize(
    ("nvml", "visible", "words"),
    [
        (FakeNvml(init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found")), "0",
         "no NVIDIA driver is installed"),
        (FakeNvml(init_error=NVMLError_DriverNotLoaded("Driver Not Loaded")), "0",
         "driver is not loaded"),
        (FakeNvml(init_error=RuntimeError("odd")), "0", "nvmlInit failed: odd"),
        (FakeNvml(gpus=[]), None, "lists no GPU"),
        (FakeNvml(), "", "leaves no GPU"),
    ],
)
def test_no_gpu_says_why_and_never_raises(nvml, visible, words):
    with GpuSampler(interval_s=0.001, nvml=nvml, visible=visible) as sampler:
        pass
    block = sampler.summary()
    assert words in block["reason"]
    assert block["gpus"] == [] and not sampler.running
    assert probe(nvml=nvml, visible=visible) == (None, block["reason"])


def test_without_nvidia_ml_py_the_reason_names_the_package():
    module, why = import_nvml("pynvml_that_is_not_installed")
    assert module is None and "nvidia-ml-py is not installed" in why


def test_an_unsampled_cuda_point_says_why():
    block = unsampled("the server runs in a pod")
    assert block["reason"] == "the server runs in a pod" and block["gpus"] == []


def test_sampling_stops_when_the_block_exits():
    nvml = FakeNvml()
    with GpuSampler(interval_s=0.001, nvml=nvml, visible="0") as sampler:
        assert nvml.enough.wait(WAIT_S)
        assert sampler.running
    assert not sampler.running
    taken = len(sampler.samples)
    # Every query the fake answered is a sample, and none follows the exit.
    assert taken == nvml.gpus[0].queries
    assert nvml.shutdowns == 1 and not nvml.initialized


def test_probe_reads_the_inventory_without_sampling():
    nvml = FakeNvml(gpus=[FakeGpu(name="NVIDIA H100 80GB HBM3")], driver="580.1")
    inventory, why = probe(nvml=nvml, visible=None)
    assert why is None and nvml.gpus[0].queries == 0 and nvml.shutdowns == 1
    assert inventory.to_json()["devices"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert inventory.label() == "NVIDIA H100 80GB HBM3 ×1, driver 580.1, CUDA 12.8"
