"""Fault injection under load: a worker killed mid-run, and SIGTERM to a busy server.

kill_worker: SIGKILL one worker process (a gunicorn worker, a TorchServe Python worker)
    while closed-loop clients keep sending; the service must replace it by itself. The
    result counts every failed request and says how long recovery took.
sigterm: SIGTERM the server the way its container runtime would while requests are in
    flight; requests already accepted must finish, new ones must be refused cleanly, and
    the process must exit within its grace period.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import psutil

from digitnet.artifacts import ArtifactPaths
from harness.lifecycle import RunningStack, resolve, start_stack
from harness.payload import check_prediction
from reliability.client import OK, REFUSED, TIMEOUT, TricklingPost, endpoint_of, http_kind
from reliability.load import ClosedLoop, latency_ms, outcome_counts
from reliability.settings import FaultSettings
from services.process import alive
from services.stack import ServingStack

# After SIGTERM, how long clients keep knocking once the server is gone (to see refusals).
AFTER_EXIT_S = 1.0


def _keep_load_after_last_failure(loop, whole_at: float, settings: FaultSettings) -> None:
    """Keeps the load up until, after both the recovery and the last failed request,
    `tail_s` have passed, every client has had a request answered correctly, and no
    request from before that point is still waiting: a request the dead worker held can
    fail late (TorchServe answers 507 when it notices), and the figures after recovery
    must cover a full tail."""
    deadline = whole_at + settings.recovery_timeout_s
    while time.monotonic() < deadline:
        samples = loop.recorder.snapshot()
        since = max([whole_at, *(s.end_s for s in samples if not s.ok)])
        fresh_ok = sum(1 for s in samples if s.ok and s.start_s >= since)
        oldest = loop.oldest_in_flight()
        if (
            time.monotonic() - since >= settings.tail_s
            and fresh_ok >= settings.clients
            and (oldest is None or oldest >= since)
        ):
            return
        time.sleep(0.1)


def kill_worker(running: RunningStack, settings: FaultSettings) -> dict:
    """SIGKILLs one worker of `running` under closed-loop load; returns the figures.

    Recovery time: from the kill until both the worker set is whole again and the stack
    is ready, and no request failed after that (the later of the two is reported).
    `lost` counts the requests never answered (their client timed out): a stack that can
    lose some says why in `lost_on_worker_death`, and only ones sent before the worker set
    was whole again may be lost (`lost_sent_after_recovery` must stay 0).
    """
    stack = running.stack

    def finder() -> list[psutil.Process]:
        return stack.workers(running.server)

    before = finder()
    if not before:
        return {"stack": running.name, "applicable": False,
                "why": stack.workers_not_applicable}
    payloads = running.payloads()
    loop = ClosedLoop(endpoint_of(running), payloads, settings.clients, settings.request_timeout_s)
    with loop:
        time.sleep(settings.lead_s)
        victim = before[0]
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        replaced = _wait_for(
            lambda: _replaced(finder(), before, victim),
            settings.recovery_timeout_s,
        )
        ready = running.ready(settings.recovery_timeout_s)
        whole_at = time.monotonic()
        _keep_load_after_last_failure(loop, whole_at, settings)
    samples = loop.recorder.snapshot()
    failed = [s for s in samples if not s.ok]
    last_failure = max((s.end_s for s in failed), default=None)
    recovered_at = max(whole_at, last_failure or whole_at)
    tail = [s for s in samples if s.start_s >= recovered_at]
    # Never answered: the client gave up after its own timeout (see lost_on_worker_death).
    lost = [s for s in failed if s.kind == TIMEOUT]
    good_after = check_prediction(running.rest, payloads)
    return {
        "stack": running.name,
        "applicable": True,
        "victim_pid": victim.pid,
        "workers_before": len(before),
        "workers_after": len(finder()),
        "clients": settings.clients,
        "requests": len(samples),
        "outcomes": outcome_counts(samples),
        "failed": len(failed),
        "failed_before_kill": sum(1 for s in failed if s.end_s < killed_at),
        "lost": len(lost),
        "lost_sent_after_recovery": sum(1 for s in lost if s.start_s >= whole_at),
        "lost_why": stack.lost_on_worker_death if lost else "",
        "worker_replaced": replaced is not None,
        "worker_replaced_s": replaced,
        "ready_again": ready,
        "last_failure_s": None if last_failure is None else last_failure - killed_at,
        "recovery_s": recovered_at - killed_at,
        "requests_after_recovery": len(tail),
        "failed_after_recovery": sum(1 for s in tail if not s.ok),
        "correct_after": good_after is None,
        "latency_after_recovery": latency_ms(tail),
        "recovered": bool(replaced is not None and ready and good_after is None
                          and all(s.ok for s in tail)),
        "errors": sorted({s.error for s in failed})[:5],
    }  # fmt: skip


def _replaced(now: list[psutil.Process], before: list[psutil.Process],
              victim: psutil.Process) -> bool:
    pids = {p.pid for p in now}
    return victim.pid not in pids and len(now) >= len(before)


def _wait_for(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05
              ) -> float | None:
    """Seconds until `check` passed, or None if it never did within `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if check():
                return time.monotonic() - started
        except psutil.Error:
            pass
        time.sleep(interval_s)
    return None


def _all_gone(watched: list[psutil.Process]) -> bool:
    return not any(alive(p) for p in watched)


def sigterm(stack: ServingStack | str, paths: ArtifactPaths, run_dir: Path,
            settings: FaultSettings) -> dict:
    """Starts a fresh `stack`, loads it, SIGTERMs it mid-load; returns the figures."""
    stack = resolve(stack)
    name = stack.name
    plan = stack.signal_plan()
    with ExitStack() as exits:
        running = start_stack(stack, paths, run_dir, exits)
        server = running.server
        root = psutil.Process(server.pid)
        watched = [root, *root.children(recursive=True)]
        endpoint = endpoint_of(running)
        payloads = running.payloads()
        # A fresh connection per request: then every failure is either a clean refusal
        # (nothing listens) or a request the server took and dropped.
        loop = ClosedLoop(endpoint, payloads, settings.clients, settings.request_timeout_s,
                          fresh_connections=True)
        loop.start()
        time.sleep(settings.lead_s)
        slow = []
        for _ in range(settings.inflight_requests):
            body = payloads.next().body
            chunks = 10
            slow.append(TricklingPost(endpoint, body, -(-len(body) // chunks),
                                      settings.inflight_body_s / chunks,
                                      settings.request_timeout_s + settings.inflight_body_s))
        for request in slow:
            request.start()
        for request in slow:
            request.connected.wait(settings.request_timeout_s)
        time.sleep(settings.inflight_body_s / 3)
        term_at = time.monotonic()
        if plan.process_group:
            os.killpg(server.pid, signal.SIGTERM)
        else:
            os.kill(server.pid, signal.SIGTERM)
        exit_s = _wait_for(lambda: _all_gone(watched),
                           plan.grace_s + 15.0, interval_s=0.05)
        time.sleep(AFTER_EXIT_S)
        samples = loop.stop()
        for request in slow:
            request.join(settings.request_timeout_s + settings.inflight_body_s)
        if server.popen is not None and exit_s is not None:
            server.popen.wait(timeout=5)
    in_flight = [s for s in samples if s.start_s < term_at <= s.end_s]
    before = [s for s in samples if s.end_s < term_at]
    after = [s for s in samples if s.start_s >= term_at]
    clean = {OK, REFUSED, http_kind(503)}
    slow_ok = sum(1 for r in slow if r.status == 200)
    return {
        "stack": name,
        "signal": "SIGTERM to the process group" if plan.process_group
        else "SIGTERM to the main process",
        "grace_s": plan.grace_s,
        "grace_source": plan.grace_source,
        "exit_s": exit_s,
        "exited_within_grace": exit_s is not None and exit_s <= plan.grace_s,
        "requests": len(samples),
        "before_signal": outcome_counts(before),
        "in_flight": outcome_counts(in_flight),
        "slow_in_flight": {"sent": len(slow), "ok": slow_ok,
                           "errors": [r.error or f"HTTP {r.status}" for r in slow
                                      if r.status != 200]},
        "after_signal": outcome_counts(after),
        "in_flight_finished": all(s.ok for s in in_flight) and slow_ok == len(slow),
        "new_refused_cleanly": all(s.kind in clean for s in after),
        "errors": sorted({s.error for s in samples if not s.ok and s.kind != REFUSED})[:5],
    }  # fmt: skip
