"""The device read-back's verdicts: a point runs only where its server computes on the
device it was asked for (the real servers' replies are checked in test_cluster.py and in
each stack's own tests)."""

from __future__ import annotations

import pytest

from loadtests.devices import UNREPORTED, DeviceMismatch, check, device_kind


def test_a_server_on_the_asked_device_is_recorded_as_it_says():
    assert check("s/rest/cpu", "cpu", "cpu", reports_device=True) == "cpu"
    assert check("s/rest/cuda", "cuda", "cuda:1", reports_device=True) == "cuda:1"


def test_a_cuda_point_on_a_server_that_fell_back_to_the_cpu_is_refused():
    with pytest.raises(DeviceMismatch, match="fell back to the CPU") as err:
        check("torchserve/rest/cuda", "cuda", "cpu", reports_device=True)
    assert "torchserve/rest/cuda" in str(err.value)


def test_a_cpu_point_on_a_gpu_is_refused():
    with pytest.raises(DeviceMismatch, match="must not use a GPU"):
        check("s/rest/cpu", "cpu", "cuda:0", reports_device=True)


def test_an_unknown_device_name_is_refused_not_guessed():
    with pytest.raises(DeviceMismatch, match="'mps'"):
        check("s/rest/cpu", "cpu", "mps", reports_device=True)


def test_a_missing_header_from_a_stack_that_promises_it_is_refused():
    with pytest.raises(DeviceMismatch, match="names no device"):
        check("s/rest/cuda", "cuda", None, reports_device=True)


def test_a_stack_that_cannot_say_is_recorded_as_unreported():
    assert check("tf_serving/grpc/cpu", "cpu", None, reports_device=False) == UNREPORTED


def test_device_kinds():
    assert device_kind("cuda:3") == "cuda" and device_kind("CPU") == "cpu"
