"""The batching-policy sweep: the Pareto front and the picks made from it (pure), its
report, and one real TorchServe under two policies, each read back from the server."""

from __future__ import annotations

import os

import pytest

from digitnet.spec import BatchingPolicy
from loadtests import batching
from loadtests.batching import environment, pareto_front, picks
from loadtests.wrk import wrk_available
from services.process import usable_cores
from services.registry import all_stacks


def point(policy: BatchingPolicy, p50: float, p99: float, capacity: float | None) -> dict:
    return {"stack": "torchserve", "policy": policy.label, "enabled": policy.enabled,
            "max_batch_size": policy.max_batch_size, "max_delay_ms": policy.max_delay_ms,
            "p50_1_ms": p50, "p99_1_ms": p99,
            "capacity_rps": capacity, "capacity_connections": None if capacity is None else 16,
            "levels": [{"p99_ms": p99}, {"p99_ms": 5.0}, {"p99_ms": 9.0}, {"p99_ms": 30.0}],
            "config_read_back": {"batch_size": 1}}  # fmt: skip


def policy(size: int, delay_ms: float) -> BatchingPolicy:
    return BatchingPolicy(max_batch_size=size, max_delay_ms=delay_ms)


OFF = point(BatchingPolicy(enabled=False), 1.5, 3.0, 1500.0)
SMALL = point(policy(4, 1.0), 2.5, 4.0, 2500.0)
WORSE = point(policy(8, 2.0), 3.0, 5.0, 2400.0)  # slower and less capacity than SMALL
BIG = point(policy(16, 10.0), 11.0, 14.0, 4000.0)
NONE = point(policy(16, 5.0), 0.9, 1.0, None)  # fastest, but no level met the objective


def test_the_front_keeps_only_policies_no_other_beats_on_both_axes() -> None:
    front = pareto_front([OFF, SMALL, WORSE, BIG, NONE])
    assert [p["policy"] for p in front] == ["off", "4 x 1 ms", "16 x 10 ms"]


def test_the_picks_for_each_objective_come_from_the_front() -> None:
    chosen = picks([OFF, SMALL, WORSE, BIG, NONE])
    assert chosen["lowest latency at low load"] is OFF
    assert chosen["most capacity under the objective"] is BIG
    assert picks([NONE]) == {"lowest latency at low load": None,
                             "most capacity under the objective": None}  # fmt: skip


def test_the_policy_environment_is_set_inside_the_block_only(monkeypatch) -> None:
    monkeypatch.setenv("DIGITNET_BATCH_SIZE", "3")
    monkeypatch.delenv("DIGITNET_BATCHING", raising=False)
    policy = BatchingPolicy(max_batch_size=16, max_delay_ms=10.0)
    with environment(policy.env()):
        assert BatchingPolicy.from_env() == policy
    assert os.environ["DIGITNET_BATCH_SIZE"] == "3" and "DIGITNET_BATCHING" not in os.environ


def test_the_report_marks_the_front_and_names_the_picks() -> None:
    md = "\n".join(batching.markdown([OFF, SMALL, WORSE, BIG, NONE], {"tf_serving": "no binary"}))
    assert "## torchserve" in md
    # Each policy that is a preset says which (`make ... BATCHING=`).
    assert ("| off (`latency`) | 1.500 | 3.000 | 1500 (16) | 5.0 / 9.0 / 30.0 | ★ "
            "| – / – / – / – | – | batch_size 1 |") in md
    assert "| 8 x 2 ms (`default`) | 3.000 | 5.000 | 2400 (16) | 5.0 / 9.0 / 30.0 |  |" in md
    assert "| 16 x 5 ms (`throughput`) | 0.900 | 1.000 | none meets the objective |" in md
    assert "- lowest latency at low load: **off (`latency`)**" in md
    assert "- most capacity under the objective: **16 x 10 ms**" in md
    assert "- tf_serving: **not run**: no binary" in md


def test_the_report_shows_the_passes_each_level_formed() -> None:
    levels = [{"p99_ms": 3.0, "batch_hist": {"1": 50}, "batch_mean": 1.0},
              {"p99_ms": 5.0, "batch_hist": {"1": 10, "2": 20}, "batch_mean": 50 / 30},
              {"p99_ms": 9.0},
              {"p99_ms": 30.0, "batch_hist": {"4": 5, "8": 20}, "batch_mean": 180 / 25}]
    md = "\n".join(batching.markdown([{**SMALL, "levels": levels}], {}))
    assert "| 5.0 / 9.0 / 30.0 | ★ | 1.0 / 1.7 / – / 7.2 | 4×5, 8×20 | batch_size 1 |" in md
    # A server that counts its batches in rows (TF Serving's metrics) shows its ranges.
    rows = {"p99_ms": 30.0, "batch_rows_hist": {"1": 3, "5-8": 9}, "batch_mean": 6.2}
    md = "\n".join(batching.markdown([{**SMALL, "levels": [*levels[:3], rows]}], {}))
    assert "| 1.0 / 1.7 / – / 6.2 | 1 rows×3, 5-8 rows×9 |" in md


def test_the_sweep_runs_every_stack_that_batches() -> None:
    assert {s.name for s in all_stacks() if s.server_batching} == {
        "torchserve", "ray_serve", "tf_serving"}


@pytest.mark.integration
def test_each_policy_reaches_the_real_server(artifacts, tmp_path) -> None:
    ok, why = wrk_available()
    if not ok:
        pytest.skip(why)
    cores = (usable_cores()[:1], usable_cores()[-1:])
    policies = (BatchingPolicy(enabled=False), BatchingPolicy(max_batch_size=4, max_delay_ms=2.0))
    records = [batching.measure_policy("torchserve", policy, artifacts, cores, 1, 1, tmp_path)
               for policy in policies]  # fmt: skip
    read_back = [r["config_read_back"] for r in records]
    # Off is batchSize 1; its delay is then moot (TorchServe reports its default, 100 ms,
    # for the 0 it was given).
    assert read_back[0]["batch_size"] == 1
    assert (read_back[1]["batch_size"], read_back[1]["max_batch_delay_ms"]) == (4, 2)
    for record in records:
        assert [lv["connections"] for lv in record["levels"]] == list(batching.CONNECTIONS)
        assert all(lv["errors"] == 0 and lv["rps"] > 0 for lv in record["levels"])
    # The passes the handler formed, as its replies named them: off never batches; at 32
    # connections the 4 x 2 ms policy forms passes of more than one and never beyond 4.
    off, batched = (record["levels"] for record in records)
    assert all(set(lv["batch_hist"]) == {"1"} for lv in off)
    assert off[0]["batch_mean"] == 1.0
    top = batched[-1]["batch_hist"]
    assert set(top) <= {"1", "2", "3", "4"} and batched[-1]["batch_mean"] > 1.0
