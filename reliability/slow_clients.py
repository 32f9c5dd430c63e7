"""Slow clients must not starve the others.

K connections each send their headers, then their body one byte at a time (the "slow
POST" attack), and keep at it for the whole run. Meanwhile normal clients send ordinary
requests on fresh connections, so each lands on whichever worker accepts it. A server
that gives every connection a thread or process of its own runs out of them, and the
normal clients time out; an event-driven one keeps answering them.
"""

from __future__ import annotations

import threading
import time

from harness.lifecycle import RunningStack
from reliability.client import TricklingPost, endpoint_of
from reliability.load import ClosedLoop, latency_ms, outcome_counts
from reliability.settings import SlowClientSettings

CONNECT_TIMEOUT_S = 10.0


def slow_clients(running: RunningStack, settings: SlowClientSettings) -> dict:
    """Runs the scenario against `running`; returns the figures and a verdict."""
    endpoint = endpoint_of(running)
    payloads = running.payloads()
    stop = threading.Event()
    slow = [
        TricklingPost(endpoint, payloads.next().body, chunk=1,
                      interval_s=settings.byte_interval_s,
                      timeout_s=settings.duration_s + CONNECT_TIMEOUT_S, stop=stop)
        for _ in range(settings.slow_clients)
    ]
    try:
        for client in slow:
            client.start()
        for client in slow:
            client.connected.wait(CONNECT_TIMEOUT_S)
        # Let every slow client get its first body bytes in, so they hold what they can.
        time.sleep(2 * settings.byte_interval_s)
        loop = ClosedLoop(endpoint, payloads, settings.normal_clients,
                          settings.request_timeout_s, fresh_connections=True)
        with loop:
            time.sleep(settings.duration_s)
        samples = loop.recorder.snapshot()
        still_trickling = sum(1 for c in slow if c.is_alive() and not c.error)
    finally:
        stop.set()
        for client in slow:
            client.join(CONNECT_TIMEOUT_S)
    failed = [s for s in samples if not s.ok]
    return {
        "stack": running.name,
        "slow_clients": settings.slow_clients,
        "byte_interval_s": settings.byte_interval_s,
        "normal_clients": settings.normal_clients,
        "duration_s": settings.duration_s,
        "request_timeout_s": settings.request_timeout_s,
        "slow_still_open_at_end": still_trickling,
        "slow_refused_or_closed": sum(1 for c in slow if c.error),
        "requests": len(samples),
        "outcomes": outcome_counts(samples),
        "failed": len(failed),
        "latency": latency_ms(samples),
        "not_starved": bool(samples) and not failed,
        "errors": sorted({s.error for s in failed})[:5],
    }
