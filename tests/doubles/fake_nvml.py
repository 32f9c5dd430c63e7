"""FAKE NVML: a stand-in for the parts of pynvml loadtests.gpu_telemetry calls.

Not a GPU and not NVML: it answers with scripted readings, so the sampler's records, its
summary arithmetic and its refusals can be tested on a machine without a GPU. Passed to
the code under test as a parameter (nothing global is patched).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
MIB = 2**20


class NVMLError(Exception):
    """Base of the fake's errors, as pynvml's NVMLError is of its own."""


# Named as pynvml names them: the sampler explains an init failure by its class name.
class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_DriverNotLoaded(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


@dataclass
class Reading:
    """What one GPU reports at one query; None: the counter is not supported."""

    util: float = 50.0
    memory_util: float = 10.0
    memory_used_mib: float = 1024.0
    power_w: float | None = 100.0
    sm_clock: float = 1500.0
    memory_clock: float = 2600.0


@dataclass
class FakeGpu:
    name: str = "FAKE GPU"
    uuid: str = "GPU-00000000-fake"
    memory_total_mib: float = 81920.0
    # Readings in turn; the last one repeats once they are used up.
    readings: Sequence[Reading] = (Reading(),)
    queries: int = 0


@dataclass
class FakeNvml:
    """The fake module: gpus, driver and CUDA versions, or an init failure to raise."""

    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    driver: str = "999.99.99"
    cuda: int = 12080
    init_error: Exception | None = None
    # Set once this many utilization queries have been answered (tests wait on it).
    wanted_queries: int = 3
    enough: threading.Event = field(default_factory=threading.Event)
    initialized: bool = False
    shutdowns: int = 0

    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVMLError = NVMLError

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes:
        return gpu.name.encode()  # older pynvml returns bytes

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def _reading(self, gpu: FakeGpu) -> Reading:
        return gpu.readings[min(gpu.queries, len(gpu.readings) - 1)]

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        if not self.initialized:
            raise NVMLError("Uninitialized")
        reading = self._reading(gpu)
        gpu.queries += 1
        if sum(g.queries for g in self.gpus) >= self.wanted_queries * len(self.gpus):
            self.enough.set()
        return SimpleNamespace(gpu=reading.util, memory=reading.memory_util)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        # Queried after the utilization of the same reading, hence queries - 1.
        reading = gpu.readings[max(0, min(gpu.queries - 1, len(gpu.readings) - 1))]
        return SimpleNamespace(total=gpu.memory_total_mib * MIB,
                               used=reading.memory_used_mib * MIB)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        reading = gpu.readings[max(0, min(gpu.queries - 1, len(gpu.readings) - 1))]
        if reading.power_w is None:
            raise NVMLError_NotSupported("Not Supported")
        return int(reading.power_w * 1000)

    def nvmlDeviceGetClockInfo(self, gpu: FakeGpu, clock: int) -> float:
        reading = gpu.readings[max(0, min(gpu.queries - 1, len(gpu.readings) - 1))]
        return reading.sm_clock if clock == NVML_CLOCK_SM else reading.memory_clock
