"""The independent open-loop client: reliability/openloop.c, built here on first use and
run over a schedule, its records read back as the overload module's Shots.

Why a second client: the Python generator times a reply when its thread gets the GIL back,
so at 5x a stack's capacity its refusal times carry its own waits (a 1 ms refusal can read
6 ms). The C client is one epoll loop with no interpreter between the socket and the clock:
its figures for the same schedule confirm or correct the Python ones, and the report
shows both. It checks the status only (any 2xx counts as answered); the Python generator
checks every answer against the key.

Built with the system C compiler (`cc`, Debian `gcc`, which `make tools` installs where the
machine allows) into build/openloop/<hash of the source>/, so an edit rebuilds it and
concurrent runs never see a half-written binary.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reliability.client import OK, OTHER, REFUSED, RESET, TIMEOUT, Endpoint, http_kind
from reliability.load import Sample

SOURCE = Path(__file__).with_name("openloop.c")
BUILD_ROOT = Path(os.environ.get("DIGITNET_BUILD", Path(__file__).resolve().parents[1] / "build"))
NAME = "openloop (C, one epoll loop)"
HINT = "install a C compiler (Debian gcc: scripts/install_tools.sh does it as root)"
# The record kinds the C client writes, as the Python client's outcome kinds ("http" is
# mapped by its status).
KINDS = {"ok": OK, "timeout": TIMEOUT, "reset": RESET, "refused": REFUSED, "error": OTHER,
         "none": OTHER}
# Beyond the schedule and every request's timeout, the C client ends itself after 5 s; this
# is the margin over that for the process as a whole.
EXIT_MARGIN_S = 30.0


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def binary() -> tuple[Path | None, str]:
    """The built client, building it when its source changed; (None, why) when it cannot
    be built here."""
    source = SOURCE.read_bytes()
    target = BUILD_ROOT / "openloop" / hashlib.sha256(source).hexdigest()[:16] / "openloop"
    if target.exists():
        return target, str(target)
    cc = compiler()
    if cc is None:
        return None, f"no C compiler to build {SOURCE.name}: {HINT}"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"openloop.{os.getpid()}.partial")
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(partial), str(SOURCE)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        return None, f"{cc} could not build {SOURCE.name}: {done.stderr.strip()[-500:]}"
    partial.replace(target)
    return target, str(target)


def parse_records(text: str) -> tuple[list[tuple[Sample, float]], dict[str, int]]:
    """(Sample, picked_s) per request line of the client's output, in schedule order, and
    its summary counts (opened, retried, unfinished).

    Raises:
        ValueError: for a line that is not a record.
    """
    records: list[tuple[Sample, float]] = []
    summary: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# summary"):
            summary = {k: int(v) for k, v in (part.split("=") for part in line.split("\t")[1:])}
            continue
        fields = line.split("\t")
        if len(fields) != 7:
            raise ValueError(f"not an openloop record: {line[:120]!r}")
        _, scheduled, picked, start, end, status, kind = fields
        scheduled_s, picked_s, start_s, end_s = map(float, (scheduled, picked, start, end))
        name = http_kind(int(status)) if kind == "http" else KINDS.get(kind)
        if name is None:
            raise ValueError(f"unknown kind {kind!r} in {line[:120]!r}")
        error = "" if name == OK else (f"HTTP {status}" if kind == "http" else kind)
        records.append((Sample(start_s, max(start_s, end_s), name, scheduled_s, error), picked_s))
    return records, summary


def run(endpoint: Endpoint, body: bytes, content_type: str, offsets: Sequence[float],
        timeout_s: float, max_conns: int = 1024, start_delay_s: float = 0.2,
        ) -> tuple[float, list[tuple[Sample, float]], dict[str, float]]:
    """Sends `body` once per offset (s from the start) to the endpoint from the C client.

    Returns the start (time.monotonic()) the offsets count from, a (Sample, picked_s) per
    request in schedule order, and the client's summary: connections opened, requests
    retried on a new connection (a kept-alive one the server had just closed), unfinished
    ones, and its CPU seconds.

    Raises:
        RuntimeError: when the client cannot be built or did not finish its schedule.
    """
    path, why = binary()
    if path is None:
        raise RuntimeError(why)
    with tempfile.TemporaryDirectory(prefix="openloop-") as tmp:
        folder = Path(tmp)
        (folder / "body").write_bytes(body)
        (folder / "schedule").write_text("".join(f"{o:.7f}\n" for o in offsets))
        headers = [f"{name}: {value}" for name, value in
                   {**endpoint.headers, "Content-Type": content_type}.items()]
        command = [str(path), "--host", endpoint.host, "--port", str(endpoint.port),
                   "--path", endpoint.path, "--body", str(folder / "body"),
                   "--schedule", str(folder / "schedule"), "--out", str(folder / "out"),
                   "--max-conns", str(max_conns), "--timeout-ms", str(int(timeout_s * 1000)),
                   "--start-delay-ms", str(int(start_delay_s * 1000))]
        for header in headers:
            command += ["-H", header]
        limit = start_delay_s + (offsets[-1] if offsets else 0.0) + 2 * timeout_s + EXIT_MARGIN_S
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = folder / "out"
        if not out.exists():
            raise RuntimeError(f"openloop wrote nothing (exit {done.returncode}): "
                               f"{done.stderr.strip()[-300:]}")
        records, summary = parse_records(out.read_text())
    # Its CPU time (user + system), for the generator's CPU share beside the server's.
    summary["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if len(records) != len(offsets) or summary.get("unfinished"):
        raise RuntimeError(f"openloop finished {len(records)} of {len(offsets)} requests "
                           f"({summary}): {done.stderr.strip()[-300:]}")
    begin = records[0][0].scheduled_s - offsets[0] if records else 0.0
    return begin, records, summary
