"""Codecs served: the report rows (pure), and a real Flask server answering wrk's binary
and JSON bodies on the same process (structure only, never a timing)."""

from __future__ import annotations

import pytest

from loadtests import codecs_served
from loadtests.wrk import wrk_available
from services.process import usable_cores


def record(codec: str, capacity: float | None) -> dict:
    return {"stack": "flask_torch", "codec": codec, "p50_1_ms": 0.5, "p99_1_ms": 0.9,
            "capacity_rps": capacity, "capacity_connections": None if capacity is None else 4,
            "levels": [{"rps": 1500.0}, {"rps": 1600.0}, {"rps": 1650.0}]}  # fmt: skip


def test_the_report_has_a_row_per_stack_and_codec() -> None:
    md = "\n".join(codecs_served.markdown([record("json", 1600.0), record("binary", None)],
                                          {"tf_serving": "accepts json only"}))  # fmt: skip
    assert "| flask_torch | json | 0.500 | 0.900 | 1600 (4) | 1500 / 1600 / 1650 |" in md
    assert "| flask_torch | binary | 0.500 | 0.900 | none meets the objective |" in md
    assert "- tf_serving: **not run**: accepts json only" in md


@pytest.mark.integration
def test_every_codec_of_a_real_server_answers_wrk_without_errors(artifacts, tmp_path) -> None:
    ok, why = wrk_available()
    if not ok:
        pytest.skip(why)
    cores = (usable_cores()[:1], usable_cores()[-1:])
    records = codecs_served.measure_stack("flask_torch", artifacts, cores, 1, 1, tmp_path)
    assert [r["codec"] for r in records] == ["json", "binary"]
    for r in records:
        assert [lv["connections"] for lv in r["levels"]] == list(codecs_served.CONNECTIONS)
        assert all(lv["errors"] == 0 and lv["rps"] > 0 for lv in r["levels"]), r
