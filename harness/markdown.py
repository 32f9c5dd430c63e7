"""Cell formatting shared by the load-test report and the reliability tables."""

from __future__ import annotations


def fmt(value, digits: int = 2, no: str = "no") -> str:
    """A table cell: "–" for missing, yes/`no` for booleans, `digits` decimals for floats."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else no
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
