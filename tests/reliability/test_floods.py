"""Floods: the verdicts on synthetic figures, padded bodies, and a short flood of every
kind on a real flask_torch."""

from __future__ import annotations

import copy
import json
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest

from digitnet.artifacts import ArtifactPaths
from harness.lifecycle import start_stack
from harness.payload import PayloadSet
from reliability.client import OK, http_kind
from reliability.floods import (
    FD_SLACK,
    RSS_PLATEAU_MIB,
    PaddedPayloads,
    flood_verdicts,
    floods,
)
from reliability.overload import MIB, OVERLOAD_ENV, split_cores
from reliability.report import floods_markdown
from reliability.settings import FloodSettings
from services.process import pinned, usable_cores

SETTINGS = FloodSettings(big_clients=4, max_p99_ratio=2.0)


def phase(p99_ms: float, failed: int = 0, fds: int = 20, rss: float = 300.0,
          fds_after: int = 20, lost: list[int] | None = None) -> dict:
    return {"normal": {"requests": 100, "failed": failed, "outcomes": {OK: 100 - failed},
                       "p50_ms": p99_ms / 2, "p99_ms": p99_ms, "max_ms": p99_ms},
            "usage": {"server_fds": fds, "server_rss_mib": rss},
            "rss_halves_mib": [rss, rss], "fds_after_close": fds_after,
            "workers_lost": lost or []}


def figures() -> dict:
    big = phase(40.0, rss=364.0)  # 64 MiB over baseline: 4 senders x 4 MiB x 4 copies
    big.update(max_body_bytes=4 * MIB, outcomes={OK: 50, http_kind(503): 10},
               over_limit_outcomes={http_kind(413): 5})
    return {"baseline": phase(2.0), "idle": phase(3.0, fds=1020),
            "slow": phase(3.9, fds=220), "big": big}


HELD = {"idle": 1000, "slow": 200}


def test_a_flood_within_the_bounds_passes_every_check() -> None:
    verdicts = flood_verdicts(figures(), SETTINGS, HELD)
    assert verdicts["idle"] == {"p99_ratio": 1.5, "normal_ok": True,
                                "fds_bound": 20 + 1000 + FD_SLACK, "fds_ok": True,
                                "workers_ok": True}
    assert verdicts["slow"]["p99_ratio"] == pytest.approx(1.95) and verdicts["slow"]["normal_ok"]
    assert verdicts["big"] == {"clean": True, "unclean": {},
                               "rss_plateau_mib": pytest.approx(364.0 * 1.05), "rss_ok": True,
                               "copies_per_sender": 4.0, "workers_ok": True}


def test_slow_requests_in_flight_may_hold_the_fds_of_every_hop() -> None:
    # Behind a proxy each slow request holds three fds (client, proxy -> upstream, the
    # upstream's accepted socket): 200 slow clients then open 600, not a leak; idle
    # connections, their one request answered, stay at one each.
    behind_proxy = copy.deepcopy(figures())
    behind_proxy["slow"]["usage"]["server_fds"] = 20 + 3 * 200 + FD_SLACK
    assert not flood_verdicts(behind_proxy, SETTINGS, HELD)["slow"]["fds_ok"]
    verdicts = flood_verdicts(behind_proxy, SETTINGS, HELD, fds_per_request=3)
    assert verdicts["slow"]["fds_ok"] and verdicts["slow"]["fds_bound"] == 20 + 600 + FD_SLACK
    assert verdicts["idle"]["fds_bound"] == 20 + 1000 + FD_SLACK
    behind_proxy["slow"]["usage"]["server_fds"] += 1
    assert not flood_verdicts(behind_proxy, SETTINGS, HELD, fds_per_request=3)["slow"]["fds_ok"]


