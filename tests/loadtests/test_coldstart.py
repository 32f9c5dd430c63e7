"""Cold start: the arithmetic of its summary, and one real stack started from nothing,
with and without its warm-up (no timing is asserted: only that each was measured)."""

from __future__ import annotations

import json

import pytest

from loadtests import coldstart
from services.process import usable_cores
from services.registry import load_stack


def record(stack: str, warmup: bool, ready_s: float, first_ms: float) -> dict:
    return {"stack": stack, "repeat": 0, "warmup": warmup, "ready_s": ready_s,
            "stop_s": 0.1, "rss_mb_at_ready": 100.0, "first_ms": first_ms,
            "second_ms": 1.0, "warm_ms": 0.5, "problems": []}  # fmt: skip


def test_the_summary_gives_median_and_range_per_stack_and_warmup_mode():
    records = [record("a", True, s, f) for s, f in ((1.0, 9.0), (3.0, 7.0), (2.0, 8.0))]
    records.append(record("a", False, 0.5, 40.0))
    rows = {(r["stack"], r["warmup"]): r for r in coldstart.summarize(records)}
    on = rows[("a", True)]
    assert on["repeats"] == 3
    assert on["ready_s"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert on["first_ms"] == {"median": 8.0, "min": 7.0, "max": 9.0}
    assert rows[("a", False)]["first_ms"]["median"] == 40.0


def test_a_start_that_never_gets_ready_is_kept_and_the_others_go_on(artifacts, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    starts = []

    def measure_once(stack, paths, run_dir, cores, warmup, repeat):
        starts.append((repeat, warmup))
        if repeat == 0 and warmup:
            raise RuntimeError("ray_serve: Exception: The current node timed out during "
                               "startup.\n(the server's log tail)")  # fmt: skip
        return {**record(stack.name, warmup, 2.0, 9.0), "repeat": repeat, "start_error": None}

    monkeypatch.setattr(coldstart, "measure_once", measure_once)
    records, _ = coldstart.measure(["flask_torch"], artifacts, tmp_path, cores=[0], repeats=2)
    assert starts == [(0, True), (0, False), (1, True), (1, False)]
    failed = records[0]
    assert failed["start_error"] == ("ray_serve: Exception: The current node timed out "
                                     "during startup.")  # fmt: skip
    assert failed["ready_s"] is None and failed["first_ms"] is None
    written = (tmp_path / coldstart.COLDSTART_FILE).read_text().splitlines()
    assert [json.loads(line) for line in written] == records
    # The medians are the other starts'; the table says how many never got ready, and why.
    on = next(r for r in coldstart.summarize(records) if r["warmup"])
    assert (on["repeats"], on["failed_starts"]) == (2, 1)
    assert on["ready_s"] == {"median": 2.0, "min": 2.0, "max": 2.0}
    md = "\n".join(coldstart.markdown(records))
    assert "flask_torch, warm-up on: **1 of 2 starts never got ready**" in md
    assert "warm-up off: **" not in md


def test_the_table_says_how_fine_its_time_to_ready_is():
    both = [record("flask_torch", True, 2.0, 9.0), record("flask_torch", False, 2.0, 40.0)]
    asked = [{**r, "ready_poll_s": 0.02} for r in both]
    assert "Readiness was asked every 20 ms" in "\n".join(coldstart.markdown(asked))
    # Records from before the interval was recorded were asked at each stack's own.
    older = "\n".join(coldstart.markdown(both))
    assert "each stack's own interval (0.1–0.25 s)" in older


def test_stacks_without_a_warmup_switch_run_once_and_say_why():
    tf_serving = load_stack("tf_serving")
    assert coldstart.warmup_modes(tf_serving) == [True]
    assert coldstart.warmup_modes(load_stack("torchserve")) == [True, False]
    md = "\n".join(coldstart.markdown([record("tf_serving", True, 2.0, 5.0)]))
    assert "| tf_serving | on | 1 | 2.00 (2.00–2.00)" in md
    assert tf_serving.warmup_fixed_why in md


@pytest.mark.integration
def test_one_real_stack_is_started_from_nothing_with_and_without_warmup(artifacts, tmp_path):
    before = usable_cores()
    # The server on the first core, this process (its waits and first requests) on the last.
    records, skipped = coldstart.measure(["flask_torch"], artifacts, tmp_path,
                                         cores=before[:1], repeats=1,
                                         client_cores=before[-1:])  # fmt: skip
    assert usable_cores() == before
    assert skipped == {}
    assert [(r["stack"], r["warmup"]) for r in records] == [("flask_torch", True),
                                                           ("flask_torch", False)]  # fmt: skip
    for r in records:
        assert r["problems"] == [], r
        assert r["ready_s"] > 0 and r["first_ms"] > 0 and r["warm_ms"] > 0
        assert r["ready_poll_s"] == coldstart.READY_POLL_S
        assert r["rss_mb_at_ready"] > 10
    written = (tmp_path / coldstart.COLDSTART_FILE).read_text().splitlines()
    assert [json.loads(line) for line in written] == records
