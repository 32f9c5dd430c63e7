"""Our own code in process (loadtests.own_code): its arithmetic and report section, and the
probe of a real flask_torch app and a real TorchServe handler in a pinned child process
(structure only, never a timing)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from loadtests import own_code
from loadtests.own_code import BACK_TO_BACK, IDLE_GAP, MODEL, OUR_PIECES
from services.process import usable_cores
from services.registry import load_stack, stack_names


def record(stack: str = "flask_torch", **changes) -> dict:
    flow = {"predict_us": 280.0, "noop_us": 50.0,
            "stages_us": {"decode": 31.0, "queue": 10.0, "convert": 6.0, "model": 94.0,
                          "encode": 14.0, "app": 262.0}}  # fmt: skip
    return {"stack": stack, "device": "cpu", "skipped": None, "made": "made here",
            "alone_us": {"decode": 13.0, "gate": 4.0, "convert": 3.0, "encode": 3.0,
                         MODEL: 50.0},
            "flow": {BACK_TO_BACK: flow,
                     IDLE_GAP: {**flow, "predict_us": 330.0, "noop_us": 100.0, "gap_us": 180.0}},
            "idle_gap_asked_ms": 0.1, "iterations": 100, **changes}  # fmt: skip


def test_our_share_alone_is_the_sum_of_our_pieces_without_the_model() -> None:
    assert own_code.ours_alone_us(record()) == pytest.approx(13.0 + 4.0 + 3.0 + 3.0)


def test_our_share_in_the_flow_is_predict_less_twin_less_the_model_alone() -> None:
    assert own_code.ours_in_flow_us(record(), BACK_TO_BACK) == pytest.approx(280 - 50 - 50)
    assert own_code.ours_in_flow_us(record(), IDLE_GAP) == pytest.approx(330 - 100 - 50)


def test_the_section_holds_each_stack_its_served_share_and_the_goal() -> None:
    floors = [{"stack": "flask_torch", "our_code_ms": 0.385},
              {"stack": "torchserve", "our_code_ms": 0.9},
              {"stack": "torchserve", "preset": "latency", "our_code_ms": 0.46}]  # fmt: skip
    skipped = {"stack": "flask_tf", "device": "cpu", "skipped": "probe failed: no TF"}
    text = "\n".join(own_code.markdown([record(), record("torchserve"), skipped], floors))
    row = next(line for line in text.splitlines() if line.startswith("| flask_torch |"))
    # A batching stack's served share from its row with batching off, as the probe runs.
    served = next(line for line in text.splitlines() if line.startswith("| torchserve |"))
    assert served.endswith("| 460 |")
    # Alone 23 us; back to back 180, after the gap 180; served from its only floor row.
    assert "| 23 (decode 13.0, gate 4.0, convert 3.0, encode 3.0) | 50 |" in row
    assert "280 / 50 / **180**" in row and "330 / 100 / **180**" in row
    assert row.endswith("| 385 |")
    assert "alone 23.0 µs, met; back to back 180.0 µs, not met" in text
    assert "served 385.0 µs, not met" in text
    assert "decode 13 → 31 → 31" in text and "queue 4 → 10 → 10" in text
    assert "flask_tf: **not measured**: probe failed: no TF" in text
    assert "Measured by made here" in text
    assert "(0.18 ms, the shortest sleep gives here)" in text


def test_a_stack_without_a_gate_lists_the_pieces_it_has() -> None:
    alone = {"decode": 20.0, "convert": 8.0, "encode": 5.0, MODEL: 70.0}
    got = record("torchserve", alone_us=alone)
    assert own_code.ours_alone_us(got) == pytest.approx(33.0)
    row = next(line for line in own_code.markdown([got]) if line.startswith("| torchserve |"))
    assert "| 33 (decode 20.0, convert 8.0, encode 5.0) | 70 |" in row


def test_without_records_there_is_no_section() -> None:
    assert own_code.markdown([], [{"stack": "flask_torch", "our_code_ms": 0.3}]) == []


def test_only_stacks_with_a_probe_and_a_twin_are_called_in_process() -> None:
    stacks = [load_stack(name) for name in stack_names()]
    assert {s.name for s in own_code.in_process_stacks(stacks)} == {"flask_tf", "flask_torch",
                                                                      "torchserve"}


def test_a_probe_that_fails_is_skipped_with_its_exceptions_line(artifacts, monkeypatch) -> None:
    # A stack the child cannot find: its KeyError's line, not the whole traceback.
    stack = load_stack("flask_torch")
    monkeypatch.setattr(stack, "name", "no_such_stack")
    got = own_code.measure(stack, artifacts, usable_cores()[:1])
    assert got["skipped"].startswith("probe failed: KeyError:"), got["skipped"]
    assert "no_such_stack" in got["skipped"] and "\n" not in got["skipped"]


def test_a_probe_that_does_not_finish_in_time_is_skipped(artifacts, monkeypatch) -> None:
    monkeypatch.setattr(own_code, "PROBE_TIMEOUT_S", 0.05)
    got = own_code.measure(load_stack("flask_torch"), artifacts, usable_cores()[:1])
    assert got["skipped"] == "probe did not finish within 0.05 s"


def test_a_stack_without_its_model_file_is_skipped_with_the_reason(artifacts, tmp_path) -> None:
    empty = dataclasses.replace(artifacts, root=tmp_path)
    got = own_code.measure(load_stack("flask_torch"), empty, usable_cores()[:1])
    assert "missing" in got["skipped"] and "make artifacts" in got["skipped"]


@pytest.mark.integration
@pytest.mark.parametrize(("stack", "pieces"), [
    ("flask_torch", {*OUR_PIECES, MODEL}),
    # No admission gate in our handler: TorchServe's frontend queues.
    ("torchserve", {"decode", "convert", "encode", MODEL}),
])  # fmt: skip
def test_the_probe_measures_real_own_code_in_a_pinned_child(artifacts, stack, pieces) -> None:
    got = own_code.measure(load_stack(stack), artifacts, usable_cores()[:1], "here",
                           iterations=40)  # fmt: skip
    assert got["skipped"] is None, got["skipped"]
    assert set(got["alone_us"]) == pieces
    assert all(us > 0 for us in got["alone_us"].values())
    assert got["idle_gap_asked_ms"] == pytest.approx(own_code.IDLE_GAP_S * 1000.0)
    for mode in (BACK_TO_BACK, IDLE_GAP):
        flow = got["flow"][mode]
        assert flow["predict_us"] > 0 and flow["noop_us"] > 0
        # The gap as it lasted: none back to back, at least the one asked after a gap.
        assert (flow["gap_us"] == 0) == (mode == BACK_TO_BACK)
        assert mode == BACK_TO_BACK or flow["gap_us"] >= own_code.IDLE_GAP_S * 1e6
        # The stages come from the predict replies' own Server-Timing header.
        assert {"decode", "convert", "model", "encode", "app"} <= set(flow["stages_us"])


@pytest.mark.integration
def test_into_a_run_it_replaces_the_runs_file_and_reads_its_floors(artifacts, tmp_path,
                                                                    capsys) -> None:
    (tmp_path / "framework_floor.jsonl").write_text(
        '{"stack": "flask_torch", "our_code_ms": 0.4321}\n')
    (tmp_path / own_code.OWN_CODE_FILE).write_text('{"stack": "stale"}\n')
    assert own_code.main(["--stacks", "flask_torch", "--artifacts", str(artifacts.root),
                          "--iterations", "20", "--into-run", str(tmp_path)]) == 0
    (got,) = [json.loads(line) for line in
              (tmp_path / own_code.OWN_CODE_FILE).read_text().splitlines()]  # fmt: skip
    assert got["stack"] == "flask_torch" and got["skipped"] is None, got["skipped"]
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| flask_torch |"))  # fmt: skip
    assert row.endswith("| 432 |")
