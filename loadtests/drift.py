"""Machine drift per point: a fixed calibration loop and CPU steal, before and after.

Absolute figures drift on shared machines (two runs an hour apart differed by 20-40%).
To say how far, each point is bracketed by two readings: the time of a fixed in-process
workload (numpy and plain Python, the two kinds of work the servers and Locust do), and
the CPU steal counted in /proc/stat (time the hypervisor gave our vCPUs to someone else).
A point whose calibration loop slowed, or whose steal share rose, ran on a busier machine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROC_STAT = Path("/proc/stat")
# The workload: a 96x96 float64 matrix product (BLAS, like a model call) and a Python
# loop of the same order of time (interpreter work, like a Locust request). A few ms in
# all, so readings before and after each point cost nothing next to a 10 s window.
MATRIX_SIDE = 96
MATMULS = 20
PY_LOOP_N = 20_000
# The median of a few runs: one reading is at the mercy of a single context switch.
DEFAULT_REPEATS = 5
# /proc/stat columns after the cpu name (man 5 proc). guest and guest_nice are already
# counted in user and nice, so the total leaves them out.
_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _workload(matrix: np.ndarray) -> float:
    product = matrix
    for _ in range(MATMULS):
        product = matrix @ product
        product /= np.abs(product).max()
    total = 0
    for i in range(PY_LOOP_N):
        total += i * i % 7
    return float(product[0, 0]) + total


def calibration_loop_us(repeats: int = DEFAULT_REPEATS) -> float:
    """Times the fixed workload `repeats` times.

    Args:
        repeats: runs to time (after one untimed warm-up run).

    Returns:
        The median run time in microseconds.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    # Fixed data: the same numbers every time, so only the machine varies.
    matrix = np.random.default_rng(0).standard_normal((MATRIX_SIDE, MATRIX_SIDE))
    _workload(matrix)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _workload(matrix)
        times.append((time.perf_counter() - start) * 1e6)
    return float(np.median(times))


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of one /proc/stat line, in jiffies."""

    total: int
    steal: int
    idle: int


def parse_proc_stat(text: str) -> dict[str, CpuTimes]:
    """The `cpu` (all CPUs) and `cpuN` lines of /proc/stat.

    Args:
        text: the file's contents.

    Returns:
        CPU name ("cpu", "cpu0", ...) -> its cumulative times. Columns an old kernel
        lacks (steal came with 2.6.11) count as 0.
    """
    out: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu"):
            continue
        values = [int(v) for v in fields[1 : 1 + len(_COLUMNS)]]
        values += [0] * (len(_COLUMNS) - len(values))
        named = dict(zip(_COLUMNS, values, strict=True))
        out[fields[0]] = CpuTimes(
            total=sum(values), steal=named["steal"], idle=named["idle"] + named["iowait"]
        )
    return out


def read_proc_stat(path: Path = PROC_STAT) -> dict[str, CpuTimes]:
    """parse_proc_stat of the live file (empty where there is none, e.g. not Linux)."""
    try:
        return parse_proc_stat(path.read_text())
    except OSError:
        return {}


def steal_share(
    before: Mapping[str, CpuTimes],
    after: Mapping[str, CpuTimes],
    cpus: Sequence[int] | None = None,
) -> float | None:
    """Share of CPU time stolen between two readings.

    Args:
        before, after: parse_proc_stat results.
        cpus: CPU ids to count (e.g. the server's cores); all CPUs if None.

    Returns:
        Stolen jiffies / all jiffies over the interval, or None if nothing elapsed or a
        CPU is missing from a reading.
    """
    names = ["cpu"] if cpus is None else [f"cpu{c}" for c in cpus]
    if any(name not in before or name not in after for name in names):
        return None
    total = sum(after[n].total - before[n].total for n in names)
    steal = sum(after[n].steal - before[n].steal for n in names)
    return steal / total if total > 0 else None


@dataclass(frozen=True)
class DriftReading:
    """One side of a point: the calibration loop's time and the CPU counters."""

    calibration_us: float
    cpu: dict[str, CpuTimes]
    wall_s: float


def read_drift(repeats: int = DEFAULT_REPEATS) -> DriftReading:
    """Times the calibration loop and reads /proc/stat (call before and after a point)."""
    return DriftReading(calibration_loop_us(repeats), read_proc_stat(), time.time())


def drift_between(
    before: DriftReading, after: DriftReading, cpus: Sequence[int] | None = None
) -> dict:
    """The drift of one point, for its record.

    Args:
        before, after: read_drift results taken around the point.
        cpus: the CPUs whose steal to count (all if None).

    Returns:
        calibration_before_us, calibration_after_us, calibration_change (after / before
        - 1: positive means the machine got slower), steal_share and drift_interval_s.
    """
    change = None
    if before.calibration_us > 0:
        change = after.calibration_us / before.calibration_us - 1.0
    return {
        "calibration_before_us": before.calibration_us,
        "calibration_after_us": after.calibration_us,
        "calibration_change": change,
        "steal_share": steal_share(before.cpu, after.cpu, cpus),
        "drift_interval_s": after.wall_s - before.wall_s,
    }
