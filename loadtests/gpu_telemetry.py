"""GPU utilization, memory, power and clocks, sampled through NVML while a load point runs.

A GPU point's server CPU says whether the JSON front end bounded it; only the GPU's own
counters say whether the GPU did. NVML (`nvidia-ml-py`, imported as `pynvml`) is what
nvidia-smi reads. The sampler runs in the runner's process: it sees the GPUs the servers
see when they are started from here (they inherit CUDA_VISIBLE_DEVICES). A server in a pod
is on another machine and is not sampled here.

CUDA numbers GPUs fastest first and NVML by PCI bus; on a machine with mixed cards set
CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA_VISIBLE_DEVICES indices mean the same GPUs here.

Nothing here raises: where NVML is missing or no GPU answers, the summary's `reason` says
why and its `gpus` list is empty.
"""

from __future__ import annotations

import importlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

# NVML refreshes utilization every 1/6 to 1 s depending on the card; 0.25 s gives several
# samples in a 5 s window without the sampler itself costing the server CPU.
INTERVAL_S = 0.25
MIB = 2**20

# nvmlInit's failures, by the class name pynvml gives them, in words a user can act on.
INIT_ERRORS = {
    "NVMLError_LibraryNotFound": "the NVML library (libnvidia-ml.so) was not found: no NVIDIA "
    "driver is installed, or its libraries are not on the library path",
    "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded (no GPU, or the "
    "driver is installed but not running)",
    "NVMLError_NoPermission": "NVML refused access to the GPUs (no permission on /dev/nvidia*)",
}


@dataclass(frozen=True)
class GpuDevice:
    """One GPU as NVML names it."""

    index: int  # NVML's index (PCI bus order)
    name: str
    uuid: str
    memory_total_mib: float | None


