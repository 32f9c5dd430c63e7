"""What the fair fight's splits (loadtests.fair, batching, sizes, codecs_served) share
besides their measurement (loadtests.closed_wrk): the command line, the records file each
point is appended to as soon as it is measured, and the Markdown with its provenance."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from loadtests import wrk
from loadtests.environment import provenance, with_provenance
from services.registry import parse_stacks


class SplitFiles:
    """A split's files in its output folder (a run's folder with `make ... RUN=`)."""

    def __init__(self, out: Path, records: str, markdown: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.records = out / records
        self.markdown = out / markdown
        self.records.write_text("")  # a rerun into the same run replaces its records
        # Taken now: the code that measures is the code at the start of the run.
        self.made = provenance()

    def append(self, record: dict) -> None:
        """One measured point, written at once: a run cut short keeps what it measured."""
        with self.records.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def write_markdown(self, lines: list[str]) -> Path:
        self.markdown.write_text("\n".join(with_provenance(lines, self.made)) + "\n")
        return self.markdown


def arguments(description: str, prefix: str) -> argparse.ArgumentParser:
    """The options every split takes; a split adds its own (e.g. --artifacts)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path,
                        default=Path("results") / time.strftime(f"{prefix}-%Y%m%d-%H%M%S"))
    parser.add_argument("--stacks", default="all", help="comma-separated, or all")
    parser.add_argument("--runs", type=int, default=2, help="wrk runs per level")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    return parser


def parse(parser: argparse.ArgumentParser, prefix: str,
          every: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:  # fmt: skip
    """The arguments and the stacks to run (`every` for "all"); exits when wrk is missing."""
    args = parser.parse_args()
    ok, why = wrk.wrk_available()
    if not ok:
        raise SystemExit(f"{prefix}: {why}")
    return args, list(every) if args.stacks == "all" else parse_stacks(args.stacks)
