"""Sends every case of the shared matrix (reliability.matrix) to every running stack and
records, per cell: the status, whether the body is a JSON error naming the problem, no
stack trace, and whether the stack was still ready and answered a good request correctly
right after. A stack that cannot run here is one "skipped: <why>" column, never empty.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from harness.lifecycle import RunningStack, resolve
from harness.payload import check_prediction
from reliability.client import Connection, endpoint_of
from reliability.matrix import (
    BAD_REQUESTS,
    GRPC_CASES,
    BadRequest,
    GrpcCase,
)
from reliability.settings import MatrixSettings
from services.stack import ServingStack

PASS = "pass"
FAIL = "FAIL"
RECORDED = "recorded"  # no expectation to judge against (TF Serving), still healthy after
SKIPPED = "skipped"
# Text that only a leaked traceback or framework error page would contain.
LEAK_MARKERS = ("Traceback (most recent call last)", 'File "/', "<html", "<!doctype html")


@dataclass(frozen=True)
class Cell:
    """One case sent to one stack/protocol."""

    target: str  # "<stack>/<protocol>"
    case: str
    verdict: str
    status: str  # HTTP status, gRPC code name, or "skipped"
    reason: str | None = None  # the codec's reason, when the body carries one
    json_error: bool = False
    leaks_internals: bool = False
    healthy_after: bool | None = None
    correct_after: bool | None = None
    note: str = ""
    excerpt: str = ""


def error_document(body: bytes, content_type: str | None) -> dict | None:
    """The {"error": ..., "reason": ...} document, or None if the body is not one."""
    if not content_type or not content_type.startswith("application/json"):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return document
    return None


def judge_rest(stack: ServingStack | str, case: BadRequest, status: int | None,
               document: dict | None, leaks: bool, healthy: bool,
               correct: bool) -> tuple[str, str]:
    """(verdict, note) for one REST cell; the stack plugin says whether it validates with
    the codec and which answers come from its front end."""
    stack = resolve(stack)
    if not healthy or not correct:
        return FAIL, "not healthy or answered wrongly afterwards"
    if leaks:
        return FAIL, "the body leaks a stack trace or an HTML error page"
    if not stack.validates_with_codec:
        return RECORDED, ""
    if status != case.status:
        return FAIL, f"expected {case.status}"
    front = stack.front_answers.get(case.name)
    if document is None:
        return (PASS, front) if front else (FAIL, "no JSON error body")
    if document.get("reason") != case.reason:
        return FAIL, f"expected reason {case.reason}"
    if case.needle not in document["error"]:
        return FAIL, f"error does not name the problem ({case.needle!r})"
    return PASS, ""


def codec_skip(stack: ServingStack | str, case: BadRequest) -> str | None:
    """Why `case` is not sent to the stack (it does not speak the case's body codec), or
    None when it is."""
    stack = resolve(stack)
    if case.codec in stack.codecs:
        return None
    return (f"{stack.name} does not speak the {case.codec} body codec "
            f"(it accepts {', '.join(stack.codecs)})")  # fmt: skip


def probe_rest(running: RunningStack, case: BadRequest, settings: MatrixSettings) -> Cell:
    conn = Connection(endpoint_of(running), settings.request_timeout_s, fresh=True)
    reply = conn.post(case.body, case.content_type)
    text = reply.body[:2000].decode(errors="replace")
    document = error_document(reply.body, reply.content_type)
    leaks = any(marker.lower() in text.lower() for marker in LEAK_MARKERS)
    healthy = running.ready(settings.health_timeout_s)
    problem = check_prediction(running.rest, running.payloads()) if healthy else "-"
    verdict, note = judge_rest(running.stack, case, reply.status, document, leaks, healthy,
                               problem is None)
    if problem and healthy:
        note = f"{note}; good request afterwards: {problem}"
    return Cell(
        target=f"{running.name}/rest",
        case=case.name,
        verdict=verdict,
        status=str(reply.status) if reply.status is not None else reply.kind,
        reason=document.get("reason") if document else None,
        json_error=document is not None,
        leaks_internals=leaks,
        healthy_after=healthy,
        correct_after=problem is None,
        note=note,
        excerpt=text[:160],
    )


def probe_grpc(running: RunningStack, case: GrpcCase, settings: MatrixSettings) -> Cell:
    import grpc

    client = running.grpc
    try:
        client.stub.Predict(case.build(running.paths.spec), timeout=settings.request_timeout_s)
        code, details = "OK", ""
    except grpc.RpcError as err:
        code, details = err.code().name, err.details() or ""
    healthy = running.ready(settings.health_timeout_s)
    problem = check_prediction(client, running.payloads()) if healthy else "-"
    verdict = RECORDED if healthy and problem is None else FAIL
    note = "" if verdict == RECORDED else f"afterwards: healthy={healthy}, {problem}"
    if case.expected_code and code != case.expected_code:
        note = f"{note} (TF Serving is expected to answer {case.expected_code})".strip()
    return Cell(
        target=f"{running.name}/grpc",
        case=case.name,
        verdict=verdict,
        status=code,
        healthy_after=healthy,
        correct_after=problem is None,
        note=note,
        excerpt=details[:160],
    )


def run_matrix(running: RunningStack, settings: MatrixSettings) -> list[Cell]:
    """Every case for every protocol `running` offers."""
    cells = []
    if running.rest is not None:
        for case in BAD_REQUESTS:
            why = codec_skip(running.stack, case)
            cells.append(probe_rest(running, case, settings) if why is None else
                         Cell(target=f"{running.name}/rest", case=case.name, verdict=SKIPPED,
                              status=SKIPPED, note=why))  # fmt: skip
    if running.grpc is not None:
        cells += [probe_grpc(running, case, settings) for case in GRPC_CASES]
    return cells


def skipped_cells(stack: str, protocols: list[str], reason: str) -> list[Cell]:
    cases = {"rest": [c.name for c in BAD_REQUESTS], "grpc": [c.name for c in GRPC_CASES]}
    return [
        Cell(target=f"{stack}/{protocol}", case=name, verdict=SKIPPED, status=SKIPPED,
             note=reason)
        for protocol in protocols
        for name in cases[protocol]
    ]


def to_json(cells: list[Cell], skipped: dict[str, str]) -> dict:
    failed = [c for c in cells if c.verdict == FAIL]
    return {
        "cases": {
            "rest": [{"name": c.name, "about": c.about, "status": c.status, "reason": c.reason,
                      "codec": c.codec} for c in BAD_REQUESTS],
            "grpc": [{"name": c.name, "about": c.about, "expected_code": c.expected_code}
                     for c in GRPC_CASES],
        },
        "cells": [asdict(c) for c in cells],
        "skipped": skipped,
        "failed": len(failed),
        "passed": sum(c.verdict == PASS for c in cells),
        "recorded": sum(c.verdict == RECORDED for c in cells),
    }  # fmt: skip
