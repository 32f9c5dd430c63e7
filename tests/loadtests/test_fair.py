"""The fair fight: the gain and the configuration difference (pure), the report's goal
verdicts, and gunicorn's default worker class read back from a real Flask server."""

from __future__ import annotations

import pytest

from loadtests import fair
from loadtests.fair import DEFAULT, OURS, config_difference, gain
from loadtests.wrk import wrk_available
from services.process import usable_cores
from services.registry import all_stacks


def run(stack: str, preset: str, capacity: float | None, config: dict) -> dict:
    env = {"DIGITNET_BATCHING": "off"} if preset == DEFAULT else {}
    return {"stack": stack, "preset": preset, "preset_env": env, "config_read_back": config,
            "p50_1_ms": 1.0, "p99_1_ms": 2.0, "capacity_rps": capacity,
            "capacity_connections": None if capacity is None else 16,
            "levels": [{"p99_ms": 2.0}, {"p99_ms": 4.0}, {"p99_ms": 9.0}, {"p99_ms": 40.0}]}


def test_gain_is_ours_over_the_default_and_none_without_both_capacities() -> None:
    assert gain({"capacity_rps": 3000.0}, {"capacity_rps": 1500.0}) == 2.0
    assert gain({"capacity_rps": 3000.0}, {"capacity_rps": None}) is None


def test_a_default_that_meets_the_objective_nowhere_bounds_the_gain_from_below() -> None:
    ours = {"capacity_rps": 1641.0}
    nowhere = {"capacity_rps": None, "levels": [{"connections": 1, "rps": 73.0}]}
    assert fair.gain_at_least(ours, nowhere) == pytest.approx(1641.0 / 73.0)
    assert fair.gain_at_least(ours, {"capacity_rps": 800.0,
                                     "levels": [{"connections": 1, "rps": 73.0}]}) is None
    assert fair.gain_at_least({"capacity_rps": None}, nowhere) is None
    records = [run("ray_serve", DEFAULT, None, {"ingress": "serve proxy"}),
               run("ray_serve", OURS, 1641.0, {"ingress": "haproxy"})]
    records[0]["levels"][0].update(connections=1, rps=73.0)
    md = "\n".join(fair.markdown(records, {}, {}))
    assert "| 4.0 / 9.0 / 40.0 | > 22.5× |" in md
    assert "Goal met (more than 22.5×: the default met the objective at no level" in md


def test_the_difference_lists_only_keys_whose_values_differ() -> None:
    ours = {"batch_size": 8, "max_batch_delay_ms": 5, "workers": 1}
    default = {"batch_size": 1, "max_batch_delay_ms": 100, "workers": 1}
    assert config_difference(ours, default) == {"batch_size": (1, 8),
                                                "max_batch_delay_ms": (100, 5)}  # fmt: skip


def test_the_report_judges_each_stack_against_the_goal() -> None:
    records = [run("torchserve", DEFAULT, 1000.0, {"batch_size": 1}),
               run("torchserve", OURS, 2000.0, {"batch_size": 8}),
               run("flask_torch", DEFAULT, 1800.0, {"worker_class": "sync"}),
               run("flask_torch", OURS, 1900.0, {"worker_class": "gevent"})]  # fmt: skip
    md = "\n".join(fair.markdown(records, {"tf_serving": "no binary"}, {"x": "same"}))
    assert ("| torchserve | ours | 1.000 | 2.000 | 2000 (16) | 4.0 / 9.0 / 40.0 | 2.00× "
            "| – / – / – / – | – |") in md
    assert ("- torchserve: default = ours with `DIGITNET_BATCHING=off`; read back: "
            "batch_size: 1 → 8. Goal met (2.00×).") in md
    assert "worker_class: sync → gevent. Goal **not met** (1.06×): a worker per core" in md
    assert "- x: one configuration only: same" in md
    assert "- tf_serving: **not run**: no binary" in md


def test_every_stack_declares_its_out_of_the_box_preset_or_why_not() -> None:
    for stack in all_stacks():
        assert stack.default_preset or stack.default_preset_why, stack.name


@pytest.mark.integration
def test_the_default_preset_reaches_the_real_server(artifacts, tmp_path) -> None:
    ok, why = wrk_available()
    if not ok:
        pytest.skip(why)
    cores = (usable_cores()[:1], usable_cores()[-1:])
    got = {preset: fair.measure_preset("flask_torch", preset, artifacts, cores, 1, 1, tmp_path)
           for preset in (DEFAULT, OURS)}  # fmt: skip
    assert got[DEFAULT]["config_read_back"]["worker_class"] == "sync"
    assert got[OURS]["config_read_back"]["worker_class"] == "gevent"
    for record in got.values():
        assert all(lv["errors"] == 0 and lv["rps"] > 0 for lv in record["levels"])
        # Flask answers one request per forward pass, whatever the worker class.
        assert all(lv["batch_hist"] == {"1": lv["batch_hist"]["1"]} for lv in record["levels"])
        assert all(lv["batch_mean"] == 1.0 for lv in record["levels"])
