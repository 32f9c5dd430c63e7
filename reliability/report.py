"""Markdown for the reliability results: the matrix (input x stack -> status), the fault
runs, slow clients, the soak and overload. Pure functions of the JSON each run writes, so
loadtests.report can put the same tables into REPORT.md.

A run's JSON files sit in results/<kind>/<timestamp>/; copied into a load-test run's
folder as reliability/<kind>.json (`--into-run`), they become sections of its REPORT.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.markdown import fmt
from reliability.overload import INDEPENDENT, POOL_NOTE_SHARE

MATRIX_FILE = "matrix.json"
FAULTS_FILE = "faults.json"
SLOW_CLIENTS_FILE = "slow_clients.json"
SOAK_FILE = "soak.json"
OVERLOAD_FILE = "overload.json"
FLOODS_FILE = "floods.json"
# Inside a load-test run folder.
RUN_SUBDIR = "reliability"

_MARKS = {"pass": "✓", "FAIL": "✗ FAIL", "recorded": "(recorded)", "skipped": "skipped"}


def _fmt(value, digits: int = 2) -> str:
    # A failed yes/no check stands out in bold.
    return fmt(value, digits, no="**no**")


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in counts.items()) or "none"


def matrix_markdown(data: dict) -> list[str]:
    """The matrix: one row per case, one column per stack/protocol."""
    cells = data["cells"]
    targets = list(dict.fromkeys(cell["target"] for cell in cells))
    by_key = {(cell["case"], cell["target"]): cell for cell in cells}
    md = [
        "## Bad input on every stack",
        "",
        f"{data['passed']} cells as expected, {data['failed']} failed, "
        f"{data['recorded']} recorded without an expectation (TF Serving). ✓ = the expected "
        "status, a JSON error naming the problem (or a documented front answer†), no stack "
        "trace, and afterwards the stack was ready and answered a good request correctly.",
        "",
        "| case | what | expected | " + " | ".join(targets) + " |",
        "|" + " --- |" * (3 + len(targets)),
    ]
    expected = {c["name"]: (c["about"], f"{c['status']} {c['reason']}")
                for c in data["cases"]["rest"]}
    expected.update({c["name"]: (c["about"], c["expected_code"] or "–")
                     for c in data["cases"]["grpc"]})
    notes: list[str] = []
    for case, (about, wanted) in expected.items():
        row = []
        for target in targets:
            cell = by_key.get((case, target))
            if cell is None:
                row.append("n/a")  # a gRPC case on a REST column, or the other way round
                continue
            if cell["verdict"] == "skipped":
                row.append("skipped")
                # A stack skipped whole says why once, below; a case it cannot take (a
                # body codec it does not speak) says why here.
                stack = target.split("/", 1)[0]
                if cell["note"] and stack not in data.get("skipped", {}):
                    notes.append(f"- {target}: {cell['note']}")
                continue
            mark = _MARKS.get(cell["verdict"], cell["verdict"])
            front = "†" if cell["verdict"] == "pass" and not cell["json_error"] else ""
            row.append(f"{cell['status']} {mark}{front}")
            if cell["note"] and cell["verdict"] != "skipped":
                notes.append(f"- {target} / {case}: {cell['note']}")
        md.append(f"| {case} | {about} | {wanted} | " + " | ".join(row) + " |")
    md.append("")
    for stack, reason in data.get("skipped", {}).items():
        md.append(f"- **{stack} skipped**: {reason}")
    md += sorted(set(notes))
    md.append("")
    return md


def faults_markdown(data: dict) -> list[str]:
    md = ["## Faults under load", ""]
    kills = data.get("kill_worker", [])
    if kills:
        md += [
            "### A worker killed (SIGKILL) mid-run",
            "",
            "| stack | clients | requests | failed | outcomes | worker replaced after s | "
            "recovery s | failed after recovery | recovered |",
            "|" + " --- |" * 9,
        ]
        for k in kills:
            if not k.get("applicable", True):
                md.append(f"| {k['stack']} | – | – | – | not applicable: {k['why']} | – | – | "
                          "– | – |")
                continue
            md.append(
                f"| {k['stack']} | {k['clients']} | {k['requests']} | {k['failed']} | "
                f"{_outcomes(k['outcomes'])} | {_fmt(k['worker_replaced_s'])} | "
                f"{_fmt(k['recovery_s'])} | {k['failed_after_recovery']} | "
                f"{_fmt(k['recovered'])} |"
            )
        md += ["", "Recovery: from the kill until the worker set was whole, the stack ready "
               "and the last failed request had ended, whichever came last.", ""]
        md += [f"- {k['stack']}: {k['lost']} request(s) never answered (the client timed out): "
               f"{k['lost_why']}" for k in kills if k.get("lost")]
        md += [""] if any(k.get("lost") for k in kills) else []
    terms = data.get("sigterm", [])
    if terms:
        md += [
            "### SIGTERM during load",
            "",
            "| stack | signal | exit s (grace) | in flight at the signal | slow bodies in "
            "flight | sent after the signal | in-flight finished | new refused cleanly |",
            "|" + " --- |" * 8,
        ]
        for t in terms:
            slow = t["slow_in_flight"]
            md.append(
                f"| {t['stack']} | {t['signal']} | {_fmt(t['exit_s'])} ({t['grace_s']:g}, "
                f"{t['grace_source']}) | {_outcomes(t['in_flight'])} | {slow['ok']} of "
                f"{slow['sent']} ok | {_outcomes(t['after_signal'])} | "
                f"{_fmt(t['in_flight_finished'])} | {_fmt(t['new_refused_cleanly'])} |"
            )
        md += ["", "Clients open a fresh connection per request: `refused` means nothing "
               "listened any more (clean), `reset` a connection the server took and closed "
               "without an answer.", ""]
    for name, note in data.get("notes", {}).items():
        md.append(f"- {name}: {note}")
    if data.get("notes"):
        md.append("")
    return md


def slow_clients_markdown(data: dict) -> list[str]:
    md = [
        "## Slow clients",
        "",
        "| stack | slow connections (1 body byte each per interval) | normal requests | failed "
        "| outcomes | "
        "p50 ms | p99 ms | max ms | not starved |",
        "|" + " --- |" * 9,
    ]
    for r in data.get("runs", []):
        lat = r["latency"]
        md.append(
            f"| {r['stack']} | {r['slow_clients']} (every {r['byte_interval_s']:g} s) | "
            f"{r['requests']} | {r['failed']} | {_outcomes(r['outcomes'])} | "
            f"{_fmt(lat['p50_ms'])} | {_fmt(lat['p99_ms'])} | {_fmt(lat['max_ms'])} | "
            f"{_fmt(r['not_starved'])} |"
        )
    md.append("")
    return md


def soak_markdown(data: dict) -> list[str]:
    md = [
        "## Soak",
        "",
        "| stack | rate req/s | duration s | requests | failed | p50 ms | p99 ms | RSS MiB "
        "after warm-up → end | RSS slope MiB/min | judged slopes MiB/min (limit) | verdict |",
        "|" + " --- |" * 11,
    ]
    for r in data.get("runs", []):
        mem, lat = r["memory"], r["latency"]
        judged = "; ".join(f"{name} {_fmt(slope)}"
                           for name, slope in mem.get("judged_slopes", {}).items())
        verdict = "pass" if r["passed"] else (
            f"**grows: {', '.join(mem.get('growing', []))}**" if not mem["flat"]
            else "**errors**")
        md.append(
            f"| {r['stack']} | {r['rate']:g} | {r['duration_s']:g} | {r['requests']} | "
            f"{r['failed']} | {_fmt(lat['p50_ms'])} | {_fmt(lat['p99_ms'])} | "
            f"{_fmt(mem['start_mib'], 0)} → {_fmt(mem['end_mib'], 0)} | "
            f"{_fmt(mem['slope_mib_per_min'])} | {judged} ({mem['max_slope_mib_per_min']:g}) | "
            f"{verdict} |"
        )
    for r in data.get("runs", []):
        heap = r["memory"].get("jvm_live_heap")
        if heap:
            md.append(f"\n- {r['stack']}: JVM live heap after a full GC "
                      f"{heap['after_warmup_mib']:.1f} MiB after warm-up, "
                      f"{heap['end_mib']:.1f} MiB at the end.")
    for stack, reason in data.get("skipped", {}).items():
        md.append(f"\n- **{stack} skipped**: {reason}")
    md.append("")
    return md


def _pct_of(share) -> str:
    return "–" if share is None else f"{share:.0%}"


def _overload_row(lv: dict, label: str) -> str:
    gen = lv["generator"]
    errors = _outcomes(lv["error_kinds"]) if lv["errors"] else "0"
    mark = "" if gen["held"] else " (**generator's**)"
    return (
        f"| {lv['multiple']:g}x{mark} | {label} | {lv['offered_rps']:.0f} | "
        f"{_fmt(gen['sent_rps'], 0)} | "
        f"{lv['goodput_rps']:.0f} ({_pct_of(lv['goodput_share'])}) | "
        f"{lv['refusals_per_s']:.0f} | {_fmt(lv['refusal_p50_ms'])} / "
        f"{_fmt(lv['refusal_p99_ms'])} | {_fmt(lv['accepted_p50_ms'])} / "
        f"{_fmt(lv['accepted_p99_ms'])} | {errors} | {_fmt(lv['server_cpu_pct'], 0)} | "
        f"{_fmt(lv['server_rss_mib'], 0)} | {_fmt(lv['generator_cpu_pct'], 0)} | "
        f"{_fmt(gen['own_late_p99_ms'])} | "
        f"{_fmt(lv['recovery_s']) if lv['recovered'] else '**not recovered**'} |"
    )


def _goal_figure(goal: str, judged: dict | None) -> str:
    if judged is None:
        return "–"
    measured = judged["measured"]
    shown = _pct_of(measured) if "goodput" in goal else _fmt(measured)
    return f"{shown} ({judged['verdict']})"


def noteworthy(generator: dict) -> bool:
    """Whether a level's generator figures need a note: it did not hold the rate, or at
    least POOL_NOTE_SHARE of the requests waited for a free sender (less is noise; runs
    made before that threshold noted any wait)."""
    return not generator["held"] or generator.get("pool_waited_share", 0.0) >= POOL_NOTE_SHARE


def overload_markdown(data: dict) -> list[str]:
    """Per stack: one row per overload level and client, then where it stands against the
    goals, with each client's figure."""
    md = [
        "## Overload",
        "",
        "Open loop at multiples of each stack's capacity for the phase, then half the "
        "capacity: goodput counts right answers within the objective per second; refusals "
        "are 503/429 answers, timed from the send; accepted latency counts from the "
        "schedule; recovery is measured from the drop. Each level runs twice: from the "
        "Python generator (every answer checked against the key), then, shorter, from the "
        "independent C client (one epoll loop, no interpreter between the socket and its "
        "clock; statuses checked, not answers). A goal is judged on the C client's figures "
        "where it held its rate, else on the Python generator's.",
        "",
        *([f"Servers: {data['guard']}.", ""] if data.get("guard") else []),
    ]
    for r in data.get("runs", []):
        md += [
            f"### {r['stack']}",
            "",
            f"Capacity {r['capacity_rps']:.0f} req/s: {r['capacity_source']}. Objective "
            f"{r['objective_ms']:g} ms. Server on cores {r['server_cores']}, generator on "
            f"cores {r['generator_cores']}.",
            *([f"Independent client: {r['independent_note']}."]
              if r.get("independent_note") else []),
            "",
            "| load | client | offered req/s | sent req/s | goodput req/s (of capacity) | "
            "refused /s | refusal p50 / p99 ms | accepted p50 / p99 ms | other errors | "
            "server CPU % | server RSS MiB | generator CPU % | generator late p99 ms | "
            "recovery s |",
            "|" + " --- |" * 14,
        ]
        notes = []
        for lv in r["levels"]:
            checked = lv.get("independent")
            md.append(_overload_row(lv, f"Python, {lv['phase_s']:g} s"))
            if checked:
                md.append(_overload_row(checked, f"C, {checked['phase_s']:g} s"))
            for client, level in (("Python", lv), ("C", checked)):
                if level and noteworthy(level["generator"]):
                    notes.append(f"- {lv['multiple']:g}x, {client}: the generator "
                                 f"{level['generator']['note']}.")
                for example in (level or {}).get("error_examples", []):
                    notes.append(f"- {lv['multiple']:g}x error ({client}): `{example[:160]}`")
        md += ["", *notes] if notes else []
        md += ["", "| load | goal | Python | C | judged on | verdict |", "|" + " --- |" * 6]
        for g in r["goals"]:
            verdict = f"**{g['verdict']}**" if g["verdict"] == "missed" else g["verdict"]
            python = g.get("python", {"measured": g["measured"], "verdict": g["verdict"]})
            md.append(f"| {g['multiple']:g}x | {g['goal']} | {_goal_figure(g['goal'], python)} | "
                      f"{_goal_figure(g['goal'], g.get('independent'))} | "
                      f"{'C' if g.get('by') == INDEPENDENT else 'Python'} | {verdict} |")
        md.append("")
    for stack, reason in data.get("skipped", {}).items():
        md.append(f"- **{stack} skipped**: {reason}")
    md.append("")
    return md


