"""Machine drift: the /proc/stat parser, steal arithmetic and the calibration loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.drift import (
    CpuTimes,
    DriftReading,
    calibration_loop_us,
    drift_between,
    parse_proc_stat,
    read_drift,
    read_proc_stat,
    steal_share,
)

BEFORE = """cpu  1000 10 500 8000 40 5 5 100 0 0
cpu0 600 5 300 3900 20 3 2 70 0 0
cpu1 400 5 200 4100 20 2 3 30 0 0
intr 123456 0 0
ctxt 987654
btime 1700000000
processes 4242
"""
AFTER = """cpu  1500 10 700 8500 40 5 5 340 7 0
cpu0 900 5 400 4100 20 3 2 270 7 0
cpu1 600 5 300 4400 20 2 3 70 0 0
intr 123999 0 0
"""


def test_parser_reads_the_aggregate_and_per_cpu_lines() -> None:
    stat = parse_proc_stat(BEFORE)
    assert set(stat) == {"cpu", "cpu0", "cpu1"}
    # total = user..steal; guest columns are already inside user and nice.
    assert stat["cpu"] == CpuTimes(total=9660, steal=100, idle=8040)
    assert stat["cpu1"].steal == 30


def test_parser_accepts_old_kernels_without_a_steal_column() -> None:
    stat = parse_proc_stat("cpu 10 0 5 85\n")
    assert stat["cpu"] == CpuTimes(total=100, steal=0, idle=85)


def test_steal_share_over_all_cpus_and_over_some() -> None:
    before, after = parse_proc_stat(BEFORE), parse_proc_stat(AFTER)
    # all: steal +240 of +500 +200 +500 +240 = 1440 jiffies.
    assert steal_share(before, after) == pytest.approx(240 / 1440)
    # cpu0: steal +200 of +300 +100 +200 +200 = 800.
    assert steal_share(before, after, cpus=[0]) == pytest.approx(200 / 800)
    assert steal_share(before, after, cpus=[7]) is None
    assert steal_share(before, before) is None


def test_live_proc_stat_is_read_where_there_is_one(tmp_path: Path) -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat on this system")
    assert "cpu" in read_proc_stat()
    assert read_proc_stat(tmp_path / "missing") == {}


def test_calibration_loop_returns_a_positive_time() -> None:
    assert calibration_loop_us(repeats=2) > 0
    with pytest.raises(ValueError):
        calibration_loop_us(repeats=0)


def test_drift_between_two_readings() -> None:
    before = DriftReading(1000.0, parse_proc_stat(BEFORE), 100.0)
    after = DriftReading(1100.0, parse_proc_stat(AFTER), 112.5)
    drift = drift_between(before, after, cpus=[0])
    assert drift["calibration_change"] == pytest.approx(0.10)
    assert drift["steal_share"] == pytest.approx(0.25)
    assert drift["drift_interval_s"] == 12.5


def test_live_readings_give_a_record() -> None:
    drift = drift_between(read_drift(repeats=1), read_drift(repeats=1))
    assert drift["calibration_before_us"] > 0 and drift["calibration_after_us"] > 0
    assert set(drift) == {
        "calibration_before_us",
        "calibration_after_us",
        "calibration_change",
        "steal_share",
        "drift_interval_s",
    }