@pytest.mark.parametrize("spoil, phase_name, check", [
    (lambda f: f["idle"]["normal"].update(p99_ms=4.1), "idle", "normal_ok"),  # 2.05x
    (lambda f: f["slow"]["normal"].update(failed=1), "slow", "normal_ok"),
    (lambda f: f["idle"]["usage"].update(server_fds=20 + 1000 + FD_SLACK + 1), "idle", "fds_ok"),
    (lambda f: f["slow"].update(fds_after_close=20 + FD_SLACK + 1), "slow", "fds_ok"),
    (lambda f: f["slow"].update(workers_lost=[1234]), "slow", "workers_ok"),
    (lambda f: f["big"]["outcomes"].update(timeout=1), "big", "clean"),
    (lambda f: f["big"]["over_limit_outcomes"].update(reset=1), "big", "clean"),
    (lambda f: f["big"]["outcomes"].update({http_kind(413): 1}), "big", "clean"),
    (lambda f: f["big"].update(rss_halves_mib=[100.0, 100.0 + RSS_PLATEAU_MIB + 0.5]), "big",
     "rss_ok"),
])  # fmt: skip
def test_each_check_fails_on_its_own_breach(spoil, phase_name, check) -> None:
    spoiled = copy.deepcopy(figures())
    spoil(spoiled)
    verdicts = flood_verdicts(spoiled, SETTINGS, HELD)
    assert verdicts[phase_name][check] is False
    others = [(name, key) for name, verdict in verdicts.items() for key, value in verdict.items()
              if (key.endswith("_ok") or key == "clean") and value is False]
    assert others == [(phase_name, check)]


def test_padded_bodies_are_the_same_request_at_the_exact_size(artifacts: ArtifactPaths) -> None:
    plain = PayloadSet(artifacts.spec, 64, artifacts.reference_predictions)
    padded = PaddedPayloads(PayloadSet(artifacts.spec, 64, artifacts.reference_predictions),
                            4 * MIB + 1)
    for _ in range(3):
        want, got = plain.next(), padded.next()
        assert len(got.body) == 4 * MIB + 1
        assert orjson.loads(got.body) == orjson.loads(want.body)
        assert (got.expected_classes == want.expected_classes).all()


# Small and short, but every kind of flood on a real server, with admission on as
# `make floods` runs it.
SMOKE = FloodSettings(idle_connections=100, slow_clients=20, byte_interval_s=0.25,
                      big_clients=4, duration_s=1.5, normal_clients=2, request_timeout_s=5.0)


@pytest.mark.integration
def test_short_floods_on_flask_torch(artifacts: ArtifactPaths, tmp_path: Path) -> None:
    server_cores, generator_cores = split_cores(usable_cores())
    shared = server_cores == generator_cores
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path / "run", exits,
                              cores=None if shared else server_cores, env=OVERLOAD_ENV)
        with pinned(generator_cores):
            result = floods(running, SMOKE, progress=lambda line: None)
        assert running.ready(10.0), "the stack did not survive the floods"
    phases = result["phases"]
    assert phases["idle"]["open_at_start"] == 100 and phases["idle"]["first_answers"] == {
        http_kind(200): 100}
    assert phases["slow"]["open_at_start"] == 20 and phases["slow"]["answered_early"] == {}
    for name in ("baseline", "idle", "slow"):
        assert phases[name]["normal"]["failed"] == 0, (name, phases[name]["normal"])
    for name in ("idle", "slow"):
        assert phases[name]["usage"]["server_fds"] >= phases["baseline"]["usage"]["server_fds"]
    big = phases["big"]
    # Right answers or 503 refusals; over the limit only 413: never a timeout or a reset.
    assert set(big["outcomes"]) <= {OK, http_kind(503)} and big["outcomes"].get(OK), big
    assert set(big["over_limit_outcomes"]) == {http_kind(413)}, big["over_limit_outcomes"]
    assert set(big["normal"]["outcomes"]) <= {OK, http_kind(503)}, big["normal"]
    assert all(not p["workers_lost"] for p in phases.values())
    json.dumps(result)
    assert "| flask_torch | slow |" in "\n".join(floods_markdown({"runs": [result]}))