def _ok(value: bool) -> str:
    return "✓" if value else "✗ **FAIL**"


def verdict_checks(verdict: dict) -> list[bool]:
    """The pass/fail entries of one flood phase's verdict (reliability.floods); the rest
    are figures."""
    return [value for key, value in verdict.items() if key.endswith("_ok") or key == "clean"]


def floods_markdown(data: dict) -> list[str]:
    """Per stack: the normal clients in each flood against their baseline, the server's
    file descriptors, RSS and workers, and what its own defences did."""
    md = [
        "## Floods",
        "",
        "Normal clients (closed loop, a fresh connection per request) measured alone, then "
        "while idle keep-alive connections are held, while slow clients send their body a "
        "byte at a time, and while big-batch senders run (half padded to the body limit, "
        "one over it). fds and RSS: the server's process tree, peak in the phase; RSS in "
        "the big phase must level off (second half's peak near the first's), and its "
        "growth is shown in copies of a max-size body per big sender.",
        "",
        *([f"Servers: {data['guard']}.", ""] if data.get("guard") else []),
        "| stack | phase | held at start → end | normal p50 / p99 ms (× baseline) | failed | "
        "server fds peak (bound) → after | RSS MiB peak | workers | verdict |",
        "|" + " --- |" * 9,
    ]
    notes = []
    for r in data.get("runs", []):
        phases, verdicts = r["phases"], r["verdicts"]
        for name, phase in phases.items():
            normal, usage = phase["normal"], phase["usage"]
            verdict = verdicts.get(name, {})
            held = (f"{phase['open_at_start']} of {phase['connections']} → "
                    f"{phase['open_at_end']}" if "open_at_start" in phase else "–")
            ratio = verdict.get("p99_ratio")
            p99 = _fmt(normal["p99_ms"]) + (f" ({ratio:.2f}×)" if ratio is not None else "")
            fds = _fmt(usage["server_fds"], 0)
            if "fds_bound" in verdict:
                fds += f" ({verdict['fds_bound']}) → {phase['fds_after_close']}"
            rss = _fmt(usage["server_rss_mib"], 0)
            if verdict.get("rss_plateau_mib") is not None:
                first, second = phase["rss_halves_mib"]
                rss += (f" ({_fmt(first, 0)} → {_fmt(second, 0)} by halves, at most "
                        f"{verdict['rss_plateau_mib']:.0f}; {_fmt(verdict['copies_per_sender'], 1)}"
                        " body copies per sender)")
            checks = verdict_checks(verdict)
            md.append(
                f"| {r['stack']} | {name} | {held} | {_fmt(normal['p50_ms'])} / {p99} | "
                f"{normal['failed']} | {fds} | {rss} | "
                f"{'lost ' + str(phase['workers_lost']) if phase['workers_lost'] else 'all kept'}"
                f" | {_ok(all(checks)) if checks else '–'} |")
        idle, slow, big = phases["idle"], phases["slow"], phases["big"]
        notes.append(
            f"- **{r['stack']}**: idle: {idle['opened']} opened (first answers "
            f"{_outcomes(idle['first_answers'])}), {idle['open_at_end']} still open after "
            f"{r['settings']['duration_s']:g} s; slow: {slow['open_at_end']} of "
            f"{slow['connections']} still open, answered early {_outcomes(slow['answered_early'])}"
            f", closed by the server {slow['closed_by_server']}, connect errors "
            f"{_outcomes(slow['connect_errors'])}; big: {big['requests']} requests of batch "
            f"{big['max_batch']} ({_outcomes(big['outcomes'])}; p50 / p99 "
            f"{_fmt(big['latency']['p50_ms'])} / {_fmt(big['latency']['p99_ms'])} ms), over "
            f"the {big['max_body_bytes']}-byte limit: {_outcomes(big['over_limit_outcomes'])}"
            + (f"; **unclean**: {_outcomes(verdicts['big']['unclean'])}"
               if verdicts["big"]["unclean"] else "")
            + f"; RSS after {_fmt(r['rss_after_mib'], 0)} MiB.")
    md += ["", *notes] if notes else []
    for stack, reason in data.get("skipped", {}).items():
        md.append(f"- **{stack} skipped**: {reason}")
    md.append("")
    return md


RENDERERS = {
    MATRIX_FILE: matrix_markdown,
    FAULTS_FILE: faults_markdown,
    SLOW_CLIENTS_FILE: slow_clients_markdown,
    SOAK_FILE: soak_markdown,
    OVERLOAD_FILE: overload_markdown,
    FLOODS_FILE: floods_markdown,
}


def sections_for_run(run_dir: Path) -> list[str]:
    """Markdown for every reliability JSON found in `run_dir/reliability/` (none: [])."""
    md: list[str] = []
    for name, render in RENDERERS.items():
        path = run_dir / RUN_SUBDIR / name
        if path.exists():
            md += render(json.loads(path.read_text()))
    if md:
        md = ["# Reliability", "", "Figures from `make robustness`, `make faults`, "
              "`make soak`, `make overload` and `make floods` copied into this run (see "
              "reliability/README.md).", "", *md]
    return md
