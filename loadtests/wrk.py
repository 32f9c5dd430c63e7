"""wrk, an independent C client, measuring the same server Locust measures.

Locust's own per-request cost paces the server it measures (see NOTES.md, "Measuring the
measurer"); wrk's is about 20x smaller. Each closed-loop REST point is therefore also run
with wrk, and the two are compared: where they diverge, the figure is the generator's,
not the server's.

The request (method, body, headers) is set by a generated Lua script, whose `done()`
prints one JSON line of wrk's own statistics (latency percentiles in microseconds, request
and error counts, duration), so nothing is parsed from wrk's human-readable text.

wrk is closed-loop, and corrects its latency histogram for coordinated omission before
any report, done() included (wrk.c's stats_correct; Debian's wrk 4.1 too): with
`interval` the run's mean time between two requests on one connection (duration /
(requests / connections)), each latency v above twice the interval adds one sample at v -
interval, v - 2 x interval ... down to the interval, the requests an open loop at that
rate would have sent meanwhile. So a few slow replies move wrk's percentiles far more
than their count: three first replies of 171-173 ms among ~5900 (a 4-connection run,
every other reply 3-8 ms on the wire, read with tcpdump) gave wrk a p99 of 105 ms against
4.4 ms recorded; the arithmetic above gives 105 ms exactly. Every wrk percentile here,
and every objective checked against one, is therefore the stricter, corrected reading.
Debian's wrk gives Lua no access to its histogram (the numeric index of wrk 4.2), so the
recorded one cannot be had back; a stall shows as wrk's p99 far above Locust's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from digitnet.codec import BATCH_HEADER
from loadtests.tools import probe

INSTALL_HINT = "run scripts/install_tools.sh (Debian package wrk)"
# A Locust figure more than this far from wrk's (relative to wrk) is flagged and kept out
# of claims: the tolerance; run-to-run spread on one idle machine is within ±10%.
DIVERGENCE_LIMIT = 0.15
# A reply slower than this counts as a wrk timeout error and its latency is dropped. 10 s
# is far above any objective here, so no measured tail is cut (overload p99 was ~3 s).
DEFAULT_TIMEOUT_S = 10.0
# Marks the line our done() prints among wrk's own output.
JSON_MARKER = "WRK_JSON "
# Headers wrk writes itself from the URL and the body.
_WRK_OWNED_HEADERS = frozenset({"host", "content-length"})

_DONE_FUNCTION = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '@MARKER@{"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, '
    .. '"connect_errors": %.0f, "read_errors": %.0f, "write_errors": %.0f, '
    .. '"status_errors": %.0f, "timeouts": %.0f, '
    .. '"p50_us": %.3f, "p90_us": %.3f, "p99_us": %.3f, '
    .. '"min_us": %.3f, "max_us": %.3f, "mean_us": %.3f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.min, latency.max, latency.mean))
  if report_timings then report_timings() end
end
""".replace("@MARKER@", JSON_MARKER)


def wrk_binary() -> str | None:
    """Path of the wrk executable, or None."""
    return shutil.which("wrk")


def wrk_available() -> tuple[bool, str]:
    """Whether wrk can run here.

    Returns:
        (True, version line) or (False, why not and how to get wrk).
    """
    # `wrk -v` prints its version and usage, and exits 1.
    return probe("wrk", wrk_binary(), INSTALL_HINT, exit_zero=False)


def lua_string(data: bytes) -> str:
    """`data` as a Lua string literal that evaluates to the same bytes.

    Printable ASCII stays readable; every other byte, and the quote and backslash, is a
    three-digit decimal escape (three digits, so a following digit is never absorbed).
    """
    out = []
    for byte in data:
        if 32 <= byte < 127 and byte not in (ord('"'), ord("\\")):
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


