"""`make audit`: pip-audit over requirements.lock, with the triage in audit_triage.json.

pip-audit reports "No known vulnerabilities found" even when it could check nothing (a
package index without PyPI's JSON API answers every package as "not found"), so this
wrapper reads its JSON and tells three outcomes apart:

  exit 0  audited, and every finding is triaged in tools/audit_triage.json
  exit 1  audited, with findings nobody triaged (printed with their fixed versions)
  exit 0  NOT AUDITED: the vulnerability database could not be reached or answered for
          no package; said loudly, with how many packages went unchecked. Set
          AUDIT_STRICT=1 to make this exit 2 (for a CI that can reach the database).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.paths import RESULTS_ROOT

TRIAGE_FILE = Path(__file__).resolve().parent / "audit_triage.json"
# OSV is pip-audit's most complete source; PyPI's JSON API serves the same advisories.
SERVICE = os.environ.get("AUDIT_SERVICE", "osv")
TIMEOUT_S = float(os.environ.get("AUDIT_TIMEOUT_S", "300"))
NETWORK_ERRORS = ("ConnectionError", "NameResolutionError", "Max retries exceeded",
                  "Failed to resolve", "timed out", "ReadTimeout", "SSLError")  # fmt: skip


@dataclass(frozen=True)
class AuditResult:
    audited: int
    unchecked: list[str]
    findings: list[dict]  # {"package", "version", "id", "aliases", "fix_versions"}
    untriaged: list[dict]
    error: str = ""

    @property
    def reached(self) -> bool:
        return not self.error and self.audited > 0


def load_triage(path: Path = TRIAGE_FILE) -> dict[str, dict]:
    """Vulnerability id -> {"package", "reason", "review_by"} from the triage file."""
    entries = json.loads(path.read_text())["ignore"]
    return {entry["id"]: entry for entry in entries}


def parse_report(document: dict, triage: dict[str, dict]) -> AuditResult:
    """Counts of pip-audit's JSON (`--format json`): audited vs skipped packages, and the
    findings, each triaged when its id or one of its aliases is in `triage`."""
    findings, unchecked, audited = [], [], 0
    for dep in document.get("dependencies", []):
        if dep.get("skip_reason"):
            unchecked.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            findings.append({
                "package": dep["name"], "version": dep.get("version"), "id": vuln["id"],
                "aliases": vuln.get("aliases", []), "fix_versions": vuln.get("fix_versions", []),
            })  # fmt: skip
    untriaged = [f for f in findings
                 if not ({f["id"], *f["aliases"]} & triage.keys())]  # fmt: skip
    return AuditResult(audited, unchecked, findings, untriaged)


def run_pip_audit(requirements: Path, out: Path) -> tuple[dict | None, str]:
    """(pip-audit's JSON or None, its stderr tail)."""
    binary = shutil.which("pip-audit", path=str(Path(sys.executable).parent))
    if binary is None:
        return None, "pip-audit is not installed in this venv (pip install pip-audit)"
    command = [
        binary, "--requirement", str(requirements),
        # The lock pins every package: no resolution needed, and no pip install run.
        "--no-deps", "--disable-pip",
        "--vulnerability-service", SERVICE, "--format", "json", "--output", str(out),
        "--progress-spinner", "off",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"pip-audit timed out after {TIMEOUT_S:g} s"
    stderr = done.stderr.strip()[-2000:]
    if not out.exists():
        return None, stderr or f"pip-audit exited {done.returncode} without a report"
    return json.loads(out.read_text()), stderr


def audit(requirements: Path) -> AuditResult:
    with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
        document, stderr = run_pip_audit(requirements, Path(tmp) / "audit.json")
    if document is None:
        reason = stderr.splitlines()[-1] if stderr else "no output"
        if any(marker in stderr for marker in NETWORK_ERRORS):
            reason = f"vulnerability database ({SERVICE}) unreachable: {reason}"
        return AuditResult(0, [], [], [], error=reason)
    return parse_report(document, load_triage())


def main(requirements: Path) -> int:
    result = audit(requirements)
    out = RESULTS_ROOT / "audit" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(
        {"service": SERVICE, "requirements": str(requirements), "audited": result.audited,
         "unchecked": result.unchecked, "findings": result.findings,
         "untriaged": result.untriaged, "error": result.error}, indent=2) + "\n")  # fmt: skip
    if not result.reached:
        why = result.error or (f"the database answered for none of the "
                               f"{len(result.unchecked)} packages")
        print(f"audit: NOT AUDITED - {why}.")
        print("audit: nothing was checked; run `make audit` where "
              f"{SERVICE} (AUDIT_SERVICE=osv|pypi) can be reached.")
        return 2 if os.environ.get("AUDIT_STRICT") == "1" else 0
    if result.unchecked:
        print(f"audit: {len(result.unchecked)} package(s) could not be checked:")
        for line in result.unchecked:
            print(f"  {line}")
    triaged = len(result.findings) - len(result.untriaged)
    print(f"audit: {result.audited} packages checked against {SERVICE}: "
          f"{len(result.findings)} finding(s), {triaged} triaged in {TRIAGE_FILE.name}.")
    for finding in result.untriaged:
        fixes = ", ".join(finding["fix_versions"]) or "no fix released"
        print(f"  UNTRIAGED {finding['package']}=={finding['version']} {finding['id']} "
              f"(fixed in: {fixes})")
    print(f"audit: wrote {out / 'audit.json'}")
    return 1 if result.untriaged else 0