@dataclass(frozen=True)
class Inventory:
    """The visible GPUs and the driver: what labels a GPU run."""

    devices: tuple[GpuDevice, ...]
    driver_version: str | None
    # The newest CUDA the driver supports (NVML's figure, e.g. "12.8"); torch's own build
    # is torch.version.cuda, recorded beside it by the caller.
    cuda_version: str | None

    def to_json(self) -> dict:
        return {"driver_version": self.driver_version, "cuda_version": self.cuda_version,
                "devices": [asdict(d) for d in self.devices]}  # fmt: skip

    def label(self) -> str:
        """e.g. "NVIDIA H100 80GB HBM3 ×1, driver 570.86.15, CUDA 12.8"."""
        names: dict[str, int] = {}
        for device in self.devices:
            names[device.name] = names.get(device.name, 0) + 1
        cards = ", ".join(f"{name} ×{count}" for name, count in names.items()) or "no GPU"
        return f"{cards}, driver {self.driver_version or '?'}, CUDA {self.cuda_version or '?'}"


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU; None where the card does not report that counter."""

    t_s: float  # since sampling started
    index: int
    util_pct: float | None
    memory_util_pct: float | None
    memory_used_mib: float | None
    power_w: float | None
    sm_clock_mhz: float | None
    memory_clock_mhz: float | None


def import_nvml(module: str = "pynvml") -> tuple[ModuleType | None, str | None]:
    """(pynvml, None), or (None, why) when nvidia-ml-py is not installed."""
    try:
        return importlib.import_module(module), None
    except ImportError as err:
        return None, f"nvidia-ml-py is not installed (import {module} failed: {err})"


def init_error(err: Exception) -> str:
    """Why nvmlInit failed, in words a user can act on."""
    known = INIT_ERRORS.get(type(err).__name__)
    return f"NVML: {known}" if known else f"NVML: nvmlInit failed: {err}"


def visible_devices(value: str | None, devices: Sequence[GpuDevice]
                    ) -> tuple[list[GpuDevice], str | None]:
    """The GPUs that CUDA_VISIBLE_DEVICES=`value` leaves visible, and why none are.

    Args:
        value: the variable's value; None (unset) leaves every GPU visible.
        devices: every GPU NVML lists, by NVML index.

    Returns:
        (visible GPUs in the variable's order, None), or ([], why).
    """
    if value is None:
        return list(devices), None if devices else "NVML lists no GPU"
    chosen: list[GpuDevice] = []
    for item in (part.strip() for part in value.split(",")):
        if item.isdigit():
            match = [d for d in devices if d.index == int(item)]
        elif item.startswith("GPU-"):  # CUDA accepts any unique UUID prefix
            match = [d for d in devices if d.uuid.startswith(item)]
        else:
            match = []
        if len(match) != 1:
            break  # CUDA, too, ignores the entries after the first it cannot use
        chosen.append(match[0])
    if not chosen:
        return [], (f"CUDA_VISIBLE_DEVICES={value!r} leaves no GPU NVML lists visible "
                    "(MIG instances are not sampled)")  # fmt: skip
    return chosen, None


def read(call: Callable[..., Any], *args: Any) -> Any:
    """One NVML query, None when it fails: a card without a power sensor (or one NVML
    error) must cost that counter, never the point or the other counters."""
    try:
        return call(*args)
    except Exception:  # pynvml raises NVMLError subclasses, and ctypes errors on old drivers
        return None


def text(value: Any) -> str | None:
    """Older pynvml versions return bytes where newer ones return str."""
    return value.decode() if isinstance(value, bytes) else value


def cuda_version_text(version: int | None) -> str | None:
    """NVML's CUDA version integer (12080) as "12.8"."""
    if not version:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def open_inventory(nvml: Any, visible: str | None) -> tuple[Inventory | None, list, str | None]:
    """After nvmlInit: the visible GPUs, their NVML handles, and why there are none."""
    count = read(nvml.nvmlDeviceGetCount)
    if not count:
        return None, [], "NVML answers but lists no GPU"
    handles, devices = {}, []
    for index in range(count):
        handle = read(nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        memory = read(nvml.nvmlDeviceGetMemoryInfo, handle)
        devices.append(GpuDevice(index, text(read(nvml.nvmlDeviceGetName, handle)) or "?",
                                 text(read(nvml.nvmlDeviceGetUUID, handle)) or "",
                                 round(memory.total / MIB, 1) if memory else None))
        handles[index] = handle
    chosen, why = visible_devices(visible, devices)
    if why:
        return None, [], why
    inventory = Inventory(tuple(chosen), text(read(nvml.nvmlSystemGetDriverVersion)),
                          cuda_version_text(read(nvml.nvmlSystemGetCudaDriverVersion)))
    return inventory, [handles[d.index] for d in chosen], None


def probe(nvml: Any = None, visible: str | None = None) -> tuple[Inventory | None, str | None]:
    """The visible GPUs and driver, or (None, why); initializes NVML and shuts it down.

    Args:
        nvml: pynvml, or a stand-in with its API (tests); None imports pynvml.
        visible: CUDA_VISIBLE_DEVICES' value; None reads this process's environment.
    """
    with GpuSampler(nvml=nvml, visible=visible, sample=False) as sampler:
        return sampler.inventory, sampler.reason


def mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


class GpuSampler:
    """Every `interval_s`, reads each visible GPU's counters in a background thread.

    Use as a context manager around a load point; summary() afterwards. Sampling stops
    when the block exits, and NVML is shut down.
    """

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        nvml: Any = None,
        visible: str | None = None,
        sample: bool = True,
    ) -> None:
        """
        Args:
            interval_s: seconds between readings.
            nvml: pynvml, or a stand-in with its API (tests); None imports pynvml.
            visible: CUDA_VISIBLE_DEVICES' value; None reads this process's environment.
            sample: False opens NVML and reads the inventory only (probe()).
        """
        self.interval_s = interval_s
        self.samples: list[GpuSample] = []
        self.inventory: Inventory | None = None
        self.reason: str | None = None
        self._nvml = nvml
        self._visible = visible if visible is not None else os.environ.get(
            "CUDA_VISIBLE_DEVICES")
        self._sample = sample
        self._handles: list = []
        self._initialized = False
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-telemetry", daemon=True)

    def __enter__(self) -> GpuSampler:
        if self._nvml is None:
            self._nvml, self.reason = import_nvml()
            if self.reason:
                return self
        try:
            self._nvml.nvmlInit()
        except Exception as err:  # NVMLError subclasses; a stand-in may raise its own
            self.reason = init_error(err)
            return self
        self._initialized = True
        self.inventory, self._handles, self.reason = open_inventory(self._nvml, self._visible)
        if self.inventory is not None and self._sample:
            self._started = time.monotonic()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._initialized:
            read(self._nvml.nvmlShutdown)
            self._initialized = False

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            self._read_all()
            if self._stop.wait(self.interval_s):
                return

    def _read_all(self) -> None:
        nvml, now = self._nvml, time.monotonic() - self._started
        for device, handle in zip(self.inventory.devices, self._handles, strict=True):
            util = read(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = read(nvml.nvmlDeviceGetMemoryInfo, handle)
            power_mw = read(nvml.nvmlDeviceGetPowerUsage, handle)
            self.samples.append(GpuSample(
                t_s=round(now, 3),
                index=device.index,
                util_pct=util.gpu if util is not None else None,
                memory_util_pct=util.memory if util is not None else None,
                memory_used_mib=round(memory.used / MIB, 1) if memory is not None else None,
                power_w=power_mw / 1000.0 if power_mw is not None else None,
                sm_clock_mhz=read(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
                memory_clock_mhz=read(nvml.nvmlDeviceGetClockInfo, handle,
                                      nvml.NVML_CLOCK_MEM),
            ))  # fmt: skip

    def summary(self) -> dict:
        """The point's GPU block: per GPU, mean/max utilization, max memory, mean power,
        min/max clocks and the sample count; the driver and CUDA versions; `reason` says
        why `gpus` is empty (None when it is not)."""
        block: dict = {"reason": self.reason, "interval_s": self.interval_s,
                       "driver_version": None, "cuda_version": None, "gpus": []}  # fmt: skip
        if self.inventory is None:
            block["reason"] = self.reason or "NVML was not opened"
            return block
        block["driver_version"] = self.inventory.driver_version
        block["cuda_version"] = self.inventory.cuda_version
        block["gpus"] = [gpu_summary(device, [s for s in self.samples if s.index == device.index])
                         for device in self.inventory.devices]  # fmt: skip
        if self._sample and not self.samples:
            block["reason"] = "NVML answered but no sample was read during the point"
        return block


def gpu_summary(device: GpuDevice, samples: Sequence[GpuSample]) -> dict:
    """One GPU's figures over a point's samples (counters it never reported are None)."""

    def values(name: str) -> list[float]:
        return [getattr(s, name) for s in samples if getattr(s, name) is not None]

    util, memory, power = values("util_pct"), values("memory_used_mib"), values("power_w")
    sm, mem_clock = values("sm_clock_mhz"), values("memory_clock_mhz")
    return {
        "index": device.index,
        "name": device.name,
        "uuid": device.uuid,
        "samples": len(samples),
        "util_mean_pct": mean(util),
        "util_max_pct": max(util, default=None),
        "memory_util_mean_pct": mean(values("memory_util_pct")),
        "memory_max_mib": max(memory, default=None),
        "memory_total_mib": device.memory_total_mib,
        "power_mean_w": mean(power),
        "power_max_w": max(power, default=None),
        "sm_clock_min_mhz": min(sm, default=None),
        "sm_clock_max_mhz": max(sm, default=None),
        "memory_clock_min_mhz": min(mem_clock, default=None),
        "memory_clock_max_mhz": max(mem_clock, default=None),
    }


def unsampled(reason: str) -> dict:
    """The GPU block of a CUDA point that could not be sampled here, saying why."""
    return {"reason": reason, "interval_s": None, "driver_version": None,
            "cuda_version": None, "gpus": []}  # fmt: skip
