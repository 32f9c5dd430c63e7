"""Reading numbers from environment variables, with the variable named in every error."""

from __future__ import annotations

import os


def env_optional_int(name: str) -> int | None:
    """None when `name` is unset or empty, else its value as an integer."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def env_int(name: str, default: int) -> int:
    """`default` when `name` is unset or empty, else its value as an integer."""
    value = env_optional_int(name)
    return default if value is None else value


def env_float(name: str, default: float) -> float:
    """`default` when `name` is unset or empty, else its value as a number."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