# Marks the lines of server timings and of batch counts (timings mode) in wrk's output.
TIMINGS_MARKER = "WRK_TIMINGS "
BATCHES_MARKER = "WRK_BATCHES "
# Timings mode: every 200 reply's Server-Timing durations, kept per thread, their medians
# printed by done() as one JSON line; and how many replies named each count of requests
# sharing their forward pass (digitnet.codec.BATCH_HEADER), another line. The reply
# callback costs wrk a Lua call and a header table per reply, so a run in this mode reads
# the server's timings under wrk's own pacing and is never the run whose latency is
# reported.
_TIMINGS_LUA = """
-- One flat list per stage (timing_<name>) and the list of names: wrk's thread:get copies
-- flat tables between Lua states, and crashes on nested ones. batch_counts: the batch
-- header's value -> replies (flat too).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) timing_names = {}; batch_counts = {} end
function response(status, headers, body)
  local shared = headers["@BATCH@"] or headers["@BATCH_LOWER@"]
  if status == 200 and shared and string.match(shared, "^%d+$") then
    batch_counts[shared] = (batch_counts[shared] or 0) + 1
  end
  local value = headers["Server-Timing"] or headers["server-timing"]
  if status == 200 and value then
    for name, dur in string.gmatch(value, "([%w_%-]+);dur=([%d%.]+)") do
      local list = _G["timing_" .. name]
      if not list then
        list = {}
        _G["timing_" .. name] = list
        timing_names[#timing_names + 1] = name
      end
      list[#list + 1] = tonumber(dur)
    end
  end
end
function report_timings()
  local merged, order = {}, {}
  for _, thread in ipairs(threads) do
    for _, name in ipairs(thread:get("timing_names") or {}) do
      if not merged[name] then merged[name] = {}; order[#order + 1] = name end
      for _, v in ipairs(thread:get("timing_" .. name) or {}) do
        merged[name][#merged[name] + 1] = v
      end
    end
  end
  local parts = {}
  for _, name in ipairs(order) do
    local list = merged[name]
    table.sort(list)
    local n = #list
    local median = (n % 2 == 1) and list[(n + 1) / 2] or (list[n / 2] + list[n / 2 + 1]) / 2
    parts[#parts + 1] = string.format('"%s": [%.6f, %d]', name, median, n)
  end
  io.write("@TIMINGS@{" .. table.concat(parts, ", ") .. "}\\n")
  local counts, shares = {}, {}
  for _, thread in ipairs(threads) do
    for shared, n in pairs(thread:get("batch_counts") or {}) do
      counts[shared] = (counts[shared] or 0) + n
    end
  end
  for shared, n in pairs(counts) do
    shares[#shares + 1] = string.format('"%s": %d', shared, n)
  end
  io.write("@BATCHES@{" .. table.concat(shares, ", ") .. "}\\n")
end
""".replace("@TIMINGS@", TIMINGS_MARKER).replace("@BATCHES@", BATCHES_MARKER).replace(
    "@BATCH@", BATCH_HEADER).replace("@BATCH_LOWER@", BATCH_HEADER.lower())


def render_lua(body: bytes, headers: Mapping[str, str], method: str = "POST",
               timings: bool = False) -> str:
    """The wrk script that sends `method` with `body` and `headers`, and prints one JSON
    line of statistics at the end.

    Args:
        body: the request body, sent as is.
        headers: request headers (Host and Content-Length are wrk's own).
        method: the HTTP method.
        timings: also collect the replies' Server-Timing durations (_TIMINGS_LUA).

    Returns:
        The Lua source.
    """
    lines = ["-- Generated by loadtests/wrk.py.", f"wrk.method = {lua_string(method.encode())}"]
    lines.append(f"wrk.body = {lua_string(body)}")
    for name, value in headers.items():
        if name.lower() in _WRK_OWNED_HEADERS:
            continue
        lines.append(f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}")
    return "\n".join(lines) + "\n" + (_TIMINGS_LUA if timings else "") + _DONE_FUNCTION


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and error counts."""

    url: str
    connections: int
    threads: int
    duration_s: float  # as measured by wrk, not as asked
    requests: int  # completed replies, whatever their status
    rps: float  # completed replies per second, as wrk reports it
    goodput_rps: float  # replies with status < 400 per second, comparable with Locust's rps
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    status_errors: int  # replies with HTTP status >= 400 (wrk's own count)
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    cores: tuple[int, ...] | None = None

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors

    def as_point(self) -> dict:
        """The figures under the names the runner's point records use (rps, p50_ms...)."""
        return {
            "rps": self.goodput_rps,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "requests": self.requests,
            "failures": self.errors,
            "window_s": self.duration_s,
        }

    def to_json(self) -> dict:
        """Every figure and setting, for points.jsonl."""
        data = asdict(self)
        data["cores"] = list(self.cores) if self.cores is not None else None
        data["socket_errors"] = self.socket_errors
        return data


