"""`make report RUN=results/<run-id>`: the whole report of a run, load tests and the
reliability runs copied into it (`make robustness/faults/soak RUN=...`).

python -m tools.report results/<run-id>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loadtests.report import write_report
from reliability.report import sections_for_run


def build(run_dir: Path) -> Path:
    """Writes REPORT.md, summary.json and the plots of `run_dir`; returns REPORT.md."""
    return write_report(run_dir, sections_for_run(run_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    print(build(args.run_dir))


if __name__ == "__main__":
    main()
