"""`make report RUN=results/<run-id>`: the whole report of a run, load tests and the
reliability runs copied into it (`make robustness/faults/soak RUN=...`).

python -m tools.report results/<run-id>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loadtests import batching, codecs, codecs_served, fair, sizes
from loadtests.report import write_report
from reliability.report import sections_for_run

# The fair fight's splits (`make fair/batching/sizes/codecs RUN=...`, or `make bench
# PROFILE=<split>`) write their own Markdown into the run; each becomes a section here.
SPLIT_FILES = (fair.MARKDOWN_FILE, batching.MARKDOWN_FILE, sizes.MARKDOWN_FILE,
               codecs.MARKDOWN_FILE, codecs_served.MARKDOWN_FILE)  # fmt: skip


def split_sections(run_dir: Path) -> list[str]:
    """The splits' Markdown found in `run_dir`, each heading one level deeper."""
    lines: list[str] = []
    for name in SPLIT_FILES:
        path = run_dir / name
        if path.exists():
            lines += ["", *(f"#{line}" if line.startswith("#") else line
                            for line in path.read_text().splitlines())]  # fmt: skip
    return lines


def build(run_dir: Path) -> Path:
    """Writes REPORT.md, summary.json and the plots of `run_dir`; returns REPORT.md."""
    return write_report(run_dir, [*split_sections(run_dir), *sections_for_run(run_dir)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    print(build(args.run_dir))


if __name__ == "__main__":
    main()
