"""A stack whose start never gets ready (Ray Serve's node start timed out once in 18
starts here) is skipped by each split with its reason, and the split goes on: nothing of
the run is lost to it. The start is made to fail; nothing else is stood in for."""

from __future__ import annotations

import json

import pytest

from harness.lifecycle import did_not_start
from loadtests import batching, codecs_served, fair, sizes

WHY = "flask_torch: not ready in time"


def failing_start(*_args, **_kwargs):
    raise TimeoutError(f"{WHY}\n(the server's log tail)")


def test_the_reason_is_the_errors_first_line_and_the_configuration() -> None:
    assert did_not_start(RuntimeError(f"{WHY}\nlog")) == f"did not start: {WHY}"
    assert did_not_start(OSError(), "the 'latency' batching preset") == (
        "did not start under the 'latency' batching preset: OSError")


@pytest.mark.parametrize("split", [fair, batching, codecs_served],
                         ids=["fair", "batching", "codecs"])  # fmt: skip
def test_a_split_skips_the_stack_that_does_not_start_and_says_why(
        split, artifacts, tmp_path, monkeypatch) -> None:  # fmt: skip
    monkeypatch.setattr(split, "start_stack", failing_start)
    stack = "torchserve" if split is batching else "flask_torch"
    assert split.run(artifacts, tmp_path, [stack], 1, 1) == []
    report = next(tmp_path.glob("*.md")).read_text()
    assert f"- {stack}: **not run**: did not start" in report
    assert WHY in report and "log tail" not in report


def test_the_size_sweep_keeps_a_skipped_record_for_the_stack_that_does_not_start(
        artifacts, tmp_path, monkeypatch) -> None:  # fmt: skip
    monkeypatch.setattr(sizes, "start_stack", failing_start)
    record = sizes.measure_stack("flask_torch", sizes.VARIANTS[0], artifacts, {}, None,
                                 ([0], [1]), 1, 1, tmp_path)  # fmt: skip
    assert record["skipped"] == f"did not start: {WHY}"
    assert json.loads(json.dumps(record))["stack"] == "flask_torch"
