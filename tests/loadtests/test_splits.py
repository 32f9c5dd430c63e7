"""The splits' shared files: records appended as measured, replaced by a rerun, and the
Markdown under its title carries what made it."""

from __future__ import annotations

import json

from loadtests.splits import SplitFiles


def test_records_are_appended_and_a_rerun_replaces_them(tmp_path) -> None:
    files = SplitFiles(tmp_path / "run", "fair.jsonl", "FAIR.md")
    files.append({"stack": "a"})
    files.append({"stack": "b"})
    lines = files.records.read_text().splitlines()
    assert [json.loads(line)["stack"] for line in lines] == ["a", "b"]
    SplitFiles(tmp_path / "run", "fair.jsonl", "FAIR.md")
    assert files.records.read_text() == ""


def test_the_markdown_names_the_commit_and_machine_under_its_title(tmp_path) -> None:
    files = SplitFiles(tmp_path, "x.jsonl", "X.md")
    text = files.write_markdown(["# Title", "", "| a |"]).read_text().splitlines()
    assert text[0] == "# Title" and text[2].startswith("Made at ")
    assert "usable cores" in text[2] and text[-1] == "| a |"