def parse_output(
    stdout: str,
    url: str,
    connections: int,
    threads: int,
    cores: Sequence[int] | None = None,
) -> WrkResult:
    """Reads the JSON line our done() printed among wrk's output.

    Args:
        stdout: wrk's standard output.
        url, connections, threads, cores: the run's settings, recorded in the result.

    Returns:
        The run's figures.

    Raises:
        ValueError: if no statistics line is found.
    """
    line = next((x for x in stdout.splitlines() if x.startswith(JSON_MARKER)), None)
    if line is None:
        raise ValueError(f"no {JSON_MARKER.strip()} line in wrk output:\n{stdout[-2000:]}")
    stats = json.loads(line.removeprefix(JSON_MARKER))
    duration_s = stats["duration_us"] / 1e6
    requests = int(stats["requests"])
    status_errors = int(stats["status_errors"])
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    return WrkResult(
        url=url,
        connections=connections,
        threads=threads,
        duration_s=duration_s,
        requests=requests,
        rps=requests * per_s,
        goodput_rps=(requests - status_errors) * per_s,
        p50_ms=stats["p50_us"] / 1000.0,
        p90_ms=stats["p90_us"] / 1000.0,
        p99_ms=stats["p99_us"] / 1000.0,
        max_ms=stats["max_us"] / 1000.0,
        mean_ms=stats["mean_us"] / 1000.0,
        status_errors=status_errors,
        connect_errors=int(stats["connect_errors"]),
        read_errors=int(stats["read_errors"]),
        write_errors=int(stats["write_errors"]),
        timeouts=int(stats["timeouts"]),
        cores=tuple(cores) if cores else None,
    )


def parse_timings(stdout: str) -> dict[str, tuple[float, int]]:
    """The timings line of a timings-mode run: stage -> (median ms, replies that had it);
    {} when the run printed none (no reply carried Server-Timing)."""
    line = next((x for x in stdout.splitlines() if x.startswith(TIMINGS_MARKER)), None)
    if line is None:
        return {}
    return {name: (float(v[0]), int(v[1]))
            for name, v in json.loads(line.removeprefix(TIMINGS_MARKER)).items()}


def parse_batches(stdout: str) -> dict[int, int]:
    """The batch-count line of a timings-mode run: requests sharing a forward pass, as the
    replies named it -> replies that named it; {} when none did."""
    line = next((x for x in stdout.splitlines() if x.startswith(BATCHES_MARKER)), None)
    if line is None:
        return {}
    return {int(k): int(n) for k, n in json.loads(line.removeprefix(BATCHES_MARKER)).items()}


def server_timings(url: str, body: bytes, headers: Mapping[str, str], connections: int,
                   duration_s: int, cores: Sequence[int] | None = None,
                   script_dir: Path | None = None) -> dict[str, tuple[float, int]]:
    """A timings-mode run (see _TIMINGS_LUA): the medians of the server's own stage times
    under wrk's load, stage -> (ms, replies)."""
    return parse_timings(timings_run(url, body, headers, connections, duration_s, cores,
                                     script_dir))  # fmt: skip


def timings_run(url: str, body: bytes, headers: Mapping[str, str], connections: int,
                duration_s: int, cores: Sequence[int] | None = None,
                script_dir: Path | None = None) -> str:
    """A timings-mode run's standard output: parse_timings and parse_batches read it."""
    return _run(url, body, headers, connections, duration_s, cores, 1, DEFAULT_TIMEOUT_S,
                script_dir, timings=True)


