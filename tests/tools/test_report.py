"""Reliability JSON copied into a load-test run becomes sections of its REPORT.md."""

from __future__ import annotations

import json

from reliability import report
from reliability.robustness import skipped_cells, to_json
from tests.loadtests.test_report import saved_run
from tools.report import build as write_report

KILL = {"stack": "flask_torch", "applicable": True, "clients": 4, "requests": 100,
        "failed": 2, "outcomes": {"ok": 98, "reset": 2}, "worker_replaced_s": 0.05,
        "recovery_s": 0.06, "failed_after_recovery": 0, "recovered": True}  # fmt: skip
LOST = {**KILL, "stack": "torchserve", "outcomes": {"ok": 96, "timeout": 4}, "failed": 4,
        "lost": 4, "lost_why": "the batch aggregator held them"}
TERM = {"stack": "torchserve", "signal": "SIGTERM to the process group", "exit_s": 2.5,
        "grace_s": 30.0, "grace_source": "compose", "in_flight": {"http_500": 4},
        "slow_in_flight": {"sent": 2, "ok": 0}, "after_signal": {"refused": 9},
        "in_flight_finished": False, "new_refused_cleanly": True}  # fmt: skip
SOAK = {"stack": "torchserve", "rate": 100.0, "duration_s": 600.0, "requests": 60000,
        "failed": 0, "passed": False, "latency": {"p50_ms": 8.0, "p99_ms": 19.0},
        "memory": {"start_mib": 840.0, "end_mib": 900.0, "slope_mib_per_min": 6.0,
                   "max_slope_mib_per_min": 1.0, "flat": False,
                   "judged_slopes": {"RSS without the JVM": 0.1,
                                     "JVM live heap after full GC": 6.0},
                   "growing": ["JVM live heap after full GC"],
                   "jvm_live_heap": {"after_warmup_mib": 70.0, "end_mib": 124.0}}}  # fmt: skip


def test_report_md_includes_every_reliability_table(tmp_path) -> None:
    run = saved_run(tmp_path)
    folder = run / report.RUN_SUBDIR
    folder.mkdir()
    matrix = to_json(skipped_cells("tf_serving", ["rest"], "no binary"), {"tf_serving": "no"})
    (folder / report.MATRIX_FILE).write_text(json.dumps(matrix))
    (folder / report.FAULTS_FILE).write_text(json.dumps({"kill_worker": [KILL, LOST],
                                                         "sigterm": [TERM]}))
    (folder / report.SOAK_FILE).write_text(json.dumps({"runs": [SOAK], "skipped": {}}))

    text = write_report(run).read_text()

    assert "# Reliability" in text and "## Bad input on every stack" in text
    assert "| flask_torch | 4 | 100 | 2 | ok 98, reset 2 | 0.05 | 0.06 | 0 | yes |" in text
    assert "- torchserve: 4 request(s) never answered (the client timed out): the batch " \
        "aggregator held them" in text
    assert "- flask_torch:" not in text
    assert "| torchserve | SIGTERM to the process group | 2.50 (30, compose) | http_500 4 |" in text
    assert "JVM live heap after full GC 6.00 (1)" in text
    assert "**grows: JVM live heap after full GC**" in text
    assert "JVM live heap after a full GC 70.0 MiB after warm-up, 124.0 MiB at the end" in text


def test_report_md_without_reliability_files_has_no_such_section(tmp_path) -> None:
    assert "# Reliability" not in write_report(saved_run(tmp_path)).read_text()


def test_the_fair_fight_splits_written_into_a_run_become_sections(tmp_path) -> None:
    run = saved_run(tmp_path)
    (run / "FAIR.md").write_text("# The fair fight: out of the box against ours\n\n| a |\n")
    (run / "SIZES.md").write_text("# Model-size sweep\n\n![plot](model_sizes.png)\n")

    text = write_report(run).read_text()

    assert "\n## The fair fight: out of the box against ours\n" in text
    assert "\n## Model-size sweep\n" in text and "![plot](model_sizes.png)" in text
    assert text.index("## The fair fight") < text.index("## Model-size sweep")
