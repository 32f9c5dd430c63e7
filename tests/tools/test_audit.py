"""`make audit`'s wrapper around pip-audit: it must tell "nothing found" from "nothing
checked", fail only on findings nobody triaged, and keep its triage file well-formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import audit

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.lock"


def dependency(name: str, vulns: list[dict] | None = None, skip: str | None = None) -> dict:
    if skip:
        return {"name": name, "skip_reason": skip}
    return {"name": name, "version": "1.0", "vulns": vulns or []}


def vuln(ident: str, *aliases: str) -> dict:
    return {"id": ident, "aliases": list(aliases), "fix_versions": ["1.1"]}


def test_all_packages_skipped_means_not_audited() -> None:
    report = {"dependencies": [dependency("flask", skip="Dependency not found on PyPI")]}
    result = audit.parse_report(report, {})
    assert not result.reached and result.unchecked and not result.findings


def test_findings_are_triaged_by_id_or_alias() -> None:
    report = {"dependencies": [
        dependency("a", [vuln("GHSA-1", "CVE-1")]), dependency("b", [vuln("PYSEC-2")]),
        dependency("c"),
    ]}  # fmt: skip
    result = audit.parse_report(report, {"CVE-1": {"reason": "not reachable"}})
    assert result.reached and result.audited == 3
    assert [f["id"] for f in result.findings] == ["GHSA-1", "PYSEC-2"]
    assert [f["id"] for f in result.untriaged] == ["PYSEC-2"]


@pytest.mark.parametrize(
    ("document", "stderr", "strict", "code"),
    [
        (None, "requests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'", "", 0),
        (None, "requests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'", "1", 2),
        ({"dependencies": [dependency("flask", skip="not found")]}, "", "", 0),
        ({"dependencies": [dependency("flask")]}, "", "", 0),
        ({"dependencies": [dependency("flask", [vuln("GHSA-9")])]}, "", "", 1),
    ],
    ids=["unreachable", "unreachable-strict", "nothing-answered", "clean", "untriaged"],
)
def test_exit_status(monkeypatch, tmp_path, capsys, document, stderr, strict, code) -> None:
    monkeypatch.setattr(audit, "run_pip_audit", lambda requirements, out: (document, stderr))
    monkeypatch.setattr(audit, "RESULTS_ROOT", tmp_path)
    monkeypatch.setenv("AUDIT_STRICT", strict)
    assert audit.main(REQUIREMENTS) == code
    printed = capsys.readouterr().out
    if document is None or all(d.get("skip_reason") for d in document["dependencies"]):
        assert "NOT AUDITED" in printed
    saved = json.loads(next(tmp_path.glob("audit/*/audit.json")).read_text())
    assert saved["requirements"] == str(REQUIREMENTS)


def test_triage_file_entries_name_id_package_reason_and_review_date() -> None:
    entries = json.loads(audit.TRIAGE_FILE.read_text())["ignore"]
    for entry in entries:
        assert {"id", "package", "reason", "review_by"} <= set(entry), entry