def run_wrk(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    connections: int,
    duration_s: int,
    cores: Sequence[int] | None = None,
    threads: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    script_dir: Path | None = None,
) -> WrkResult:
    """One closed-loop wrk run: `connections` connections POSTing `body` for `duration_s`.

    Args:
        url: the full URL, path included (loopback targets only in this project).
        body: request body.
        headers: request headers (Content-Type, Authorization...).
        connections: open connections, each with one request outstanding (-c).
        duration_s: whole seconds to run (-d); wrk has no warm-up, run it twice for one.
        cores: pins wrk to these CPUs with taskset, like Locust on the generator cores.
        threads: wrk threads (-t); at most `connections`.
        timeout_s: a reply slower than this is a timeout error (--timeout).
        script_dir: where to keep the generated Lua script (a temporary folder if None).

    Returns:
        The run's figures.

    Raises:
        RuntimeError: if wrk is missing or fails.
    """
    stdout = _run(url, body, headers, connections, duration_s, cores, threads, timeout_s,
                  script_dir)
    return parse_output(stdout, url, connections, threads, cores)


def _run(url: str, body: bytes, headers: Mapping[str, str], connections: int,
         duration_s: int, cores: Sequence[int] | None, threads: int, timeout_s: float,
         script_dir: Path | None, timings: bool = False) -> str:
    """wrk's standard output for one run (run_wrk's arguments)."""
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError(f"wrk is not installed: {INSTALL_HINT}")
    if connections < 1 or threads < 1 or threads > connections or duration_s < 1:
        raise ValueError("need connections >= threads >= 1 and duration_s >= 1")
    with ExitStack() as scratch:
        folder = script_dir or Path(scratch.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / f"wrk-c{connections}{'-timings' if timings else ''}.lua"
        script.write_text(render_lua(body, headers, timings=timings))
        command = [
            binary, f"-t{threads}", f"-c{connections}", f"-d{int(duration_s)}s",
            "--timeout", f"{timeout_s:g}s", "-s", str(script), url,
        ]  # fmt: skip
        if cores:
            command = ["taskset", "-c", ",".join(map(str, cores)), *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + timeout_s + 30
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


@dataclass(frozen=True)
class ClientDivergence:
    """How far Locust's figures are from wrk's, relative to wrk's (signed: -0.4 means
    Locust read 40% lower)."""

    rps: float | None
    p50: float | None
    flagged: bool
    reason: str
    limit: float = DIVERGENCE_LIMIT

    def to_json(self) -> dict:
        return asdict(self)


def _relative(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference - 1.0


def compare_clients(
    locust: Mapping, wrk: Mapping | WrkResult, limit: float = DIVERGENCE_LIMIT
) -> ClientDivergence:
    """Compares a Locust point with the wrk run at the same concurrency.

    wrk is the reference: its own per-request cost is the smaller one, so its figures are
    the closer estimate of the server's.

    Args:
        locust: a point record (rps, p50_ms).
        wrk: a WrkResult or its `as_point()` dict.
        limit: relative divergence above which the point is flagged.

    Returns:
        The signed relative divergence in req/s and p50, and whether either exceeds
        `limit` (a missing or zero figure is flagged too: nothing was cross-checked).
    """
    reference = wrk.as_point() if isinstance(wrk, WrkResult) else wrk
    rps = _relative(locust.get("rps"), reference.get("rps"))
    p50 = _relative(locust.get("p50_ms"), reference.get("p50_ms"))
    problems = []
    if rps is None or p50 is None:
        problems.append("no figure to compare (a client measured nothing)")
    if rps is not None and abs(rps) > limit:
        problems.append(f"req/s differs by {rps:+.0%} from wrk")
    if p50 is not None and abs(p50) > limit:
        problems.append(f"p50 differs by {p50:+.0%} from wrk")
    reason = "; ".join(problems) if problems else f"within {limit:.0%} of wrk"
    return ClientDivergence(rps=rps, p50=p50, flagged=bool(problems), reason=reason, limit=limit)
